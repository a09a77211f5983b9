"""Unary math ops: the kernels, then the launchers of ops that take more than a tensor.

Kernels follow ATen's CUDA formulas in the same order of operations, so that results match to the
last bit or two. Half types arrive as float32 (``pointwise_dynamic`` computes them in float32). On
NVIDIA GPUs Triton's float32 ``/`` and ``tl.sqrt`` are approximate while ATen's are IEEE-rounded,
hence ``div_rn`` and ``sqrt_rn``; transcendental functions come from libdevice, as in ATen.
"""

from __future__ import annotations

import functools
import math
import struct

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from flag_gems import pointwise_dynamic
from flag_gems.runtime import device
from gems_pointwise.knobs import KNOBS


# -- shared device helpers -------------------------------------------------------------------------
@triton.jit
def div_rn(a, b):
    """IEEE-rounded ``a / b`` (``b`` a tensor): Triton's float32 ``/`` is approximate on NVIDIA GPUs."""
    if b.dtype == tl.float64:
        return a / b
    else:
        return tl.div_rn(a, b)


@triton.jit
def sqrt_rn(x):
    """IEEE-rounded square root: ``tl.sqrt`` is approximate for float32 on NVIDIA GPUs."""
    if x.dtype == tl.float64:
        return tl.sqrt(x)
    else:
        return tl.sqrt_rn(x)


@triton.jit
def rounded_to(x, DTYPE: tl.constexpr):
    """float32 ``x`` rounded to the half type ``DTYPE`` (and back to float32); float32 passes through.
    ATen computes some ops on half types in their own precision, one rounding per step."""
    if DTYPE == tl.float32:
        r = x
    else:
        # Two conversions on the GPU; core's interpreter shim rounds float32 -> bfloat16 to nearest even too.
        r = x.to(DTYPE).to(tl.float32)
    return r


# libdevice's approximate (one MUFU instruction) functions exist on the GPU only: the interpreter
# computes the accurate ones in their place.
ON_GPU = tl.constexpr(not device.interpreter)
LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def fast_log2(x):
    """float32 log2 within 2**-22 (absolute for x in [0.5, 2], relative elsewhere): lg2.approx.f32."""
    if ON_GPU:
        r = libdevice.fast_log2f(x)
    else:
        r = tl.log2(x)
    return r


@triton.jit
def log2_with_subnormals(x):
    """fast_log2 that keeps float32's subnormal inputs (bfloat16 has them), which fast_log2's
    lg2.approx.ftz flushes to zero: lg2.approx.f32 without ftz, for which ptxas scales them by 2**24 around
    the instruction (one compare and two predicated instructions, fewer than the same in Triton's selects)."""
    if ON_GPU:
        r = tl.inline_asm_elementwise("lg2.approx.f32 $0, $1;", "=f,f", [x], dtype=tl.float32, is_pure=True,
                                      pack=1)
    else:
        r = tl.log2(x)
    return r


@triton.jit
def fast_exp2(x):
    """float32 2**x within 2**-22 relative, subnormal inputs and results flushed to zero: ex2.approx.ftz.f32,
    one instruction where libdevice's exp2f adds range fix-ups."""
    if ON_GPU:
        r = tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32, is_pure=True,
                                      pack=1)
    else:
        r = tl.exp2(x)
    return r


@triton.jit
def exp2_with_subnormals(s):
    """2**s within 2**-21 relative, float32's subnormal results kept (bfloat16 has them too): (2**(s/2))**2,
    whose ex2.approx stays normal, and whose product rounds once. Two multiplications where a test for
    the subnormal range and its selections would load the slower pipe of comparisons and selections."""
    h = fast_exp2(s * 0.5)
    return h * h


@triton.jit
def fast_rcp(x):
    """1 / x: for float32 within 1 ulp, subnormal inputs and results flushed to zero (rcp.approx.ftz.f32,
    one instruction where Triton's ``/`` takes 8 and an IEEE division 20); for float64 exact."""
    if ON_GPU and x.dtype == tl.float32:
        r = tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32, is_pure=True,
                                      pack=1)
    else:
        r = 1.0 / x
    return r


@triton.jit
def sigmoid_rn(x):
    """``1 / (1 + exp(-x))``, ATen's formula."""
    return div_rn(1.0, 1.0 + libdevice.exp(-x))


@triton.jit
def sigmoid_approx(x):
    """ATen's formula with Triton's approximate ``/`` (``KNOBS.half_approx_division``): for results
    rounded to a half type. Not rcp.approx.ftz: bfloat16 keeps float32's subnormal results (x < -87)."""
    return 1.0 / (1.0 + libdevice.exp(-x))


# -- kernels ---------------------------------------------------------------------------------------
def _unary(kind: str, **constexprs):
    return pointwise_dynamic(promotion_methods=[(0, kind)], constexprs=constexprs)


@_unary("COMPLEX_TO_FLOAT")
@triton.jit
def abs_kernel(x):
    if x.dtype == tl.int1:
        return x  # ATen's CUDA kernel takes bool (its CPU kernel refuses it)
    else:
        return tl.abs(x)


@_unary("DEFAULT")
@triton.jit
def neg_kernel(x):
    if x.dtype.is_floating():
        return x * -1.0  # Triton's -x is 0 - x, which turns +0.0 into +0.0 instead of -0.0
    else:
        return -x


@_unary("INT_TO_FLOAT")
@triton.jit
def reciprocal_kernel(x):
    return div_rn(1.0, x)


@_unary("INT_TO_FLOAT")
@triton.jit
def sqrt_kernel(x):
    return sqrt_rn(x)


@_unary("INT_TO_FLOAT")
@triton.jit
def rsqrt_kernel(x):
    return libdevice.rsqrt(x)


@_unary("INT_TO_FLOAT")
@triton.jit
def exp_kernel(x):
    return libdevice.exp(x)


