"""Instance norm, the public ``instance_norm`` (the signature of ``torch.nn.functional.instance_norm``).

As ATen does it: batch norm of the input seen as (1, N*C, *) (a free view of a contiguous input), with
weight, bias and running statistics repeated per sample; the updated running statistics are then
averaged over the batch. The kernels are batch_norm.py's; only the autograd wiring lives here.
"""

from __future__ import annotations

import math

import torch

from gems_norm import batch_norm
from gems_norm.per_channel import channel_view


def _repeat(t: torch.Tensor | None, n: int) -> torch.Tensor | None:
    return None if t is None else t.repeat(n)


class _InstanceNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, weight, bias, running_mean, running_var, use_input_stats, momentum, eps):
        n, c = input.shape[:2]
        x = input.contiguous().view(1, n * c, -1)
        view = channel_view(x)
        rm, rv = _repeat(running_mean, n), _repeat(running_var, n)
        out, mean, invstd = batch_norm.forward(x, view, _repeat(weight, n), _repeat(bias, n), rm, rv,
                                               use_input_stats, momentum, eps, torch.float32)
        if use_input_stats and running_mean is not None:
            running_mean.copy_(rm.view(n, c).mean(0))
            running_var.copy_(rv.view(n, c).mean(0))
        ctx.save_for_backward(x, weight, mean if use_input_stats else rm, invstd if use_input_stats else rv)
        ctx.use_input_stats, ctx.eps, ctx.shape = use_input_stats, eps, input.shape
        ctx.bias_dtype = bias.dtype if bias is not None else input.dtype
        return out.view(input.shape)

    @staticmethod
    def backward(ctx, dy):
        x, weight, mean, spread = ctx.saved_tensors
        n, c = ctx.shape[:2]
        need_dx, need_dw, need_db = ctx.needs_input_grad[:3]
        dy = dy.contiguous().view(x.shape)
        dx, dw, db = batch_norm.backward(dy, x, channel_view(x), _repeat(weight, n), mean, spread,
                                         ctx.use_input_stats, ctx.use_input_stats, ctx.eps, need_dx, need_dw, need_db,
                                         torch.float32)
        # Per-sample gradients of the repeated parameters, summed over the batch.
        return (None if dx is None else dx.view(ctx.shape),
                None if dw is None else dw.view(n, c).sum(0).to(weight.dtype),
                None if db is None else db.view(n, c).sum(0).to(ctx.bias_dtype),
                None, None, None, None, None)


def instance_norm(input: torch.Tensor, running_mean: torch.Tensor | None = None,
                  running_var: torch.Tensor | None = None, weight: torch.Tensor | None = None,
                  bias: torch.Tensor | None = None, use_input_stats: bool = True, momentum: float = 0.1,
                  eps: float = 1e-5) -> torch.Tensor:
    """Instance norm as ``torch.nn.functional.instance_norm``, differentiable in input, weight and bias."""
    # Training on one value per instance is ATen's error; the fallback raises it.
    handled = (input.dim() >= 3 and (math.prod(input.shape[2:]) > 1 or not use_input_stats)
               and (use_input_stats or (running_mean is not None and running_var is not None))
               and batch_norm.dense_view(input, weight, bias, running_mean, running_var) is not None)
    if not handled:
        return torch.nn.functional.instance_norm(input, running_mean, running_var, weight, bias, use_input_stats,
                                                 momentum, eps)
    return _InstanceNorm.apply(input, weight, bias, running_mean, running_var, use_input_stats, momentum, eps)
