"""Fused gated activations of LLM MLPs: ``silu_and_mul(a, b) = silu(a) * b`` and
``gelu_and_mul(a, b) = gelu(a) * b``, one pass forward and one pass backward.

Both are differentiable: the backward kernel reads (grad, a, b) once and writes both gradients. The
product is computed in float32 for half types and rounded once, where the unfused torch code rounds
silu(a) first.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from flag_gems import native, pointwise_dynamic
from gems_pointwise.overloads import FLOATS

_SQRT1_2 = tl.constexpr(0.7071067811865476)
_INV_SQRT_2PI = tl.constexpr(0.3989422804014327)
_TANH_BETA = tl.constexpr(0.7978845608028654)  # sqrt(2 / pi)
_TANH_KAPPA = tl.constexpr(0.044715)


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def silu_and_mul_kernel(a, b):
    return a * _sigmoid(a) * b


@pointwise_dynamic(promotion_methods=[(0, 1, 2, "DEFAULT"), (0, 1, 2, "DEFAULT")])
@triton.jit
def silu_and_mul_backward_kernel(grad, a, b):
    sig = _sigmoid(a)
    grad_a = grad * b * sig * (1.0 + a * (1.0 - sig))
    grad_b = grad * a * sig
    return grad_a, grad_b


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def gelu_and_mul_kernel(a, b):
    return 0.5 * a * (1.0 + tl.math.erf(a * _SQRT1_2)) * b


@pointwise_dynamic(promotion_methods=[(0, 1, 2, "DEFAULT"), (0, 1, 2, "DEFAULT")])
@triton.jit
def gelu_and_mul_backward_kernel(grad, a, b):
    cdf = 0.5 * (1.0 + tl.math.erf(a * _SQRT1_2))
    pdf = tl.exp(-0.5 * a * a) * _INV_SQRT_2PI
    return grad * b * (cdf + a * pdf), grad * a * cdf


@triton.jit
def _gelu_tanh_term(a):
    inner = _TANH_BETA * (a + _TANH_KAPPA * a * a * a)
    return libdevice.tanh(inner)


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def gelu_tanh_and_mul_kernel(a, b):
    return 0.5 * a * (1.0 + _gelu_tanh_term(a)) * b


@pointwise_dynamic(promotion_methods=[(0, 1, 2, "DEFAULT"), (0, 1, 2, "DEFAULT")])
@triton.jit
def gelu_tanh_and_mul_backward_kernel(grad, a, b):
    t = _gelu_tanh_term(a)
    gelu = 0.5 * a * (1.0 + t)
    slope = 0.5 * (1.0 + t) + 0.5 * a * (1.0 - t * t) * _TANH_BETA * (1.0 + 3.0 * _TANH_KAPPA * a * a)
    return grad * b * slope, grad * gelu


def _wide_outputs(grad: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> dict:
    # The gradient of a broadcast operand is a sum: its terms stay in float32 (at least) until summed.
    if a.shape == grad.shape and b.shape == grad.shape:
        return {}
    dtype = torch.promote_types(torch.promote_types(grad.dtype, torch.promote_types(a.dtype, b.dtype)), torch.float32)
    return {name: torch.empty(grad.shape, dtype=dtype, device=grad.device) for name in ("out0", "out1")}


def _grad_like(grad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    # Broadcast operands get the sum over the dimensions they were expanded along.
    if grad.shape != like.shape:
        grad = grad.sum_to_size(like.shape)
    return grad.to(like.dtype)


class _GatedActivation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, forward_kernel, backward_kernel):
        ctx.save_for_backward(a, b)
        ctx.backward_kernel = backward_kernel
        return forward_kernel(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        grad_a, grad_b = ctx.backward_kernel(grad, a, b, **_wide_outputs(grad, a, b))
        return _grad_like(grad_a, a), _grad_like(grad_b, b), None, None


def _needs_graph(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)


def _computable(a, b) -> bool:
    return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype in FLOATS
            and b.dtype in FLOATS and a.device == b.device)


def silu_and_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``silu(a) * b`` (a and b broadcast), differentiable, in one pass each way."""
    if not _computable(a, b):
        return torch.nn.functional.silu(a) * b
    if _needs_graph(a, b):
        return _GatedActivation.apply(a, b, silu_and_mul_kernel, silu_and_mul_backward_kernel)
    return _silu_and_mul_op(a, b)


# Without an autograd node to build, the gated activations are ops of the dispatcher: their calls replay
# from C++.
def _gated_result(a: torch.Tensor, b: torch.Tensor, *_) -> torch.Tensor:
    # The broadcast shape in the promoted dtype: what the kernels return, for tracing.
    shape = torch.broadcast_shapes(a.shape, b.shape)
    return a.new_empty(shape, dtype=torch.promote_types(a.dtype, b.dtype))


_silu_and_mul_op = native.function_op("gems_pointwise", "silu_and_mul(Tensor a, Tensor b) -> Tensor",
                                      lambda a, b: silu_and_mul_kernel(a, b), _gated_result)


_GELU_KERNELS = {
    "none": (gelu_and_mul_kernel, gelu_and_mul_backward_kernel),
    "tanh": (gelu_tanh_and_mul_kernel, gelu_tanh_and_mul_backward_kernel),
}


def gelu_and_mul(a: torch.Tensor, b: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """``gelu(a, approximate) * b`` (a and b broadcast), differentiable, in one pass each way."""
    kernels = _GELU_KERNELS.get(approximate)
    if kernels is None:
        raise RuntimeError("approximate argument must be either none or tanh.")
    if not _computable(a, b):
        return torch.nn.functional.gelu(a, approximate=approximate) * b
    if _needs_graph(a, b):
        return _GatedActivation.apply(a, b, *kernels)
    return _gelu_and_mul_op(a, b, approximate)


_gelu_and_mul_op = native.function_op(
    "gems_pointwise", "gelu_and_mul(Tensor a, Tensor b, str approximate) -> Tensor",
    lambda a, b, approximate: _GELU_KERNELS[approximate][0](a, b), _gated_result)
