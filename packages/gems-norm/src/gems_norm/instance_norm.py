"""Instance norm: ATen's ``instance_norm`` (CompositeImplicitAutograd, so served on the Autograd key) and the
public ``instance_norm`` (the signature of ``torch.nn.functional.instance_norm``).

As ATen does it: batch norm of the input seen as (1, N*C, *) (a free view of a contiguous input), so
that each (sample, channel) plane is one channel, normalised by one program that holds it whole when it
fits (one read and one write of the input). Unlike ATen, weight and bias are not repeated per sample: the
kernel reads them every C channels. Running statistics, when updated, are repeated per sample and then
averaged over the batch, as ATen does. The kernels are batch_norm.py's; only the autograd wiring lives here.
"""

from __future__ import annotations

import math

import torch

from flag_gems import aten_kernel
from gems_norm import batch_norm
from gems_norm.heuristics import TO_ATEN, Plans, signature
from gems_norm.layer_norm import records_graph
from gems_norm.per_channel import ChannelView, channel_view

_aten_instance_norm = aten_kernel("instance_norm", autograd=True)


def _repeat(t: torch.Tensor | None, n: int) -> torch.Tensor | None:
    return None if t is None else t.repeat(n)


def _forward(input, view: ChannelView, weight, bias, running_mean, running_var, use_input_stats, momentum, eps):
    """(out, x as (1, N*C, K) seen as ``view``, saved mean or running mean, saved invstd or running variance)."""
    n, c = input.shape[:2]
    x = input.contiguous().view(1, n * c, -1)
    update = use_input_stats and running_mean is not None
    if update:  # each plane updates its own copy of its channel's running statistics
        rm, rv, w, b = (_repeat(t, n) for t in (running_mean, running_var, weight, bias))
        period = n * c
    else:
        rm, rv, w, b, period = running_mean, running_var, weight, bias, c
    out, mean, invstd = batch_norm.forward(x, view, w, b, rm, rv, use_input_stats, momentum, eps,
                                           torch.float32, param_c=period)
    if update:
        running_mean.copy_(rm.view(n, c).mean(0))
        running_var.copy_(rv.view(n, c).mean(0))
    if use_input_stats:
        return out.view(input.shape), x, mean, invstd
    return out.view(input.shape), x, running_mean, running_var


class _InstanceNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, view, weight, bias, running_mean, running_var, use_input_stats, momentum, eps):
        out, x, mean, spread = _forward(input, view, weight, bias, running_mean, running_var, use_input_stats,
                                        momentum, eps)
        ctx.save_for_backward(x, weight, mean, spread)
        ctx.use_input_stats, ctx.eps, ctx.shape, ctx.view = use_input_stats, eps, input.shape, view
        ctx.bias_dtype = bias.dtype if bias is not None else input.dtype
        return out

    @staticmethod
    def backward(ctx, dy):
        x, weight, mean, spread = ctx.saved_tensors
        n, c = ctx.shape[:2]
        need_dx, _, need_dw, need_db = ctx.needs_input_grad[:4]
        if not ctx.use_input_stats:  # the running statistics, one per channel: one per plane here
            mean, spread = _repeat(mean, n), _repeat(spread, n)
        dy = dy.contiguous().view(x.shape)
        dx, dw, db = batch_norm.backward(dy, x, ctx.view, _repeat(weight, n), mean, spread,
                                         ctx.use_input_stats, ctx.use_input_stats, ctx.eps, need_dx, need_dw, need_db,
                                         torch.float32)
        # Per-sample gradients of the repeated parameters, summed over the batch.
        return (None if dx is None else dx.view(ctx.shape), None,
                None if dw is None else dw.view(n, c).sum(0).to(weight.dtype),
                None if db is None else db.view(n, c).sum(0).to(ctx.bias_dtype),
                None, None, None, None, None)


def _view(input, weight, bias, running_mean, running_var, use_input_stats):
    """The plan of a call: the (1, N*C, K) view of the input the kernels normalise, or TO_ATEN."""
    # Training on one value per instance is ATen's error.
    handled = (input.dim() >= 3 and (math.prod(input.shape[2:]) > 1 or not use_input_stats)
               and (use_input_stats or (running_mean is not None and running_var is not None))
               and batch_norm.dense_view(input, weight, bias, running_mean, running_var) is not None)
    if not handled:
        return TO_ATEN
    n, c = input.shape[:2]
    return channel_view(input.contiguous().view(1, n * c, -1))


#: Plans by the signatures of the tensors and ``use_input_stats``.
_views = Plans(_view)


def _instance_norm(input, weight, bias, running_mean, running_var, use_input_stats, momentum, eps):
    """The output on the kernels, or None for a call they do not take (ATen's, which raises its errors)."""
    key = (signature(input), signature(weight), signature(bias), signature(running_mean), signature(running_var),
           use_input_stats)
    view = _views.get(key) or _views.add(key, input, weight, bias, running_mean, running_var, use_input_stats)
    if view is TO_ATEN:
        return None
    if records_graph(input, weight, bias):
        return _InstanceNorm.apply(input, view, weight, bias, running_mean, running_var, use_input_stats, momentum,
                                   eps)
    return _forward(input, view, weight, bias, running_mean, running_var, use_input_stats, momentum, eps)[0]


def instance_norm_op(input, weight, bias, running_mean, running_var, use_input_stats, momentum, eps,
                     cudnn_enabled):
    """ATen's ``instance_norm`` on the Autograd key."""
    out = _instance_norm(input, weight, bias, running_mean, running_var, use_input_stats, momentum, eps)
    if out is None:
        return _aten_instance_norm(input, weight, bias, running_mean, running_var, use_input_stats, momentum, eps,
                                   cudnn_enabled)
    return out


def instance_norm(input: torch.Tensor, running_mean: torch.Tensor | None = None,
                  running_var: torch.Tensor | None = None, weight: torch.Tensor | None = None,
                  bias: torch.Tensor | None = None, use_input_stats: bool = True, momentum: float = 0.1,
                  eps: float = 1e-5) -> torch.Tensor:
    """Instance norm as ``torch.nn.functional.instance_norm``, differentiable in input, weight and bias."""
    out = _instance_norm(input, weight, bias, running_mean, running_var, use_input_stats, momentum, eps)
    if out is None:
        return torch.nn.functional.instance_norm(input, running_mean, running_var, weight, bias, use_input_stats,
                                                 momentum, eps)
    return out
