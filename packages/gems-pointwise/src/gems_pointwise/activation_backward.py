"""Backward ops of the activations: the kernels, then their launchers.

Each kernel takes ``grad_output`` first and follows ATen's CUDA formula; grad and input promote to
a common dtype as in ATen's TensorIterator. Launchers return ``NotImplemented`` for arguments left
to ATen (which then raises where ATen raises).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from flag_gems import pointwise_dynamic
from gems_pointwise.activation import ONE_SIXTH, glu_halves
from gems_pointwise.unary import approx_division, div_rn, opmath_scalars, sigmoid_approx, sigmoid_rn, storage_scalars


def _grad_kernel(scalars: int = 0):
    """``pointwise_dynamic`` for a kernel of (grad_output, input) followed by ``scalars`` scalars."""
    return pointwise_dynamic(is_tensor=[True, True] + [False] * scalars, promotion_methods=[(0, 1, "DEFAULT")])


# -- kernels ---------------------------------------------------------------------------------------
@_grad_kernel()
@triton.jit
def gelu_backward_kernel(dy, x):
    cdf = 0.5 * (1.0 + libdevice.erf(x * 0.7071067811865476))
    if x.dtype == tl.float64:
        pdf = libdevice.exp(-0.5 * x * x) * 0.3989422804014327
    else:
        # tl.exp (ex2.approx of x * log2(e)) is off by up to |x**2 / 2| * 2**-23.5 relative, which x * pdf
        # shrinks far below an ulp of the sum; libdevice's expf costs twice as much.
        pdf = tl.exp(-0.5 * x * x) * 0.3989422804014327
    return dy * (cdf + x * pdf)


@_grad_kernel()
@triton.jit
def gelu_tanh_backward_kernel(dy, x):
    x_sq = x * x
    inner = 0.7978845608028654 * (x + 0.044715 * (x_sq * x))
    tanh_inner = libdevice.tanh(inner)
    left_derivative = 0.5 * (1.0 + tanh_inner)
    right_derivative = 0.5 * x * (1.0 - tanh_inner * tanh_inner) * 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * x_sq)
    return dy * (left_derivative + right_derivative)


@_grad_kernel()
@triton.jit
def silu_backward_kernel(dy, x):
    s = sigmoid_rn(x)
    return dy * s * (1.0 + x * (1.0 - s))


@_grad_kernel()
@triton.jit
def silu_backward_approx_kernel(dy, x):
    # Results rounded to a half type (KNOBS.half_approx_division): sigmoid through Triton's `/`.
    s = sigmoid_approx(x)
    return dy * s * (1.0 + x * (1.0 - s))


@_grad_kernel()
@triton.jit
def sigmoid_backward_kernel(dy, y):
    return dy * (1.0 - y) * y


@_grad_kernel()
@triton.jit
def tanh_backward_kernel(dy, y):
    return dy * (1.0 - y * y)


@_grad_kernel(1)
@triton.jit
def threshold_backward_kernel(dy, x, threshold):
    return tl.where(x <= threshold, 0, dy)


@_grad_kernel(3)
@triton.jit
def elu_backward_kernel(dy, x, alpha, scale, input_scale):
    negcoef = (tl.zeros_like(dy) + alpha) * scale
    return tl.where(x <= 0, dy * input_scale * negcoef * libdevice.exp(x * input_scale), dy * scale)


@_grad_kernel(3)
@triton.jit
def elu_backward_from_result_kernel(dy, y, alpha, scale, input_scale):
    negcoef = (tl.zeros_like(dy) + alpha) * scale
    return tl.where(y <= 0, dy * input_scale * (y + negcoef), dy * scale)


@_grad_kernel(2)
@triton.jit
def hardtanh_backward_kernel(dy, x, min_val, max_val):
    return tl.where((x <= min_val) | (x >= max_val), 0.0, dy)


@_grad_kernel()
@triton.jit
def hardsigmoid_backward_kernel(dy, x):
    return tl.where((x > -3.0) & (x < 3.0), dy * ONE_SIXTH, 0.0)


@_grad_kernel()
@triton.jit
def hardswish_backward_kernel(dy, x):
    slope = div_rn(x, tl.zeros_like(x) + 3.0) + 0.5
    return tl.where(x <= -3.0, 0.0, tl.where(x < 3.0, dy * slope, dy))


@_grad_kernel(1)
@triton.jit
def leaky_relu_backward_kernel(dy, x, negative_slope):
    return tl.where(x > 0, dy, dy * negative_slope)


@_grad_kernel(2)
@triton.jit
def softplus_backward_kernel(dy, x, beta, threshold):
    z = libdevice.exp(x * beta)
    return tl.where(x * beta > threshold, dy, div_rn(dy * z, z + 1.0))


@_grad_kernel(1)
@triton.jit
def shrink_backward_kernel(dy, x, lambd):
    return tl.where((x >= -lambd) & (x <= lambd), 0.0, dy)


@_grad_kernel()
@triton.jit
def log_sigmoid_backward_kernel(dy, x):
    # Computed from x: ATen's CUDA kernel does the same and ignores the buffer.
    negative = x < 0
    max_deriv = tl.where(negative, 1.0, 0.0)
    sign = tl.where(negative, 1.0, -1.0)
    z = libdevice.exp(-tl.abs(x))
    return dy * (max_deriv - sign * div_rn(z, 1.0 + z))


@_grad_kernel()
@triton.jit
def logit_backward_kernel(dy, x):
    return tl.where((x < 0) | (x > 1), float("nan"), div_rn(dy, x * (1.0 - x)))


@_grad_kernel(1)
@triton.jit
def logit_backward_eps_kernel(dy, x, eps):
    lo = tl.zeros_like(x) + eps
    return tl.where((x < lo) | (x > 1.0 - lo), 0.0, div_rn(dy, x * (1.0 - x)))


@pointwise_dynamic(promotion_methods=[(0, 1, 2, "DEFAULT"), (0, 1, 2, "DEFAULT")], num_outputs=2)
@triton.jit
def glu_backward_kernel(dy, a, b):
    s = sigmoid_rn(b)
    return s * dy, (1.0 - s) * s * dy * a


@pointwise_dynamic(promotion_methods=[(0, 1, 2, "DEFAULT"), (0, 1, 2, "DEFAULT")], num_outputs=2)
@triton.jit
def prelu_backward_kernel(dy, x, weight):
    positive = x > 0
    return tl.where(positive, dy, weight * dy), tl.where(positive, 0.0, x * dy)


# -- launchers -------------------------------------------------------------------------------------
def _common_dtype(a: torch.Tensor, b: torch.Tensor) -> torch.dtype:
    return a.dtype if a.dtype == b.dtype else torch.promote_types(a.dtype, b.dtype)


def _launch_with_scalars(kernel, convert, grad_output, x, *values, out0=None):
    """``kernel(grad_output, x, *scalars)``, the scalars ``values`` as ``convert`` (opmath_scalars or
    storage_scalars) gives them for the operands' dtype; NotImplemented where one does not fit (ATen raises)."""
    scalars = convert(_common_dtype(grad_output, x), *values)
    if scalars is None:
        return NotImplemented
    return kernel(grad_output, x, *scalars, out0=out0)


