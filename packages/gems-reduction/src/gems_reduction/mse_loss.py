"""mse_loss and mse_loss_backward.

A reduced loss of two tensors laid out alike is one pass of the reduce skeleton over x - y (nothing
materialised); other layouts and ``reduction='none'`` go through an elementwise kernel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl  # noqa: F401  (the interpreter looks for it beside jitted functions)

from flag_gems import pointwise_dynamic, promote
from gems_reduction import layout as lay
from gems_reduction.reduce import DIVIDE, SQUARE, SUM, Kind, run

NONE, MEAN, SUM_REDUCTION = 0, 1, 2
_MEAN_OF = Kind.of(SUM, SQUARE, DIVIDE, diff=True)
_SUM_OF = Kind.of(SUM, SQUARE, diff=True)
_MEAN_OF_ERRORS = Kind.of(SUM, post=DIVIDE)
_SUM_OF_ERRORS = Kind.of(SUM)


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def _squared_error(x, y):
    d = x - y
    return d * d


@pointwise_dynamic(is_tensor=[True, True, True, False], promotion_methods=[(0, 1, 2, "DEFAULT")])
@triton.jit
def _squared_error_grad(grad, x, y, scale):
    return scale * (x - y) * grad


def mse_loss(x, target, reduction=MEAN, *, out=None):
    """mse_loss / mse_loss.out: (x - target)^2, summed or averaged unless ``reduction`` is none."""
    dtype = promote(x, target)[1]
    if dtype not in lay.FLOATING or reduction not in (NONE, MEAN, SUM_REDUCTION):
        return NotImplemented
    if out is not None and out.dtype != dtype:
        return NotImplemented
    if reduction == NONE:
        if out is None:
            return _squared_error(x, target)
        return _squared_error(x, target, out0=out)
    kind = _MEAN_OF if reduction == MEAN else _SUM_OF
    if x.shape == target.shape and x.stride() == target.stride() and x.dtype == target.dtype:
        return run(x, lay.wrap_dims(None, x.dim()), kind, dtype, y=target,
                   d=float(x.numel()), out=out)[0]
    errors = _squared_error(x, target)
    reduce_kind = _MEAN_OF_ERRORS if reduction == MEAN else _SUM_OF_ERRORS
    return run(errors, lay.wrap_dims(None, errors.dim()), reduce_kind, dtype, d=float(errors.numel()), out=out)[0]


def mse_loss_backward(grad_output, x, target, reduction, *, grad_input=None):
    """mse_loss_backward / mse_loss_backward.grad_input: 2 (x - target) grad (/ numel for mean)."""
    if x.shape != target.shape or reduction not in (NONE, MEAN, SUM_REDUCTION) or x.dtype not in lay.FLOATING:
        return NotImplemented
    scale = 2.0 / x.numel() if reduction == MEAN and x.numel() else 2.0
    if grad_input is None:
        grad_input = torch.empty_like(x, memory_format=torch.contiguous_format)
    elif grad_input.dtype != promote(grad_output, x, target)[1]:
        return NotImplemented
    return _squared_error_grad(grad_output, x, target, scale, out0=grad_input)