@_unary("INT_TO_FLOAT")
@triton.jit
def exp2_kernel(x):
    return libdevice.exp2(x)


@_unary("INT_TO_FLOAT")
@triton.jit
def expm1_kernel(x):
    return libdevice.expm1(x)


@_unary("INT_TO_FLOAT")
@triton.jit
def log_kernel(x):
    return libdevice.log(x)


@_unary("INT_TO_FLOAT")
@triton.jit
def log2_kernel(x):
    return libdevice.log2(x)


@_unary("INT_TO_FLOAT")
@triton.jit
def log10_kernel(x):
    return libdevice.log10(x)


@_unary("INT_TO_FLOAT")
@triton.jit
def log1p_kernel(x):
    return libdevice.log1p(x)


@_unary("INT_TO_FLOAT")
@triton.jit
def sin_kernel(x):
    return libdevice.sin(x)


@_unary("INT_TO_FLOAT")
@triton.jit
def cos_kernel(x):
    return libdevice.cos(x)


@_unary("INT_TO_FLOAT")
@triton.jit
def tan_kernel(x):
    return libdevice.tan(x)


@_unary("INT_TO_FLOAT")
@triton.jit
def asin_kernel(x):
    return libdevice.asin(x)


@_unary("INT_TO_FLOAT")
@triton.jit
def acos_kernel(x):
    return libdevice.acos(x)


# pi / 2 and pi as float32 numbers plus what they leave out, for results that add an offset to atan.
HALF_PI = tl.constexpr(1.5707963705062866)
HALF_PI_LO = tl.constexpr(-4.371139000186243e-08)
PI = tl.constexpr(3.1415927410125732)
PI_LO = tl.constexpr(-8.742278000372485e-08)


@triton.jit
def atan_tail(u, HALF: tl.constexpr):
    """float32 atan(u) - u for u in [0, 1]: u**3 P(u**2), P a minimax fit (u + the tail within 1.2 ulp of
    atan); for results rounded to a half type a shorter P, within 5e-6 (1% of a float16 ulp)."""
    s = u * u
    if HALF:
        p = -1.3954938e-2 * s + 5.8769901e-2
        p = p * s - 1.2251475e-1
        p = p * s + 1.9618302e-1
        p = p * s - 3.3308899e-1
    else:
        p = 2.9745889e-3 * s - 1.6581178e-2
        p = p * s + 4.3553531e-2
        p = p * s - 7.5805776e-2
        p = p * s + 1.0678940e-1
        p = p * s - 1.4214209e-1
        p = p * s + 1.9994137e-1
        p = p * s - 3.3333167e-1
    return u * s * p


@triton.jit
def reciprocal_of_normal(a, HALF: tl.constexpr):
    """1 / a for a in [2**-126, 2**126]: rcp.approx, then for float32 results one Newton step."""
    r = fast_rcp(a)
    if not HALF:
        r = tl.fma(tl.fma(-a, r, 1.0), r, r)
    return r


@_unary("INT_TO_FLOAT", HALF=False)
@triton.jit
def atan_kernel(x, HALF: tl.constexpr):
    if x.dtype == tl.float64:
        r = libdevice.atan(x)
    else:
        # atan(|x|) on [0, 1], and pi/2 - atan(1 / |x|) above: one approximate reciprocal where
        # libdevice's atanf (a rational approximation) takes two IEEE divisions. For float32 results
        # pi/2 - u rounds once and the tail and pi/2's remainder are added after.
        a = tl.abs(x)
        big = a > 1.0
        u = tl.where(big, tl.where(a < 8.5070592e37, reciprocal_of_normal(a, HALF), 0.0), a)  # 2**126 on: pi/2
        t = atan_tail(u, HALF)
        if HALF:
            r = tl.where(big, HALF_PI - (u + t), u + t)
        else:
            r = tl.where(big, (HALF_PI - u) + (HALF_PI_LO - t), u + t)
        r = libdevice.copysign(r, x)
    return r


atan_half_kernel = atan_kernel.bind("atan_half_kernel", HALF=True)


@_unary("INT_TO_FLOAT", HALF=False)
@triton.jit
def sinh_kernel(x, HALF: tl.constexpr):
    if x.dtype == tl.float64:
        r = libdevice.sinh(x)
    elif HALF:
        # Results rounded to a half type: e = e**a / 2 from one ex2.approx (within 6e-6 over float32's
        # range, the rounding of a * log2(e) included), sinh = e - 1 / (4 e); below 1/8, where that
        # difference cancels, a + a**3 / 6 (within 2e-6 there). e**a / 2 overflows where sinh does.
        a = tl.abs(x)
        e = fast_exp2(a * 1.4426950408889634 - 1.0)
        r = tl.where(a < 0.125, a + a * (a * a) * 0.16666667, e - 0.25 * fast_rcp(e))
        r = libdevice.copysign(r, x)
    else:
        # Without branches: Taylor's series to x**9 below 1 (within 2.5e-8 there); above,
        # (e**a - e**-a) / 2 = h * (e**c / 2) - (e**-c / 2) / h with h = e**(a - c), c = 831 / 1024: a - c
        # is exact for 1 <= a < 2**13, h is finite wherever sinh is, and e**c / 2 is a float32 number
        # to 2**-33. (libdevice's sinhf branches, and scales an exp of its own.)
        a = tl.abs(x)
        s = x * x
        p = 2.7557319e-6 * s + 1.9841270e-4
        p = p * s + 8.3333333e-3
        p = p * s + 1.6666667e-1
        h = libdevice.exp(a - 0.8115234375)
        big = tl.fma(h, 1.1256675719334925, -0.22209043436384135 * fast_rcp(h))  # h e**c / 2 rounded once
        r = tl.where(a < 1.0, a + a * s * p, big)
        r = libdevice.copysign(r, x)
    return r


sinh_half_kernel = sinh_kernel.bind("sinh_half_kernel", HALF=True)


