"""Layer norm: ``native_layer_norm`` and its backward on the row-norm kernels (row_norm.py), ``layer_norm``
where autograd records nothing, and ``skip_layer_norm``, the residual add fused in front of the norm."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from flag_gems import aten_kernel, native
from gems_norm import row_norm
from gems_norm.heuristics import TO_ATEN, Plans, dtype_of, no_grads, signature
from gems_norm.semantics import FLOAT_DTYPES, stats_dtype

_aten_forward = aten_kernel("native_layer_norm")
_aten_backward = aten_kernel("native_layer_norm_backward")
_aten_layer_norm = aten_kernel("layer_norm", autograd=True)


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


def forward_op_plan(input, normalized_shape, weight, bias, center: bool, save_stats: bool):
    """The plan of a row norm forward on ATen's arguments: the row forward (x, residual, weight, bias, eps) ->
    (y, mean, rstd, h) that takes them, or TO_ATEN. Statistics as ATen saves them (``save_stats``) or none;
    for one key of (``signature`` of each tensor, ``normalized_shape``, flags)."""
    shape = rows_of(input, normalized_shape, weight, bias)
    if shape is None:
        return TO_ATEN
    dtype = stats_dtype(input, weight, bias, acc_on_cuda=True) if center else torch.float32
    run = row_norm.forward_plan(center, input.dtype, None, dtype_of(weight), dtype_of(bias), dtype, *shape,
                                stats_shape(input, normalized_shape) if save_stats else None)
    if input.is_contiguous() and flat(weight) is weight and flat(bias) is bias:
        return run

    def dense(x, residual, weight, bias, eps):
        return run(x.contiguous(), residual, flat(weight), flat(bias), eps)

    return dense


def backward_op_plan(grad_out, input, normalized_shape, mean, rstd, weight, bias, need_dx: bool, need_dw: bool,
                     need_db: bool):
    """The plan of a row norm backward on ATen's arguments (``mean`` None for RMS norm): a function
    (grad_out, input, mean, rstd, weight) -> (dx, dw, db), None where not asked for, or TO_ATEN; for one key
    of (``signature`` of each tensor, ``normalized_shape``, ``output_mask``)."""
    shape = rows_of(input, normalized_shape, weight, bias)
    if (shape is None or grad_out.shape != input.shape or grad_out.dtype != input.dtype
            or (mean is not None and mean.numel() != shape[0]) or rstd.numel() != shape[0]
            or (need_dw and weight is None) or (need_db and bias is None)):
        return TO_ATEN
    if not (need_dx or need_dw or need_db):
        return no_grads
    m, n = shape
    center = mean is not None
    _, dy_sm, dy_sn = row_norm.grad_rows(grad_out, m, n)
    run = row_norm.backward_plan(center, grad_out.dtype, input.dtype, dtype_of(weight), dtype_of(mean), rstd.dtype,
                                 m, n, dy_sm, dy_sn, need_dx, need_dw, need_db, input.dtype)
    if (grad_out.is_contiguous() and input.is_contiguous() and (mean is None or mean.is_contiguous())
            and rstd.is_contiguous() and (weight is None or weight.dim() == 1 and weight.is_contiguous())
            and (bias is None or bias.dim() == 1)):
        return run
    w_shape = None if weight is None else weight.shape
    b_shape = None if bias is None else bias.shape

    def dense(grad_out, input, mean, rstd, weight):
        dx, dw, db = run(row_norm.grad_rows(grad_out, m, n)[0], input.contiguous(),
                         None if mean is None else mean.contiguous(), rstd.contiguous(), flat(weight))
        return dx, None if dw is None else dw.view(w_shape), None if db is None else db.view(b_shape)

    return dense


def _layer_norm_forward_plan(input, normalized_shape, weight, bias):
    return forward_op_plan(input, normalized_shape, weight, bias, True, True)


#: Plans of ``native_layer_norm`` and its backward, by the signatures of their tensors and flags.
_forward_plans = Plans(_layer_norm_forward_plan)
_backward_plans = Plans(backward_op_plan)


def _forward_key(input, normalized_shape, weight, bias) -> tuple:
    # ``signature`` of each tensor, spelled out: this key is built on every call.
    return ((input.shape, input.stride(), input.dtype, input.get_device()), tuple(normalized_shape),
            None if weight is None else (weight.shape, weight.stride(), weight.dtype, weight.get_device()),
            None if bias is None else (bias.shape, bias.stride(), bias.dtype, bias.get_device()))


def _inference_plan(input, normalized_shape, weight, bias):
    return forward_op_plan(input, normalized_shape, weight, bias, True, False)


#: Plans of ``layer_norm`` outside autograd: the forward kernel alone, no statistics kept.
_inference_plans = Plans(_inference_plan)


def layer_norm_op(input, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
    """ATen's ``layer_norm`` (CompositeImplicitAutograd) on the Autograd key. Where autograd records nothing
    (inference, a decoding step) the forward kernel runs alone, with no mean and rstd to allocate and
    store; otherwise ATen's decomposition, whose native_layer_norm and backward are served here."""
    if records_graph(input, weight, bias):
        return _aten_layer_norm.decomposed(input, normalized_shape, weight, bias, eps, cudnn_enable, quietly=True)
    key = _forward_key(input, normalized_shape, weight, bias)
    plan = _inference_plans.get(key) or _inference_plans.add(key, input, normalized_shape, weight, bias)
    if plan is TO_ATEN:
        return _aten_layer_norm(input, normalized_shape, weight, bias, eps, cudnn_enable)
    return plan(input, None, weight, bias, eps)[0]


