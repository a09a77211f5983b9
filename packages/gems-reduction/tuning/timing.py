"""Kernel timing shared by this package's A/B scripts (``ab_*.py``)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from types import ModuleType

import flag_gems


def kernel_us(fn: Callable[[], object], rep: int) -> float:
    """Microseconds of one call of ``fn``: the median of ``triton.testing.do_bench`` over ``rep`` ms on a GPU;
    elsewhere one wall-clock call (smoke runs check results, their times mean nothing)."""
    if flag_gems.device != "cuda":
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e6
    import triton.testing

    return 1e3 * triton.testing.do_bench(fn, warmup=5, rep=rep, return_mode="median")


@contextlib.contextmanager
def module_settings(module: ModuleType, settings: dict) -> Iterator[None]:
    """``settings`` (module-level names of ``module``) in force, then the previous values back."""
    saved = {name: getattr(module, name) for name in settings}
    for name, value in settings.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)