@_unary("INT_TO_FLOAT")
@triton.jit
def cosh_kernel(x):
    return libdevice.cosh(x)


@_unary("INT_TO_FLOAT")
@triton.jit
def tanh_kernel(x):
    return libdevice.tanh(x)


@_unary("INT_TO_FLOAT", HALF=False)
@triton.jit
def asinh_kernel(x, HALF: tl.constexpr):
    if x.dtype == tl.float64:
        r = libdevice.asinh(x)
    else:
        # asinh(a) = a + a**3 Q(a**2) below 0.75, Q a minimax fit (within 0.7 ulp in float32); above,
        # log(a + sqrt(a**2 + 1)), or log(a) + log(2) from 2**12 on (where a**2 + 1 rounds to a**2, and
        # later overflows). For results rounded to a half type the log is lg2.approx's (within 8 ulp
        # of float32 there). libdevice's asinhf takes an IEEE division and a log1p.
        a = tl.abs(x)
        s = x * x
        q = -2.9908456e-3 * s + 1.0468472e-2
        q = q * s - 1.9713618e-2
        q = q * s + 2.9774485e-2
        q = q * s - 4.4565905e-2
        q = q * s + 7.4995294e-2
        q = q * s - 1.6666657e-1
        huge = a > 4096.0
        y = tl.where(huge, a, a + tl.sqrt(s + 1.0))
        if HALF:
            big = (fast_log2(y) + tl.where(huge, 1.0, 0.0)) * 0.6931471805599453
        else:
            big = libdevice.log(y) + tl.where(huge, 0.6931471805599453, 0.0)
        r = libdevice.copysign(tl.where(a < 0.75, a + a * s * q, big), x)
    return r


asinh_half_kernel = asinh_kernel.bind("asinh_half_kernel", HALF=True)


@_unary("INT_TO_FLOAT")
@triton.jit
def asinh_short_kernel(x):
    # Results rounded to a half type (KNOBS.half_short_asinh): as asinh_half_kernel, with Q of degree 4
    # (within 4e-6 relative, 4e-7 of asinh) for its degree 6.
    a = tl.abs(x)
    s = x * x
    q = -8.9012496e-3 * s + 2.5099360e-2
    q = q * s - 4.3694150e-2
    q = q * s + 7.4937403e-2
    q = q * s - 1.6666599e-1
    huge = a > 4096.0
    y = tl.where(huge, a, a + tl.sqrt(s + 1.0))
    big = (fast_log2(y) + tl.where(huge, 1.0, 0.0)) * LN2
    return libdevice.copysign(tl.where(a < 0.75, a + a * s * q, big), x)


@_unary("INT_TO_FLOAT")
@triton.jit
def acosh_kernel(x):
    return libdevice.acosh(x)


@_unary("INT_TO_FLOAT")
@triton.jit
def acosh_half_kernel(x):
    # Results rounded to a half type (KNOBS.half_fast_acosh). Near 1, acosh(1 + t) = sqrt(2 t) g(t), g a fit
    # within 1e-7 relative on [0, 1/4] (t = x - 1 exact there), where log(x + sqrt(x**2 - 1)) would take
    # lg2.approx's absolute error on a result that tends to 0. Above, that log with lg2.approx (the result
    # at least 0.69), or log(x) + log(2) from 2**12 on (x**2 - 1 rounds to x**2, and later overflows).
    # Below 1 (and NaN) both sqrt give NaN. libdevice's acoshf takes an IEEE division and a log1p.
    t = x - 1.0
    g = -4.7418699e-3 * t + 1.8624630e-2
    g = g * t - 8.3327211e-2
    g = g * t + 0.99999994
    near = tl.sqrt(t + t) * g
    huge = x > 4096.0
    y = tl.where(huge, x, x + tl.sqrt(tl.fma(x, x, -1.0)))
    far = (fast_log2(y) + tl.where(huge, 1.0, 0.0)) * LN2
    return tl.where(t < 0.25, near, far)


@_unary("INT_TO_FLOAT")
@triton.jit
def atanh_kernel(x):
    return libdevice.atanh(x)


@triton.jit
def atanh_of_small(u):
    """atanh(u) for |u| < 1/2, for results rounded to a half type: u + u**3 Q(u**2), Q a fit within 1.4e-5
    relative (1.2e-6 of atanh); -0 and subnormal u give u."""
    s = u * u
    q = 1.7461361e-1 * s + 1.3188823e-1
    q = q * s + 2.0057452e-1
    q = q * s + 3.3332875e-1
    return u + u * s * q


@triton.jit
def atanh_short(u):
    """atanh(u) for results rounded to a half type (u in [-1, 1]; NaN outside): below 1/2 atanh_of_small;
    above, (log2(1 + a) - log2(1 - a)) ln(2) / 2 with lg2.approx (the result at least 0.54; 1 - a exact).
    +-1 give +-inf."""
    a = tl.abs(u)
    far = libdevice.copysign((fast_log2(1.0 + a) - fast_log2(1.0 - a)) * (0.5 * LN2), u)
    return tl.where(a < 0.5, atanh_of_small(u), far)


@_unary("INT_TO_FLOAT")
@triton.jit
def atanh_half_kernel(x):
    # Results rounded to a half type (KNOBS.half_fast_atanh): libdevice's atanhf takes an IEEE division
    # and a log1p.
    return atanh_short(x)


@_unary("INT_TO_FLOAT")
@triton.jit
def erf_kernel(x):
    return libdevice.erf(x)


@_unary("INT_TO_FLOAT")
@triton.jit
def erfc_kernel(x):
    return libdevice.erfc(x)


