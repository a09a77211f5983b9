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
    if DTYPE == tl.bfloat16:
        # Round to nearest even by hand: the interpreter's float32 -> bfloat16 cast truncates.
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        r = tl.where(x != x, x, bits.to(tl.float32, bitcast=True))
    elif DTYPE == tl.float16:
        r = x.to(tl.float16).to(tl.float32)
    else:
        r = x
    return r


@triton.jit
def sigmoid(x):
    """``1 / (1 + exp(-x))``, ATen's formula."""
    return div_rn(1.0, 1.0 + libdevice.exp(-x))


# -- kernels ---------------------------------------------------------------------------------------
def _unary(kind: str):
    return pointwise_dynamic(promotion_methods=[(0, kind)])


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


@_unary("INT_TO_FLOAT")
@triton.jit
def atan_kernel(x):
    return libdevice.atan(x)


@_unary("INT_TO_FLOAT")
@triton.jit
def sinh_kernel(x):
    return libdevice.sinh(x)


@_unary("INT_TO_FLOAT")
@triton.jit
def cosh_kernel(x):
    return libdevice.cosh(x)


@_unary("INT_TO_FLOAT")
@triton.jit
def tanh_kernel(x):
    return libdevice.tanh(x)


@_unary("INT_TO_FLOAT")
@triton.jit
def asinh_kernel(x):
    return libdevice.asinh(x)


@_unary("INT_TO_FLOAT")
@triton.jit
def acosh_kernel(x):
    return libdevice.acosh(x)


@_unary("INT_TO_FLOAT")
@triton.jit
def atanh_kernel(x):
    return libdevice.atanh(x)


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
def erfinv_kernel(x):
    return libdevice.erfinv(x)


@_unary("INT_TO_FLOAT")
@triton.jit
def lgamma_kernel(x):
    return libdevice.lgamma(x)


@_unary("INT_TO_FLOAT")
@triton.jit
def i0_kernel(x):
    # ATen computes exp(|x|) * series / sqrt(|x|): NaN at +-inf, where libdevice gives inf.
    return tl.where(tl.abs(x) == float("inf"), float("nan"), libdevice.cyl_bessel_i0(x))


@_unary("INT_TO_FLOAT")
@triton.jit
def sigmoid_kernel(x):
    return sigmoid(x)


@_unary("INT_TO_FLOAT")
@triton.jit
def digamma_kernel(x):
    # ATen's calc_digamma: reflection for x < 0, recurrence up to 10, then the asymptotic series.
    # libdevice has no digamma. The reflection term is computed in float64, as in ATen, and only by
    # blocks holding a negative input (a float64 tan costs more than the rest).
    negative = x < 0
    result = tl.zeros_like(x)
    if tl.sum(negative.to(tl.int32), axis=0) > 0:
        xd = x.to(tl.float64)
        reflection = -3.141592653589793 / libdevice.tan(3.141592653589793 * (xd - libdevice.trunc(xd)))
        result = tl.where(negative, reflection.to(x.dtype), result)
    y = tl.where(negative, 1.0 - x, x)
    for _ in tl.static_range(10):
        small = y < 10.0
        result = tl.where(small, result - div_rn(1.0, y), result)
        y = tl.where(small, y + 1.0, y)
    z = div_rn(1.0, y * y)
    poly = 8.33333333333333333333e-2 * z - 2.10927960927960927961e-2
    poly = poly * z + 7.57575757575757575758e-3
    poly = poly * z - 4.16666666666666666667e-3
    poly = poly * z + 3.96825396825396825397e-3
    poly = poly * z - 8.33333333333333333333e-3
    poly = poly * z + 8.33333333333333333333e-2
    series = tl.where(y < 1.0e17, z * poly, 0.0)
    out = libdevice.log(y) - div_rn(0.5, y) - series + result
    out = tl.where(y == 10.0, result + 2.25175258906672110764, out)
    out = tl.where(negative & (x == libdevice.trunc(x)), float("nan"), out)
    # digamma(+-0) = -+inf
    return tl.where(x == 0, tl.where(libdevice.signbit(x) != 0, float("inf"), float("-inf")), out)


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


@triton.jit
def _round_scaled(x, scale, DTYPE: tl.constexpr):
    # nearbyint(x * scale) / scale; with a half type DTYPE the product rounds to it first.
    return div_rn(libdevice.nearbyint(rounded_to(x * scale, DTYPE)), tl.zeros_like(x) + scale)


@triton.jit
def _round_coarse(x, scale, DTYPE: tl.constexpr):
    # nearbyint(x / scale) * scale; with a half type DTYPE the quotient rounds to it first.
    return libdevice.nearbyint(rounded_to(div_rn(x, tl.zeros_like(x) + scale), DTYPE)) * scale


@pointwise_dynamic(is_tensor=[True, False], promotion_methods=[(0, "DEFAULT")])
@triton.jit
def round_scaled_kernel(x, scale):
    return _round_scaled(x, scale, tl.float32)


@pointwise_dynamic(is_tensor=[True, False], promotion_methods=[(0, "DEFAULT")])
@triton.jit
def round_coarse_kernel(x, scale):
    return _round_coarse(x, scale, tl.float32)


@pointwise_dynamic(is_tensor=[True, False], promotion_methods=[(0, "DEFAULT")])
@triton.jit
def round_scaled_float16_kernel(x, scale):
    return _round_scaled(x, scale, tl.float16)


@pointwise_dynamic(is_tensor=[True, False], promotion_methods=[(0, "DEFAULT")])
@triton.jit
def round_coarse_float16_kernel(x, scale):
    return _round_coarse(x, scale, tl.float16)


@pointwise_dynamic(is_tensor=[True, False], promotion_methods=[(0, "DEFAULT")])
@triton.jit
def round_scaled_bfloat16_kernel(x, scale):
    return _round_scaled(x, scale, tl.bfloat16)


@pointwise_dynamic(is_tensor=[True, False], promotion_methods=[(0, "DEFAULT")])
@triton.jit
def round_coarse_bfloat16_kernel(x, scale):
    return _round_coarse(x, scale, tl.bfloat16)


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


@pointwise_dynamic(is_tensor=[True, False], promotion_methods=[(0, "INT_TO_FLOAT")])
@triton.jit
def logit_eps_kernel(x, eps):
    lo = tl.zeros_like(x) + eps  # eps in x's dtype, so that 1 - eps rounds there, as in ATen
    hi = 1.0 - lo
    z = tl.where(x < lo, lo, tl.where(x > hi, hi, x))
    return libdevice.log(div_rn(z, 1.0 - z))


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


def opmath_scalars(dtype: torch.dtype, *values):
    """:func:`opmath_scalar` of each value; None if any cannot pass."""
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


def logit(x, eps=None, out0=None):
    """``logit(x, eps)``: without eps (or a negative one) ``log(x / (1 - x))``, else x clamped to
    ``[eps, 1 - eps]`` first."""
    if eps is None or eps < 0:
        return logit_kernel(x, out0=out0)
    value = opmath_scalar(eps, x.dtype)
    if value is None:
        return NotImplemented
    return logit_eps_kernel(x, value, out0=out0)
