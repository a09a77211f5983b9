"""Activations: the kernels, then the launchers that turn ATen's arguments into kernel arguments.

Formulas and their order of operations are ATen's CUDA ones, computed in the opmath type (float32
for half types). Scalars reach kernels as float32; ``opmath_scalar`` / ``storage_scalar`` convert
them as ATen does (to the opmath type, or to the tensor's own dtype where ATen's kernel does that)
and refuse what cannot pass exactly, which then goes back to ATen. A launcher returns
``NotImplemented`` for arguments it leaves to ATen.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from flag_gems import pointwise_dynamic
from flag_gems.runtime import device
from gems_pointwise.knobs import KNOBS
from gems_pointwise.unary import (
    div_rn,
    exp2_with_subnormals,
    fast_exp2,
    fast_rcp,
    half_or_full,
    opmath_scalars,
    rounds_to_half,
    sigmoid_rn,
    storage_scalars,
)


def _with_scalars(count: int):
    """``pointwise_dynamic`` for a kernel of one tensor followed by ``count`` scalars."""
    return pointwise_dynamic(is_tensor=[True] + [False] * count, promotion_methods=[(0, "DEFAULT")])


# -- kernels ---------------------------------------------------------------------------------------
@pointwise_dynamic(promotion_methods=[(0, "DEFAULT")])
@triton.jit
def relu_kernel(x):
    return tl.where(x < 0, 0, x)


@_with_scalars(2)
@triton.jit
def hardtanh_kernel(x, min_val, max_val):
    # ATen's clamp: NaN stays NaN, and max_val wins when min_val > max_val.
    y = tl.where(x < min_val, min_val, x)
    return tl.where(y > max_val, max_val, y)


@pointwise_dynamic(promotion_methods=[(0, "DEFAULT")])
@triton.jit
def gelu_kernel(x):
    return x * 0.5 * (1.0 + libdevice.erf(x * 0.7071067811865476))


@pointwise_dynamic(promotion_methods=[(0, "DEFAULT")])
@triton.jit
def gelu_half_kernel(x):
    # Results rounded to a half type: ATen's formula with erf(z) = sign(z) (1 - erfc(|z|)), erfc(a) =
    # 2**(a Q(a)) on [0, 4], Q a minimax fit (with ex2.approx within 5e-6 relative, 1% of a float16
    # ulp): one polynomial and one ex2 where libdevice's erff evaluates two polynomials and an expf.
    # 1 - erfc rounds as ATen's erf does, so 1 + erf cancels to the same float32 grid as x -> -inf;
    # past 4, erfc < 2**-25 and erf rounds to +-1.
    z = x * 0.7071067811865476
    a = tl.minimum(tl.abs(z), 4.0)
    q = -1.9975931e-5 * a + 4.8200478e-4
    q = q * a - 5.2048713e-3
    q = q * a + 3.3868838e-2
    q = q * a - 1.5238467e-1
    q = q * a - 9.1710347e-1
    q = q * a - 1.6280599
    erf = libdevice.copysign(1.0 - fast_exp2(a * q), z)
    return x * 0.5 * (1.0 + erf)


@pointwise_dynamic(promotion_methods=[(0, "DEFAULT")])
@triton.jit
def gelu_tanh_kernel(x):
    inner = 0.7978845608028654 * (x + 0.044715 * (x * x * x))
    return 0.5 * x * (1.0 + libdevice.tanh(inner))


@pointwise_dynamic(promotion_methods=[(0, "DEFAULT")])
@triton.jit
def silu_kernel(x):
    return div_rn(x, 1.0 + libdevice.exp(-x))


@pointwise_dynamic(promotion_methods=[(0, "DEFAULT")])
@triton.jit
def silu_approx_kernel(x):
    # Results rounded to a half type (KNOBS.half_approx_division): ATen's formula with Triton's
    # approximate `/`, which has no slow path for the subnormal x that repeated silu_ leaves.
    return x / (1.0 + libdevice.exp(-x))


@pointwise_dynamic(promotion_methods=[(0, "DEFAULT")])
@triton.jit
def mish_kernel(x):
    if x.dtype == tl.float64:
        r = x * libdevice.tanh(libdevice.log1p(libdevice.exp(x)))
    else:
        # tanh(log1p(u)) = n / (n + 2) with n = u (u + 2), u = e**x: one exp and one division for
        # ATen's exp, log1p and tanh, and accurate as x -> -inf, where n / (n + 2) ~ u. Above 20 the
        # ratio is 1 in float32 (and n overflows from 44).
        u = libdevice.exp(x)
        n = u * (u + 2.0)
        r = tl.where(x > 20.0, x, x * (n * fast_rcp(n + 2.0)))
    return r


@_with_scalars(3)
@triton.jit
def elu_kernel(x, alpha, scale, input_scale):
    negcoef = (tl.zeros_like(x) + alpha) * scale  # alpha * scale in x's dtype, as ATen computes it
    return tl.where(x > 0, x * scale, libdevice.expm1(x * input_scale) * negcoef)


@triton.jit
def expm1_short(z):
    """e**z - 1 for results rounded to a half type: below 1/2 in magnitude z (1 + z P(z)), P Taylor's
    polynomial to z**6 / 7! (within 2e-7 relative; -0 stays -0, a subnormal z itself); above, ex2.approx
    less 1 (within 1e-6 relative there; overflows where float32's e**z does, flushes to -1 where it
    is -1 in float32)."""
    p = 1.9841270e-4 * z + 1.3888889e-3
    p = p * z + 8.3333333e-3
    p = p * z + 4.1666667e-2
    p = p * z + 1.6666667e-1
    p = p * z + 0.5
    near = (p * z + 1.0) * z
    far = fast_exp2(z * 1.4426950408889634) - 1.0
    return tl.where(tl.abs(z) < 0.5, near, far)


@_with_scalars(3)
@triton.jit
def elu_half_kernel(x, alpha, scale, input_scale):
    # Results rounded to a half type (KNOBS.half_fast_elu): ATen's formula with expm1_short for libdevice's
    # expm1f.
    negcoef = (tl.zeros_like(x) + alpha) * scale
    return tl.where(x > 0, x * scale, expm1_short(x * input_scale) * negcoef)


@_with_scalars(2)
@triton.jit
def softplus_kernel(x, beta, threshold):
    z = x * beta
    return tl.where(z > threshold, x, div_rn(libdevice.log1p(libdevice.exp(z)), tl.zeros_like(x) + beta))


@triton.jit
def log1p_of_unit(w):
    """log1p(w) for w in [0, 1]: w P(w), P a fit within 1.5e-6 relative (w subnormal included)."""
    p = 1.4140972e-2 * w - 6.6401668e-2
    p = p * w + 1.4922376e-1
    p = p * w - 2.3503856e-1
    p = p * w + 3.3109451e-1
    p = p * w - 4.9986964e-1
    p = p * w + 9.9999875e-1
    return w * p


@_with_scalars(3)
@triton.jit
def softplus_half_kernel(x, beta, threshold, inv_beta):
    # Results rounded to a half type (KNOBS.half_fast_softplus): log1p(e**z) = max(z, 0) + log1p(e**-|z|),
    # whose log1p argument lies in [0, 1]; e**-|z| keeps float32's subnormals, which bfloat16 has too.
    # The launcher passes 1 / beta and thresholds where ATen's e**z is finite.
    z = x * beta
    w = exp2_with_subnormals(tl.abs(z) * -1.4426950408889634)
    r = tl.maximum(z, 0.0) + log1p_of_unit(w)
    # Near z = 0, where half types hold many inputs whose results crowd around ln 2, a series to z**4
    # (within 2e-12 there), so that their float32 results stay within an ulp, as ATen's do.
    q = z * z
    near_zero = (q * (-5.2083333e-3) + 0.125) * q + z * 0.5 - 1.9046542e-9  # ln 2's float32 remainder
    r = tl.where(q < 1.5625e-2, near_zero + 0.6931471824645996, r) * inv_beta
    return tl.where(z > threshold, x, r)


@_with_scalars(1)
@triton.jit
def softshrink_kernel(x, lambd):
    y = tl.where(x > lambd, x - lambd, tl.where(x < -lambd, x + lambd, 0.0))
    return tl.where(x != x, x, y)


@_with_scalars(1)
@triton.jit
def hardshrink_kernel(x, lambd):
    return tl.where((x >= -lambd) & (x <= lambd), 0.0, x)


# ATen multiplies by float(1/6) for every dtype (a float literal), not by the double 1/6.
ONE_SIXTH = tl.constexpr(0.1666666716337204)


@triton.jit
def _shifted_relu6(x):
    """min(max(x + 3, 0), 6), NaN kept: six times hardsigmoid."""
    y = x + 3.0
    y = tl.where(y < 0.0, 0.0, y)
    return tl.where(y > 6.0, 6.0, y)


@pointwise_dynamic(promotion_methods=[(0, "DEFAULT")])
@triton.jit
def hardsigmoid_kernel(x):
    return _shifted_relu6(x) * ONE_SIXTH


@pointwise_dynamic(promotion_methods=[(0, "DEFAULT")])
@triton.jit
def hardswish_kernel(x):
    return x * _shifted_relu6(x) * ONE_SIXTH


@_with_scalars(1)
@triton.jit
def leaky_relu_kernel(x, negative_slope):
    return tl.where(x > 0, x, x * negative_slope)


@_with_scalars(2)
@triton.jit
def threshold_kernel(x, threshold, value):
    return tl.where(x <= threshold, value, x)


@triton.jit
def _log_sigmoid(x, SHORT: tl.constexpr):
    # (log_sigmoid(x), e**-|x|), ATen's min(x, 0) - log1p(e**-|x|). SHORT, for results rounded to a half type
    # (KNOBS.half_fast_log_sigmoid): e**-|x| from ex2.approx, subnormal results kept (bfloat16 has them),
    # and log1p_of_unit for libdevice's expf and log1pf.
    if SHORT:
        z = exp2_with_subnormals(tl.abs(x) * -1.4426950408889634)
        r = tl.where(x < 0, x, 0.0) - log1p_of_unit(z)
    else:
        z = libdevice.exp(-tl.abs(x))
        r = tl.where(x < 0, x, 0.0) - libdevice.log1p(z)
    return r, z


@pointwise_dynamic(promotion_methods=[(0, "DEFAULT")], constexprs={"SHORT": False})
@triton.jit
def log_sigmoid_kernel(x, SHORT: tl.constexpr):
    out, _ = _log_sigmoid(x, SHORT)
    return out


@pointwise_dynamic(promotion_methods=[(0, "DEFAULT")], num_outputs=2, constexprs={"SHORT": False})
@triton.jit
def log_sigmoid_buffered_kernel(x, SHORT: tl.constexpr):
    return _log_sigmoid(x, SHORT)


log_sigmoid_half_kernel = log_sigmoid_kernel.bind("log_sigmoid_half_kernel", SHORT=True)
log_sigmoid_half_buffered_kernel = log_sigmoid_buffered_kernel.bind("log_sigmoid_half_buffered_kernel", SHORT=True)


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def glu_kernel(a, b):
    return a * sigmoid_rn(b)


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def prelu_kernel(x, weight):
    return tl.where(x > 0, x, weight * x)


# -- launchers -------------------------------------------------------------------------------------
def hardtanh(x, min_val=-1, max_val=1, out0=None):
    """``hardtanh`` (and ``relu6``, which decomposes into it): ATen's clamp with the bounds in x's dtype."""
    bounds = storage_scalars(x.dtype, min_val, max_val)
    if bounds is None:
        return NotImplemented
    return hardtanh_kernel(x, *bounds, out0=out0)


silu = half_or_full(silu_kernel, silu_approx_kernel,
                    "``silu``; results rounded to a half type may divide approximately (see the knob).",
                    "half_approx_division")


def gelu(x, *, approximate="none", out0=None):
    """``gelu`` with ``approximate`` "none" (erf) or "tanh"; other values are ATen's to refuse."""
    if approximate == "none":
        return (gelu_half_kernel if rounds_to_half(x, out0) else gelu_kernel)(x, out0=out0)
    if approximate == "tanh":
        return gelu_tanh_kernel(x, out0=out0)
    return NotImplemented