def gelu_backward(grad_output, x, *, approximate="none", out0=None):
    """``gelu_backward`` for ``approximate`` "none" or "tanh"."""
    if approximate == "none":
        return gelu_backward_kernel(grad_output, x, out0=out0)
    if approximate == "tanh":
        return gelu_tanh_backward_kernel(grad_output, x, out0=out0)
    return NotImplemented


def silu_backward(grad_output, x, out0=None):
    """``silu_backward``; results rounded to a half type may divide approximately (see the knob)."""
    result = out0.dtype if out0 is not None else _common_dtype(grad_output, x)
    kernel = silu_backward_approx_kernel if approx_division(result) else silu_backward_kernel
    return kernel(grad_output, x, out0=out0)


def threshold_backward(grad_output, x, threshold, out0=None):
    """``threshold_backward`` (relu's backward): 0 where ``x <= threshold``, the gradient elsewhere."""
    return _launch_with_scalars(threshold_backward_kernel, storage_scalars, grad_output, x, threshold, out0=out0)


def elu_backward(grad_output, alpha, scale, input_scale, is_result, self_or_result, out0=None):
    """``elu_backward`` from the input, or from the result (in-place elu; ATen refuses alpha < 0 there)."""
    if is_result and alpha < 0:
        return NotImplemented
    kernel = elu_backward_from_result_kernel if is_result else elu_backward_kernel
    return _launch_with_scalars(kernel, opmath_scalars, grad_output, self_or_result, alpha, scale, input_scale,
                                out0=out0)


