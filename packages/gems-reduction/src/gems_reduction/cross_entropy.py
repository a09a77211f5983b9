"""Fused, differentiable cross-entropy: ``flag_gems.cross_entropy_loss`` and aten::cross_entropy_loss.

The forward never materialises probabilities: one program per row (a few rows for short ones) walks
the classes once with the softmax skeleton's online (max, sum of exp) update, gathers the target
logit, and keeps the sums that label smoothing or probability targets need. It saves the row's
log-sum-exp; the backward recomputes softmax from it and writes the gradient in one pass
(1 read + 1 write). Reduced losses are combined from per-program partial sums by one small program.

Per row i with target class t (class-index targets), weights w (1 when absent), W = sum(w), C classes
and smoothing e:  loss_i = (1 - e) w_t (lse_i - x_t) + e / C (W lse_i - sum_c w_c x_c),
d loss_i / d x_c = (1 - e) w_t (p_c - [c = t]) + e / C (W p_c - w_c), with p = softmax(x_i).
Probability targets q: loss_i = sum_c w_c q'_c (lse_i - x_c) with q' = (1 - e) q + e / C, and
d loss_i / d x_c = p_c sum(w q') - w_c q'_c.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from flag_gems import aten_kernel
from flag_gems.launch import launch
from flag_gems.runtime import device
from gems_reduction import layout as lay
from gems_reduction.nll_loss import _weighted_total_kernel
from gems_reduction.reduce import SUM_OF, convert, run, tl_dtype
from gems_reduction.rows import online_update

REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}


@triton.jit
def _ce_forward_kernel(
    x_ptr, t_ptr, w_ptr, w_total_ptr, loss_ptr, weight_sum_ptr, lse_ptr, qw_ptr,
    N, C, s_n, s_tn, ignore_index, smoothing,
    PROB: tl.constexpr, HAS_WEIGHT: tl.constexpr, SMOOTH: tl.constexpr, PARTIAL: tl.constexpr,
    ACC: tl.constexpr, INT64: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    if INT64:
        rows = rows.to(tl.int64)
    row_mask = rows < N
    base = rows * s_n
    cols = tl.arange(0, BLOCK_C)
    m = tl.full([BLOCK_M], float("-inf"), ACC)
    s = tl.zeros([BLOCK_M], ACC)
    wx = tl.zeros([BLOCK_M, BLOCK_C], ACC)  # sum_c w_c q'_c x_c (PROB) or sum_c w_c x_c (SMOOTH)
    wq = tl.zeros([BLOCK_M, BLOCK_C], ACC)  # sum_c w_c q'_c (PROB)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + cols
        mask = row_mask[:, None] & (c < C)[None, :]
        x = tl.load(x_ptr + base[:, None] + c[None, :], mask=mask, other=0).to(ACC)
        m, s = online_update(m, s, tl.where(mask, x, float("-inf")), 1)
        if HAS_WEIGHT:
            w = tl.load(w_ptr + c, mask=c < C, other=0).to(ACC)[None, :]
        else:
            w = 1.0
        if PROB:
            q = tl.load(t_ptr + rows[:, None] * s_tn + c[None, :], mask=mask, other=0).to(ACC)
            q = tl.where(mask, q * (1 - smoothing) + smoothing / C, 0.0) * w
            wq += q
            wx += q * x
        elif SMOOTH:
            wx += tl.where(mask, w * x, 0.0)
    lse = m + tl.log(s)
    if PROB:
        valid = row_mask
        row_weight = valid.to(ACC)
        loss = lse * tl.sum(wq, 1) - tl.sum(wx, 1)
        tl.store(qw_ptr + rows, tl.sum(wq, 1), mask=row_mask)
    else:
        t = tl.load(t_ptr + rows, mask=row_mask, other=0)
        valid = row_mask & (t != ignore_index) & (t >= 0) & (t < C)
        x_t = tl.load(x_ptr + base + t, mask=valid, other=0).to(ACC)
        if HAS_WEIGHT:
            row_weight = tl.load(w_ptr + t, mask=valid, other=0).to(ACC)
        else:
            row_weight = valid.to(ACC)
        loss = (1 - smoothing) * row_weight * (lse - x_t)
        if SMOOTH:
            if HAS_WEIGHT:
                w_total = tl.load(w_total_ptr).to(ACC)
            else:
                w_total = C
            loss += smoothing / C * (w_total * lse - tl.sum(wx, 1))
    loss = tl.where(valid, loss, 0.0)
    tl.store(lse_ptr + rows, lse, mask=row_mask)
    if PARTIAL:
        tl.store(loss_ptr + tl.program_id(0), tl.sum(loss, 0))
        tl.store(weight_sum_ptr + tl.program_id(0), tl.sum(tl.where(valid, row_weight, 0.0), 0))
    else:
        tl.store(loss_ptr + rows, convert(loss, loss_ptr.dtype.element_ty), mask=row_mask)


@triton.jit
def _ce_backward_kernel(
    x_ptr, t_ptr, w_ptr, w_total_ptr, lse_ptr, qw_ptr, g_ptr, denom_ptr, gi_ptr,
    N, C, s_n, s_tn, ignore_index, smoothing,
    PROB: tl.constexpr, HAS_WEIGHT: tl.constexpr, SMOOTH: tl.constexpr, PER_ROW_GRAD: tl.constexpr,
    DIVIDE: tl.constexpr, ACC: tl.constexpr, INT64: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    if INT64:
        rows = rows.to(tl.int64)
    row_mask = rows < N
    base = rows * s_n
    lse = tl.load(lse_ptr + rows, mask=row_mask, other=0)
    if PER_ROW_GRAD:
        g = tl.load(g_ptr + rows, mask=row_mask, other=0).to(ACC)
    else:
        g = tl.load(g_ptr).to(ACC) + tl.zeros([BLOCK_M], ACC)
    if DIVIDE:
        g = g / tl.load(denom_ptr).to(ACC)
    if PROB:
        qw = tl.load(qw_ptr + rows, mask=row_mask, other=0)
        valid = row_mask
    else:
        t = tl.load(t_ptr + rows, mask=row_mask, other=0)
        valid = row_mask & (t != ignore_index) & (t >= 0) & (t < C)
        if HAS_WEIGHT:
            w_t = tl.load(w_ptr + t, mask=valid, other=0).to(ACC)
        else:
            w_t = valid.to(ACC)
        if SMOOTH and HAS_WEIGHT:
            w_total = tl.load(w_total_ptr).to(ACC)
        else:
            w_total = C
    g = tl.where(valid, g, 0.0)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        mask = row_mask[:, None] & (c < C)[None, :]
        x = tl.load(x_ptr + base[:, None] + c[None, :], mask=mask, other=0).to(ACC)
        p = tl.exp(x - lse[:, None])
        if HAS_WEIGHT:
            w = tl.load(w_ptr + c, mask=c < C, other=0).to(ACC)[None, :]
        else:
            w = 1.0
        if PROB:
            q = tl.load(t_ptr + rows[:, None] * s_tn + c[None, :], mask=mask, other=0).to(ACC)
            grad = p * qw[:, None] - w * (q * (1 - smoothing) + smoothing / C)
        else:
            hit = (c[None, :] == t[:, None]).to(ACC)
            grad = (1 - smoothing) * w_t[:, None] * (p - hit)
            if SMOOTH:
                grad += smoothing / C * (w_total * p - w)
        tl.store(gi_ptr + base[:, None] + c[None, :], convert(grad * g[:, None], gi_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------------
# Launching


def ce_tiles(rows: int, classes: int) -> tuple[int, int, int]:
    """(BLOCK_M rows, BLOCK_C classes, num_warps): 8K classes per loop step (a 32K vocabulary in
    four steps); short rows packed up to 4K elements per program, leaving ~4 programs per SM."""
    if device.interpreter:
        block_c = min(triton.next_power_of_2(classes), 16384)
        return min(triton.next_power_of_2(rows), max(1, 16384 // block_c)), block_c, 4
    block_c = min(triton.next_power_of_2(classes), 8192)
    spread = triton.next_power_of_2(triton.cdiv(rows, 4 * lay.sm_count()))
    block_m = max(1, min(4096 // block_c, spread))
    return block_m, block_c, max(4, min(16, block_m * block_c // 512))


class _Problem:
    """A call's tensors in the (rows, classes) form the kernels take, plus its constants."""

    def __init__(self, x, target, weight, ignore_index, reduction, smoothing):
        self.shape = x.shape
        self.prob = target.is_floating_point()
        if x.dim() == 1:
            x, target = x.unsqueeze(0), target.unsqueeze(0)
        elif x.dim() > 2:
            # Class dim last, spatial positions as rows.
            classes = x.shape[1]
            x = x.movedim(1, -1).reshape(-1, classes)
            target = target.movedim(1, -1).reshape(-1, classes) if self.prob else target.reshape(-1)
        if x.stride(-1) != 1:
            x = x.contiguous()
        if self.prob and (target.stride(-1) != 1 or target.dtype != x.dtype):
            target = target.to(x.dtype).contiguous()
        self.x, self.target = x, target.contiguous() if not self.prob else target
        self.weight = weight
        self.ignore_index, self.reduction, self.smoothing = ignore_index, reduction, float(smoothing)
        self.rows, self.classes = x.shape
        self.acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        self.w_total = (run(weight, (0,), SUM_OF, self.acc)[0]
                        if weight is not None and smoothing > 0 and not self.prob else None)
        self.block_m, self.block_c, self.warps = ce_tiles(self.rows, self.classes)
        self.grid = (triton.cdiv(self.rows, self.block_m),)
        self.int64 = lay.force_int64 or x.numel() > lay.INT32_MAX

    def constexprs(self):
        return dict(PROB=self.prob, HAS_WEIGHT=self.weight is not None, SMOOTH=self.smoothing > 0,
                    ACC=tl_dtype(self.acc), INT64=self.int64, BLOCK_M=self.block_m, BLOCK_C=self.block_c,
                    num_warps=self.warps)

    def tensors(self):
        w = self.weight if self.weight is not None else self.x
        return self.x, self.target, w, self.w_total if self.w_total is not None else self.x

    def ints(self):
        return (self.rows, self.classes, self.x.stride(0), self.target.stride(0) if self.prob else 0,
                self.ignore_index, self.smoothing)