@_unary("INT_TO_FLOAT")
@triton.jit
def erfc_half_kernel(x):
    # Results rounded to a half type (KNOBS.half_fast_erfc). Below 1/4, 1 - erf by its series to x**7
    # (within 2e-8): half types hold many inputs there whose results crowd around 1. Above, erfc(a) =
    # t 2**(P(t) - a**2 log2(e)) with t = 1 / (1 + a / 2), P a fit within 8e-7 relative for a up to 10.5
    # (past 10.1 the result is below float32's subnormals); a**2's rounding error enters the exponent,
    # which then rounds at most 4e-6 relative (at 9.2, where bfloat16's results turn subnormal).
    # erfc(-a) = 2 - erfc(a). libdevice's erfcf takes an IEEE division, an expf and longer fits.
    # a stops at 16 (erfc is 0 in float32 from 10.1), so that a**2's rounding error stays finite.
    a = tl.minimum(tl.abs(x), 16.0, propagate_nan=tl.PropagateNan.ALL)
    s = a * a
    series = -2.6866171e-2 * s + 1.1283792e-1
    series = series * s - 3.7612639e-1
    series = series * s + 1.1283792
    t = fast_rcp(a * 0.5 + 1.0)
    p = -2.6628259e-1 * t + 1.0646924
    p = p * t - 1.4100708
    p = p * t + 4.7317031e-1
    p = p * t - 4.0585272e-2
    p = p * t + 5.6339908e-1
    p = p * t + 1.4414198
    p = p * t - 1.8257438
    exponent = tl.fma(tl.fma(a, a, -s), -1.4426950408889634, tl.fma(s, -1.4426950408889634, p))
    h = fast_exp2(exponent * 0.5)  # as in exp2_with_subnormals, t multiplied in before the last rounding
    e = t * h * h
    return tl.where(a < 0.25, 1.0 - x * series, tl.where(x < 0, 2.0 - e, e))


@_unary("INT_TO_FLOAT")
@triton.jit
def erfinv_kernel(x):
    return libdevice.erfinv(x)


@_unary("INT_TO_FLOAT")
@triton.jit
def lgamma_kernel(x):
    return libdevice.lgamma(x)


@triton.jit
def cos_pi_short(d):
    """cos(pi d) for d in [-1/2, 1/2]: Taylor's polynomial, truncated within 1e-8."""
    t = d * d
    c = 1.9295743e-3 * t - 2.5806891e-2
    c = c * t + 2.3533063e-1
    c = c * t - 1.3352628
    c = c * t + 4.0587121
    c = c * t - 4.9348022
    return c * t + 1.0


@triton.jit
def sin_pi_over_pi_short(d):
    """sin(pi d) / pi for d in [-1/2, 1/2]: Taylor's polynomial, truncated within 1e-9 (relative)."""
    t = d * d
    s = 1.4842879e-4 * t - 2.3460810e-3
    s = s * t + 2.6147848e-2
    s = s * t - 1.9075182e-1
    s = s * t + 8.1174243e-1
    s = s * t - 1.6449341
    return d * (s * t + 1.0)


@triton.jit
def fast_ln(x):
    """float32 log from lg2.approx (see fast_log2)."""
    return fast_log2(x) * LN2


@triton.jit
def lgamma_of_positive_short(y, SHORTER: tl.constexpr, SHIFT: tl.constexpr):
    """lgamma(y) for y > 0 (NaN for inf and NaN), for results rounded to a half type.
    Near lgamma's zeros at 1 and 2, (1 - y) (y - 2) g(y), g a fit within 5e-7 relative on [0.875, 2.25]
    (products of exact differences: relative error everywhere). Elsewhere lgamma(y + 8) - log(y (y + 1)
    ... (y + 7)) below 8 (the product a normal number for every positive half-type y), and Stirling's
    series to w**-5 from 8 on (2.5e-8 left out), with lg2.approx's logs.
    SHORTER (bfloat16 results, KNOBS.half_short_lgamma): g of degree 5 (within 4e-5 relative, 0.01
    bfloat16 ulp) and the series to w**-3 (5e-8 left out at w >= 7), with SHIFT 7 (720 y is still normal)."""
    t = y - 1.5
    if SHORTER:
        g = 1.0091190e-2 * t - 2.0949181e-2
        g = g * t + 3.1671822e-2
        g = g * t - 6.2195562e-2
        g = g * t + 1.4590804e-1
        g = g * t - 4.8314723e-1
    else:
        g = -2.03659083e-03 * t + 4.53089504e-03
        g = g * t - 5.73499780e-03
        g = g * t + 9.00026225e-03
        g = g * t - 1.66930482e-02
        g = g * t + 3.13581191e-02
        g = g * t - 6.29208013e-02
        g = g * t + 1.45958319e-01
        g = g * t - 4.83128816e-01
    near = (1.0 - y) * (y - 2.0) * g  # a product that is +0 at 1 and 2, as lgamma there
    shift = y < SHIFT
    w = tl.where(shift, y, 0.0 + SHIFT)  # lanes that need no shift run the loop on a harmless value
    product = w
    for _ in tl.static_range(SHIFT - 1):
        w = w + 1.0
        product = product * w
    w = tl.where(shift, w + 1.0, y)
    r = fast_rcp(w)
    z = r * r
    if SHORTER:
        series = -2.7777778e-3 * z + 8.3333333e-2
    else:
        series = (7.9365079e-4 * z - 2.7777778e-3) * z + 8.3333333e-2
    # (w - 1/2) (log w - 1) + log(2 pi) / 2 - 1/2: finite wherever lgamma is
    stirling = (w - 0.5) * (fast_ln(w) - 1.0) + (0.41893853320467274 + r * series)
    far = stirling - tl.where(shift, fast_ln(product), 0.0)
    return tl.where((y > 0.875) & (y < 2.25), near, far)


