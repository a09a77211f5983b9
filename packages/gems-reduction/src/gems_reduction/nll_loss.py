"""nll_loss_forward/backward and nll_loss2d_forward/backward.

The input is seen as (rows, C, spatial): (N, C) has no spatial part, (N, C, H, W) has H*W, and a
single (C,) vector is one row. The forward gathers -w[t] * x[t] per row, one element of each row, so
its cost is the latency of two dependent loads (target, then the gather), not bandwidth.

A reduced loss is always one launch. Over few rows one program gathers them all in one tile. Over
more rows the gathers are spread over programs (each SM then translates the addresses of its own rows)
and each program stores its two sums; the program that draws the last ticket of a counter adds the
sums up in program order (deterministic whichever program finishes last), divides by the total
weight for ``mean`` and sets the counter back to zero for the next launch. The counter and the sums
live in a buffer per stream, since launches on one stream never overlap.

The backward writes the whole gradient in one pass: -w[t] * grad (/ total weight) at the target
class, zero elsewhere.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from flag_gems import launch as launches
from flag_gems.intmath import cdiv, next_power_of_2
from flag_gems.launch import launch, shared_launcher
from flag_gems.runtime import device
from gems_reduction import layout as lay
from gems_reduction import tiles
from gems_reduction.reduce import convert, tl_dtype

NONE, MEAN, SUM = 0, 1, 2

#: A reduced forward over up to this many rows is one program holding them all in one tile. Beyond,
#: one SM's gathers queue up behind each other (8192 rows took ~30 us as one looping program on an
#: H100), so programs of ``PART_ROWS`` rows share them.
ONE_PROGRAM_ROWS = 1024
#: Rows each program of a spread forward gathers: one tile, so one round trip for its targets and
#: one for its gathers (32 programs for 8192 rows); few, large programs on the interpreter. A power of 2.
PART_ROWS = 16384 if device.interpreter else 256
#: At most this many programs (and partial sums) in a spread forward: the last program reads them all.
MAX_PARTS = 4096


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
    x_ptr, t_ptr, w_ptr, loss_ptr, rows, C, HW, s_n, s_c, s_hw, ignore_index,
    HAS_WEIGHT: tl.constexpr, ACC: tl.constexpr, INT64: tl.constexpr, BLOCK: tl.constexpr,
):
    """Per row: -w[t] * x[t] (0 where ignored)."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    if INT64:
        i = i.to(tl.int64)
    loss, w = _row_losses(x_ptr, t_ptr, w_ptr, i, rows, C, HW, s_n, s_c, s_hw, ignore_index, HAS_WEIGHT, ACC)
    tl.store(loss_ptr + i, convert(loss, loss_ptr.dtype.element_ty), mask=i < rows)


@triton.jit
def _nll_reduced_kernel(
    x_ptr, t_ptr, w_ptr, out_ptr, total_ptr, part_ptr, count_ptr, rows, chunk, C, HW, s_n, s_c, s_hw,
    ignore_index, HAS_WEIGHT: tl.constexpr, MEAN: tl.constexpr, SPREAD: tl.constexpr, ACC: tl.constexpr,
    INT64: tl.constexpr, BLOCK: tl.constexpr,
):
    """The summed (or mean) loss and the total weight. Each program takes ``chunk`` rows; SPREAD: the
    programs' sums go to ``part_ptr`` (losses, then weights) and the last program to take a ticket
    from ``count_ptr`` combines them (see the module docstring)."""
    pid = tl.program_id(0)
    if INT64:
        pid = pid.to(tl.int64)
    start = pid * chunk
    end = tl.minimum(start + chunk, rows)
    loss = tl.zeros([BLOCK], ACC)
    weight = tl.zeros([BLOCK], ACC)
    for r0 in tl.range(start, end, BLOCK):
        i = r0 + tl.arange(0, BLOCK)
        row_loss, w = _row_losses(x_ptr, t_ptr, w_ptr, i, end, C, HW, s_n, s_c, s_hw, ignore_index, HAS_WEIGHT, ACC)
        loss += row_loss
        weight += w
    if SPREAD:
        parts = tl.num_programs(0)
        tl.store(part_ptr + pid, tl.sum(loss, 0))
        tl.store(part_ptr + parts + pid, tl.sum(weight, 0))
        # The barrier orders every thread's stores before the ticket, whose release publishes them to
        # the program that draws the last ticket (its acquire makes them visible there).
        tl.debug_barrier()
        ticket = tl.atomic_add(count_ptr, 1, sem="acq_rel", scope="gpu")
        if ticket == parts - 1:
            loss = tl.zeros([BLOCK], ACC)
            weight = tl.zeros([BLOCK], ACC)
            # Plain loads (no asynchronous copies), .cg: straight from L2, where the other programs' sums are.
            for k0 in tl.range(0, parts, BLOCK, num_stages=1):
                k = k0 + tl.arange(0, BLOCK)
                loss += tl.load(part_ptr + k, mask=k < parts, other=0, cache_modifier=".cg")
                weight += tl.load(part_ptr + parts + k, mask=k < parts, other=0, cache_modifier=".cg")
            _store_totals(loss, weight, out_ptr, total_ptr, MEAN)
            tl.store(count_ptr, 0)
    else:
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