def _forward(p: _Problem):
    """(loss, lse, sum of w q' per row, mean denominator or None)."""
    x = p.x
    lse = torch.empty(p.rows, dtype=p.acc, device=x.device)
    qw = torch.empty(p.rows, dtype=p.acc, device=x.device) if p.prob else lse
    if p.reduction == 0:
        loss = torch.empty(p.rows, dtype=x.dtype, device=x.device)
        if p.rows:
            launch(_ce_forward_kernel, p.grid, *p.tensors(), loss, loss, lse, qw, *p.ints(), PARTIAL=False,
                   **p.constexprs())
        out_shape = (p.shape[0],) + tuple(p.shape[2:]) if len(p.shape) > 1 else ()
        return loss.reshape(out_shape), lse, qw, None
    parts = max(p.grid[0], 1)
    # Every program writes its partial; with no rows the single partial must be zero.
    alloc = torch.empty if p.rows else torch.zeros
    loss_parts = alloc(parts, dtype=p.acc, device=x.device)
    weight_parts = alloc(parts, dtype=p.acc, device=x.device)
    if p.rows:
        launch(_ce_forward_kernel, p.grid, *p.tensors(), loss_parts, weight_parts, lse, qw, *p.ints(),
               PARTIAL=True, **p.constexprs())
    loss = torch.empty((), dtype=x.dtype, device=x.device)
    denom = torch.empty((), dtype=p.acc, device=x.device)
    # The weight partials are target weights (class targets) or row counts (probability targets):
    # what ATen divides a mean by.
    launch(_weighted_total_kernel, (1,), loss_parts, weight_parts, loss, denom, parts, MEAN=p.reduction == 1,
           BLOCK=min(triton.next_power_of_2(parts), 1024))
    return loss, lse, qw, denom