def hardtanh_backward(grad_output, x, min_val, max_val, out0=None):
    """``hardtanh_backward``: the gradient strictly inside ``(min_val, max_val)``, 0 outside."""
    return _launch_with_scalars(hardtanh_backward_kernel, opmath_scalars, grad_output, x, min_val, max_val,
                                out0=out0)


def leaky_relu_backward(grad_output, x, negative_slope, self_is_result, out0=None):
    """``leaky_relu_backward``; from the result ATen refuses a negative slope."""
    if self_is_result and negative_slope < 0:
        return NotImplemented
    return _launch_with_scalars(leaky_relu_backward_kernel, opmath_scalars, grad_output, x, negative_slope,
                                out0=out0)


def softplus_backward(grad_output, x, beta, threshold, out0=None):
    """``softplus_backward``: ``grad * sigmoid(beta * x)``, the gradient itself above the threshold."""
    return _launch_with_scalars(softplus_backward_kernel, opmath_scalars, grad_output, x, beta, threshold, out0=out0)


def shrink_backward(grad_output, x, lambd, out0=None):
    """``softshrink_backward`` and ``hardshrink_backward`` (one formula): 0 on ``[-lambd, lambd]``."""
    return _launch_with_scalars(shrink_backward_kernel, storage_scalars, grad_output, x, lambd, out0=out0)


def log_sigmoid_backward(grad_output, x, buffer, out0=None):
    """``log_sigmoid_backward``; the buffer is not needed (see the kernel). As in ATen, grad and input
    share one dtype and the result takes the gradient's layout."""
    if grad_output.dtype != x.dtype:
        return NotImplemented
    if out0 is None:
        out0 = torch.empty_like(grad_output)
    return log_sigmoid_backward_kernel(grad_output, x, out0=out0)


def logit_backward(grad_output, x, eps=None, out0=None):
    """``logit_backward``: NaN outside [0, 1] without eps; 0 outside ``[eps, 1 - eps]`` with it."""
    if eps is None or eps < 0:
        return logit_backward_kernel(grad_output, x, out0=out0)
    return _launch_with_scalars(logit_backward_eps_kernel, opmath_scalars, grad_output, x, eps, out0=out0)


def glu_backward(grad_output, x, dim, out0=None):
    """``glu_backward``: both halves of the input's gradient written by one kernel, through views."""
    halves = glu_halves(x, dim)
    if halves is None or grad_output.dtype != x.dtype or grad_output.shape != halves[0].shape:
        return NotImplemented
    if out0 is None:
        out0 = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    elif out0.shape != x.shape:
        out0.resize_(x.shape)
    first, second = glu_halves(out0, dim)
    glu_backward_kernel(grad_output, *halves, out0=first, out1=second)
    return out0


def prelu_backward(grad_output, x, weight):
    """``_prelu_kernel_backward`` -> (grad_input, grad_weight), both of the broadcast shape (autograd
    sums grad_weight down to the weight's shape)."""
    if not grad_output.dtype == x.dtype == weight.dtype:
        return NotImplemented
    return prelu_backward_kernel(grad_output, x, weight)
