"""Integer helpers for host code that runs on every call.

``triton.cdiv`` and ``triton.next_power_of_2`` are Triton ``ConstexprFunction`` objects in Triton 3.6:
called from Python they cost about 2 µs each (argument unwrapping), more than many a whole plan lookup.
These give the same results for the sizes the families pass (non-negative integers, positive divisors).
"""

from __future__ import annotations


def cdiv(a: int, b: int) -> int:
    """``a / b`` rounded up, as ``triton.cdiv``."""
    return (a + b - 1) // b


def next_power_of_2(n: int) -> int:
    """The smallest power of two at least ``n`` (0 for 0), as ``triton.next_power_of_2``."""
    return 1 << (n - 1).bit_length() if n > 0 else 0
