"""Layer norm: ``native_layer_norm`` and its backward on the row-norm kernels (row_norm.py), and
``skip_layer_norm``, the residual add fused in front of the norm."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from flag_gems import aten_kernel
from gems_norm import row_norm
from gems_norm.semantics import FLOAT_DTYPES, stats_dtype

_aten_forward = aten_kernel("native_layer_norm")
_aten_backward = aten_kernel("native_layer_norm_backward")


def rows_of(x: torch.Tensor, normalized_shape: Sequence[int], *params) -> tuple[int, int] | None:
    """(M, N) of ``x`` seen as rows normalised over ``normalized_shape``, when the kernels take this call:
    a float dtype, non-empty, trailing dims equal to ``normalized_shape``, parameters of that shape,
    dtype and device. None sends the call to ATen, which also raises ATen's errors."""
    n = last_dim(x, normalized_shape, *params)
    if n:  # the common call, told apart more cheaply
        return x.numel() // n, n
    k = len(normalized_shape)
    if x.dtype not in FLOAT_DTYPES or x.numel() == 0 or not 0 < k <= x.dim():
        return None
    if list(x.shape[x.dim() - k:]) != list(normalized_shape):
        return None
    for p in params:
        if p is not None and (list(p.shape) != list(normalized_shape) or p.dtype != x.dtype
                              or p.device != x.device):
            return None
    n = math.prod(normalized_shape)
    return x.numel() // n, n


def last_dim(x: torch.Tensor, normalized_shape: Sequence[int], *params) -> int:
    """N of the common call, which the kernels take as it is: ``x`` contiguous, of a float dtype and
    non-empty, normalised over its last dim alone, each parameter a contiguous N-vector of ``x``'s dtype
    and device. 0 for any other call (``rows_of`` decides those); cheaper to ask than ``rows_of``."""
    if len(normalized_shape) != 1 or x.dtype not in FLOAT_DTYPES or not x.is_contiguous() or x.numel() == 0:
        return 0
    n = normalized_shape[0]
    if x.dim() == 0 or x.size(-1) != n:
        return 0
    for p in params:
        if p is not None and (p.dtype != x.dtype or p.shape != (n,) or not p.is_contiguous()
                              or p.device != x.device):
            return 0
    return n


def records_graph(*tensors) -> bool:
    """Whether autograd records a call on ``tensors``: grad mode on and one of them requiring grad.
    A kernel on the Autograd key is called in every grad mode, so it asks; where this is False, a
    ``torch.autograd.Function`` would only add host time."""
    if not torch.is_grad_enabled():
        return False
    for t in tensors:
        if t is not None and t.requires_grad:
            return True
    return False


def flat(p: torch.Tensor | None) -> torch.Tensor | None:
    """A parameter as the contiguous 1-d vector the kernels index."""
    if p is None or (p.dim() == 1 and p.is_contiguous()):
        return p
    return p.contiguous().view(-1)


def stats_shape(x: torch.Tensor, normalized_shape: Sequence[int]) -> tuple[int, ...]:
    """ATen's shape of saved row statistics: the batch dims, then a 1 per normalised dim."""
    k = len(normalized_shape)
    return (*x.shape[:x.dim() - k], *([1] * k))


def native_layer_norm(input, normalized_shape, weight, bias, eps):
    """ATen's ``native_layer_norm``: (output, mean, rstd), statistics shaped and typed as ATen saves them."""
    n = last_dim(input, normalized_shape, weight, bias)
    if n:  # the common call: nothing to copy, statistics one per row
        y, mean, rstd, _ = row_norm.forward(input, input.numel() // n, n, weight, bias, eps, True,
                                            stats_dtype(input, acc_on_cuda=True), (*input.shape[:-1], 1))
        return y, mean, rstd
    shape = rows_of(input, normalized_shape, weight, bias)
    if shape is None:
        return _aten_forward(input, normalized_shape, weight, bias, eps)
    dtype = stats_dtype(input, weight, bias, acc_on_cuda=True)
    y, mean, rstd, _ = row_norm.forward(input.contiguous(), *shape, flat(weight), flat(bias), eps, True, dtype,
                                        stats_shape(input, normalized_shape))
    return y, mean, rstd


def native_layer_norm_backward(grad_out, input, normalized_shape, mean, rstd, weight, bias, output_mask):
    """ATen's ``native_layer_norm_backward``: (dx, dweight, dbias), None where not asked for."""
    need_dx, need_dw, need_db = output_mask
    shape = rows_of(input, normalized_shape, weight, bias)
    if (shape is None or grad_out.shape != input.shape or grad_out.dtype != input.dtype
            or mean.numel() != shape[0] or rstd.numel() != shape[0]
            or (need_dw and weight is None) or (need_db and bias is None)):
        return _aten_backward(grad_out, input, normalized_shape, mean, rstd, weight, bias, output_mask)
    if not (need_dx or need_dw or need_db):
        return None, None, None
    dx, dw, db = row_norm.backward(grad_out, input.contiguous(), *shape, mean.contiguous(),
                                   rstd.contiguous(), flat(weight), True, need_dx, need_dw, need_db, input.dtype)
    return dx, param_shaped(dw, weight), param_shaped(db, bias)


def param_shaped(grad: torch.Tensor | None, param: torch.Tensor | None) -> torch.Tensor | None:
    """A parameter's gradient, computed as an N-vector, in the parameter's shape."""
    if grad is None or param.dim() == 1:
        return grad
    return grad.view(param.shape)


class _SkipLayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, residual, weight, bias, normalized_shape, eps, m, n):
        y, mean, rstd, h = row_norm.forward(x.contiguous(), m, n, flat(weight), flat(bias), eps, True,
                                            torch.float32, (m,), residual=residual.contiguous())
        ctx.save_for_backward(h, weight, bias, mean, rstd)
        ctx.rows = m, n
        return y

    @staticmethod
    def backward(ctx, dy):
        h, weight, bias, mean, rstd = ctx.saved_tensors
        need_dh = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        need_dw, need_db = ctx.needs_input_grad[2], ctx.needs_input_grad[3]
        dh, dw, db = row_norm.backward(dy, h, *ctx.rows, mean, rstd, flat(weight), True, need_dh,
                                       need_dw, need_db, h.dtype)
        return dh, dh, param_shaped(dw, weight), param_shaped(db, bias), None, None, None, None


def skip_layer_norm(x: torch.Tensor, residual: torch.Tensor, normalized_shape: Sequence[int],
                    weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                    eps: float = 1e-5) -> torch.Tensor:
    """``layer_norm(x + residual)`` in one pass over memory, differentiable in every tensor argument."""
    shape = rows_of(x, normalized_shape, weight, bias)
    if shape is None or residual.shape != x.shape or residual.dtype != x.dtype or residual.device != x.device:
        return torch.nn.functional.layer_norm(x + residual, normalized_shape, weight, bias, eps)
    if records_graph(x, residual, weight, bias):
        return _SkipLayerNorm.apply(x, residual, weight, bias, tuple(normalized_shape), eps, *shape)
    return row_norm.forward(x.contiguous(), *shape, flat(weight), flat(bias), eps, True, torch.float32, None,
                            residual=residual.contiguous())[0]