def _backward(p: _Problem, lse, qw, denom, grad):
    gi = torch.empty_like(p.x)
    if p.rows:
        launch(
            _ce_backward_kernel, p.grid, *p.tensors(), lse, qw, grad.contiguous(),
            denom if denom is not None else lse, gi, *p.ints(),
            PER_ROW_GRAD=p.reduction == 0, DIVIDE=p.reduction == 1, **p.constexprs())
    if len(p.shape) > 2:
        moved = (p.shape[0],) + tuple(p.shape[2:]) + (p.shape[1],)
        return gi.reshape(moved).movedim(-1, 1)
    return gi.reshape(p.shape)


class CrossEntropy(torch.autograd.Function):
    """Fused cross-entropy whose backward recomputes softmax from the saved log-sum-exp."""

    @staticmethod
    def forward(ctx, x, target, weight, ignore_index, reduction, smoothing):
        problem = _Problem(x, target, weight, ignore_index, reduction, smoothing)
        loss, lse, qw, denom = _forward(problem)
        ctx.save_for_backward(problem.x, problem.target, problem.weight, problem.w_total, lse, qw, denom)
        problem.x = problem.target = problem.weight = problem.w_total = None
        ctx.problem = problem
        return loss

    @staticmethod
    def backward(ctx, grad):
        problem = ctx.problem
        problem.x, problem.target, problem.weight, problem.w_total, lse, qw, denom = ctx.saved_tensors
        return _backward(problem, lse, qw, denom, grad), None, None, None, None, None


