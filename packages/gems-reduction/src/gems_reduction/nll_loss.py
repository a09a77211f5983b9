"""nll_loss_forward/backward and nll_loss2d_forward/backward.

The input is seen as (rows, C, spatial): (N, C) has no spatial part, (N, C, H, W) has H*W, and a
single (C,) vector is one row. The forward gathers -w[t] * x[t] per row; a reduced loss over few
rows is one program, over more rows it is summed per program (spread over the GPU: the gathers are
latency-bound) and the partial sums are combined by one small program (no atomics, deterministic),
which also divides by the total weight for ``mean``. The backward writes the whole gradient in one
pass: -w[t] * grad (/ total weight) at the target class, zero elsewhere.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from flag_gems.launch import launch
from flag_gems.runtime import device
from gems_reduction import layout as lay
from gems_reduction.reduce import convert, tl_dtype

NONE, MEAN, SUM = 0, 1, 2


@triton.jit
def _row_losses(x_ptr, t_ptr, w_ptr, i, rows, C, HW, s_n, s_c, s_hw, ignore_index,
                HAS_WEIGHT: tl.constexpr, ACC: tl.constexpr):
    """(-w[t] * x[t], w[t]) of rows ``i``, both 0 where a row is out of range or ignored."""
    mask = i < rows
    t = tl.load(t_ptr + i, mask=mask, other=0)
    valid = mask & (t != ignore_index) & (t >= 0) & (t < C)
    x = tl.load(x_ptr + (i // HW) * s_n + t * s_c + (i % HW) * s_hw, mask=valid, other=0).to(ACC)
    if HAS_WEIGHT:
        w = tl.load(w_ptr + t, mask=valid, other=0).to(ACC)
    else:
        w = valid.to(ACC)
    return tl.where(valid, -w * x, 0.0), w


@triton.jit
def _store_totals(loss, weight, out_ptr, total_ptr, MEAN: tl.constexpr):
    """out = sum(loss) (/ sum(weight) for MEAN), total = sum(weight)."""
    total_loss = tl.sum(loss, 0)
    total_weight = tl.sum(weight, 0)
    if MEAN:
        total_loss = total_loss / total_weight
    tl.store(out_ptr, convert(total_loss, out_ptr.dtype.element_ty))
    tl.store(total_ptr, convert(total_weight, total_ptr.dtype.element_ty))


@triton.jit
def _nll_forward_kernel(
    x_ptr, t_ptr, w_ptr, loss_ptr, weight_sum_ptr, rows, C, HW, s_n, s_c, s_hw, ignore_index,
    HAS_WEIGHT: tl.constexpr, PARTIAL: tl.constexpr, ACC: tl.constexpr, INT64: tl.constexpr, BLOCK: tl.constexpr,
):
    """Per row: -w[t] * x[t] (0 where ignored). PARTIAL: one (loss, weight) sum per program."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    if INT64:
        i = i.to(tl.int64)
    loss, w = _row_losses(x_ptr, t_ptr, w_ptr, i, rows, C, HW, s_n, s_c, s_hw, ignore_index, HAS_WEIGHT, ACC)
    if PARTIAL:
        tl.store(loss_ptr + tl.program_id(0), tl.sum(loss, 0))
        tl.store(weight_sum_ptr + tl.program_id(0), tl.sum(w, 0))
    else:
        tl.store(loss_ptr + i, convert(loss, loss_ptr.dtype.element_ty), mask=i < rows)


@triton.jit
def _nll_reduced_kernel(
    x_ptr, t_ptr, w_ptr, out_ptr, total_ptr, rows, C, HW, s_n, s_c, s_hw, ignore_index,
    HAS_WEIGHT: tl.constexpr, MEAN: tl.constexpr, ACC: tl.constexpr, INT64: tl.constexpr, BLOCK: tl.constexpr,
):
    """One program, for few rows: the summed (or mean) loss and the total weight in one launch."""
    loss = tl.zeros([BLOCK], ACC)
    weight = tl.zeros([BLOCK], ACC)
    for start in range(0, rows, BLOCK):
        i = start + tl.arange(0, BLOCK)
        if INT64:
            i = i.to(tl.int64)
        row_loss, w = _row_losses(x_ptr, t_ptr, w_ptr, i, rows, C, HW, s_n, s_c, s_hw, ignore_index, HAS_WEIGHT,
                                  ACC)
        loss += row_loss
        weight += w
    _store_totals(loss, weight, out_ptr, total_ptr, MEAN)


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