def elu(x, alpha=1, scale=1, input_scale=1, out0=None):
    """``elu``: ``scale * x`` for x > 0, ``alpha * scale * expm1(input_scale * x)`` otherwise; results rounded
    to a half type may take a shorter expm1 (see the knob)."""
    scalars = opmath_scalars(x.dtype, alpha, scale, input_scale)
    if scalars is None:
        return NotImplemented
    fast = KNOBS.half_fast_elu and rounds_to_half(x, out0)
    return (elu_half_kernel if fast else elu_kernel)(x, *scalars, out0=out0)


def celu(x, alpha=1.0, out0=None):
    """``celu``: ATen's ``elu(x, alpha, 1, 1 / alpha)``, the reciprocal taken in double."""
    if alpha == 0:
        return NotImplemented  # ATen raises
    return elu(x, alpha, 1.0, 1.0 / float(alpha), out0=out0)


def softplus(x, beta=1, threshold=20, out0=None):
    """``softplus``: ``log1p(exp(beta * x)) / beta``, or x where ``beta * x > threshold``."""
    scalars = opmath_scalars(x.dtype, beta, threshold)
    if scalars is None:
        return NotImplemented
    if KNOBS.half_fast_softplus and rounds_to_half(x, out0) and _fast_softplus_fits(*scalars):
        return softplus_half_kernel(x, *scalars, 1.0 / scalars[0], out0=out0)
    return softplus_kernel(x, *scalars, out0=out0)


