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

from flag_gems import aten_kernel, native
from flag_gems.intmath import cdiv, next_power_of_2
from flag_gems.launch import shared_launcher
from flag_gems.runtime import device
from gems_reduction import layout as lay
from gems_reduction.nll_loss import _store_totals
from gems_reduction.reduce import SUM_OF, convert, run, tl_dtype
from gems_reduction.rows import online_update

REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}
# What the forward kernel stores (its PARTIAL): per-row losses, per-program sums, or (one program)
# the summed or mean loss itself.
ROWS: tl.constexpr = tl.constexpr(0)
PER_PROGRAM: tl.constexpr = tl.constexpr(1)
TOTAL_SUM: tl.constexpr = tl.constexpr(2)
TOTAL_MEAN: tl.constexpr = tl.constexpr(3)


@triton.jit
def _row_block(N, s_n, INT64: tl.constexpr, BLOCK_M: tl.constexpr):
    """(rows, mask, offsets of their class 0) of the program's rows of logits."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    if INT64:
        rows = rows.to(tl.int64)
    return rows, rows < N, rows * s_n


@triton.jit
def _logits(x_ptr, base, row_mask, c, C, ACC: tl.constexpr):
    """(mask, logits) of the program's rows at classes ``c``."""
    mask = row_mask[:, None] & (c < C)[None, :]
    return mask, tl.load(x_ptr + base[:, None] + c[None, :], mask=mask, other=0).to(ACC)


@triton.jit
def _class_weights(w_ptr, c, C, HAS_WEIGHT: tl.constexpr, ACC: tl.constexpr):
    """The weights of classes ``c`` as a row of the tile (1 without weights)."""
    if HAS_WEIGHT:
        w = tl.load(w_ptr + c, mask=c < C, other=0).to(ACC)[None, :]
    else:
        w = 1.0
    return w


@triton.jit
def _ce_forward_kernel(
    x_ptr, t_ptr, w_ptr, w_total_ptr, loss_ptr, weight_sum_ptr, lse_ptr, qw_ptr,
    N, C, s_n, s_tn, ignore_index, smoothing,
    PROB: tl.constexpr, HAS_WEIGHT: tl.constexpr, SMOOTH: tl.constexpr, PARTIAL: tl.constexpr,
    ACC: tl.constexpr, INT64: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):
    rows, row_mask, base = _row_block(N, s_n, INT64, BLOCK_M)
    cols = tl.arange(0, BLOCK_C)
    m = tl.full([BLOCK_M], float("-inf"), ACC)
    s = tl.zeros([BLOCK_M], ACC)
    wx = tl.zeros([BLOCK_M, BLOCK_C], ACC)  # sum_c w_c q'_c x_c (PROB) or sum_c w_c x_c (SMOOTH)
    wq = tl.zeros([BLOCK_M, BLOCK_C], ACC)  # sum_c w_c q'_c (PROB)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + cols
        mask, x = _logits(x_ptr, base, row_mask, c, C, ACC)
        m, s = online_update(m, s, tl.where(mask, x, float("-inf")), 1)
        w = _class_weights(w_ptr, c, C, HAS_WEIGHT, ACC)
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
    if PARTIAL == ROWS:
        tl.store(loss_ptr + rows, convert(loss, loss_ptr.dtype.element_ty), mask=row_mask)
    elif PARTIAL == PER_PROGRAM:
        tl.store(loss_ptr + tl.program_id(0), tl.sum(loss, 0))
        tl.store(weight_sum_ptr + tl.program_id(0), tl.sum(tl.where(valid, row_weight, 0.0), 0))
    else:
        # The only program: the reduced loss itself (and the total weight), no second launch.
        _store_totals(loss, tl.where(valid, row_weight, 0.0), loss_ptr, weight_sum_ptr, PARTIAL == TOTAL_MEAN)