@_unary("INT_TO_FLOAT", SHORTER=False)
@triton.jit
def lgamma_bfloat16_kernel(x, SHORTER: tl.constexpr):
    # Results rounded to bfloat16 (KNOBS.half_fast_lgamma): within 0.42 bfloat16 ulp before the rounding
    # with lg2.approx's error, at -2.75, next to a zero. Negative x by the reflection
    # lgamma(x) = -log|sin(pi x) / pi| - lgamma(1 - x), sin(pi x) from the exact d = x - rint(x), so that
    # its zeros (the poles, inf) are exact; 1 - x is exact wherever d is not 0. libdevice's lgammaf takes
    # an accurate log, more polynomials and the reflection's sinpi with branches.
    negative = x < 0
    y = tl.where(negative, 1.0 - x, x)
    r = lgamma_of_positive_short(y, SHORTER, 7 if SHORTER else 8)
    if tl.max(negative.to(tl.int32), axis=0) > 0:
        d = x - libdevice.rint(x)
        # a subnormal sine scaled by 2**24 first: lg2.approx may flush it to zero
        tiny = tl.abs(d) < 1e-30
        sine = tl.abs(sin_pi_over_pi_short(d)) * tl.where(tiny, 16777216.0, 1.0)
        reflection = (tl.where(tiny, 24.0, 0.0) - fast_log2(sine)) * LN2
        # at the poles (d == 0) inf, where lgamma(1 - x) may overflow too
        r = tl.where(negative, tl.where(d == 0, float("inf"), reflection - r), r)
    return tl.where(tl.abs(x) == float("inf"), float("inf"), r)  # Stirling's w log w - w would be NaN


lgamma_bfloat16_short_kernel = lgamma_bfloat16_kernel.bind("lgamma_bfloat16_short_kernel", SHORTER=True)


@_unary("INT_TO_FLOAT")
@triton.jit
def i0_kernel(x):
    # ATen computes exp(|x|) * series / sqrt(|x|): NaN at +-inf, where libdevice gives inf.
    return tl.where(tl.abs(x) == float("inf"), float("nan"), libdevice.cyl_bessel_i0(x))


@_unary("INT_TO_FLOAT")
@triton.jit
def sigmoid_kernel(x):
    return sigmoid_rn(x)


@_unary("INT_TO_FLOAT")
@triton.jit
def sigmoid_approx_kernel(x):
    return sigmoid_approx(x)


@triton.jit
def pi_cot_pi(d, HALF: tl.constexpr):
    """pi / tan(pi d) for the exact reduced argument d in [-1/2, 1/2]; +-inf at +-0. For results rounded
    to a half type the short polynomials and Triton's approximate division, where libdevice's cospi and
    sinpi each reduce their argument again and branch (not rcp.approx.ftz: a subnormal d, which bfloat16
    holds, has a finite result)."""
    if HALF:
        r = cos_pi_short(d) / sin_pi_over_pi_short(d)
    else:
        r = 3.141592653589793 * libdevice.cospi(d) / libdevice.sinpi(d)
    return r


@triton.jit
def _digamma(x, SHIFT: tl.constexpr, HALF: tl.constexpr, FAST_LOG: tl.constexpr):
    # ATen's calc_digamma, reorganised so that no IEEE division is left outside the reflection:
    # - x < 0: psi(x) = psi(1 - x) - pi / tan(pi x), written with the exact d = x - rint(x), so that
    #   the poles and zeros of tan are exact (ATen evaluates tan in float64); computed only by blocks
    #   that hold a negative input;
    # - y < SHIFT: psi(y) = psi(y + SHIFT) - sum_k 1 / (y + k), the sum kept as one fraction num / den
    #   (SHIFT multiply-adds instead of SHIFT divisions; den is a normal number unless 1 / y overflows);
    # - ATen's asymptotic series at w >= SHIFT: its first omitted term is below 4.5e-1 / w**16, 1e-10
    #   for float32 at w >= 4 and 5e-17 for float64 at w >= 10 (ATen's own threshold). For results
    #   rounded to a half type the series stops at w**-8: the next term is below 8e-9 at w >= 4.
    # FAST_LOG (results rounded to bfloat16): log w from lg2.approx, within 0.13 bfloat16 ulp of the exact
    # result before the rounding even next to digamma's zero at 1.4616 (float16's finer steps there and
    # near the negative zeros need the accurate log).
    negative = x < 0
    reflection = tl.zeros_like(x)
    if tl.max(negative.to(tl.int32), axis=0) > 0:
        reflection = tl.where(negative, -pi_cot_pi(x - libdevice.rint(x), HALF), 0.0)
    y = tl.where(negative, 1.0 - x, x)
    shift = y < SHIFT
    w = tl.where(shift, y, 1.0)  # lanes that need no shift run the loop on a harmless value
    num = tl.zeros_like(x)
    den = tl.zeros_like(x) + 1.0
    for _ in tl.static_range(SHIFT):
        num = num * w + den
        den = den * w
        w = w + 1.0
    w = tl.where(shift, w, y)
    r = fast_rcp(w)
    z = r * r
    if HALF:
        poly = -4.16666666666666666667e-3 * z + 3.96825396825396825397e-3
        poly = poly * z - 8.33333333333333333333e-3
    else:
        poly = 8.33333333333333333333e-2 * z - 2.10927960927960927961e-2
        poly = poly * z + 7.57575757575757575758e-3
        poly = poly * z - 4.16666666666666666667e-3
        poly = poly * z + 3.96825396825396825397e-3
        poly = poly * z - 8.33333333333333333333e-3
    poly = poly * z + 8.33333333333333333333e-2
    if FAST_LOG:
        log_w = fast_ln(w)
    else:
        log_w = libdevice.log(w)
    out = log_w - 0.5 * r - z * poly - tl.where(shift, num * fast_rcp(den), 0.0) + reflection
    out = tl.where(negative & (x == libdevice.trunc(x)), float("nan"), out)  # poles, and -inf
    # digamma(+-0) = -+inf
    return tl.where(x == 0, tl.where(libdevice.signbit(x) != 0, float("inf"), float("-inf")), out)