def _fast_softplus_fits(beta: float, threshold: float) -> bool:
    # 1 / beta a normal float32 number; below the threshold ATen's exp(beta x) finite (it overflows from
    # 88.72), where the half-type formula would give x instead of ATen's inf.
    return 2.0**-126 <= abs(beta) <= 2.0**126 and threshold <= 88.0


def softshrink(x, lambd=0.5, out0=None):
    """``softshrink``; a negative ``lambd`` is refused by ATen."""
    scalars = storage_scalars(x.dtype, lambd)
    if scalars is None or scalars[0] < 0:
        return NotImplemented
    return softshrink_kernel(x, *scalars, out0=out0)


def hardshrink(x, lambd=0.5, out0=None):
    """``hardshrink``: 0 on ``[-lambd, lambd]``, x elsewhere."""
    scalars = storage_scalars(x.dtype, lambd)
    if scalars is None:
        return NotImplemented
    return hardshrink_kernel(x, *scalars, out0=out0)


def leaky_relu(x, negative_slope=0.01, out0=None):
    """``leaky_relu``: x for x > 0, ``negative_slope * x`` otherwise."""
    scalars = opmath_scalars(x.dtype, negative_slope)
    if scalars is None:
        return NotImplemented
    return leaky_relu_kernel(x, *scalars, out0=out0)


