"""Weight norm, ``w = g * v / ||v||`` with the norm over every dim but ``dim``:
``_weight_norm_interface`` and its backward, and the public, differentiable ``weight_norm``.

With ``dim=0`` each norm is over one contiguous row: one program holds whole rows (as RMS norm does), so
the forward reads ``v`` once and the backward ``v`` and ``grad_w`` once. Otherwise (the last dim, or rows
too wide for registers) the per-slice sums of squares (and, backward, of ``grad_w * v``) run on the
per-channel kernels with the normalised dim as the channel; one small kernel turns them into norms and
coefficients, one elementwise pass writes the result.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from flag_gems import aten_kernel, native
from gems_norm.heuristics import MAX_ROW_BLOCK, Plans, ReadyLaunch, cdiv, launch, next_pow2, row_tile, warps
from gems_norm.layer_norm import records_graph
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


@triton.jit
def _rows_kernel(V, DW, G, NORMS, OUT, DG, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 BACKWARD: tl.constexpr):
    # Whole rows of (M, N) ``v``: forward OUT = v * g / ||v|| and NORMS; backward (DW = grad_w)
    # OUT = grad_v and DG = grad_g, with the formulas of the coefficient kernels above.
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)[:, None]
    cols = tl.arange(0, BLOCK_N)[None, :]
    row_ok = rows < M
    mask = row_ok & (cols < N)
    offs = rows.to(tl.int64) * N + cols
    v = tl.load(V + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(G + rows, mask=row_ok, other=0.0).to(tl.float32)
    if BACKWARD:
        dw = tl.load(DW + offs, mask=mask, other=0.0).to(tl.float32)
        norm = tl.load(NORMS + rows, mask=row_ok, other=1.0).to(tl.float32)
        dot = tl.sum(dw * v, 1, keep_dims=True)
        tl.store(DG + rows, (dot / norm).to(DG.dtype.element_ty), mask=row_ok)
        scale = g / norm
        out = v * (-scale * dot / (norm * norm)) + dw * scale
    else:
        norm = tl.sqrt(tl.sum(v * v, 1, keep_dims=True))
        tl.store(NORMS + rows, norm.to(NORMS.dtype.element_ty), mask=row_ok)
        out = v * (g / tl.where(row_ok, norm, 1.0))  # rows past M divide nothing
    tl.store(OUT + offs, out.to(OUT.dtype.element_ty), mask=mask)


def _rows(v: torch.Tensor, dim: int | None) -> tuple[int, int] | None:
    """(M, N) when the norms are over whole contiguous rows a program holds (``dim=0``), else None."""
    if dim != 0:
        return None
    m = v.shape[0]
    n = v.numel() // m
    return (m, n) if next_pow2(n) <= MAX_ROW_BLOCK else None


def _rows_launch(rows: tuple[int, int], backward: bool, dtypes: tuple) -> ReadyLaunch:
    block_m, block_n = row_tile(*rows)
    return ReadyLaunch(_rows_kernel, (cdiv(rows[0], block_m),), warps(block_m * block_n), dtypes, rows,
                       BLOCK_M=block_m, BLOCK_N=block_n, BACKWARD=backward)


#: The row kernel's launches by (rows, direction, tensor dtypes): a repeated call (each training step's) finds
#: its grid, tile and compiled kernel here and only checks its pointers.
_row_launches = Plans(_rows_launch)


def _launch_rows(rows: tuple[int, int], args: list, backward: bool) -> None:
    dtypes = tuple([a.dtype for a in args])
    key = (rows, backward, dtypes)
    ready = _row_launches.get(key) or _row_launches.add(key, rows, backward, dtypes)
    ready((*args, *rows))


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
    rows = _rows(v, dim)
    if rows is not None:
        w, norms = torch.empty_like(v), torch.empty_like(g, dtype=_norms_dtype(g))
        _launch_rows(rows, [v, v, g, norms, w, g], backward=False)
        return w, norms
    view = _view(v, dim)
    part = channel_sums(view, v, v)
    norms = torch.empty_like(g, dtype=_norms_dtype(g))
    coef = torch.empty(3, view.c, dtype=torch.float32, device=v.device)
    launch(_forward_coef_kernel, (cdiv(view.c, _block(view.c)),),
           [part, part.shape[1], view.c, g, norms, coef], 4, BLOCK_C=_block(view.c))
    return channel_affine(view, v, coef, torch.empty_like(v)), norms


def backward(grad_w: torch.Tensor, v: torch.Tensor, g: torch.Tensor, norms: torch.Tensor, dim: int | None):
    """(grad_v, grad_g) for contiguous ``grad_w`` and ``v``."""
    rows = _rows(v, dim)
    if rows is not None:
        grad_v, grad_g = torch.empty_like(v), torch.empty_like(g)
        _launch_rows(rows, [v, grad_w, g, norms, grad_v, grad_g], backward=True)
        return grad_v, grad_g
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
    if records_graph(v, g):
        return _WeightNorm.apply(v, g, kept)
    return _inference_op(v, g, kept)


def _inference(v: torch.Tensor, g: torch.Tensor, dim: int | None) -> torch.Tensor:
    return forward(v.contiguous(), g.contiguous(), dim)[0]


# Without an autograd node to build, weight_norm is an op of the dispatcher: its calls replay from C++.
_inference_op = native.function_op("gems_norm", "weight_norm(Tensor v, Tensor g, int? dim) -> Tensor", _inference,
                                   lambda v, *_: torch.empty_like(v, memory_format=torch.contiguous_format))