def native_layer_norm(input, normalized_shape, weight, bias, eps):
    """ATen's ``native_layer_norm``: (output, mean, rstd), statistics shaped and typed as ATen saves them."""
    key = _forward_key(input, normalized_shape, weight, bias)
    plan = _forward_plans.get(key) or _forward_plans.add(key, input, normalized_shape, weight, bias)
    if plan is TO_ATEN:
        return _aten_forward(input, normalized_shape, weight, bias, eps)
    y, mean, rstd, _ = plan(input, None, weight, bias, eps)
    return y, mean, rstd


def native_layer_norm_backward(grad_out, input, normalized_shape, mean, rstd, weight, bias, output_mask):
    """ATen's ``native_layer_norm_backward``: (dx, dweight, dbias), None where not asked for."""
    need_dx, need_dw, need_db = output_mask
    key = (signature(grad_out), signature(input), tuple(normalized_shape), signature(mean), signature(rstd),
           signature(weight), signature(bias), need_dx, need_dw, need_db)
    plan = (_backward_plans.get(key)
            or _backward_plans.add(key, grad_out, input, normalized_shape, mean, rstd, weight, bias, need_dx, need_dw,
                                   need_db))
    if plan is TO_ATEN:
        return _aten_backward(grad_out, input, normalized_shape, mean, rstd, weight, bias, output_mask)
    return plan(grad_out, input, mean, rstd, weight)


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
    return _skip_inference_op(x, residual, list(normalized_shape), weight, bias, eps)


def _skip_inference(x, residual, normalized_shape, weight, bias, eps):
    shape = rows_of(x, normalized_shape, weight, bias)
    return row_norm.forward(x.contiguous(), *shape, flat(weight), flat(bias), eps, True, torch.float32, None,
                            residual=residual.contiguous())[0]


# Without an autograd node to build, skip_layer_norm is an op of the dispatcher: its calls replay from C++.
_skip_inference_op = native.function_op(
    "gems_norm", "skip_layer_norm(Tensor x, Tensor residual, int[] normalized_shape, Tensor? weight, Tensor? bias, "
    "float eps) -> Tensor", _skip_inference, lambda x, *_: torch.empty_like(x, memory_format=torch.contiguous_format))
