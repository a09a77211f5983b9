"""Binary arithmetic: add, sub, rsub, mul, div (every rounding mode), floor_divide, remainder, fmod,
pow, maximum, minimum, fmax, fmin, atan2, hypot, copysign, logaddexp, logaddexp2, xlogy, nextafter,
heaviside, ldexp, polar, gcd, lcm.

Kernels first, then the routes (see ``overloads``): one per ATen op, covering its Tensor and Scalar
overloads. Operands arrive in the kernels already promoted, in float32 for half types, so a kernel
branches only on the computation dtype (bool, integer, floating), statically. Those branches assign
and a single return follows: Triton's compiler still visits code after a return (in a dead block),
where an integer-only operation would not compile for a float.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from flag_gems import pointwise_dynamic, promote
from flag_gems.runtime import device
from gems_pointwise.knobs import KNOBS
from gems_pointwise.overloads import (
    AtenFallback,
    binary_route,
    both_bool,
    both_integral,
    fits,
    fits_result,
    is_bool,
    is_integral,
)
from gems_pointwise.unary import (
    HALF_PI,
    HALF_PI_LO,
    ON_GPU,
    PI,
    PI_LO,
    atan_tail,
    exp2_with_subnormals,
    fast_log2,
    fast_rcp,
    log2_with_subnormals,
    reciprocal_of_normal,
    rounded_to,
    storage_scalar,
)

# -- kernels ----------------------------------------------------------------------------------------


@triton.jit
def ieee_div(x, y):
    # IEEE division, as ATen's: Triton's float32 `/` is the faster approximate one.
    if y.dtype == tl.float32:
        q = tl.math.div_rn(x, y)
    else:
        q = x / y
    return q


@triton.jit
def _sqrt(x):
    # IEEE square root, as ATen's: Triton's float32 sqrt is the approximate one.
    if x.dtype == tl.float32:
        r = tl.sqrt_rn(x)
    else:
        r = tl.sqrt(x)
    return r


@triton.jit
def _broadcast(x, y):
    # A scalar operand takes the block's shape before a libdevice call: the interpreter's shims type
    # their result like their first argument.
    return tl.broadcast(x, y)


@triton.jit
def _fmod_of_small_quotient(x, y, quotient):
    # fmod(x, y), exact for operands of a half type with p significand bits and |x / y| < 2**(22 - p),
    # given ``quotient``, x / y within 2 ulp. Such an x / y is an integer or more than 2**-p away from
    # one, and ``quotient`` within 2**(-p-1) of it, so n = trunc(quotient) is trunc(x / y), or one less
    # in magnitude when x / y is an integer; n * y (at most 24 bits, no larger than |x|) and x - n * y
    # are exact, and |x - n * y| == |y| tells the second case.
    n = libdevice.trunc(quotient)
    r = tl.where(n == 0, x, x - n * y)  # n == 0: x itself (y may be infinite)
    return tl.where(tl.abs(r) >= tl.abs(y), r - libdevice.copysign(y, r), r)


@triton.jit
def _floor_of_small_quotient(x, y, quotient):
    # ATen's floor division where _fmod_of_small_quotient applies (KNOBS.half_exact_floor_div): its n,
    # corrected, is trunc(x / y), and ATen's (x - fmod) / y is exactly n (x - fmod = n y is exact, at most
    # 24 bits, and so is the quotient), so neither its IEEE division nor its floor changes anything: the
    # result is n, less 1 where the remainder's sign differs from y's, and a zero takes x / y's sign.
    n = libdevice.trunc(quotient)
    r = tl.where(n == 0, x, x - n * y)
    over = tl.abs(r) >= tl.abs(y)
    n = tl.where(over, tl.where((r < 0) == (y < 0), n + 1.0, n - 1.0), n)
    r = tl.where(over, r - libdevice.copysign(y, r), r)
    div = tl.where((r != 0) & ((y < 0) != (r < 0)), n - 1.0, n)
    return tl.where(div == 0, libdevice.copysign(tl.zeros_like(div), quotient), div)


@triton.jit
def _floor_from_mod(x, y, quotient, mod, STEP: tl.constexpr, FLOOR: tl.constexpr, RECIPROCAL: tl.constexpr):
    # ATen's steps after the fmod: the quotient of x - fmod (exact where floor(x / y) is not), floored
    # and adjusted.
    if RECIPROCAL:
        div = (x - mod) * ieee_div(1.0, y)
    else:
        div = rounded_to(ieee_div(rounded_to(x - mod, STEP), y), STEP)
    div = tl.where((mod != 0) & ((y < 0) != (mod < 0)), rounded_to(div - 1, STEP), div)
    floored = rounded_to(libdevice.floor(div), FLOOR)
    floored = tl.where(rounded_to(div - floored, STEP) > 0.5, rounded_to(floored + 1, FLOOR), floored)
    return tl.where(div == 0, libdevice.copysign(tl.zeros_like(div), quotient), floored)


@triton.jit
def _floor_div_steps(x, y, INPUT: tl.constexpr, STEP: tl.constexpr, FLOOR: tl.constexpr, RECIPROCAL: tl.constexpr,
                     EXACT: tl.constexpr):
    # Python's float floor division as ATen computes it: fmod, then _floor_from_mod. STEP: the type each
    # step rounds to; FLOOR: the type the floor rounds to; RECIPROCAL: the quotient as a product with
    # 1 / y. INPUT: the operands' type. EXACT: blocks of small quotients skip the steps after the fmod
    # (_floor_of_small_quotient; for STEP float32 only).
    x, y = _broadcast(x, y)
    quotient = x / y  # approximate: used for its sign, for y == 0 (inf or nan) and to pick the fmod
    if INPUT == tl.float32:
        floored = _floor_from_mod(x, y, quotient, libdevice.fmod(x, y), STEP, FLOOR, RECIPROCAL)
    else:
        # libdevice's fmod loops over the exponent difference; blocks of small quotients (the
        # usual case) get it exactly from the quotient instead.
        if INPUT == tl.bfloat16:
            limit = 16384.0
        else:
            limit = 2048.0
        if tl.max(tl.abs(quotient), axis=0) < limit:  # a NaN quotient may go either way
            if EXACT:
                floored = _floor_of_small_quotient(x, y, quotient)
            else:
                mod = _fmod_of_small_quotient(x, y, quotient)
                floored = _floor_from_mod(x, y, quotient, mod, STEP, FLOOR, RECIPROCAL)
        else:
            floored = _floor_from_mod(x, y, quotient, libdevice.fmod(x, y), STEP, FLOOR, RECIPROCAL)
    return tl.where(y == 0, quotient, floored)


@triton.jit
def _remainder(x, y):
    if x.dtype.is_floating():
        x, y = _broadcast(x, y)
        mod = libdevice.fmod(x, y)
    else:
        mod = x % y
    return tl.where((mod != 0) & ((y < 0) != (mod < 0)), mod + y, mod)


@triton.jit
def _int_pow(base, exp):
    # Exponentiation by squaring, one exponent bit per step; a negative exponent gives what ATen
    # gives: 1 for base 1, +-1 for base -1, else 0.
    acc = base * 0 + exp * 0 + 1
    b = base + exp * 0
    e = exp + base * 0
    for _ in range(e.dtype.primitive_bitwidth - 1):
        acc = tl.where((e & 1) != 0, acc * b, acc)
        b = b * b
        e = e >> 1
    negative = tl.where(base == 1, 1, tl.where(base == -1, tl.where((exp & 1) != 0, -1, 1), 0))
    return tl.where(exp < 0, negative.to(acc.dtype), acc)


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def add_kernel(x, y):
    if x.dtype == tl.int1:
        r = x | y
    else:
        r = x + y
    return r


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def add_alpha_kernel(x, y, alpha):
    return x + y * alpha.to(x.dtype)


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def sub_kernel(x, y):
    return x - y


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def sub_alpha_kernel(x, y, alpha):
    return x - y * alpha.to(x.dtype)


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def mul_kernel(x, y):
    if x.dtype == tl.int1:
        r = x & y
    else:
        r = x * y
    return r


@pointwise_dynamic(promotion_methods=[(0, 1, "INT_TO_FLOAT")])
@triton.jit
def true_div_kernel(x, y):
    return ieee_div(x, y)


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")], constexprs={"DTYPE": tl.float32})
@triton.jit
def trunc_div_kernel(x, y, DTYPE: tl.constexpr):
    # DTYPE: the result's type, to which a float quotient rounds before the trunc.
    if x.dtype.is_floating():
        q = libdevice.trunc(rounded_to(ieee_div(x, y), DTYPE))
    else:
        q = x // y
    return q


trunc_div_float16_kernel = trunc_div_kernel.bind("trunc_div_float16_kernel", DTYPE=tl.float16)
trunc_div_bfloat16_kernel = trunc_div_kernel.bind("trunc_div_bfloat16_kernel", DTYPE=tl.bfloat16)


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")], constexprs={"DTYPE": tl.float32, "EXACT": False})
@triton.jit
def floor_div_kernel(x, y, DTYPE: tl.constexpr, EXACT: tl.constexpr):
    if x.dtype.is_floating():
        # ATen's CPU kernels round each step of a half-type division to the type, and divide by a
        # scalar in float32, rounding the result only. Its CUDA kernels (measured on an H100) work in
        # float32, float16 rounding the floor too; a half-type tensor's scalar divisor goes by its
        # reciprocal, the floor rounded to the type. EXACT applies to the CUDA kernels' half-type tensors.
        if len(y.shape) == 0:  # a scalar divisor, not rounded to the type
            if ON_GPU and DTYPE != tl.float32:
                q = _floor_div_steps(x, y, tl.float32, tl.float32, DTYPE, True, False)
            else:
                q = _floor_div_steps(x, y, tl.float32, tl.float32, tl.float32, False, False)
        elif ON_GPU and DTYPE == tl.float16:
            q = _floor_div_steps(x, y, tl.float16, tl.float32, tl.float16, False, EXACT)
        elif ON_GPU:
            q = _floor_div_steps(x, y, DTYPE, tl.float32, tl.float32, False, EXACT)
        else:
            q = _floor_div_steps(x, y, DTYPE, DTYPE, DTYPE, False, False)
    else:
        quot = x // y
        rem = x % y
        q = tl.where((rem != 0) & ((x < 0) != (y < 0)), quot - 1, quot)
    return q


floor_div_float16_kernel = floor_div_kernel.bind("floor_div_float16_kernel", DTYPE=tl.float16)
floor_div_bfloat16_kernel = floor_div_kernel.bind("floor_div_bfloat16_kernel", DTYPE=tl.bfloat16)
floor_div_float16_exact_kernel = floor_div_kernel.bind("floor_div_float16_exact_kernel", DTYPE=tl.float16, EXACT=True)
floor_div_bfloat16_exact_kernel = floor_div_kernel.bind("floor_div_bfloat16_exact_kernel", DTYPE=tl.bfloat16,
                                                        EXACT=True)


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def remainder_kernel(x, y):
    return _remainder(x, y)


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def fmod_kernel(x, y):
    if x.dtype.is_floating():
        x, y = _broadcast(x, y)
        r = libdevice.fmod(x, y)
    else:
        r = x % y
    return r


@triton.jit
def _log2_of_base(a, DTYPE: tl.constexpr):
    # log2 of a half-type base a >= 0. bfloat16's subnormals (below 2**-126), which lg2.approx.ftz flushes to
    # zero, take log2_with_subnormals; float16 has none that small, and keeps the single instruction.
    if DTYPE == tl.bfloat16:
        r = log2_with_subnormals(a)
    else:
        r = fast_log2(a)
    return r


@triton.jit
def _pow_by_logarithm(x, y, DTYPE: tl.constexpr):
    # exp2(y * log2|x|) with pow's special cases (see _pow_of_half_types). Conditions on y alone stay
    # scalars for a scalar exponent, hence nested selects: the interpreter cannot combine a scalar
    # condition with a block one.
    r = tl.exp2(y * _log2_of_base(tl.abs(x), DTYPE))
    integral = libdevice.trunc(y) == y  # infinities count as even integers
    odd = integral & (libdevice.trunc(y * 0.5) != y * 0.5)
    r = tl.where(odd, libdevice.copysign(r, x), r)  # r >= 0 takes the base's sign
    r = tl.where(integral, r, tl.where((x < 0) & (x > float("-inf")), float("nan"), r))
    r = tl.where(tl.abs(y) == float("inf"), tl.where(tl.abs(x) == 1, 1.0, r), r)
    return tl.where(y == 0, 1.0, tl.where(x == 1, 1.0, r))


@triton.jit
def _small_power(x, n):
    # x ** n for an integer 0 <= n <= 7, by multiplications
    square = x * x
    power = tl.where((n & 1) != 0, x, 1.0) * tl.where((n & 2) != 0, square, 1.0)
    return tl.where((n & 4) != 0, power * (square * square), power)


@triton.jit
def _pow_of_half_types(x, y, DTYPE: tl.constexpr):
    # x ** y rounded to a half type. By logarithm: within 2**-21 (relative) for results up to 2**16 in
    # magnitude and 2**-16 over bfloat16's range, where libdevice's pow (ATen's) is within an ulp of
    # float32 at four times the cost; rounded, the two differ in about 1 element in 10,000, by an ulp.
    # Except where x ** y is exactly a tie between two half-type numbers: that takes an integer
    # 2 <= y <= 7 (more bits than a half type holds, few enough for float32), and those powers are
    # multiplied out, exactly.
    small = (libdevice.trunc(y) == y) & (y >= 2) & (y <= 7)
    if len(y.shape) == 0:  # a scalar exponent: one formula for the block
        if small:
            r = _small_power(x, y.to(tl.int32))
        else:
            r = _pow_by_logarithm(x, y, DTYPE)
    else:
        r = tl.where(small, _small_power(x, tl.where(small, y, 0.0).to(tl.int32)), _pow_by_logarithm(x, y, DTYPE))
    return r


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")], constexprs={"DTYPE": tl.float32})
@triton.jit
def pow_kernel(x, y, DTYPE: tl.constexpr):
    # DTYPE: the result's type; half types take _pow_of_half_types.
    if x.dtype.is_floating():
        if DTYPE == tl.float32:
            x, y = _broadcast(x, y)
            r = libdevice.pow(x, y)
        else:
            r = _pow_of_half_types(x, y, DTYPE)
    else:
        r = _int_pow(x, y)
    return r


pow_float16_kernel = pow_kernel.bind("pow_float16_kernel", DTYPE=tl.float16)
pow_bfloat16_kernel = pow_kernel.bind("pow_bfloat16_kernel", DTYPE=tl.bfloat16)


# -- pow for half-type results, KNOBS.half_fast_pow: a scalar on one side known on the host picks a kernel
# without the tests that do not apply, and 2**(y log2|x|) keeps float32's subnormal results. (Two tensors
# keep _pow_of_half_types: a variant applying pow's special rules only in blocks that need them took 0.84x
# ATen's speed on an H100, against 1.20x.) (1.5 * 2**23 + y) - 1.5 * 2**23 rounds y to an integer for
# |y| <= 2**22 with an addition instead of a rounding (which shares the slow pipe of the approximate
# functions), and the low bits of the sum hold that integer's low bits.
ROUNDER = tl.constexpr(12582912.0)


@triton.jit
def _small_exponent(y):
    # (small, n): y one of the integers 2..7, and y's low three bits where it is.
    shifted = y + ROUNDER
    small = ((shifted - ROUNDER) == y) & (y >= 2.0) & (y <= 7.0)
    return small, shifted.to(tl.int32, bitcast=True) & 7


@pointwise_dynamic(is_tensor=[False, True, False], promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def pow_positive_base_half_kernel(base, y, log2_base):
    # base ** y for a finite base > 0, not 1: 2**(y log2(base)), log2(base) from the host (rounded once,
    # where lg2.approx is within 2**-22), but for the integers 2..7, multiplied out as in _small_power.
    # Infinite exponents give 0 or inf, NaN gives NaN, and 0 gives 1.
    small, n = _small_exponent(y)
    r = tl.where(small, _small_power(base, n), exp2_with_subnormals(y * log2_base))
    return tl.where(y == 0, 1.0, r)


@pointwise_dynamic(is_tensor=[True, False], promotion_methods=[(0, 1, "DEFAULT")], constexprs={"DTYPE": tl.float16})
@triton.jit
def pow_fractional_float16_kernel(x, y, DTYPE: tl.constexpr):
    # x ** y for a finite scalar y that is no integer: NaN for finite negative bases, 1 for base 1.
    r = exp2_with_subnormals(y * _log2_of_base(tl.abs(x), DTYPE))
    return tl.where(x == 1, 1.0, tl.where((x < 0) & (x > float("-inf")), float("nan"), r))


pow_fractional_bfloat16_kernel = pow_fractional_float16_kernel.bind("pow_fractional_bfloat16_kernel",
                                                                    DTYPE=tl.bfloat16)


# pow(x, <scalar>) for the exponents ATen computes without pow (the exponent only promotes).
@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def pow_square_kernel(x, e):
    return x * x


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def pow_cube_kernel(x, e):
    return x * x * x


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def pow_sqrt_kernel(x, e):
    return _sqrt(x)


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def pow_rsqrt_kernel(x, e):
    return ieee_div(1.0, _sqrt(x))


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def pow_reciprocal_kernel(x, e):
    return ieee_div(1.0, x)


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def pow_inverse_square_kernel(x, e):
    return ieee_div(1.0, x * x)


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def maximum_kernel(x, y):
    return tl.maximum(x, y, propagate_nan=tl.PropagateNan.ALL)


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def minimum_kernel(x, y):
    return tl.minimum(x, y, propagate_nan=tl.PropagateNan.ALL)


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def fmax_kernel(x, y):
    if x.dtype.is_floating():
        r = tl.where(x != x, y, tl.where(y != y, x, tl.maximum(x, y)))
    else:
        r = tl.maximum(x, y)
    return r


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def fmin_kernel(x, y):
    if x.dtype.is_floating():
        r = tl.where(x != x, y, tl.where(y != y, x, tl.minimum(x, y)))
    else:
        r = tl.minimum(x, y)
    return r


@pointwise_dynamic(promotion_methods=[(0, 1, "INT_TO_FLOAT")], constexprs={"HALF": False})
@triton.jit
def atan2_kernel(y, x, HALF: tl.constexpr):
    y, x = _broadcast(y, x)
    return _atan2(y, x, HALF)


atan2_half_kernel = atan2_kernel.bind("atan2_half_kernel", HALF=True)


@triton.jit
def _atan2(y, x, HALF: tl.constexpr):
    """atan2(y, x) (ATen's argument order: ``atan2(self, other)`` with self the ordinate)."""
    if y.dtype == tl.float64:
        r = libdevice.atan2(y, x)
    else:
        # atan(u) of u = min(|x|, |y|) / max(|x|, |y|) in [0, 1], then the octant: one approximate
        # reciprocal where libdevice's atan2f takes an IEEE division. Both operands are scaled by a
        # power of 2 into the range where rcp.approx.ftz is accurate (quotients are exact then); for
        # float32 results Newton steps round 1 / d and u nearly correctly. Where u comes out NaN (0 / 0,
        # inf / inf, or a finite n / inf through the Newton step) it is 1 for inf / inf and 0 otherwise:
        # the octant rules then give C's atan2 at zeros and infinities.
        ax = tl.abs(x)
        ay = tl.abs(y)
        steep = ay > ax
        n = tl.where(steep, ax, ay)
        d = tl.where(steep, ay, ax)
        scale = tl.where(d > 8.5070592e37, 0.25, tl.where(d < 1.1754944e-38, 16777216.0, 1.0))
        n = n * scale
        d = d * scale
        rcp = reciprocal_of_normal(d, HALF)
        u = n * rcp
        if not HALF:
            u = tl.fma(tl.fma(-u, d, n), rcp, u)
        u = tl.where(u == u, u, tl.where(n == float("inf"), 1.0, 0.0))
        t = atan_tail(u, HALF)
        # the octant: steep, pi/2 -+ atan(u); x < 0 (-0 included), pi - atan(u), or pi/2 + atan(u) if
        # steep as well. The offset's float32 rounding and the tail are added after the main sum.
        negative = libdevice.signbit(x) != 0
        offset = tl.where(steep, HALF_PI, tl.where(negative, PI, 0.0))
        flip = steep != negative
        if HALF:
            r = offset + tl.where(flip, -(u + t), u + t)
        else:
            lo = tl.where(steep, HALF_PI_LO, tl.where(negative, PI_LO, 0.0))
            r = (offset + tl.where(flip, -u, u)) + (lo + tl.where(flip, -t, t))
        r = libdevice.copysign(r, y)
        r = tl.where((x != x) | (y != y), x + y, r)
    return r


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def hypot_kernel(x, y):
    x, y = _broadcast(x, y)
    return libdevice.hypot(x, y)


@pointwise_dynamic(promotion_methods=[(0, 1, "INT_TO_FLOAT")])
@triton.jit
def copysign_kernel(x, y):
    x, y = _broadcast(x, y)
    return libdevice.copysign(x, y)


@triton.jit
def _log1p_of_unit(t):
    # log1p(t) for float32 0 <= t <= 1 as 2 atanh(s), s = t / (2 + t) <= 1/3: 2s + 2s**3 R(s**2), R a
    # minimax fit (within 1.2 ulp); a third of libdevice's log1pf, which serves every t.
    s = t * fast_rcp(2.0 + t)
    z = s * s
    r = 0.14012229 * z + 0.13999571
    r = r * z + 0.2001085
    r = r * z + 0.33333206
    s2 = s + s
    return s2 + s2 * z * r


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def logaddexp_kernel(x, y):
    m = tl.maximum(x, y)
    if x.dtype == tl.float64:
        r = m + libdevice.log1p(libdevice.exp(-tl.abs(x - y)))
    else:
        r = m + _log1p_of_unit(tl.exp(-tl.abs(x - y)))
    return tl.where((x == y) & (tl.abs(x) == float("inf")), x, r)


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def logaddexp2_kernel(x, y):
    m = tl.maximum(x, y)
    if x.dtype == tl.float64:
        r = m + libdevice.log1p(libdevice.exp2(-tl.abs(x - y))) * 1.4426950408889634
    else:
        r = m + _log1p_of_unit(tl.exp2(-tl.abs(x - y))) * 1.4426950408889634
    return tl.where((x == y) & (tl.abs(x) == float("inf")), x, r)


@pointwise_dynamic(promotion_methods=[(0, 1, "INT_TO_FLOAT")])
@triton.jit
def xlogy_kernel(x, y):
    r = tl.where(x == 0, 0.0, x * libdevice.log(y))
    return tl.where(y != y, y, r)


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def nextafter_kernel(x, y):
    x, y = _broadcast(x, y)
    return libdevice.nextafter(x, y)


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def heaviside_kernel(x, values):
    return tl.where(x == 0, values, (x > 0).to(values.dtype))


@pointwise_dynamic(promotion_methods=[(0, 1, "INT_TO_FLOAT")])
@triton.jit
def ldexp_kernel(x, e):
    return x * libdevice.exp2(e)


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT"), (0, 1, "DEFAULT")])
@triton.jit
def polar_kernel(magnitude, angle):
    return magnitude * libdevice.cos(angle), magnitude * libdevice.sin(angle)


@pointwise_dynamic(output_dtypes=[torch.int64])
@triton.jit
def polar_packed_kernel(magnitude, angle):
    # float32 operands: both parts of a complex64 in one 8-byte word (the real part in the low half),
    # stored to a contiguous int64 view of the result instead of two stores with a stride of 2.
    real = (magnitude * libdevice.cos(angle)).to(tl.uint32, bitcast=True).to(tl.uint64)
    imag = (magnitude * libdevice.sin(angle)).to(tl.uint32, bitcast=True).to(tl.uint64)
    return (real | (imag << 32)).to(tl.int64, bitcast=True)


@triton.jit
def _trailing_zeros(low, BFIND: tl.constexpr):
    # log2 of the power of two low = v & -v. BFIND on the GPU: one bfind (the highest set bit); otherwise its
    # float32 exponent (the interpreter runs no inline assembly).
    if BFIND and ON_GPU:
        if low.dtype.primitive_bitwidth == 64:
            zeros = tl.inline_asm_elementwise("bfind.u64 $0, $1;", "=r,l", [low], dtype=tl.int32, is_pure=True,
                                              pack=1)
        else:
            zeros = tl.inline_asm_elementwise("bfind.u32 $0, $1;", "=r,r", [low], dtype=tl.int32, is_pure=True,
                                              pack=1)
    else:
        zeros = (low.to(tl.float32).to(tl.int32, bitcast=True) >> 23) - 127
    return zeros.to(low.dtype)


@triton.jit
def _trailing_zeros_in_width(low, BFIND: tl.constexpr):
    # _trailing_zeros(low) modulo the type's width, as a shift takes its amount (low == 0: any amount): from
    # the float32 exponent 127 + ctz, 128 + ctz is ctz modulo 32 and 64, one addition instead of a subtraction.
    if BFIND and ON_GPU:
        zeros = _trailing_zeros(low, BFIND)
    else:
        zeros = ((low.to(tl.float32).to(tl.int32, bitcast=True) >> 23) + 1).to(low.dtype)
    return zeros & (low.dtype.primitive_bitwidth - 1)


@triton.jit
def _odd_part(v, BFIND: tl.constexpr):
    # (v >> ctz(v), ctz(v)) for v > 0, (0, anything) for v == 0.
    zeros = _trailing_zeros(v & -v, BFIND)
    return v >> zeros, zeros


@triton.jit
def _euclid_gcd(a, b):
    # |the most negative integer| is itself: ATen's Euclid, which gives it (and signs) its own way. The block
    # loops until every lane is done.
    while tl.max((a != 0).to(tl.int32), axis=0) > 0:
        busy = a != 0
        c = a
        a = tl.where(busy, b % tl.where(busy, a, 1), 0)
        b = tl.where(busy, c, b)
    return b


@triton.jit
def _binary_gcd(a, b, STEPS: tl.constexpr, BFIND: tl.constexpr, LEAN: tl.constexpr):
    # (odd part of gcd, its factors of two, a or b zero) for a, b >= 0. Binary GCD: gcd(u, v) = gcd(min(u, v),
    # |u - v|) for odd u, v, with the factors of two of |u - v| dropped; no division, and fewer steps than
    # Euclid for the slowest lane of a block. STEPS steps per check of the block. (g, g) is a fixed point, so
    # lanes that are done may take extra steps. LEAN leaves out the test of |u - v| == 0 (0 shifted stays 0):
    # (g, g) then goes to (g, 0) and stays at (0, g), whose larger half is g. Narrow types run in int32, where
    # |u - v| is signed.
    wide = tl.int64 if a.dtype.primitive_bitwidth == 64 else tl.int32
    zero = (a == 0) | (b == 0)
    u, twos_u = _odd_part(tl.where(zero, 1, a).to(wide), BFIND)
    v, twos_v = _odd_part(tl.where(zero, 1, b).to(wide), BFIND)
    if LEAN:
        while tl.max(((u != v) & (tl.minimum(u, v) != 0)).to(tl.int32), axis=0) > 0:
            for _ in tl.static_range(STEPS):
                t = u - v  # the trailing zeros of |t| are t's
                zeros = _trailing_zeros_in_width(t & -t, BFIND)
                u = tl.minimum(u, v)
                v = tl.abs(t) >> zeros
        u = tl.maximum(u, v)
    else:
        while tl.max((u != v).to(tl.int32), axis=0) > 0:
            for _ in tl.static_range(STEPS):
                d = tl.abs(u - v)
                u = tl.minimum(u, v)
                v = tl.where(d == 0, u, _odd_part(d, BFIND)[0])
    return u, tl.minimum(twos_u, twos_v), zero


@triton.jit
def _magnitudes(x, y):
    # |x| and |y|, broadcast to one shape and dtype.
    return tl.abs(x) + y * 0, tl.abs(y) + x * 0


@triton.jit
def _gcd(x, y, STEPS: tl.constexpr, BFIND: tl.constexpr, LEAN: tl.constexpr):
    a, b = _magnitudes(x, y)
    if tl.min(tl.minimum(a, b), axis=0) < 0:
        b = _euclid_gcd(a, b)
    else:
        odd, twos, zero = _binary_gcd(a, b, STEPS, BFIND, LEAN)
        b = tl.where(zero, a | b, (odd << twos).to(a.dtype))
    return b


@triton.jit
def _inverse_of_odd(v):
    # v**-1 modulo 2**bits for odd v, by Newton's iteration: v * v = 1 (mod 8), and each step doubles the bits.
    inverse = v
    for _ in tl.static_range(5 if v.dtype.primitive_bitwidth == 64 else 4):
        inverse = inverse * (2 - v * inverse)
    return inverse


@triton.jit
def _fits_int32(a, b):
    # Whether every lane of the block has a and b (magnitudes, int64) below 2**31; |the most negative int64|
    # is negative and does not fit.
    return tl.max((((a | b) >> 31) != 0).to(tl.int32), axis=0) == 0


@triton.jit
def _gcd64(x, y, STEPS: tl.constexpr, BFIND: tl.constexpr, LEAN: tl.constexpr, WIDE_STEPS: tl.constexpr,
           WIDE_BFIND: tl.constexpr, WIDE_LEAN: tl.constexpr, NARROW: tl.constexpr):
    # int64 gcd: a block below 2**31 in magnitude runs the 32-bit loop (its gcd is the same), others _gcd.
    a, b = _magnitudes(x, y)
    if NARROW:
        if _fits_int32(a, b):
            a32 = a.to(tl.int32)
            b32 = b.to(tl.int32)
            odd, twos, zero = _binary_gcd(a32, b32, STEPS, BFIND, LEAN)
            g = tl.where(zero, a32 | b32, odd << twos).to(tl.int64)
        else:
            g = _gcd(x, y, WIDE_STEPS, WIDE_BFIND, WIDE_LEAN)
    else:
        g = _gcd(x, y, WIDE_STEPS, WIDE_BFIND, WIDE_LEAN)
    return g


@triton.jit
def _lcm_by_division(x, y, g):
    # ATen's |x / g * y|; 0 where g is (x and y both 0).
    return tl.where(g == 0, 0, tl.abs(x // tl.where(g == 0, 1, g) * y))


@triton.jit
def _lcm(x, y, STEPS: tl.constexpr, BFIND: tl.constexpr, LEAN: tl.constexpr, INVERSE: tl.constexpr):
    if INVERSE:
        # x / g is exact: x >> twos times the inverse of g's odd part modulo 2**bits, in place of a division
        # (Euclid's branch keeps the division).
        a, b = _magnitudes(x, y)
        if tl.min(tl.minimum(a, b), axis=0) < 0:
            r = _lcm_by_division(x, y, _euclid_gcd(a, b))
        else:
            odd, twos, zero = _binary_gcd(a, b, STEPS, BFIND, LEAN)
            r = tl.where(zero, 0, tl.abs((x >> twos) * _inverse_of_odd(odd) * y))
    else:
        r = _lcm_by_division(x, y, _gcd(x, y, STEPS, BFIND, LEAN))
    return r


@triton.jit
def _narrow_lcm(a, b, STEPS: tl.constexpr, BFIND: tl.constexpr, LEAN: tl.constexpr, INVERSE: tl.constexpr):
    # lcm of int64 magnitudes a, b below 2**31: gcd and the exact quotient a / g (below 2**31) in int32, the
    # product in int64, where it is below 2**62: ATen's |x / g * y| without a wrap-around to mirror.
    a32 = a.to(tl.int32)
    b32 = b.to(tl.int32)
    odd, twos, zero = _binary_gcd(a32, b32, STEPS, BFIND, LEAN)
    if INVERSE:
        quotient = (a32 >> twos) * _inverse_of_odd(odd)
    else:
        quotient = a32 // tl.where(zero, 1, odd << twos)
    return tl.where(zero, 0, quotient.to(tl.int64) * b32.to(tl.int64))


@triton.jit
def _lcm64(x, y, STEPS: tl.constexpr, BFIND: tl.constexpr, LEAN: tl.constexpr, INVERSE: tl.constexpr,
           WIDE_STEPS: tl.constexpr, WIDE_BFIND: tl.constexpr, WIDE_LEAN: tl.constexpr,
           WIDE_INVERSE: tl.constexpr, NARROW: tl.constexpr):
    if NARROW:
        a, b = _magnitudes(x, y)
        if _fits_int32(a, b):
            r = _narrow_lcm(a, b, STEPS, BFIND, LEAN, INVERSE)
        else:
            r = _lcm(x, y, WIDE_STEPS, WIDE_BFIND, WIDE_LEAN, WIDE_INVERSE)
    else:
        r = _lcm(x, y, WIDE_STEPS, WIDE_BFIND, WIDE_LEAN, WIDE_INVERSE)
    return r


# The knobs of gcd and lcm (KNOBS.gcd_*, gcd64_*, lcm_*, lcm64_*) as constexprs; the defaults are the
# shipped kernel. The WIDE_* ones apply to int64, the others to narrower types and narrowed int64 blocks.
_GCD_DEFAULTS = {"STEPS": 4, "BFIND": True, "LEAN": True, "WIDE_STEPS": 4, "WIDE_BFIND": False, "WIDE_LEAN": True,
                 "NARROW": True}
_LCM_DEFAULTS = {**_GCD_DEFAULTS, "INVERSE": True, "WIDE_STEPS": 2, "WIDE_LEAN": False, "WIDE_INVERSE": True}


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")], constexprs=_GCD_DEFAULTS)
@triton.jit
def gcd_kernel(x, y, STEPS: tl.constexpr, BFIND: tl.constexpr, LEAN: tl.constexpr, WIDE_STEPS: tl.constexpr,
               WIDE_BFIND: tl.constexpr, WIDE_LEAN: tl.constexpr, NARROW: tl.constexpr):
    if (x + y * 0).dtype.primitive_bitwidth == 64:
        r = _gcd64(x, y, STEPS, BFIND, LEAN, WIDE_STEPS, WIDE_BFIND, WIDE_LEAN, NARROW)
    else:
        r = _gcd(x, y, STEPS, BFIND, LEAN)
    return r


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")], constexprs=_LCM_DEFAULTS)
@triton.jit
def lcm_kernel(x, y, STEPS: tl.constexpr, BFIND: tl.constexpr, LEAN: tl.constexpr, INVERSE: tl.constexpr,
               WIDE_STEPS: tl.constexpr, WIDE_BFIND: tl.constexpr, WIDE_LEAN: tl.constexpr,
               WIDE_INVERSE: tl.constexpr, NARROW: tl.constexpr):
    if (x + y * 0).dtype.primitive_bitwidth == 64:
        r = _lcm64(x, y, STEPS, BFIND, LEAN, INVERSE, WIDE_STEPS, WIDE_BFIND, WIDE_LEAN, WIDE_INVERSE, NARROW)
    else:
        if x.dtype.primitive_bitwidth < 32:
            # C++ computes |x / g * y| in int for narrower types, then narrows: the same wrap-around.
            x = x.to(tl.int32)
            y = y.to(tl.int32)
        r = _lcm(x, y, STEPS, BFIND, LEAN, INVERSE)
    return r


# -- routes -----------------------------------------------------------------------------------------


def _zero_divisor(x, y) -> bool:
    # ATen on CPU raises ZeroDivisionError for an integer division by zero; on the GPU it computes.
    # (Only the interpreter gets here, with CPU tensors: NumPy looks without dispatching anything.)
    if not device.interpreter or not both_integral(x, y):
        return False
    if isinstance(y, torch.Tensor):
        return bool((y.detach().numpy() == 0).any())
    return y == 0


def _integer_division_refused(x, y) -> bool:
    return both_bool(x, y) or _zero_divisor(x, y)


def _not_integers(x, y) -> bool:
    return is_bool(x) or is_bool(y) or not both_integral(x, y)


def _alpha_ok(x, y, alpha) -> bool:
    # ATen's rules: a bool alpha only for bool results, a float alpha only for floating results.
    if type(alpha) is bool:
        return both_bool(x, y)
    if type(alpha) is float:
        return not both_integral(x, y)
    return type(alpha) is int


def _alpha_fits(alpha, x, y) -> bool:
    # ATen converts alpha to the result dtype on CPU, and on CUDA to the type it computes in (float32
    # for half types): 1e6 overflows float16 only on CPU.
    if device.interpreter:
        return fits_result(alpha, x, y)
    return fits(alpha, promote(x, y, alpha)[0])


def add(self, other, alpha=1):
    """self + alpha * other."""
    if type(alpha) is int and alpha == 1:
        return add_kernel, (self, other)
    if not _alpha_ok(self, other, alpha):
        return None
    if both_bool(self, other):
        return (add_kernel, (self, other)) if alpha else None
    if alpha == 1:
        return add_kernel, (self, other)
    if not _alpha_fits(alpha, self, other):
        return None
    return add_alpha_kernel, (self, other, alpha)


def sub(self, other, alpha=1):
    """self - alpha * other; ATen refuses bool operands."""
    if is_bool(self) or is_bool(other) or not _alpha_ok(self, other, alpha):
        return None
    if alpha == 1:
        return sub_kernel, (self, other)
    if not _alpha_fits(alpha, self, other):
        return None
    return sub_alpha_kernel, (self, other, alpha)


def rsub(self, other, alpha=1):
    """other - alpha * self."""
    return sub(other, self, alpha)


_HALVES = (torch.float16, torch.bfloat16)
_ROUNDED_DIV = {
    ("trunc", None): trunc_div_kernel, ("trunc", torch.float16): trunc_div_float16_kernel,
    ("trunc", torch.bfloat16): trunc_div_bfloat16_kernel, ("floor", None): floor_div_kernel,
    ("floor", torch.float16): floor_div_float16_kernel, ("floor", torch.bfloat16): floor_div_bfloat16_kernel,
}
_EXACT_FLOOR_DIV = {torch.float16: floor_div_float16_exact_kernel, torch.bfloat16: floor_div_bfloat16_exact_kernel}


def _half_result(x, y):
    """The half type a division of x and y computes in, or None."""
    if (isinstance(x, torch.Tensor) and x.dtype in _HALVES) or (isinstance(y, torch.Tensor) and y.dtype in _HALVES):
        dtype = torch.result_type(x, y)
        return dtype if dtype in _HALVES else None
    return None


def div(self, other, rounding_mode=None):
    """self / other: true division (integers give floats), or rounded towards zero or down."""
    if rounding_mode is None:
        return true_div_kernel, (self, other)
    if rounding_mode not in ("trunc", "floor") or _integer_division_refused(self, other):
        return None
    half = _half_result(self, other)
    if rounding_mode == "floor" and half is not None and KNOBS.half_exact_floor_div:
        return _EXACT_FLOOR_DIV[half], (self, other)
    return _ROUNDED_DIV[rounding_mode, half], (self, other)


def floor_divide(self, other):
    """Division rounded down (Python's //)."""
    return div(self, other, "floor")


# ATen picks these by the exponent's value, then the rest by the exponent converted to the tensor's
# dtype (rounded to a half type): 2, 3 and -2 by formula, others by pow.
_POW_BY_VALUE = {0.5: pow_sqrt_kernel, -0.5: pow_rsqrt_kernel, -1: pow_reciprocal_kernel}
_POW_BY_CONVERTED = {2: pow_square_kernel, 3: pow_cube_kernel, -2: pow_inverse_square_kernel}
_POW = {None: pow_kernel, torch.float16: pow_float16_kernel, torch.bfloat16: pow_bfloat16_kernel}


def _fast_half_pow(self, exponent):
    """The kernel and arguments of ``KNOBS.half_fast_pow`` for a half-type result, or None."""
    if not isinstance(self, torch.Tensor):
        if 0 < self < math.inf and self != 1:
            return pow_positive_base_half_kernel, (self, exponent, math.log2(self))
        return None
    if isinstance(exponent, torch.Tensor):
        return None
    if math.isfinite(exponent) and exponent != int(exponent):
        bfloat16 = self.dtype is torch.bfloat16
        return (pow_fractional_bfloat16_kernel if bfloat16 else pow_fractional_float16_kernel), (self, exponent)
    return None


def pow(self, exponent):
    """self ** exponent, for a Tensor or a scalar on either side."""
    if both_bool(self, exponent):
        return None
    if isinstance(exponent, torch.Tensor) or not isinstance(self, torch.Tensor):
        half = _half_result(self, exponent)
        if half is not None and not isinstance(self, torch.Tensor):
            self = storage_scalar(self, half)  # ATen converts a scalar base to the result dtype
            if self is None:
                return None
        fast = _fast_half_pow(self, exponent) if half is not None and KNOBS.half_fast_pow else None
        return fast or (_POW[half], (self, exponent))
    if type(exponent) not in (int, float, bool) or not fits_result(exponent, self):
        return None
    if type(exponent) is int and exponent < 0 and is_integral(self):
        return None  # ATen: integers to negative integer powers are not allowed
    if type(exponent) is bool:
        return pow_kernel, (self, exponent)
    kernel = _POW_BY_VALUE.get(exponent)
    if kernel is not None:
        return kernel, (self, exponent)
    if self.dtype in _HALVES or self.dtype is torch.float32:
        exponent = storage_scalar(exponent, self.dtype)  # ATen's exp_scalar.to<scalar_t>()
    kernel = _POW_BY_CONVERTED.get(exponent)
    if kernel is not None:
        return kernel, (self, exponent)
    half = _half_result(self, exponent)
    fast = _fast_half_pow(self, exponent) if half is not None and KNOBS.half_fast_pow else None
    return fast or (_POW[half], (self, exponent))


mul = binary_route(mul_kernel, "self * other.")
remainder = binary_route(remainder_kernel, "Remainder with the sign of the divisor (Python's %).",
                   _integer_division_refused)
fmod = binary_route(fmod_kernel, "Remainder with the sign of the dividend (C's fmod).", _integer_division_refused)
maximum = binary_route(maximum_kernel, "Elementwise maximum; NaN wins.")
minimum = binary_route(minimum_kernel, "Elementwise minimum; NaN wins.")
fmax = binary_route(fmax_kernel, "Elementwise maximum; a number wins over NaN.")
fmin = binary_route(fmin_kernel, "Elementwise minimum; a number wins over NaN.")


def _atan2_launch(self, other, out0=None):
    half = out0.dtype in _HALVES if out0 is not None else _half_result(self, other) is not None
    return (atan2_half_kernel if half else atan2_kernel)(self, other, out0=out0)


atan2 = binary_route(_atan2_launch, "atan2(self, other); results rounded to a half type take a shorter polynomial.")
copysign = binary_route(copysign_kernel, "The magnitude of self with the sign of other.")
xlogy = binary_route(xlogy_kernel, "self * log(other), 0 where self is 0.")
ldexp = binary_route(ldexp_kernel, "self * 2 ** other.")
# ATen defines these on floating dtypes only: integers go back to it, and it raises.
hypot = binary_route(hypot_kernel, "sqrt(self**2 + other**2).", both_integral)
logaddexp = binary_route(logaddexp_kernel, "log(exp(self) + exp(other)).", both_integral)
logaddexp2 = binary_route(logaddexp2_kernel, "log2(2**self + 2**other).", both_integral)
_GCD_VARIANTS = {}


def _gcd_variant(kernel, lcm: bool):
    """``kernel`` (gcd_kernel or lcm_kernel) with the constexprs of the current gcd and lcm knobs."""
    settings = {"STEPS": KNOBS.gcd_steps_per_check, "BFIND": KNOBS.gcd_ctz_bfind, "LEAN": KNOBS.gcd_lean_steps,
                "WIDE_BFIND": KNOBS.gcd64_ctz_bfind, "NARROW": KNOBS.gcd64_narrow_blocks}
    if lcm:
        settings.update(INVERSE=KNOBS.lcm_inverse_division, WIDE_STEPS=KNOBS.lcm64_steps_per_check,
                        WIDE_LEAN=KNOBS.lcm64_lean_steps, WIDE_INVERSE=KNOBS.lcm64_inverse_division)
    else:
        settings.update(WIDE_STEPS=KNOBS.gcd64_steps_per_check, WIDE_LEAN=KNOBS.gcd64_lean_steps)
    if all(kernel.constexprs[name] == value for name, value in settings.items()):
        return kernel
    key = (kernel.__name__, *settings.values())
    bound = _GCD_VARIANTS.get(key)
    if bound is None:
        name = "_".join([kernel.__name__, *(f"{k.lower()}{int(v)}" for k, v in settings.items())])
        bound = _GCD_VARIANTS[key] = kernel.bind(name, **settings)
    return bound


def gcd(self, other):
    """Greatest common divisor of integers."""
    return None if _not_integers(self, other) else (_gcd_variant(gcd_kernel, False), (self, other))


def lcm(self, other):
    """Least common multiple of integers."""
    return None if _not_integers(self, other) else (_gcd_variant(lcm_kernel, True), (self, other))


def nextafter(self, other):
    """The next float after self towards other (float32 and float64: half types would round in between)."""
    if self.dtype not in (torch.float32, torch.float64) or other.dtype is not self.dtype:
        return None
    return nextafter_kernel, (self, other)


def heaviside(self, values):
    """0, values or 1 for self < 0, == 0, > 0; ATen wants equal dtypes."""
    if not isinstance(values, torch.Tensor) or values.dtype is not self.dtype:
        return None
    return heaviside_kernel, (self, values)


_ATEN_POLAR_OUT = AtenFallback("polar.out")
_COMPLEX_OF = {torch.float32: torch.complex64, torch.float64: torch.complex128}


def _polar(magnitude, angle, out0=None):
    # complex64 results are written through an int64 view, complex128 ones through a real view.
    complex_dtype = _COMPLEX_OF[magnitude.dtype]
    if out0 is not None and out0.dtype is not complex_dtype:
        return _ATEN_POLAR_OUT(magnitude, angle, out=out0)
    shape = torch.broadcast_shapes(magnitude.shape, angle.shape)
    if out0 is None:
        out0 = torch.empty(shape, dtype=complex_dtype, device=magnitude.device)
    elif tuple(out0.shape) != tuple(shape):
        torch.ops.aten._resize_output_(out0, shape, out0.device)
    if complex_dtype is torch.complex64:
        polar_packed_kernel(magnitude, angle, out0=out0.view(torch.int64))
    else:
        parts = torch.view_as_real(out0)
        polar_kernel(magnitude, angle, out0=parts[..., 0], out1=parts[..., 1])
    return out0


def polar(abs, angle):
    """abs * (cos(angle) + i sin(angle)), for float32 or float64 operands of one dtype."""
    if abs.dtype not in _COMPLEX_OF or angle.dtype is not abs.dtype:
        return None
    return _polar, (abs, angle)