@_unary("INT_TO_FLOAT")
@triton.jit
def digamma_kernel(x):
    if x.dtype == tl.float64:
        r = _digamma(x, 10, False, False)
    else:
        r = _digamma(x, 4, False, False)
    return r


@_unary("INT_TO_FLOAT", FAST_LOG=False)
@triton.jit
def digamma_half_kernel(x, FAST_LOG: tl.constexpr):
    return _digamma(x, 4, True, FAST_LOG)


digamma_bfloat16_kernel = digamma_half_kernel.bind("digamma_bfloat16_kernel", FAST_LOG=True)


@_unary("INT_TO_FLOAT")
@triton.jit
def sinc_kernel(x):
    product = x * 3.141592653589793
    return tl.where(x == 0, 1.0, div_rn(libdevice.sin(product), product))


@_unary("INT_TO_FLOAT")
@triton.jit
def deg2rad_kernel(x):
    return x * 0.017453292519943295


@_unary("INT_TO_FLOAT")
@triton.jit
def rad2deg_kernel(x):
    return x * 57.29577951308232


@_unary("INT_TO_FLOAT")
@triton.jit
def angle_kernel(x):
    # Real input: pi for negatives, 0 otherwise, NaN stays NaN. The constant is built in x's dtype.
    pi = tl.zeros_like(x) + 3.141592653589793
    return tl.where(x != x, x, tl.where(x < 0, pi, 0.0))


@_unary("DEFAULT")
@triton.jit
def sign_kernel(x):
    if x.dtype == tl.int1:
        return x
    else:
        return (x > 0).to(x.dtype) - (x < 0).to(x.dtype)


@_unary("ALWAYS_BOOL")
@triton.jit
def signbit_kernel(x):
    if x.dtype.is_floating():
        return libdevice.signbit(x) != 0
    elif x.dtype.is_int_signed() and x.dtype != tl.int1:
        return x < 0
    else:
        return x != x


@_unary("DEFAULT")
@triton.jit
def floor_kernel(x):
    if x.dtype.is_floating():
        return libdevice.floor(x)
    else:
        return x


@_unary("DEFAULT")
@triton.jit
def ceil_kernel(x):
    if x.dtype.is_floating():
        return libdevice.ceil(x)
    else:
        return x


@_unary("DEFAULT")
@triton.jit
def trunc_kernel(x):
    if x.dtype.is_floating():
        return libdevice.trunc(x)
    else:
        return x


@_unary("DEFAULT")
@triton.jit
def round_kernel(x):
    # ATen rounds half to even (nearbyint), not half away from zero.
    if x.dtype.is_floating():
        return libdevice.nearbyint(x)
    else:
        return x


@pointwise_dynamic(is_tensor=[True, False], promotion_methods=[(0, "DEFAULT")], constexprs={"DTYPE": tl.float32})
@triton.jit
def round_scaled_kernel(x, scale, DTYPE: tl.constexpr):
    # nearbyint(x * scale) / scale; with a half type DTYPE the product rounds to it first.
    return div_rn(libdevice.nearbyint(rounded_to(x * scale, DTYPE)), tl.zeros_like(x) + scale)


@pointwise_dynamic(is_tensor=[True, False], promotion_methods=[(0, "DEFAULT")], constexprs={"DTYPE": tl.float32})
@triton.jit
def round_coarse_kernel(x, scale, DTYPE: tl.constexpr):
    # nearbyint(x / scale) * scale; with a half type DTYPE the quotient rounds to it first.
    return libdevice.nearbyint(rounded_to(div_rn(x, tl.zeros_like(x) + scale), DTYPE)) * scale


round_scaled_float16_kernel = round_scaled_kernel.bind("round_scaled_float16_kernel", DTYPE=tl.float16)
round_coarse_float16_kernel = round_coarse_kernel.bind("round_coarse_float16_kernel", DTYPE=tl.float16)
round_scaled_bfloat16_kernel = round_scaled_kernel.bind("round_scaled_bfloat16_kernel", DTYPE=tl.bfloat16)
round_coarse_bfloat16_kernel = round_coarse_kernel.bind("round_coarse_bfloat16_kernel", DTYPE=tl.bfloat16)


@_unary("DEFAULT")
@triton.jit
def frac_kernel(x):
    return x - libdevice.trunc(x)


@_unary("ALWAYS_BOOL")
@triton.jit
def isnan_kernel(x):
    return x != x


@_unary("ALWAYS_BOOL")
@triton.jit
def isinf_kernel(x):
    if x.dtype.is_floating():
        return (x == float("inf")) | (x == float("-inf"))
    else:
        return x != x


@_unary("ALWAYS_BOOL")
@triton.jit
def isposinf_kernel(x):
    if x.dtype.is_floating():
        return x == float("inf")
    else:
        return x != x


@_unary("ALWAYS_BOOL")
@triton.jit
def isneginf_kernel(x):
    if x.dtype.is_floating():
        return x == float("-inf")
    else:
        return x != x


@_unary("ALWAYS_BOOL")
@triton.jit
def logical_not_kernel(x):
    return x == 0


@_unary("DEFAULT")
@triton.jit
def bitwise_not_kernel(x):
    if x.dtype == tl.int1:
        return x == 0
    elif x.dtype == tl.uint8:
        return x ^ 255  # the interpreter cannot invert unsigned integers
    else:
        return ~x


@pointwise_dynamic(is_tensor=[True, False, False, False, False], promotion_methods=[(0, "DEFAULT")])
@triton.jit
def nan_to_num_kernel(x, nan, posinf, neginf, float64_limits):
    if x.dtype.is_floating():
        if x.dtype == tl.float64:
            # float64's largest finite values cannot travel as (float32) scalar arguments: bit 0 of
            # float64_limits asks for the largest one in place of posinf, bit 1 for the lowest.
            largest = tl.zeros_like(x) + 1.7976931348623157e308
            posinf = tl.where((float64_limits & 1) != 0, largest, posinf)
            neginf = tl.where((float64_limits & 2) != 0, -largest, neginf)
        y = tl.where(x == float("inf"), posinf, x)
        y = tl.where(x == float("-inf"), neginf, y)
        return tl.where(x != x, nan, y)
    else:
        return x


