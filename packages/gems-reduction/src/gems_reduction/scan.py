"""Scans along a dim: cumsum, cumprod, cummax, cummin, logcumsumexp, on the row skeleton.

A program scans its lanes block by block along R (``tl.cumsum``/``tl.cumprod``, or an associative scan
for the others) and carries the last scanned value of each block into the next, so one program walks
a whole row however long it is: nothing waits on another program.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from flag_gems.intmath import cdiv, next_power_of_2
from flag_gems.runtime import device
from gems_reduction import layout as lay
from gems_reduction import rows
from gems_reduction.reduce import MAX, MIN, PROD, SUM, _init, acc_dtype, convert, tl_dtype
from gems_reduction.rows import lanes, r_range, tile, tile_at, tile_mask

LOGSUMEXP: tl.constexpr = tl.constexpr(4)


@triton.jit
def _log_add_exp(a, b):
    high = tl.maximum(a, b)
    low = tl.minimum(a, b)
    r = high + tl.log(1 + tl.exp(low - high))
    r = tl.where((low == float("-inf")) | (high == float("inf")), high, r)
    return tl.where((a != a) | (b != b), a + b, r)


@triton.jit
def _running_max(v1, i1, v2, i2):
    # The later element wins ties (ATen's cummax), a NaN wins and stays.
    later = (v2 >= v1) | (v2 != v2)
    return tl.where(later, v2, v1), tl.where(later, i2, i1)


@triton.jit
def _running_min(v1, i1, v2, i2):
    later = (v2 <= v1) | (v2 != v2)
    return tl.where(later, v2, v1), tl.where(later, i2, i1)


@triton.jit
def _scan_kernel(
    x_ptr, y_ptr, idx_ptr, R, L, lane_blocks, lane_stride, r_stride, outer_stride,
    OP: tl.constexpr, CAST: tl.constexpr, ACC: tl.constexpr, INIT: tl.constexpr,
    AXIS: tl.constexpr, INT64: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_R: tl.constexpr,
):
    lane_off, lane_mask = lanes(tl.program_id(0), L, lane_blocks, lane_stride, outer_stride, INT64, BLOCK_L)
    r = r_range(INT64, BLOCK_R)
    last = tile_mask(lane_mask, r == BLOCK_R - 1, AXIS)
    carry = tl.full([BLOCK_L], INIT, ACC)
    carry_i = tl.zeros([BLOCK_L], tl.int64)
    for r0 in range(0, R, BLOCK_R):
        offs, mask = tile_at(lane_off, lane_mask, r0 + r, R, r_stride, AXIS)
        x = convert(tl.load(x_ptr + offs, mask=mask, other=0), CAST).to(ACC)
        x = tl.where(mask, x, INIT)
        if OP == SUM:
            c = tl.cumsum(x, AXIS) + tl.expand_dims(carry, AXIS)
        elif OP == PROD:
            c = tl.cumprod(x, AXIS) * tl.expand_dims(carry, AXIS)
        elif OP == LOGSUMEXP:
            c = _log_add_exp(tl.expand_dims(carry, AXIS), tl.associative_scan(x, AXIS, _log_add_exp))
        else:
            idx = tile(tl.zeros([BLOCK_L], tl.int64), (r0 + r).to(tl.int64), AXIS)
            if OP == MAX:
                c, ci = tl.associative_scan((x, idx), AXIS, _running_max)
                c, ci = _running_max(tl.expand_dims(carry, AXIS), tl.expand_dims(carry_i, AXIS), c, ci)
            else:
                c, ci = tl.associative_scan((x, idx), AXIS, _running_min)
                c, ci = _running_min(tl.expand_dims(carry, AXIS), tl.expand_dims(carry_i, AXIS), c, ci)
            tl.store(idx_ptr + offs, ci, mask=mask)
            carry_i = tl.sum(tl.where(last, ci, 0), AXIS)
        tl.store(y_ptr + offs, convert(c, y_ptr.dtype.element_ty), mask=mask)
        carry = tl.sum(tl.where(last, c, 0), AXIS)


def scan_tiles(lane_count: int, length: int, outer: int, columns: bool, itemsize: int):
    """The tile policy of scans: 16 KB per loop step (a (4096, 8192) float32 cumsum walks each row in
    two steps), short rows packed several per program, ~4 programs per SM at least."""
    padded = next_power_of_2(length)
    if device.interpreter:
        block_r = min(padded, 16384)
        return min(next_power_of_2(lane_count), max(1, 16384 // block_r)), block_r, {}, 4
    step = 16384 // max(itemsize, 4)
    if columns:
        block_l = rows.lane_width(lane_count, outer)
        block_r = min(padded, max(1, step // block_l))
    else:
        block_r = min(padded, step)
        spread = next_power_of_2(cdiv(lane_count, 4 * lay.sm_count()))
        block_l = max(1, min(step // block_r, spread))
    return block_l, block_r, {}, max(4, min(16, block_l * block_r // 512))


def _scan(op, x, dim, out_dtype, cast, out, out_index=None):
    dims = lay.wrap_dims(dim, x.dim())
    if dims is None or x.dtype not in lay.KERNEL_DTYPES or out_dtype not in lay.KERNEL_DTYPES:
        return NotImplemented
    if (out is not None and out.dtype != out_dtype) or (out_index is not None and out_index.dtype != torch.int64):
        return NotImplemented
    x = x.contiguous()
    y = lay.new_output(out, x.shape, out_dtype, x)
    indices = lay.new_output(out_index, x.shape, torch.int64, x) if op in (MAX.value, MIN.value) else None
    if x.numel():
        d = dims[0] if dims else 0
        acc = acc_dtype(cast)
        key = (_scan_kernel, x.shape, d, op, x.dtype, cast, out_dtype, lay.force_int64)
        rows.launch(_scan_kernel, key, (x, y, indices if indices is not None else y), x.shape, d,
                    scan_tiles, OP=op, CAST=tl_dtype(cast), ACC=tl_dtype(acc),
                    INIT=_init(op, acc) if op != LOGSUMEXP.value else float("-inf"))
    if indices is None:
        return lay.deliver(y, out)
    return lay.deliver(y, out), lay.deliver(indices, out_index)


def _accumulated_dtype(x, dtype, out):
    if dtype is not None:
        return dtype
    if out is not None:
        return out.dtype
    return x.dtype if x.is_floating_point() or x.is_complex() else torch.int64


def cumsum(x, dim, *, dtype=None, out=None):
    """cumsum / cumsum.out (integers accumulate into int64 unless ``dtype=`` says otherwise)."""
    out_dtype = _accumulated_dtype(x, dtype, out)
    return _scan(SUM.value, x, dim, out_dtype, out_dtype, out)


def cumprod(x, dim, *, dtype=None, out=None):
    """cumprod / cumprod.out."""
    out_dtype = _accumulated_dtype(x, dtype, out)
    return _scan(PROD.value, x, dim, out_dtype, out_dtype, out)


def cummax(x, dim, *, values=None, indices=None):
    """cummax / cummax.out: running maximum and where it was last reached (NaN sticks)."""
    return _scan(MAX.value, x, dim, x.dtype, x.dtype, values, indices)


def cummin(x, dim, *, values=None, indices=None):
    """cummin / cummin.out."""
    return _scan(MIN.value, x, dim, x.dtype, x.dtype, values, indices)


def running_extremum_into(op):
    """_cummax_helper / _cummin_helper: the scan written into given ``values`` and ``indices``."""

    def helper(x, values, indices, dim):
        result = _scan(op.value, x, dim, x.dtype, x.dtype, values, indices)
        return result if result is NotImplemented else None

    return helper


def logcumsumexp(x, dim, *, out=None):
    """logcumsumexp / logcumsumexp.out / _logcumsumexp: log of the running sum of exp."""
    if not x.is_floating_point():
        return NotImplemented
    return _scan(LOGSUMEXP.value, x, dim, x.dtype, x.dtype, out)