@triton.jit
def _ce_backward_kernel(
    x_ptr, t_ptr, w_ptr, w_total_ptr, lse_ptr, qw_ptr, g_ptr, denom_ptr, gi_ptr,
    N, C, s_n, s_tn, ignore_index, smoothing,
    PROB: tl.constexpr, HAS_WEIGHT: tl.constexpr, SMOOTH: tl.constexpr, PER_ROW_GRAD: tl.constexpr,
    DIVIDE: tl.constexpr, ACC: tl.constexpr, INT64: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):
    rows, row_mask, base = _row_block(N, s_n, INT64, BLOCK_M)
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
        mask, x = _logits(x_ptr, base, row_mask, c, C, ACC)
        p = tl.exp(x - lse[:, None])
        w = _class_weights(w_ptr, c, C, HAS_WEIGHT, ACC)
        if PROB:
            q = tl.load(t_ptr + rows[:, None] * s_tn + c[None, :], mask=mask, other=0).to(ACC)
            grad = p * qw[:, None] - w * (q * (1 - smoothing) + smoothing / C)
        else:
            hit = (c[None, :] == t[:, None]).to(ACC)
            grad = (1 - smoothing) * w_t[:, None] * (p - hit)
            if SMOOTH:
                grad += smoothing / C * (w_total * p - w)
        tl.store(gi_ptr + base[:, None] + c[None, :], convert(grad * g[:, None], gi_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _weighted_total_kernel(loss_ptr, weight_ptr, out_ptr, total_ptr, n, MEAN: tl.constexpr, BLOCK: tl.constexpr):
    """One program: out = sum(loss) (/ sum(weight) for MEAN), total = sum(weight)."""
    loss = tl.zeros([BLOCK], loss_ptr.dtype.element_ty)
    weight = tl.zeros([BLOCK], loss_ptr.dtype.element_ty)
    for start in range(0, n, BLOCK):
        k = start + tl.arange(0, BLOCK)
        loss += tl.load(loss_ptr + k, mask=k < n, other=0)
        weight += tl.load(weight_ptr + k, mask=k < n, other=0)
    _store_totals(loss, weight, out_ptr, total_ptr, MEAN)


# ---------------------------------------------------------------------------------------------------
# Launching


def ce_tiles(rows: int, classes: int) -> tuple[int, int, int]:
    """(BLOCK_M rows, BLOCK_C classes, num_warps): 8K classes per loop step (a 32K vocabulary in
    four steps); short rows packed up to 4K elements per program, leaving ~4 programs per SM."""
    if device.interpreter:
        block_c = min(next_power_of_2(classes), 16384)
        return min(next_power_of_2(rows), max(1, 16384 // block_c)), block_c, 4
    block_c = min(next_power_of_2(classes), 8192)
    spread = next_power_of_2(cdiv(rows, 4 * lay.sm_count()))
    block_m = max(1, min(4096 // block_c, spread))
    return block_m, block_c, max(4, min(16, block_m * block_c // 512))


class _Problem:
    """The ready call of one cross-entropy signature: the (rows, classes) form the kernels take, block
    sizes, and the launches of the forward (with the combine of its partial sums, when several
    programs make them) and of the backward. Its tensors come with each call."""

    __slots__ = ("shape", "prob", "rows", "classes", "acc", "reduction", "smooth_weights", "loss_shape", "forward",
                 "combine", "parts", "backward", "spare_rows", "spare_total")

    def __init__(self, x, target, weight, ignore_index, reduction, smoothing):
        self.shape = x.shape
        self.prob = target.is_floating_point()
        x, target = self.rows_form(x, target)
        self.rows, self.classes = x.shape
        self.reduction = reduction
        # Per device: where a call without gradient puts what only the backward reads.
        self.spare_rows: dict = {}
        self.spare_total: dict = {}
        self.acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        self.smooth_weights = weight is not None and smoothing > 0 and not self.prob
        loss_shape = (self.shape[0],) + tuple(self.shape[2:]) if len(self.shape) > 1 else ()
        self.loss_shape = None if loss_shape == (self.rows,) else loss_shape
        block_m, block_c, warps = ce_tiles(self.rows, self.classes)
        grid = (cdiv(self.rows, block_m),)
        constexprs = dict(PROB=self.prob, HAS_WEIGHT=weight is not None, SMOOTH=smoothing > 0, ACC=tl_dtype(self.acc),
                          INT64=lay.force_int64 or x.numel() > lay.INT32_MAX, BLOCK_M=block_m, BLOCK_C=block_c)
        ints = [self.rows, self.classes, x.stride(0), target.stride(0) if self.prob else 0, ignore_index,
                float(smoothing)]
        self.parts = max(grid[0], 1)
        self.combine = None
        if reduction == 0:
            stores = ROWS.value
        elif grid[0] == 1:
            stores = (TOTAL_MEAN if reduction == 1 else TOTAL_SUM).value
        else:
            stores = PER_PROGRAM.value
            self.combine = lay.Launch(
                shared_launcher(_weighted_total_kernel, dict(MEAN=reduction == 1,
                                                             BLOCK=min(next_power_of_2(self.parts), 1024)),
                                num_warps=4),
                (1,), [self.parts])
        forward = shared_launcher(_ce_forward_kernel, dict(constexprs, PARTIAL=stores), num_warps=warps)
        self.forward = lay.Launch(forward, grid, ints)
        self.backward = lay.Launch(shared_launcher(_ce_backward_kernel, dict(
            constexprs, PER_ROW_GRAD=reduction == 0, DIVIDE=reduction == 1), num_warps=warps), grid, ints)

    def rows_form(self, x, target):
        """``x`` and ``target`` as (rows, classes) with unit class stride (and rows of indices)."""
        if x.dim() == 1:
            x, target = x.unsqueeze(0), target.unsqueeze(0)
        elif x.dim() > 2:
            # Class dim last, spatial positions as rows.
            classes = x.shape[1]
            x = x.movedim(1, -1).reshape(-1, classes)
            target = target.movedim(1, -1).reshape(-1, classes) if self.prob else target.reshape(-1)
        if x.stride(-1) != 1:
            x = x.contiguous()
        if not self.prob:
            return x, target.contiguous()
        if target.stride(-1) != 1 or target.dtype != x.dtype:
            target = target.to(x.dtype).contiguous()
        return x, target

    def weight_total(self, weight):
        """What label smoothing scales class weights by: their sum (None when not needed)."""
        return run(weight, (0,), SUM_OF, self.acc)[0] if self.smooth_weights else None


def _forward(p: _Problem, x, target, weight, w_total, keep: bool = True):
    """(loss, lse, sum of w q' per row, mean denominator or None) of ``x`` and ``target`` in rows form.
    Without ``keep`` (no backward to come) the last three are buffers nobody reads."""
    if keep:
        lse = x.new_empty(p.rows, dtype=p.acc)
        qw = x.new_empty(p.rows, dtype=p.acc) if p.prob else lse
    else:
        lse = qw = lay.spare(p.spare_rows, x.device, p.rows, p.acc)
    tensors = [x, target, x if weight is None else weight, x if w_total is None else w_total]
    ptr = x.data_ptr() | target.data_ptr() | (0 if weight is None else weight.data_ptr())
    if p.reduction == 0:
        loss = x.new_empty(p.rows)
        if p.rows:
            p.forward(tensors + [loss, loss, lse, qw], ptr)
        return (loss if p.loss_shape is None else loss.reshape(p.loss_shape)), lse, qw, None
    loss = x.new_empty(())
    denom = x.new_empty((), dtype=p.acc) if keep else lay.spare(p.spare_total, x.device, (), p.acc)
    if p.combine is None:
        # One program: it stores the reduced loss and its denominator itself.
        p.forward(tensors + [loss, denom, lse, qw], ptr)
        return loss, lse, qw, denom
    # Every program writes its partial; with no rows the single partial must be zero.
    parts = (x.new_empty if p.rows else x.new_zeros)((2, p.parts), dtype=p.acc)
    loss_parts, weight_parts = parts[0], parts[1]
    if p.rows:
        p.forward(tensors + [loss_parts, weight_parts, lse, qw], ptr)
    # The weight partials are target weights (class targets) or row counts (probability targets):
    # what ATen divides a mean by.
    p.combine([loss_parts, weight_parts, loss, denom])
    return loss, lse, qw, denom


def _backward(p: _Problem, x, target, weight, w_total, lse, qw, denom, grad):
    gi = torch.empty_like(x)
    if p.rows:
        grad = grad.contiguous()
        tensors = [x, target, x if weight is None else weight, x if w_total is None else w_total, lse, qw, grad,
                   lse if denom is None else denom, gi]
        p.backward(tensors, x.data_ptr() | target.data_ptr() | grad.data_ptr()
                   | (0 if weight is None else weight.data_ptr()))
    if len(p.shape) > 2:
        moved = (p.shape[0],) + tuple(p.shape[2:]) + (p.shape[1],)
        return gi.reshape(moved).movedim(-1, 1)
    return gi.reshape(p.shape)


class CrossEntropy(torch.autograd.Function):
    """Fused cross-entropy whose backward recomputes softmax from the saved log-sum-exp."""

    @staticmethod
    def forward(ctx, x, target, weight, problem):
        x, target = problem.rows_form(x, target)
        w_total = problem.weight_total(weight)
        loss, lse, qw, denom = _forward(problem, x, target, weight, w_total)
        ctx.save_for_backward(x, target, weight, w_total, lse, qw, denom)
        ctx.problem = problem
        return loss

    @staticmethod
    def backward(ctx, grad):
        return _backward(ctx.problem, *ctx.saved_tensors, grad), None, None, None


def _supported(x, target, weight, reduction, smoothing) -> bool:
    """Whether the kernels serve a call of this signature (shapes, dtypes, options)."""
    if x.dtype not in lay.FLOATING or x.dim() == 0 or reduction not in (0, 1, 2) or not 0 <= smoothing <= 1:
        return False
    classes = x.shape[1] if x.dim() > 1 else x.shape[0]
    if weight is not None and (weight.requires_grad or weight.shape != (classes,) or weight.dtype != x.dtype):
        return False
    if target.is_floating_point():
        return target.shape == x.shape and not target.requires_grad
    expected = (x.shape[0],) + tuple(x.shape[2:]) if x.dim() > 1 else ()
    return target.dtype == torch.int64 and tuple(target.shape) == expected


def _targets_in_range(target, classes: int, ignore_index: int) -> bool:
    # ATen raises for a class index out of range (a device-side assert on the GPU, where our kernel
    # gives such rows zero loss instead of synchronising to check). Read on the host: no op dispatched.
    values = target.tolist() if target.dim() == 1 else target.flatten().tolist()
    if not isinstance(values, list):
        values = [values]
    return all(t == ignore_index or 0 <= t < classes for t in values)


_ATEN = "aten"  # the ready call of a signature the kernels leave to ATen


def cross_entropy(x, target, weight=None, reduction=1, ignore_index=-100, label_smoothing=0.0):
    """aten::cross_entropy_loss (served on the Autograd key): the fused kernel, or ATen's
    decomposition for what it does not handle. Without a gradient to record, no autograd node."""
    key = (cross_entropy, x.shape, x.stride(), x.dtype, target.shape, target.stride(), target.dtype,
           target.requires_grad, None if weight is None else (weight.shape, weight.dtype, weight.requires_grad),
           reduction, ignore_index, label_smoothing, lay.force_int64)
    problem = lay.calls.get(key)
    if problem is None:
        supported = _supported(x, target, weight, reduction, label_smoothing)
        problem = _Problem(x, target, weight, ignore_index, reduction, label_smoothing) if supported else _ATEN
        lay.remember(key, problem)
    if problem is _ATEN or (device.interpreter and not problem.prob and target.numel()
                            and not _targets_in_range(target, problem.classes, ignore_index)):
        return aten_kernel("cross_entropy_loss", autograd=True)(x, target, weight, reduction, ignore_index,
                                                                label_smoothing)
    if x.requires_grad and torch.is_grad_enabled():
        return CrossEntropy.apply(x, target, weight, problem)
    x, target = problem.rows_form(x, target)
    return _forward(problem, x, target, weight, problem.weight_total(weight), keep=False)[0]


def cross_entropy_loss(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                       ignore_index: int = -100, reduction: str = "mean",
                       label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of logits ``input`` (N, C), (C,) or (N, C, d1, ...) against class indices or
    class probabilities, as ``torch.nn.functional.cross_entropy``, without materialising softmax."""
    if input.requires_grad and torch.is_grad_enabled():
        return cross_entropy(input, target, weight, REDUCTIONS[reduction], ignore_index, label_smoothing)
    return _inference_op(input, target, weight, REDUCTIONS[reduction], ignore_index, label_smoothing)


# Without an autograd node to build, the loss is an op of the dispatcher: its calls replay from C++.
_inference_op = native.function_op(
    "gems_reduction", "cross_entropy_loss(Tensor input, Tensor target, Tensor? weight, int reduction, "
    "int ignore_index, float label_smoothing) -> Tensor", cross_entropy,
    lambda x, target, weight, reduction, *_: x.new_empty(
        (x.shape[:1] + x.shape[2:] if x.dim() > 1 else ()) if reduction == 0 else ()))