@pointwise_dynamic(promotion_methods=[(0, "INT_TO_FLOAT")])
@triton.jit
def logit_kernel(x):
    return libdevice.log(div_rn(x, 1.0 - x))


@triton.jit
def _logit_clamped(x, eps):
    lo = tl.zeros_like(x) + eps  # eps in x's dtype, so that 1 - eps rounds there, as in ATen
    hi = 1.0 - lo
    return tl.where(x < lo, lo, tl.where(x > hi, hi, x))


@pointwise_dynamic(is_tensor=[True, False], promotion_methods=[(0, "INT_TO_FLOAT")])
@triton.jit
def logit_eps_kernel(x, eps):
    z = _logit_clamped(x, eps)
    return libdevice.log(div_rn(z, 1.0 - z))


@triton.jit
def logit_short(x):
    """log(x / (1 - x)) for results rounded to a half type: 2 atanh(2 x - 1) on [1/4, 3/4] (2 x - 1 exact),
    where the result crosses 0 and lg2.approx's absolute error would not do; elsewhere log2(x) - log2(1 - x)
    with lg2.approx (the result beyond +-1.09), subnormal x included. 0 and 1 give -inf and inf, x outside
    [0, 1] NaN."""
    u = 2.0 * x - 1.0
    far = (log2_with_subnormals(x) - fast_log2(1.0 - x)) * LN2
    return tl.where(tl.abs(u) < 0.5, 2.0 * atanh_of_small(u), far)


@pointwise_dynamic(promotion_methods=[(0, "INT_TO_FLOAT")])
@triton.jit
def logit_half_kernel(x):
    # Results rounded to a half type (KNOBS.half_fast_logit): ATen's log of an IEEE quotient before.
    return logit_short(x)


@pointwise_dynamic(is_tensor=[True, False], promotion_methods=[(0, "INT_TO_FLOAT")])
@triton.jit
def logit_eps_half_kernel(x, eps):
    return logit_short(_logit_clamped(x, eps))


# -- scalar arguments ------------------------------------------------------------------------------
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


_FLOAT32 = struct.Struct("f")


def _to_float32(value: float) -> float:
    """``value`` rounded to float32, as C++'s ``static_cast<float>`` does (overflow gives inf)."""
    try:
        return _FLOAT32.unpack(_FLOAT32.pack(value))[0]
    except OverflowError:
        return math.copysign(math.inf, value)


def opmath_scalar(value, dtype: torch.dtype):
    """``value`` as an op computing in the opmath type of ``dtype`` sees it (ATen's
    ``Scalar::to<opmath_t>()``), or None when it cannot reach a kernel exactly.

    Kernels receive Python floats as float32: exact for every computation but float64, where only
    float32 numbers pass (others go back to ATen).
    """
    if isinstance(value, complex):
        return None
    value = float(value)
    rounded = _to_float32(value)
    if dtype is torch.float64:
        return value if rounded == value or value != value else None
    return rounded


@functools.lru_cache(maxsize=1024)
def _half_rounded(value: float, dtype: torch.dtype) -> float:
    return torch.tensor(value, dtype=dtype, device="cpu").item()


def storage_scalar(value, dtype: torch.dtype):
    """``value`` converted to ``dtype`` itself (ATen's ``Scalar::to<scalar_t>()``: rounded to a half
    type, truncated for integers), or None when ATen would refuse it or a kernel cannot receive it.
    """
    if isinstance(value, complex) or dtype is torch.bool:
        return None
    if dtype in (torch.float16, torch.bfloat16):
        value = float(value)
        # zeros keep their sign and NaN passes as it is; the rest is rounded once and remembered
        return value if value == 0 or value != value else _half_rounded(value, dtype)
    if dtype in _FLOATS:
        return opmath_scalar(value, dtype)
    try:
        value = int(value)
    except (OverflowError, ValueError):
        return None
    info = torch.iinfo(dtype)
    return value if info.min <= value <= info.max else None


@functools.lru_cache(maxsize=256, typed=True)  # typed: 1, 1.0, True and 1+0j convert differently
def _one_opmath_scalar(value, dtype: torch.dtype) -> tuple | None:
    one = opmath_scalar(value, dtype)
    return None if one is None else (one,)


def opmath_scalars(dtype: torch.dtype, *values):
    """:func:`opmath_scalar` of each value; None if any cannot pass."""
    if len(values) == 1:
        value = values[0]
        # An activation's slope or threshold repeats every call: remembered, but for zeros (whose sign
        # the cache key loses) and NaN.
        if value and value == value:
            return _one_opmath_scalar(value, dtype)
    converted = tuple([opmath_scalar(v, dtype) for v in values])
    return None if None in converted else converted


def storage_scalars(dtype: torch.dtype, *values):
    """:func:`storage_scalar` of each value; None if any cannot pass."""
    converted = tuple([storage_scalar(v, dtype) for v in values])
    return None if None in converted else converted


# -- launchers -------------------------------------------------------------------------------------
_ROUND_IN_HALF_TYPE = {torch.float16: (round_scaled_float16_kernel, round_coarse_float16_kernel),
                       torch.bfloat16: (round_scaled_bfloat16_kernel, round_coarse_bfloat16_kernel)}


