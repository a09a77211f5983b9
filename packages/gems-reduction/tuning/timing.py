"""Kernel timing shared by this package's A/B scripts (``ab_*.py``)."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from types import ModuleType

import flag_gems
import flag_gems.testing


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


def setting_lines(settings, applied: Callable[[str], AbstractContextManager], run: Callable[[], object],
                  mismatch: Callable[[object], str | None], time_us: Callable[[Callable], float], op: str,
                  aten_us: float, width: int) -> list[str]:
    """A line per setting: ``run``'s result checked (``mismatch`` says why it is wrong, or None), then its
    time against ATen's and whether ``op`` ran on gems there."""
    lines = []
    for setting in settings:
        note, us = "", None
        try:
            with applied(setting), flag_gems.testing.CallCounter() as counter, \
                    flag_gems.use_gems(families=["reduction"], record=True):
                problem = mismatch(run())
                if problem is None:
                    us = time_us(run)
            note = "ours" if counter.ran_on_gems(op) else "ATen"
        except Exception as error:
            problem = f"{type(error).__name__}: {str(error)[:80]}"
        if problem:
            lines.append(f"{'':36} {setting:<{width}} {'-':>9} {'-':>8}  WRONG: {problem}")
        else:
            lines.append(f"{'':36} {setting:<{width}} {us:9.1f} {aten_us / us:7.2f}x  {note}")
    return lines


def report_end(lines: list[str], cases: int, start: float) -> None:
    """The closing line of an A/B run; a wrong result makes the script fail."""
    wrong = sum("WRONG" in line for line in lines)
    print(f"{cases} cases, {wrong} wrong, {time.perf_counter() - start:.0f} s")
    if wrong:
        sys.exit(1)
