"""Weight norm, ``w = g * v / ||v||`` with the norm over every dim but ``dim``:
``_weight_norm_interface`` and its backward, and the public, differentiable ``weight_norm``.

The per-slice sums of squares (and, backward, of ``grad_w * v``) run on the per-channel kernels with the
normalised dim as the channel; one small kernel turns them into norms and coefficients, one elementwise
pass writes the result.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from flag_gems import aten_kernel
from gems_norm.heuristics import cdiv, launch, next_pow2
from gems_norm.per_channel import ChannelView, channel_affine, channel_sums
from gems_norm.semantics import FLOAT_DTYPES


@triton.jit
def _forward_coef_kernel(PART, splits, C, G, NORMS, COEF, BLOCK_C: tl.constexpr):
    # PART plane 1 (splits, C) holds the partial sums of squares.
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    ok = c < C
    sumsq = tl.zeros([BLOCK_C], tl.float32)
    for s in range(splits):
        sumsq += tl.load(PART + (splits + s) * C + c, mask=ok, other=0.0)
    norm = tl.sqrt(sumsq)
    tl.store(NORMS + c, norm.to(NORMS.dtype.element_ty), mask=ok)
    norm = tl.where(ok, norm, 1.0)  # lanes past C divide nothing
    tl.store(COEF + c, tl.zeros([BLOCK_C], tl.float32), mask=ok)
    tl.store(COEF + C + c, tl.load(G + c, mask=ok, other=0.0).to(tl.float32) / norm, mask=ok)
    tl.store(COEF + 2 * C + c, tl.zeros([BLOCK_C], tl.float32), mask=ok)


@triton.jit
def _backward_coef_kernel(PART, splits, C, G, NORMS, DG, COEF, BLOCK_C: tl.constexpr):
    # grad_v = g / norm * (grad_w - v * dot / norm^2), grad_g = dot / norm, with dot = sum(grad_w * v)
    # (PART plane 1).
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    ok = c < C
    dot = tl.zeros([BLOCK_C], tl.float32)
    for s in range(splits):
        dot += tl.load(PART + (splits + s) * C + c, mask=ok, other=0.0)
    norm = tl.load(NORMS + c, mask=ok, other=1.0).to(tl.float32)
    g = tl.load(G + c, mask=ok, other=0.0).to(tl.float32)
    tl.store(DG + c, (dot / norm).to(DG.dtype.element_ty), mask=ok)
    scale = g / norm
    tl.store(COEF + c, tl.zeros([BLOCK_C], tl.float32), mask=ok)
    tl.store(COEF + C + c, -scale * dot / (norm * norm), mask=ok)
    tl.store(COEF + 2 * C + c, tl.zeros([BLOCK_C], tl.float32), mask=ok)
    tl.store(COEF + 3 * C + c, scale, mask=ok)


def _view(v: torch.Tensor, dim: int | None) -> ChannelView:
    """Contiguous ``v`` as (NB, C, K) with C the kept dim; ``dim=None`` keeps none (one norm)."""
    if dim is None:
        return ChannelView(1, 1, v.numel(), 0, 0, 1)
    nb, c = math.prod(v.shape[:dim]), v.shape[dim]
    k = math.prod(v.shape[dim + 1:])
    if k == 1:
        return ChannelView(1, c, nb, 0, 1, c)
    return ChannelView(nb, c, k, c * k, k, 1)


def _block(c: int) -> int:
    return min(next_pow2(max(c, 1)), 1024)


def _norms_dtype(g: torch.Tensor) -> torch.dtype:
    return torch.float32 if g.dtype in (torch.float16, torch.bfloat16) else g.dtype


def forward(v: torch.Tensor, g: torch.Tensor, dim: int | None):
    """(w, norms) for contiguous ``v`` and ``g`` (one value per slice); norms take ``g``'s shape."""
    view = _view(v, dim)
    part = channel_sums(view, v, v)
    norms = torch.empty_like(g, dtype=_norms_dtype(g))
    coef = torch.empty(3, view.c, dtype=torch.float32, device=v.device)
    launch(_forward_coef_kernel, (cdiv(view.c, _block(view.c)),),
           [part, part.shape[1], view.c, g, norms, coef], 4, BLOCK_C=_block(view.c))
    return channel_affine(view, v, coef, torch.empty_like(v)), norms


def backward(grad_w: torch.Tensor, v: torch.Tensor, g: torch.Tensor, norms: torch.Tensor, dim: int | None):
    """(grad_v, grad_g) for contiguous ``grad_w`` and ``v``."""
    view = _view(v, dim)
    part = channel_sums(view, grad_w, v)
    grad_g = torch.empty_like(g)
    coef = torch.empty(4, view.c, dtype=torch.float32, device=v.device)
    launch(_backward_coef_kernel, (cdiv(view.c, _block(view.c)),),
           [part, part.shape[1], view.c, g, norms, grad_g, coef], 4, BLOCK_C=_block(view.c))
    return channel_affine(view, v, coef, torch.empty_like(v), dy=grad_w), grad_g


def _interface_ok(v, g, dim) -> bool:
    return (v.dtype in FLOAT_DTYPES and g.dtype == v.dtype and v.dim() > 0 and v.numel() > 0
            and dim in (0, v.dim() - 1) and g.numel() == v.shape[dim] and g.device == v.device)


def weight_norm_interface(v, g, dim=0):
    """ATen's ``_weight_norm_interface``: (w, norms), for ``dim`` first or last."""
    if not _interface_ok(v, g, dim):
        return aten_kernel("_weight_norm_interface")(v, g, dim)
    return forward(v.contiguous(), g.contiguous(), dim)


def weight_norm_interface_backward(grad_w, saved_v, saved_g, saved_norms, dim):
    """ATen's ``_weight_norm_interface_backward``: (grad_v, grad_g)."""
    if (not _interface_ok(saved_v, saved_g, dim) or grad_w.shape != saved_v.shape or grad_w.dtype != saved_v.dtype
            or saved_norms.numel() != saved_g.numel()):
        return aten_kernel("_weight_norm_interface_backward")(grad_w, saved_v, saved_g, saved_norms, dim)
    return backward(grad_w.contiguous(), saved_v.contiguous(), saved_g.contiguous(), saved_norms.contiguous(), dim)


class _WeightNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v, g, dim):
        v, g = v.contiguous(), g.contiguous()
        w, norms = forward(v, g, dim)
        ctx.save_for_backward(v, g, norms)
        ctx.dim = dim
        return w

    @staticmethod
    def backward(ctx, grad_w):
        v, g, norms = ctx.saved_tensors
        grad_v, grad_g = backward(grad_w.contiguous(), v, g, norms, ctx.dim)
        return grad_v, grad_g, None


def weight_norm(v: torch.Tensor, g: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``g * v / ||v||`` with the norm over every dim of ``v`` but ``dim`` (over all of it for
    ``dim=-1``), as ``torch._weight_norm``; differentiable in ``v`` and ``g``."""
    if v.dtype not in FLOAT_DTYPES or g.dtype != v.dtype or v.dim() == 0 or v.numel() == 0 or g.device != v.device:
        return torch._weight_norm(v, g, dim)
    if dim == -1:
        kept = None
        ok = g.numel() == 1 and g.dim() <= v.dim()
    else:
        kept = dim % v.dim()
        ok = list(g.shape) == [v.shape[kept] if d == kept else 1 for d in range(v.dim())]
    if not ok:
        return torch._weight_norm(v, g, dim)
    return _WeightNorm.apply(v, g, kept)
