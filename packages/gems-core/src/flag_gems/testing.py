"""Testing helpers: FlagGems-compatible comparisons, and proof that gems served a call."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

from flag_gems.recording import CallCounter

# Relative tolerance per dtype: a few units in the last place of the format.
RESOLUTION = {
    torch.bool: 0, torch.uint8: 0, torch.int8: 0, torch.int16: 0, torch.int32: 0, torch.int64: 0,
    torch.float16: 1e-3, torch.bfloat16: 1.6e-2, torch.float32: 1.3e-6, torch.float64: 1e-7,
    torch.complex64: 1.3e-6,
}


def assert_close(res, ref, dtype, equal_nan: bool = False, reduce_dim: int = 1, atol: float = 1e-4) -> None:
    """``res`` equals ``ref`` (cast to ``res``'s dtype) within the resolution of ``dtype``.

    ``reduce_dim`` is the length of a reduction that produced the values: the absolute tolerance
    grows with its square root (rounding errors of a sum grow like sqrt(n), not n).
    """
    rtol = RESOLUTION.get(dtype, 1e-6)
    if isinstance(ref, torch.Tensor) and isinstance(res, torch.Tensor):
        ref = ref.to(res.dtype)
    torch.testing.assert_close(res, ref, atol=atol * max(reduce_dim, 1) ** 0.5, rtol=rtol, equal_nan=equal_nan)


def assert_equal(res, ref, equal_nan: bool = False) -> None:
    """``res`` equals ``ref`` exactly (same dtype after casting ``ref``)."""
    if isinstance(ref, torch.Tensor) and isinstance(res, torch.Tensor):
        ref = ref.to(res.dtype)
    torch.testing.assert_close(res, ref, atol=0, rtol=0, equal_nan=equal_nan)


@contextlib.contextmanager
def served(*ops: str, families: Sequence[str] | None = None) -> Iterator[CallCounter]:
    """Run the block under gems and assert afterwards that each of ``ops`` ran on a gems kernel.

    ``ops`` are overload or base names. A call a gems kernel handed back to ATen does not count, so a
    silent fallback fails the check. Yields the counter, for finer checks.
    """
    from flag_gems.api import use_gems

    with CallCounter() as counter, use_gems(families=families, record=True):
        yield counter
    missing = [op for op in ops if not counter.ran_on_gems(op)]
    if missing:
        raise AssertionError(f"not served by gems: {missing}; served: {dict(counter.served)}, "
                             f"handed back to ATen: {dict(counter.fallbacks)}")