def round_decimals(x, *, decimals: int, out0=None):
    """``round(x, decimals=...)``: ATen scales by ``10**|decimals|``, on CPU in the opmath type, on
    CUDA in the tensor's own dtype (for half types, the scale and each product or quotient round to it)."""
    digits = abs(decimals)
    ten_pow = 10.0 ** digits if digits <= 308 else math.inf
    if x.dtype in _ROUND_IN_HALF_TYPE and not device.interpreter:
        scale = _half_rounded(_to_float32(ten_pow), x.dtype)  # static_cast<Half>(double) goes through float
        scaled, coarse = _ROUND_IN_HALF_TYPE[x.dtype]
    else:
        scale = opmath_scalar(ten_pow, x.dtype)
        scaled, coarse = round_scaled_kernel, round_coarse_kernel
    if scale is None:
        return NotImplemented
    return (scaled if decimals >= 0 else coarse)(x, scale, out0=out0)


def nan_to_num(x, nan=None, posinf=None, neginf=None, out0=None):
    """``nan_to_num``: defaults are 0 and the largest finite values of ``x``'s dtype."""
    dtype = x.dtype
    if dtype not in _FLOATS:
        return nan_to_num_kernel(x, 0.0, 0.0, 0.0, 0, out0=out0)
    limits = 0
    if dtype is torch.float64:
        # The kernel builds float64's limits itself (see there).
        limits = (posinf is None) | (neginf is None) << 1
        posinf = 0.0 if posinf is None else posinf
        neginf = 0.0 if neginf is None else neginf
    info = torch.finfo(dtype)
    values = (storage_scalar(0.0 if nan is None else nan, dtype),
              storage_scalar(info.max if posinf is None else posinf, dtype),
              storage_scalar(info.min if neginf is None else neginf, dtype))
    if None in values:
        return NotImplemented
    return nan_to_num_kernel(x, *values, limits, out0=out0)


_HALF_TYPES = (torch.float16, torch.bfloat16)


def rounds_to_half(x: torch.Tensor, out0=None) -> bool:
    """Whether the result lands in a half type (float16, bfloat16): there kernels may take shorter
    formulas whose float32 error is a small fraction of the half type's rounding step."""
    return (out0 if out0 is not None else x).dtype in _HALF_TYPES


def approx_division(result_dtype: torch.dtype) -> bool:
    """Whether a result of ``result_dtype`` takes the approximate division (``KNOBS.half_approx_division``)."""
    return KNOBS.half_approx_division and result_dtype in _HALF_TYPES


def half_or_full(full, half, doc: str, knob: str | None = None):
    """A launcher taking ``half`` for results rounded to a half type (where ``knob``, when named, is on)."""
    def launch(x, out0=None):
        # rounds_to_half, inlined: this runs on every call
        fast = (out0 if out0 is not None else x).dtype in _HALF_TYPES and (knob is None or getattr(KNOBS, knob))
        return (half if fast else full)(x, out0=out0)

    launch.__doc__ = doc
    return launch


def asinh(x, out0=None):
    """``asinh``; results rounded to a half type take a faster log, and may take a shorter fit (see the knob)."""
    if not rounds_to_half(x, out0):
        return asinh_kernel(x, out0=out0)
    return (asinh_short_kernel if KNOBS.half_short_asinh else asinh_half_kernel)(x, out0=out0)


acosh = half_or_full(acosh_kernel, acosh_half_kernel,
                     "``acosh``; results rounded to a half type may take a fit and lg2.approx (see the knob).",
                     "half_fast_acosh")
atanh = half_or_full(atanh_kernel, atanh_half_kernel,
                     "``atanh``; results rounded to a half type may take a fit and lg2.approx (see the knob).",
                     "half_fast_atanh")
atan = half_or_full(atan_kernel, atan_half_kernel, "``atan``; results rounded to a half type: a shorter polynomial.")
sinh = half_or_full(sinh_kernel, sinh_half_kernel, "``sinh``; results rounded to a half type take ex2.approx.")
erfc = half_or_full(erfc_kernel, erfc_half_kernel,
                    "``erfc``; results rounded to a half type may take ex2.approx and a shorter fit (see the knob).",
                    "half_fast_erfc")
sigmoid = half_or_full(sigmoid_kernel, sigmoid_approx_kernel,
                       "``sigmoid``; results rounded to a half type may divide approximately (see the knob).",
                       "half_approx_division")


def lgamma(x, out0=None):
    """``lgamma``; bfloat16 results may take short fits and lg2.approx (see the knob). float16's finer
    steps near lgamma's negative zeros (-2.457, -2.748, -3.144) need the float32 kernel's accurate logs."""
    result_dtype = (out0 if out0 is not None else x).dtype
    if not (KNOBS.half_fast_lgamma and result_dtype is torch.bfloat16):
        return lgamma_kernel(x, out0=out0)
    return (lgamma_bfloat16_short_kernel if KNOBS.half_short_lgamma else lgamma_bfloat16_kernel)(x, out0=out0)


def digamma(x, out0=None):
    """``digamma``; results rounded to a half type may take a shorter reflection and series, bfloat16
    results lg2.approx's log too (see the knob)."""
    result_dtype = (out0 if out0 is not None else x).dtype
    kernel = digamma_kernel
    if KNOBS.half_fast_digamma and result_dtype in _HALF_TYPES:
        kernel = digamma_bfloat16_kernel if result_dtype is torch.bfloat16 else digamma_half_kernel
    return kernel(x, out0=out0)


def logit(x, eps=None, out0=None):
    """``logit(x, eps)``: without eps (or a negative one) ``log(x / (1 - x))``, else x clamped to
    ``[eps, 1 - eps]`` first. Results rounded to a half type may take lg2.approx (see the knob)."""
    fast = KNOBS.half_fast_logit and rounds_to_half(x, out0)
    if eps is None or eps < 0:
        return (logit_half_kernel if fast else logit_kernel)(x, out0=out0)
    value = opmath_scalar(eps, x.dtype)
    if value is None:
        return NotImplemented
    return (logit_eps_half_kernel if fast else logit_eps_kernel)(x, value, out0=out0)