# ---------------------------------------------------------------------------------------------------
# Launching


def _block(n: int) -> tuple[int, int]:
    """(BLOCK, num_warps) for the per-row and per-element kernels: up to 1024 elements, 4 warps (plain
    gathers and stores; fewer, larger programs on the interpreter)."""
    if device.interpreter:
        return min(next_power_of_2(max(n, 1)), 16384), 4
    return min(next_power_of_2(max(n, 1)), 1024), 4


def reduced_tiles(rows: int) -> tuple[int, int, int, int]:
    """(programs, rows per program, BLOCK, num_warps) of a reduced forward: one program up to
    ``ONE_PROGRAM_ROWS`` rows, else programs of ``PART_ROWS`` (more when ``MAX_PARTS`` binds)."""
    if rows <= ONE_PROGRAM_ROWS:
        block = min(next_power_of_2(max(rows, 1)), 16384)
        return 1, max(rows, 1), block, _gather_warps(block)
    block = min(next_power_of_2(rows), PART_ROWS)
    chunk = max(cdiv(cdiv(rows, MAX_PARTS), block), 1) * block
    return cdiv(rows, chunk), chunk, block, _gather_warps(block)


def _gather_warps(block: int) -> int:
    """4 to 16 warps, 16 rows per thread in between: every gather of a tile is issued at once."""
    return 4 if device.interpreter else tiles.warps_for(block, 16)


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


def _unsupported(x, target, weight, rows_dims) -> bool:
    """Signatures left to ATen (its checks and errors: shapes, dtypes)."""
    if x.dim() not in rows_dims or x.dtype not in lay.FLOATING or target.dtype != torch.int64:
        return True
    if weight is not None and (weight.dim() != 1 or weight.numel() != x.shape[1 if x.dim() > 1 else 0]
                               or weight.dtype != x.dtype):
        return True
    expected = x.shape[:1] + x.shape[2:] if x.dim() > 1 else ()
    return tuple(target.shape) != tuple(expected)


def _targets_out_of_range(x, target, ignore_index) -> bool:
    """On the interpreter: whether ATen would raise "Target k is out of bounds" (on the GPU that is a
    device-side assert in ATen, and our kernels give such rows zero loss without a host sync)."""
    if not device.interpreter or not target.numel():
        return False
    c = x.shape[1] if x.dim() > 1 else x.shape[0]
    bad = (target != ignore_index) & ((target < 0) | (target >= c))
    return bool(bad.any())


