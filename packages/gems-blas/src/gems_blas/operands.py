"""What the BLAS ops share: the calls our kernels take, ATen's scalar rules, ``out=`` tensors, launch keys."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from flag_gems.outputs import resize_output

#: Operand dtypes our kernels compute; everything else goes back to ATen.
FLOATS = (torch.float16, torch.bfloat16, torch.float32)
_INT32_MAX = 2**31 - 1

try:
    allow_tf32 = torch._C._get_cublas_allow_tf32
except AttributeError:  # pragma: no cover - older torch

    def allow_tf32() -> bool:
        return torch.backends.cuda.matmul.allow_tf32


def real_scalar(value) -> bool:
    """True for the alpha/beta values a floating-point product takes as they are (complex goes to ATen)."""
    return type(value) in (int, float, bool)


def broadcast_strides(t: torch.Tensor, shape: Sequence[int]) -> tuple[int, ...] | None:
    """``t``'s strides once expanded to ``shape`` (0 along broadcast dimensions), or None when ``t`` does
    not broadcast to ``shape`` (ATen then raises its own error)."""
    nd = len(shape)
    if t.dim() > nd:
        return None
    sizes, strides = t.shape, t.stride()
    lead = nd - t.dim()
    result = [0] * nd
    for i in range(t.dim()):
        size = sizes[i]
        if size == shape[lead + i]:
            result[lead + i] = strides[i] if size != 1 else 0
        elif size != 1:
            return None
    return tuple(result)


def _shares_storage(x: torch.Tensor, y: torch.Tensor) -> bool:
    return x.untyped_storage().data_ptr() == y.untyped_storage().data_ptr()


def prepare_out(out: torch.Tensor, shape: Sequence[int], dtype: torch.dtype, reads: Sequence[torch.Tensor],
                bias: torch.Tensor | None = None) -> torch.Tensor | None:
    """Make ``out`` ready to receive a product of ``shape`` and return the tensor to compute into: ``out``
    itself, or a fresh tensor when ``out`` shares memory with an operand the kernel reads while writing
    (the caller copies it back). None when ATen must handle the call (wrong dtype or device, an output
    whose elements overlap each other), so that ATen raises its own error.

    ``bias`` may be ``out`` itself (the in-place ops): each element is read before it is written.
    """
    if out.dtype != dtype or out.device != reads[0].device:
        return None
    resize_output(out, shape)
    if torch._debug_has_internal_overlap(out) == 1:
        return None
    if any(_shares_storage(out, t) for t in reads) or (
            bias is not None and bias is not out and _shares_storage(out, bias)):
        return torch.empty(shape, dtype=dtype, device=out.device)
    return out


def finish_out(out: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
    """Copy ``result`` into ``out`` when ``prepare_out`` had to compute elsewhere; return ``out``."""
    if result is not out:
        out.copy_(result)
    return out


def spec_key(dtypes: tuple, tensors: Sequence[torch.Tensor], ints: Sequence[int]) -> tuple:
    """The key of a compiled kernel for one launch: operand dtypes, 16-byte alignment of the pointers and
    what Triton specialises integer arguments on (equal to 1, divisible by 16, wider than 32 bits)."""
    return (*dtypes, *[t.data_ptr() % 16 == 0 for t in tensors],
            *[(2 if i == 1 else i % 16 == 0) + 4 * (i > _INT32_MAX) for i in ints])