def threshold(x, threshold, value, out0=None):
    """``threshold``: ``value`` where ``x <= threshold``, x elsewhere; both scalars in x's dtype."""
    scalars = storage_scalars(x.dtype, threshold, value)
    if scalars is None:
        return NotImplemented
    return threshold_kernel(x, *scalars, out0=out0)


def log_sigmoid_forward(x, out0=None, out1=None):
    """``log_sigmoid_forward`` -> (output, buffer).

    ATen's CPU backward reads ``exp(-|x|)`` from the buffer, so on CPU it is filled, contiguous like
    ATen's; ATen's CUDA kernels leave it empty and ignore it.
    """
    fast = KNOBS.half_fast_log_sigmoid and rounds_to_half(x, out0)
    if device.interpreter:
        if out0 is None:
            out0 = torch.empty(x.shape, dtype=x.dtype, device=x.device)
            out1 = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        kernel = log_sigmoid_half_buffered_kernel if fast else log_sigmoid_buffered_kernel
        return kernel(x, out0=out0, out1=out1)
    output = (log_sigmoid_half_kernel if fast else log_sigmoid_kernel)(x, out0=out0)
    return output, (out1 if out1 is not None else x.new_empty(0))


def glu_halves(x, dim):
    """The two halves of ``x`` along ``dim`` as views, or None where ATen raises (0-d, odd size)."""
    ndim = x.dim()
    if ndim == 0 or not -ndim <= dim < ndim:
        return None
    dim %= ndim
    size = x.shape[dim]
    if size % 2:
        return None
    half = size // 2
    return x.narrow(dim, 0, half), x.narrow(dim, half, half)


def glu(x, dim=-1, out0=None):
    """``glu``: ``a * sigmoid(b)`` for the halves a, b of x along ``dim``, read in place as views."""
    halves = glu_halves(x, dim)
    if halves is None:
        return NotImplemented
    return glu_kernel(*halves, out0=out0)


def prelu(x, weight, out0=None):
    """``_prelu_kernel``: x for x > 0, ``weight * x`` otherwise; weight broadcasts to x's shape."""
    if weight.dtype != x.dtype or not _broadcasts_to(weight.shape, x.shape):
        return NotImplemented
    return prelu_kernel(x, weight, out0=out0)


def _broadcasts_to(shape, target) -> bool:
    if len(shape) > len(target):
        return False
    return all(s in (1, t) for s, t in zip(reversed(shape), reversed(target)))