class _Forward:
    """The ready call of one forward signature: the launch (per-row or reduced), which inputs need a
    contiguous copy first, and for a spread reduced forward its scratch (sums and counter) per stream."""

    __slots__ = ("launch", "per_row", "rows", "loss_shape", "copy_x", "copy_target", "copy_weight", "parts", "acc",
                 "scratch")

    def __init__(self, x, target, weight, reduction, ignore_index):
        viewed, rows, c, hw, (s_n, s_c, s_hw) = _rows_view(x)
        self.copy_x = viewed is not x
        self.copy_target = not target.is_contiguous()
        self.copy_weight = weight is not None and weight.stride(0) != 1
        self.rows = rows
        self.per_row = reduction == NONE and x.dim() > 1
        self.loss_shape = tuple(target.shape) if self.per_row else ()
        self.acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        self.scratch: dict = {}
        common = dict(HAS_WEIGHT=weight is not None, ACC=tl_dtype(self.acc),
                      INT64=lay.force_int64 or lay.needs_int64(viewed.shape, viewed.stride()))
        if self.per_row:
            block, warps = _block(rows)
            self.parts = 1
            kernel = shared_launcher(_nll_forward_kernel, dict(common, BLOCK=block), num_warps=warps)
            self.launch = lay.Launch(kernel, (cdiv(rows, block),), [rows, c, hw, s_n, s_c, s_hw, ignore_index])
            return
        self.parts, chunk, block, warps = reduced_tiles(rows)
        constexprs = dict(common, MEAN=reduction == MEAN, SPREAD=self.parts > 1, BLOCK=block)
        self.launch = lay.Launch(shared_launcher(_nll_reduced_kernel, constexprs, num_warps=warps), (self.parts,),
                                 [rows, chunk, c, hw, s_n, s_c, s_hw, ignore_index])

    def _sums_and_counter(self, x) -> list:
        """The spread forward's scratch on ``x``'s device and current stream: the counter starts at
        zero and every launch leaves it there. A call recorded for replay gets its own (its replays allocate
        and zero them again: memory kept from outside a call is never replayed)."""
        if launches.recording:
            return [torch.empty(2 * self.parts, dtype=self.acc, device=x.device),
                    torch.zeros(1, dtype=torch.int32, device=x.device)]
        index = x.get_device()
        key = (index, 0 if device.interpreter else torch._C._cuda_getCurrentRawStream(index))
        found = self.scratch.get(key)
        if found is None:
            found = self.scratch[key] = [torch.empty(2 * self.parts, dtype=self.acc, device=x.device),
                                         torch.zeros(1, dtype=torch.int32, device=x.device)]
        return found

    def __call__(self, x, target, weight, output, total_weight):
        if self.copy_x:
            x = x.contiguous()
        if self.copy_target:
            target = target.contiguous()
        if self.copy_weight:
            weight = weight.contiguous()
        if total_weight is None:
            total = x.new_empty(())
        else:
            total = total_weight
            lay.resize_output(total, ())
        loss = x.new_empty(self.loss_shape) if output is None else lay.new_output(output, self.loss_shape, x.dtype, x)
        w = x if weight is None else weight
        ptr = x.data_ptr() | target.data_ptr() | w.data_ptr() | loss.data_ptr() | total.data_ptr()
        if self.per_row:
            if self.rows:
                self.launch([x, target, w, loss], ptr)
            total.zero_()
        elif self.parts > 1:
            self.launch([x, target, w, loss, total, *self._sums_and_counter(x)], ptr)
        else:
            self.launch([x, target, w, loss, total, loss, total], ptr)
        return lay.deliver(loss, output), total


_ATEN = "aten"  # the ready call of a signature left to ATen


def _forward(x, target, weight, reduction, ignore_index, output, total_weight, rows_dims):
    if (output is None) != (total_weight is None):
        return NotImplemented
    key = (_forward, x.shape, x.stride(), x.dtype, target.shape, target.stride(), target.dtype,
           None if weight is None else (weight.shape, weight.stride(), weight.dtype), reduction, ignore_index,
           rows_dims, lay.force_int64, ONE_PROGRAM_ROWS, PART_ROWS, MAX_PARTS)
    call = lay.calls.get(key)
    if call is None:
        supported = reduction in (NONE, MEAN, SUM) and not _unsupported(x, target, weight, rows_dims)
        call = lay.remember(key, _Forward(x, target, weight, reduction, ignore_index) if supported else _ATEN)
    if call is _ATEN or _targets_out_of_range(x, target, ignore_index):
        return NotImplemented
    return call(x, target, weight, output, total_weight)


def nll_loss_forward(x, target, weight, reduction, ignore_index, *, output=None, total_weight=None):
    """nll_loss_forward / nll_loss_forward.output: input (C,) or (N, C)."""
    return _forward(x, target, weight, reduction, ignore_index, output, total_weight, (1, 2))


def nll_loss2d_forward(x, target, weight, reduction, ignore_index, *, output=None, total_weight=None):
    """nll_loss2d_forward / nll_loss2d_forward.output: input (N, C, H, W)."""
    return _forward(x, target, weight, reduction, ignore_index, output, total_weight, (4,))


def _backward(grad, x, target, weight, reduction, ignore_index, total_weight, grad_input, rows_dims):
    if reduction not in (NONE, MEAN, SUM) or _unsupported(x, target, weight, rows_dims):
        return NotImplemented
    if _targets_out_of_range(x, target, ignore_index):
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
            _nll_backward_kernel, (cdiv(numel, block),), grad.contiguous(), target.contiguous(),
            weight.contiguous() if weight is not None else x, total_weight, result,
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