@triton.jit
def _nll_backward_kernel(
    g_ptr, t_ptr, w_ptr, total_ptr, gi_ptr, numel, C, HW, ignore_index,
    HAS_WEIGHT: tl.constexpr, PER_ROW_GRAD: tl.constexpr, MEAN: tl.constexpr, ACC: tl.constexpr,
    INT64: tl.constexpr, BLOCK: tl.constexpr,
):
    e = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    if INT64:
        e = e.to(tl.int64)
    mask = e < numel
    row = (e // (C * HW)) * HW + e % HW
    c = (e // HW) % C
    t = tl.load(t_ptr + row, mask=mask, other=0)
    hit = mask & (c == t) & (t != ignore_index)
    if HAS_WEIGHT:
        w = tl.load(w_ptr + t, mask=hit, other=0).to(ACC)
    else:
        w = hit.to(ACC)
    if PER_ROW_GRAD:
        g = tl.load(g_ptr + row, mask=hit, other=0).to(ACC)
    else:
        g = tl.load(g_ptr).to(ACC)
    if MEAN:
        g = g / tl.load(total_ptr).to(ACC)
    tl.store(gi_ptr + e, convert(tl.where(hit, -w * g, 0.0), gi_ptr.dtype.element_ty), mask=mask)


#: Up to this many rows, a reduced forward is one program: its gathers finish in one round trip to
#: memory. Beyond, one SM's gathers queue up (8192 rows took ~30 us as one looping program), so
#: programs of ``_part_rows`` rows spread them over the GPU and one small program adds their sums.
_ONE_PROGRAM_ROWS = 1024


def _block(n: int) -> tuple[int, int]:
    """(BLOCK, num_warps) for the per-row and per-element kernels and the one-program forward: up to
    1024 elements, 4 warps (plain gathers and stores; fewer programs on the interpreter)."""
    if device.interpreter:
        return min(triton.next_power_of_2(max(n, 1)), 16384), 4
    return min(triton.next_power_of_2(max(n, 1)), 1024), 4


def _part_rows(rows: int) -> int:
    """Rows per program of a reduced forward over many rows: 256, one round of gathers each, spread
    over the SMs (few, large programs on the interpreter)."""
    return _block(rows)[0] if device.interpreter else 256


def _rows_view(x):
    """(x, rows, C, HW, (s_n, s_c, s_hw)): x as (rows, C, spatial) with one stride each."""
    if x.dim() == 1:
        return x, 1, x.shape[0], 1, (0, x.stride(0), 0)
    if x.dim() == 2:
        return x, x.shape[0], x.shape[1], 1, (x.stride(0), x.stride(1), 0)
    if x.stride(2) != x.shape[3] * x.stride(3):
        x = x.contiguous()
    hw = x.shape[2] * x.shape[3]
    return x, x.shape[0] * hw, x.shape[1], hw, (x.stride(0), x.stride(1), x.stride(3))


def _invalid(x, target, weight, ignore_index, rows_dims) -> bool:
    """Cases left to ATen: its checks and errors (shapes, dtypes, out-of-range targets on CPU)."""
    if x.dim() not in rows_dims or x.dtype not in lay.FLOATING or target.dtype != torch.int64:
        return True
    if weight is not None and (weight.dim() != 1 or weight.numel() != x.shape[1 if x.dim() > 1 else 0]
                               or weight.dtype != x.dtype):
        return True
    expected = x.shape[:1] + x.shape[2:] if x.dim() > 1 else ()
    if tuple(target.shape) != tuple(expected):
        return True
    if device.interpreter and target.numel():
        # ATen raises "Target k is out of bounds" here; on the GPU it is a device-side assert in
        # ATen and out-of-range targets are masked to zero loss by our kernel (no host sync).
        c = x.shape[1] if x.dim() > 1 else x.shape[0]
        bad = (target != ignore_index) & ((target < 0) | (target >= c))
        return bool(bad.any())
    return False


def _forward(x, target, weight, reduction, ignore_index, output, total_weight, rows_dims):
    if _invalid(x, target, weight, ignore_index, rows_dims) or reduction not in (NONE, MEAN, SUM):
        return NotImplemented
    if (output is None) != (total_weight is None):
        return NotImplemented
    x, rows, c, hw, (s_n, s_c, s_hw) = _rows_view(x)
    target = target.contiguous()
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    int64 = lay.force_int64 or x.numel() > lay.INT32_MAX
    block, warps = _block(rows)
    common = dict(HAS_WEIGHT=weight is not None, ACC=tl_dtype(acc), INT64=int64, num_warps=warps)
    w = weight if weight is not None else x
    total = torch.empty((), dtype=x.dtype, device=x.device) if total_weight is None else total_weight
    lay.resize_output(total, ())
    args = (rows, c, hw, s_n, s_c, s_hw, ignore_index)
    if reduction == NONE and x.dim() > 1:
        loss = lay.new_output(output, target.shape, x.dtype, x)
        if rows:
            launch(_nll_forward_kernel, (triton.cdiv(rows, block),), x, target, w, loss, loss, *args, PARTIAL=False,
                   BLOCK=block, **common)
        total.zero_()
        return lay.deliver(loss, output), total
    loss = lay.new_output(output, (), x.dtype, x)
    if rows <= _ONE_PROGRAM_ROWS:
        # One launch sums the rows: two launches and a buffer of partials would cost more than the work.
        launch(_nll_reduced_kernel, (1,), x, target, w, loss, total, *args, MEAN=reduction == MEAN, BLOCK=block,
               **common)
        return lay.deliver(loss, output), total
    block = _part_rows(rows)
    parts = triton.cdiv(rows, block)
    sums = torch.empty((2, parts), dtype=acc, device=x.device)  # loss and weight per program
    launch(_nll_forward_kernel, (parts,), x, target, w, sums[0], sums[1], *args, PARTIAL=True, BLOCK=block,
           **common)
    launch(_weighted_total_kernel, (1,), sums[0], sums[1], loss, total, parts, MEAN=reduction == MEAN,
           BLOCK=min(triton.next_power_of_2(parts), 1024))
    return lay.deliver(loss, output), total


def nll_loss_forward(x, target, weight, reduction, ignore_index, *, output=None, total_weight=None):
    """nll_loss_forward / nll_loss_forward.output: input (C,) or (N, C)."""
    return _forward(x, target, weight, reduction, ignore_index, output, total_weight, (1, 2))


def nll_loss2d_forward(x, target, weight, reduction, ignore_index, *, output=None, total_weight=None):
    """nll_loss2d_forward / nll_loss2d_forward.output: input (N, C, H, W)."""
    return _forward(x, target, weight, reduction, ignore_index, output, total_weight, (4,))


def _backward(grad, x, target, weight, reduction, ignore_index, total_weight, grad_input, rows_dims):
    if _invalid(x, target, weight, ignore_index, rows_dims) or reduction not in (NONE, MEAN, SUM):
        return NotImplemented
    per_row = reduction == NONE and x.dim() > 1
    if grad.dtype != x.dtype or (per_row and tuple(grad.shape) != tuple(target.shape)) or (
            not per_row and grad.numel() != 1):
        return NotImplemented
    c = x.shape[1] if x.dim() > 1 else x.shape[0]
    hw = x.shape[2] * x.shape[3] if x.dim() == 4 else 1
    result = lay.new_output(grad_input, x.shape, x.dtype, x)
    numel = x.numel()
    if numel:
        block, warps = _block(numel)
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        launch(
            _nll_backward_kernel, (triton.cdiv(numel, block),), grad.contiguous(), target.contiguous(),
            weight if weight is not None else x, total_weight, result,
            numel, c, hw, ignore_index, HAS_WEIGHT=weight is not None, PER_ROW_GRAD=per_row,
            MEAN=reduction == MEAN, ACC=tl_dtype(acc), INT64=lay.force_int64 or numel > lay.INT32_MAX,
            BLOCK=block, num_warps=warps)
    return lay.deliver(result, grad_input)


def nll_loss_backward(grad_output, x, target, weight, reduction, ignore_index, total_weight, *, grad_input=None):
    """nll_loss_backward / nll_loss_backward.grad_input."""
    return _backward(grad_output, x, target, weight, reduction, ignore_index, total_weight, grad_input, (1, 2))


def nll_loss2d_backward(grad_output, x, target, weight, reduction, ignore_index, total_weight, *,
                        grad_input=None):
    """nll_loss2d_backward / nll_loss2d_backward.grad_input."""
    return _backward(grad_output, x, target, weight, reduction, ignore_index, total_weight, grad_input, (4,))