def _supported(x, target, weight, reduction, ignore_index, smoothing) -> bool:
    if x.dtype not in lay.FLOATING or x.dim() == 0 or reduction not in (0, 1, 2) or not 0 <= smoothing <= 1:
        return False
    classes = x.shape[1] if x.dim() > 1 else x.shape[0]
    if weight is not None and (weight.requires_grad or weight.shape != (classes,) or weight.dtype != x.dtype):
        return False
    if target.is_floating_point():
        return target.shape == x.shape and not target.requires_grad
    expected = (x.shape[0],) + tuple(x.shape[2:]) if x.dim() > 1 else ()
    if target.dtype != torch.int64 or tuple(target.shape) != expected:
        return False
    if device.interpreter and target.numel():
        # ATen raises for a class index out of range (a device-side assert on the GPU, where our
        # kernel gives such rows zero loss instead of synchronising to check).
        return not bool(((target != ignore_index) & ((target < 0) | (target >= classes))).any())
    return True


def cross_entropy(x, target, weight=None, reduction=1, ignore_index=-100, label_smoothing=0.0):
    """aten::cross_entropy_loss (served on the Autograd key): the fused kernel, or ATen's
    decomposition for what it does not handle."""
    if not _supported(x, target, weight, reduction, ignore_index, label_smoothing):
        return aten_kernel("cross_entropy_loss", autograd=True)(x, target, weight, reduction, ignore_index,
                                                                label_smoothing)
    return CrossEntropy.apply(x, target, weight, ignore_index, reduction, label_smoothing)


def cross_entropy_loss(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                       ignore_index: int = -100, reduction: str = "mean",
                       label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of logits ``input`` (N, C), (C,) or (N, C, d1, ...) against class indices or
    class probabilities, as ``torch.nn.functional.cross_entropy``, without materialising softmax."""
    return cross_entropy(input, target, weight, REDUCTIONS[reduction], ignore_index, label_smoothing)
