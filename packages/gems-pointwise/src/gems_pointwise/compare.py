"""Comparisons (eq, ne, lt, le, gt, ge), logical_and/or/xor, bitwise_and/or/xor and the shifts.

Comparisons promote their operands and compare in the promoted dtype; the result is bool. Bitwise ops
and shifts take integers and bools only (ATen raises for floats: those calls go back to it).
"""

from __future__ import annotations

import triton
import triton.language as tl

from flag_gems import pointwise_dynamic
from gems_pointwise.overloads import binary_route, both_bool, both_integral


@pointwise_dynamic(promotion_methods=[(0, 1, "ALWAYS_BOOL")])
@triton.jit
def eq_kernel(x, y):
    return x == y


@pointwise_dynamic(promotion_methods=[(0, 1, "ALWAYS_BOOL")])
@triton.jit
def ne_kernel(x, y):
    return x != y


@pointwise_dynamic(promotion_methods=[(0, 1, "ALWAYS_BOOL")])
@triton.jit
def lt_kernel(x, y):
    return x < y


@pointwise_dynamic(promotion_methods=[(0, 1, "ALWAYS_BOOL")])
@triton.jit
def le_kernel(x, y):
    return x <= y


@pointwise_dynamic(promotion_methods=[(0, 1, "ALWAYS_BOOL")])
@triton.jit
def gt_kernel(x, y):
    return x > y


@pointwise_dynamic(promotion_methods=[(0, 1, "ALWAYS_BOOL")])
@triton.jit
def ge_kernel(x, y):
    return x >= y


@pointwise_dynamic(promotion_methods=[(0, 1, "ALWAYS_BOOL")])
@triton.jit
def logical_and_kernel(x, y):
    return (x != 0) & (y != 0)


@pointwise_dynamic(promotion_methods=[(0, 1, "ALWAYS_BOOL")])
@triton.jit
def logical_or_kernel(x, y):
    return (x != 0) | (y != 0)


@pointwise_dynamic(promotion_methods=[(0, 1, "ALWAYS_BOOL")])
@triton.jit
def logical_xor_kernel(x, y):
    return (x != 0) ^ (y != 0)


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def bitwise_and_kernel(x, y):
    return x & y


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def bitwise_or_kernel(x, y):
    return x | y


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def bitwise_xor_kernel(x, y):
    return x ^ y


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def left_shift_kernel(x, y):
    # A shift by a negative count or by the width or more gives 0, as in ATen (the hardware would
    # shift by the count modulo the width).
    inside = (y >= 0) & (y < x.dtype.primitive_bitwidth)
    return tl.where(inside, x << tl.where(inside, y, 0), 0)


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def right_shift_kernel(x, y):
    # Out-of-range counts shift every bit out: 0, or -1 for a negative signed value.
    inside = (y >= 0) & (y < x.dtype.primitive_bitwidth)
    return tl.where(inside, x >> tl.where(inside, y, 0), tl.where(x < 0, -1, 0))


def _not_bitwise(x, y) -> bool:
    return not both_integral(x, y)


def _not_shift(x, y) -> bool:
    return not both_integral(x, y) or both_bool(x, y)


eq = binary_route(eq_kernel, "self == other, compared in the promoted dtype.")
ne = binary_route(ne_kernel, "self != other, compared in the promoted dtype.")
lt = binary_route(lt_kernel, "self < other, compared in the promoted dtype.")
le = binary_route(le_kernel, "self <= other, compared in the promoted dtype.")
gt = binary_route(gt_kernel, "self > other, compared in the promoted dtype.")
ge = binary_route(ge_kernel, "self >= other, compared in the promoted dtype.")
logical_and = binary_route(logical_and_kernel, "Both operands nonzero.")
logical_or = binary_route(logical_or_kernel, "Either operand nonzero.")
logical_xor = binary_route(logical_xor_kernel, "Exactly one operand nonzero.")
bitwise_and = binary_route(bitwise_and_kernel, "Bitwise and of integers or bools.", _not_bitwise)
bitwise_or = binary_route(bitwise_or_kernel, "Bitwise or of integers or bools.", _not_bitwise)
bitwise_xor = binary_route(bitwise_xor_kernel, "Bitwise xor of integers or bools.", _not_bitwise)
left_shift = binary_route(left_shift_kernel, "self << other for integers.", _not_shift)
right_shift = binary_route(right_shift_kernel, "self >> other for integers (arithmetic for signed types).", _not_shift)
