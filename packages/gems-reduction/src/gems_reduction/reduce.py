"""The reduce-over-dims skeleton, and the plain reductions built on it.

Two kernels serve every reduction of this family that combines one value (and, for some ops, a
second result) per output:

- ``_reduce_rows_kernel``: programs own a few output positions ("rows") and walk the reduced index
  space in ``BLOCK_R`` chunks. Used when the reduced elements are the closest ones in memory
  (last-dim reductions, full reductions).
- ``_reduce_cols_kernel``: programs own a tile of output positions along the kept group with the
  smallest stride and walk the reduced dim; each load is a coalesced row segment. Used for dim-0
  style reductions, without any transposing copy.

Both may split the reduced range over several programs (``chunk``), writing partial results that a
second launch of the same skeleton combines: two passes, no atomics, deterministic. Both pipeline
their loop (``tiles.STAGES``), so that each program keeps its next steps' loads in flight.

What an op does is three compile-time codes: ``PRE`` (elementwise transform of each element), ``OP``
(how elements combine) and ``POST`` (transform of the result). Ops differ in those codes only. Three
ops keep a second accumulator and report a second result: arg-reductions (positions), ``MINMAX``
(min, then max) and ``MOMENTS`` (sum of squared deviations, then the mean: var/std in one pass).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from flag_gems import native
from flag_gems.intmath import cdiv
from flag_gems.launch import shared_launcher
from flag_gems.runtime import device
from gems_reduction import layout as lay
from gems_reduction import tiles

# How elements combine.
SUM: tl.constexpr = tl.constexpr(0)
PROD: tl.constexpr = tl.constexpr(1)
MAX: tl.constexpr = tl.constexpr(2)
MIN: tl.constexpr = tl.constexpr(3)
MINMAX: tl.constexpr = tl.constexpr(4)  # the min, with the max as second result
MOMENTS: tl.constexpr = tl.constexpr(5)  # the sum of squared deviations from the mean, with the mean
# Elementwise transforms applied before combining (``shift`` is a per-output value).
NONE: tl.constexpr = tl.constexpr(0)
NONZERO: tl.constexpr = tl.constexpr(1)
NAN_TO_ZERO: tl.constexpr = tl.constexpr(2)
ABS: tl.constexpr = tl.constexpr(3)
SQUARE: tl.constexpr = tl.constexpr(4)
ABS_POW: tl.constexpr = tl.constexpr(5)
EXP_SHIFTED: tl.constexpr = tl.constexpr(6)
NO_ZERO_BYTE: tl.constexpr = tl.constexpr(7)  # 1 for a 32-bit word none of whose four bytes is zero
# Transforms of the combined result (``d`` is a divisor, ``p`` the norm order).
KEEP: tl.constexpr = tl.constexpr(0)
DIVIDE: tl.constexpr = tl.constexpr(1)
SQRT_DIVIDE: tl.constexpr = tl.constexpr(2)
ROOT: tl.constexpr = tl.constexpr(3)
LOG_SHIFTED: tl.constexpr = tl.constexpr(4)
PARTIAL: tl.constexpr = tl.constexpr(5)  # the first pass of a split: results as they are, for a second pass


# The interpreter converts between bfloat16 and integers bit-wise; float32 in between is exact there.
_INTERPRETED: tl.constexpr = tl.constexpr(device.interpreter)


@triton.jit
def convert(x, dtype: tl.constexpr):
    """``x.to(dtype)``, also right on the interpreter for bfloat16 <-> integer conversions."""
    if x.dtype == tl.bfloat16 and not dtype.is_floating():
        y = x.to(tl.float32).to(dtype)
    elif _INTERPRETED and dtype == tl.bfloat16 and not x.dtype.is_floating():
        y = x.to(tl.float32).to(dtype)
    else:
        y = x.to(dtype)
    return y


@triton.jit
def _transform(x, shift, p, PRE: tl.constexpr, ACC: tl.constexpr):
    """An element's contribution, in the accumulation dtype."""
    if PRE == NONZERO:
        if x.dtype.is_floating() and x.dtype.primitive_bitwidth < 32:
            x = x.to(tl.float32)
        y = (x != 0).to(ACC)
    elif PRE == NO_ZERO_BYTE:
        # (x - 0x01010101) & ~x & 0x80808080 is nonzero exactly when some byte of x is zero.
        y = (((x - 0x01010101) & ~x & -0x7F7F7F80) == 0).to(ACC)
    else:
        y = x.to(ACC)
        if PRE == NAN_TO_ZERO:
            y = tl.where(y != y, 0, y)
        elif PRE == ABS:
            y = tl.abs(y)
        elif PRE == SQUARE:
            y = y * y
        elif PRE == ABS_POW:
            y = libdevice.pow(tl.abs(y), p + tl.zeros_like(y))
        elif PRE == EXP_SHIFTED:
            y = tl.exp(y - shift)
    return y


@triton.jit
def _accumulate(acc, acc_i, acc_n, v, second, count, mask, inv, OP: tl.constexpr, INDEX: tl.constexpr):
    """Fold a tile into per-lane accumulators (``mask``ed elements leave them unchanged).

    ``second`` is what the second accumulator takes: positions (arg-reductions), or, for partial
    results (INDEX == 2), their second results. MOMENTS keeps (mean, M2, count) per lane: elements
    update it by Welford's rule, ``inv`` being 1 / (elements the lane has seen), the same for every
    lane of a step; partial results (``v`` their M2, ``count`` their count) merge by Chan's rule.

    Arg-reductions keep the first position of the best value and let NaN beat every number (ATen's
    rules): a lane sees its positions in increasing order, so only a strictly better value moves it;
    partial results (INDEX == 2) also break ties by position, since their lanes may start empty.
    """
    if OP == MOMENTS:
        if INDEX == 2:
            total = acc_n + count
            w = count / tl.maximum(total, 1)
            delta = second - acc
            acc = acc + delta * w
            acc_i = acc_i + v + delta * delta * acc_n * w
            acc_n = total
        else:
            delta = tl.where(mask, v - acc, 0)
            acc = acc + delta * inv
            acc_i = acc_i + delta * (v - acc)
    elif OP == MINMAX:
        if INDEX != 2:
            second = v
        acc = tl.minimum(acc, tl.where(mask, v, acc), propagate_nan=tl.PropagateNan.ALL)
        acc_i = tl.maximum(acc_i, tl.where(mask, second, acc_i), propagate_nan=tl.PropagateNan.ALL)
    elif INDEX != 0:
        if OP == MAX:
            better = v > acc
        else:
            better = v < acc
        if v.dtype.is_floating():
            better = better | ((v != v) & (acc == acc))
        if INDEX == 2:
            same = (v == acc) | ((v != v) & (acc != acc))
            better = better | (same & (second < acc_i))
        take = mask & better
        acc = tl.where(take, v, acc)
        acc_i = tl.where(take, second, acc_i)
    elif OP == SUM:
        acc = acc + tl.where(mask, v, 0)
    elif OP == PROD:
        acc = acc * tl.where(mask, v, 1)
    elif OP == MAX:
        acc = tl.maximum(acc, tl.where(mask, v, acc), propagate_nan=tl.PropagateNan.ALL)
    else:
        acc = tl.minimum(acc, tl.where(mask, v, acc), propagate_nan=tl.PropagateNan.ALL)
    return acc, acc_i, acc_n


@triton.jit
def _max_nan(a, b):
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _min_nan(a, b):
    return tl.minimum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _fold_tile(best, first, v, pos, mask, AXIS: tl.constexpr, OP: tl.constexpr, INIT: tl.constexpr,
               TILE: tl.constexpr):
    """Arg-reductions with one (value, position) per output (``tiles.ARG_TILE``): fold in a tile's
    extremum (NaN if it holds one) and, where that beats ``best``, its first position (TILE == 2:
    searched only in steps where some output improves). Tiles come in increasing position order, so
    only a strictly better value moves ``first``: ties keep the first position, as in ATen."""
    v = tl.where(mask, v, INIT)  # never better than the running value, which starts at INIT
    floating: tl.constexpr = v.dtype.is_floating()
    if floating and OP == MAX:
        t = tl.reduce(v, AXIS, _max_nan)
    elif floating:
        t = tl.reduce(v, AXIS, _min_nan)
    elif OP == MAX:
        t = tl.max(v, AXIS)
    else:
        t = tl.min(v, AXIS)
    if OP == MAX:
        better = t > best
    else:
        better = t < best
    hit = v == tl.expand_dims(t, AXIS)
    if floating:
        better = better | ((t != t) & (best == best))
        hit = hit | (v != v)  # only a tile whose extremum is NaN holds NaN
    if TILE == 2:
        if tl.max(better.to(tl.int32), 0) > 0:
            best, first = _take_first(best, first, t, hit, pos, better, AXIS)
    else:
        best, first = _take_first(best, first, t, hit, pos, better, AXIS)
    return best, first


@triton.jit
def _take_first(best, first, t, hit, pos, better, AXIS: tl.constexpr):
    """(``t``, the first of ``pos`` where ``hit``) where ``better``, else (``best``, ``first``)."""
    if pos.dtype == tl.int32:
        found = tl.min(tl.where(hit, pos, 2**31 - 1), AXIS)
    else:
        found = tl.min(tl.where(hit, pos, 2**62), AXIS)
    return tl.where(better, t, best), tl.where(better, found, first)


@triton.jit
def _second_init(acc, lane_r, start, AXIS: tl.constexpr, OP: tl.constexpr, INDEX: tl.constexpr,
                 INIT: tl.constexpr):
    """(second accumulator, lane counts) at the start: the running max of MINMAX; M2 and counts of
    MOMENTS; each lane's first position for arg-reductions (so that a lane whose elements all equal
    the initial value reports its first one), or "none yet" for partial results; else dummies."""
    acc_n = tl.zeros([1, 1], acc.dtype)
    if OP == MINMAX:
        if acc.dtype.is_floating():
            acc_i = tl.full(acc.shape, -INIT, acc.dtype)
        else:
            acc_i = tl.full(acc.shape, -INIT - 1, acc.dtype)
    elif OP == MOMENTS:
        acc_i = tl.zeros(acc.shape, acc.dtype)
        acc_n = tl.zeros(acc.shape, acc.dtype)
    elif INDEX == 2:
        acc_i = tl.zeros(acc.shape, tl.int64) + 2**62
    elif INDEX == 1:
        acc_i = tl.zeros(acc.shape, lane_r.dtype) + tl.expand_dims(start + lane_r, 1 - AXIS)
    else:
        acc_i = tl.zeros([1, 1], tl.int32)
    return acc_i, acc_n


@triton.jit
def _step(acc, acc_i, acc_n, x_ptr, y_ptr, idx_in_ptr, offs, plane, mask, pos, steps, shift, p,
          OP: tl.constexpr, PRE: tl.constexpr, INDEX: tl.constexpr, CAST: tl.constexpr, ACC: tl.constexpr,
          DIFF: tl.constexpr):
    """Load the elements at ``offs`` and fold them into the accumulators. ``pos``: their positions;
    ``steps``: how many steps came before (MOMENTS); ``plane``: the distance from a partial mean to
    its count (MOMENTS partials)."""
    x = convert(tl.load(x_ptr + offs, mask=mask, other=0), CAST)
    if DIFF:
        x = x.to(ACC) - convert(tl.load(y_ptr + offs, mask=mask, other=0), CAST).to(ACC)
    v = _transform(x, shift, p, PRE, ACC)
    second = pos
    count = acc_n
    inv = 0.0
    if INDEX == 2:
        second = tl.load(idx_in_ptr + offs, mask=mask, other=0)
        if OP == MOMENTS:
            count = tl.load(idx_in_ptr + plane + offs, mask=mask, other=0)
    elif OP == MOMENTS:
        inv = 1.0 / (steps + 1).to(ACC)
    return _accumulate(acc, acc_i, acc_n, v, second, count, mask, inv, OP, INDEX)


@triton.jit
def _mul(a, b):
    return a * b


@triton.jit
def _finish(acc, acc_i, acc_n, total, AXIS: tl.constexpr, OP: tl.constexpr, INDEX: tl.constexpr):
    """Combine the lanes of the accumulators along ``AXIS``: (value, second result or a dummy).

    Built-in reductions only (custom combines are slow in the interpreter): the extremum, NaN if any
    lane holds NaN, then the smallest position among the lanes holding it. MOMENTS lanes (``total``
    elements) merge in closed form: mean = sum(n m) / total, M2 = sum(M2 + n (m - mean)^2), with one
    refinement of the mean by the (small, so exactly summed) deviations of the lanes from it.
    """
    second = acc_i
    if OP == MOMENTS:
        mean = tl.sum(acc_n * acc, AXIS) / total
        dev = acc - tl.expand_dims(mean, AXIS)
        fix = tl.sum(acc_n * dev, AXIS) / total
        value = tl.sum(acc_i + acc_n * dev * dev, AXIS) - total * fix * fix
        second = mean + fix
    elif OP == SUM:
        value = tl.sum(acc, AXIS)
    elif OP == PROD:
        value = tl.reduce(acc, AXIS, _mul)
    else:
        if OP == MAX:
            value = tl.max(acc, AXIS)
        else:
            value = tl.min(acc, AXIS)
        if OP == MINMAX:
            second = tl.max(acc_i, AXIS)
        is_nan = acc != acc
        if acc.dtype.is_floating():
            # A lane holding NaN holds it in both accumulators of MINMAX.
            any_nan = tl.max(is_nan.to(tl.int32), AXIS) > 0
            value = tl.where(any_nan, float("nan"), value)
            if OP == MINMAX:
                second = tl.where(any_nan, float("nan"), second)
        if INDEX != 0 and OP != MINMAX:
            best = tl.expand_dims(value, AXIS)
            hit = (acc == best) | (is_nan & (best != best))
            if acc_i.dtype == tl.int32:
                second = tl.min(tl.where(hit, acc_i, 2**31 - 1), AXIS)
            else:
                second = tl.min(tl.where(hit, acc_i, 2**62), AXIS)
    return value, second


@triton.jit
def _finalize(v, shift, p, d, POST: tl.constexpr):
    if POST == DIVIDE:
        v = v / d
    elif POST == SQRT_DIVIDE:
        v = tl.sqrt(v / d)
    elif POST == ROOT:
        v = libdevice.pow(v, 1.0 / (p + tl.zeros_like(v)))
    elif POST == LOG_SHIFTED:
        v = tl.log(v) + shift
    return v


@triton.jit
def _epilogue(acc, acc_i, acc_n, lane_r, length, shift, p, d, out_ptr, idx_out_ptr, out_offs, mask, plane,
              AXIS: tl.constexpr, OP: tl.constexpr, POST: tl.constexpr, INDEX: tl.constexpr,
              BLOCK_R: tl.constexpr):
    """Combine the lanes of a program's ``length`` elements, transform, store the results (and the
    counts of MOMENTS partials, ``plane`` past their means)."""
    total = length.to(acc.dtype)
    if OP == MOMENTS:
        if INDEX == 2:
            total = tl.sum(acc_n, AXIS)
        else:
            # Lane j saw elements j, j + BLOCK_R, ... of the program's range.
            counts = ((length - lane_r + BLOCK_R - 1) // BLOCK_R).to(acc.dtype)
            acc_n = tl.zeros_like(acc) + tl.expand_dims(counts, 1 - AXIS)
    value, second = _finish(acc, acc_i, acc_n, total, AXIS, OP, INDEX)
    value = _finalize(value, shift, p, d, POST)
    tl.store(out_ptr + out_offs, convert(value, out_ptr.dtype.element_ty), mask=mask)
    if INDEX != 0:
        tl.store(idx_out_ptr + out_offs, convert(second, idx_out_ptr.dtype.element_ty), mask=mask)
    if OP == MOMENTS and POST == PARTIAL:
        tl.store(idx_out_ptr + plane + out_offs, tl.zeros_like(value) + length.to(value.dtype), mask=mask)


@triton.jit
def _load_shift(ptrs, mask, PRE: tl.constexpr, POST: tl.constexpr, ACC: tl.constexpr):
    shift = tl.load(ptrs, mask=mask, other=0).to(ACC)
    if PRE == EXP_SHIFTED or POST == LOG_SHIFTED:
        # logsumexp shifts by the maximum, except an infinite one (ATen's rule).
        shift = tl.where(tl.abs(shift) == float("inf"), 0, shift)
    return shift


@triton.jit
def _r_offsets(r, R2, s_r1, s_r2, TWO_R: tl.constexpr):
    """Element offsets of reduced positions ``r`` (made of two groups when TWO_R)."""
    if TWO_R:
        r_off = (r // R2) * s_r1 + (r % R2) * s_r2
    else:
        r_off = r * s_r1
    return r_off


@triton.jit
def _store_tile(best, first, out_ptr, idx_out_ptr, out_offs, mask):
    """The results of an arg-reduction folded tile by tile (``_fold_tile``)."""
    tl.store(out_ptr + out_offs, convert(best, out_ptr.dtype.element_ty), mask=mask)
    tl.store(idx_out_ptr + out_offs, convert(first, idx_out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _shift_of(shift_ptrs, mask, SHIFT: tl.constexpr, PRE: tl.constexpr, POST: tl.constexpr, ACC: tl.constexpr,
              BLOCK: tl.constexpr):
    """The per-output shift of the program's outputs (zeros where the op has none)."""
    shift = tl.zeros([BLOCK], ACC)
    if SHIFT:
        shift = _load_shift(shift_ptrs, mask, PRE, POST, ACC)
    return shift


@triton.jit
def _split_range(split, chunk, R, INT64: tl.constexpr, BLOCK_R: tl.constexpr):
    """(lanes of a step along r, start, end) of the part ``split`` of the reduced range."""
    lane_r = tl.arange(0, BLOCK_R)
    if INT64:
        lane_r = lane_r.to(tl.int64)
    start = split * chunk
    return lane_r, start, tl.minimum(start + chunk, R)


@triton.jit
def _tile_init(lane_r, start, INIT: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """(best, first) of an arg-reduction folded tile by tile, before its first tile."""
    return tl.full([BLOCK], INIT, ACC), tl.zeros([BLOCK], lane_r.dtype) + start


@triton.jit
def _reduce_rows_kernel(
    x_ptr, y_ptr, idx_in_ptr, shift_ptr, out_ptr, idx_out_ptr,
    K, K2, R, R2, chunk, part_stride, s_k1, s_k2, s_r1, s_r2, p, d,
    OP: tl.constexpr, PRE: tl.constexpr, POST: tl.constexpr, INDEX: tl.constexpr,
    CAST: tl.constexpr, ACC: tl.constexpr, INIT: tl.constexpr, SHIFT: tl.constexpr, DIFF: tl.constexpr,
    TWO_R: tl.constexpr, INT64: tl.constexpr, STAGES: tl.constexpr, TILE: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    """Rows = output positions (k1, k2); the reduced index r is (r1, r2) when TWO_R. With DIFF the
    elements are x - y (y laid out like x)."""
    rows = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    split = tl.program_id(1)
    if INT64:
        rows = rows.to(tl.int64)
        split = split.to(tl.int64)
    row_mask = rows < K
    base = (rows // K2) * s_k1 + (rows % K2) * s_k2
    shift = _shift_of(shift_ptr + rows, row_mask, SHIFT, PRE, POST, ACC, BLOCK_K)
    lane_r, start, end = _split_range(split, chunk, R, INT64, BLOCK_R)
    if TILE:
        best, first = _tile_init(lane_r, start, INIT, ACC, BLOCK_K)
        for r0 in tl.range(start, end, BLOCK_R, num_stages=STAGES):
            r = r0 + lane_r
            mask = row_mask[:, None] & (r < end)[None, :]
            offs = base[:, None] + _r_offsets(r, R2, s_r1, s_r2, TWO_R)[None, :]
            v = convert(tl.load(x_ptr + offs, mask=mask, other=0), CAST).to(ACC)
            best, first = _fold_tile(best, first, v, r[None, :], mask, 1, OP, INIT, TILE)
        _store_tile(best, first, out_ptr, idx_out_ptr, split * part_stride + rows, row_mask)
    else:
        acc = tl.full([BLOCK_K, BLOCK_R], INIT, ACC)
        acc_i, acc_n = _second_init(acc, lane_r, start, 1, OP, INDEX, INIT)
        for r0 in tl.range(start, end, BLOCK_R, num_stages=STAGES):
            r = r0 + lane_r
            mask = row_mask[:, None] & (r < end)[None, :]
            r_off = _r_offsets(r, R2, s_r1, s_r2, TWO_R)
            acc, acc_i, acc_n = _step(acc, acc_i, acc_n, x_ptr, y_ptr, idx_in_ptr, base[:, None] + r_off[None, :],
                                      R * s_r1, mask, r[None, :], (r0 - start) // BLOCK_R, shift[:, None], p,
                                      OP, PRE, INDEX, CAST, ACC, DIFF)
        _epilogue(acc, acc_i, acc_n, lane_r, end - start, shift, p, d, out_ptr, idx_out_ptr, split * part_stride + rows,
                  row_mask, tl.num_programs(1) * part_stride, 1, OP, POST, INDEX, BLOCK_R)


@triton.jit
def _reduce_cols_kernel(
    x_ptr, y_ptr, idx_in_ptr, shift_ptr, out_ptr, idx_out_ptr,
    M, N, R, chunk, part_stride, s_m, s_n, s_r, o_m, o_n, p, d,
    OP: tl.constexpr, PRE: tl.constexpr, POST: tl.constexpr, INDEX: tl.constexpr,
    CAST: tl.constexpr, ACC: tl.constexpr, INIT: tl.constexpr, SHIFT: tl.constexpr, DIFF: tl.constexpr,
    INT64: tl.constexpr, STAGES: tl.constexpr, TILE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """A program owns BLOCK_N outputs along the kept group n (for one m) and walks r."""
    pid = tl.program_id(0)
    split = tl.program_id(1)
    n_blocks = tl.cdiv(N, BLOCK_N)
    m = pid // n_blocks
    n = (pid % n_blocks) * BLOCK_N + tl.arange(0, BLOCK_N)
    if INT64:
        m = m.to(tl.int64)
        n = n.to(tl.int64)
        split = split.to(tl.int64)
    n_mask = n < N
    base = m * s_m + n * s_n
    out_offs = m * o_m + n * o_n
    shift = _shift_of(shift_ptr + out_offs, n_mask, SHIFT, PRE, POST, ACC, BLOCK_N)
    lane_r, start, end = _split_range(split, chunk, R, INT64, BLOCK_R)
    if TILE:
        best, first = _tile_init(lane_r, start, INIT, ACC, BLOCK_N)
        for r0 in tl.range(start, end, BLOCK_R, num_stages=STAGES):
            r = r0 + lane_r
            mask = (r < end)[:, None] & n_mask[None, :]
            v = convert(tl.load(x_ptr + base[None, :] + r[:, None] * s_r, mask=mask, other=0), CAST).to(ACC)
            best, first = _fold_tile(best, first, v, r[:, None], mask, 0, OP, INIT, TILE)
        _store_tile(best, first, out_ptr, idx_out_ptr, split * part_stride + out_offs, n_mask)
    else:
        acc = tl.full([BLOCK_R, BLOCK_N], INIT, ACC)
        acc_i, acc_n = _second_init(acc, lane_r, start, 0, OP, INDEX, INIT)
        for r0 in tl.range(start, end, BLOCK_R, num_stages=STAGES):
            r = r0 + lane_r
            mask = (r < end)[:, None] & n_mask[None, :]
            acc, acc_i, acc_n = _step(acc, acc_i, acc_n, x_ptr, y_ptr, idx_in_ptr, base[None, :] + r[:, None] * s_r,
                                      R * s_r, mask, r[:, None], (r0 - start) // BLOCK_R, shift[None, :], p,
                                      OP, PRE, INDEX, CAST, ACC, DIFF)
        _epilogue(acc, acc_i, acc_n, lane_r, end - start, shift, p, d, out_ptr, idx_out_ptr,
                  split * part_stride + out_offs, n_mask, tl.num_programs(1) * part_stride, 0, OP, POST, INDEX, BLOCK_R)


# ---------------------------------------------------------------------------------------------------
# Launching


class Kind(NamedTuple):
    """What a reduction computes: the OP/PRE/POST codes; ``index``: 0 for values only, 1 to also
    report the second result (positions of arg-reductions, the max of MINMAX, the mean of MOMENTS),
    2 to carry second results loaded with partial results; ``diff``: the elements are differences
    x - y of two tensors laid out alike. Plain ints, so that the tuple is a cheap cache key."""

    op: int
    pre: int = 0
    post: int = 0
    index: int = 0
    diff: bool = False

    @classmethod
    def of(cls, op, pre=NONE, post=KEEP, index: int = 0, diff: bool = False) -> Kind:
        """A Kind from the code constants of this module."""
        return cls(op.value, pre.value, post.value, index, diff)

    def partial(self) -> Kind:
        """The first pass of a split reduction: transform and combine, no final transform. MOMENTS
        partials always carry their means (and counts), which the second pass needs."""
        return self._replace(post=PARTIAL.value, index=1 if self.op == MOMENTS.value else self.index)

    def combine(self) -> Kind:
        """The second pass: combine partial results, then the final transform."""
        return Kind(self.op, 0, self.post, 2 if self.index or self.op == MOMENTS.value else 0)

    def second_dtype(self, out_dtype: torch.dtype) -> torch.dtype:
        """The dtype of the second result: int64 positions, else the dtype of the values."""
        return out_dtype if self.op in (MINMAX.value, MOMENTS.value) else torch.int64


_TL = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32,
       torch.float64: tl.float64, torch.int8: tl.int8, torch.int16: tl.int16, torch.int32: tl.int32,
       torch.int64: tl.int64, torch.uint8: tl.uint8, torch.bool: tl.int1}


def tl_dtype(dtype: torch.dtype):
    """Triton's name for a torch dtype."""
    return _TL[dtype]


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float32 for half types (what ATen does on the GPU), float64 for float64,
    int64 for integers and bool."""
    if dtype == torch.float64:
        return torch.float64
    return torch.float32 if dtype.is_floating_point else torch.int64


def _acc_of(kind: Kind, cast: torch.dtype) -> torch.dtype:
    """A kind's accumulation dtype: counts stay exact in int64 whatever the input dtype, all/any need
    only 0 and 1 (int32: half the work of int64)."""
    if kind.pre in (NONZERO.value, NO_ZERO_BYTE.value):
        return torch.int64 if kind.op == SUM.value else torch.int32
    return acc_dtype(cast)


def _init(op: int, acc: torch.dtype):
    """The identity of ``op`` in ``acc`` (for MINMAX, of its min)."""
    if op in (SUM.value, MOMENTS.value):
        return 0
    if op == PROD.value:
        return 1
    if acc.is_floating_point:
        return float("-inf") if op == MAX.value else float("inf")
    info = torch.iinfo(acc)
    return info.min if op == MAX.value else info.max


def _start(kind: Kind, acc: torch.dtype):
    """The accumulators' starting value: the identity of the combine, except that all/any combine 0s
    and 1s, so they start from 1 and 0 (an empty all() is True, an empty any() False)."""
    if kind.pre in (NONZERO.value, NO_ZERO_BYTE.value) and kind.op in (MAX.value, MIN.value):
        return int(kind.op == MIN.value)
    return _init(kind.op, acc)


class _Plan:
    """A ready launch for one signature: the launch (kernel with constexprs, grid, integer and float
    arguments), the kind it runs, the output shape and dtypes, and the second pass when the reduced
    range is split. Every tensor's dtype is fixed by the signature (see ``lay.Launch``)."""

    __slots__ = ("launch", "kind", "kept", "acc", "copy_perm", "second", "out_shape", "out_dtype", "index_dtype",
                 "direct", "spare")

    def __init__(self, launch, kind, kept, acc, copy_perm, second, out_shape, out_dtype, index_dtype):
        self.launch = launch
        self.kind = kind
        self.kept = kept
        self.acc = acc
        self.copy_perm = copy_perm
        self.second = second
        self.out_shape = out_shape
        self.out_dtype = out_dtype
        self.index_dtype = index_dtype  # of the second results the caller gets (None: none)
        # One launch straight from the input into the outputs.
        self.direct = launch is not None and copy_perm is None and second is None
        self.spare: dict = {}  # per device: the values of calls that want the second results only

    @property
    def grid(self) -> tuple | None:
        """The first launch's grid: (programs, splits of the reduced range)."""
        return self.launch.grid if self.launch is not None else None

    def __call__(self, x: torch.Tensor) -> tuple:
        """(values, second results or None) of ``x``, a tensor of this plan's signature, into new
        outputs: the hot path of the plain reductions."""
        # new_empty: x's device without building a device object (the cheapest allocation from Python).
        values = x.new_empty(self.out_shape, dtype=self.out_dtype)
        indices = x.new_empty(self.out_shape, dtype=self.index_dtype) if self.index_dtype is not None else None
        if self.direct:
            dest_i = values if indices is None else indices
            self.launch([x, x, x, x, values, dest_i], x.data_ptr())
        elif self.launch is not None:
            _launch(self, x, None, values, indices, None, None)
        return values, indices

    def second_results(self, x: torch.Tensor) -> torch.Tensor:
        """The second results of ``x`` only (argmax): its values are stored where nobody reads them."""
        if not self.direct:
            return self(x)[1]
        indices = x.new_empty(self.out_shape, dtype=self.index_dtype)
        self.launch([x, x, x, x, lay.spare(self.spare, x.device, self.out_shape, self.out_dtype), indices],
                    x.data_ptr())
        return indices


_plans: dict[tuple, _Plan] = {}
#: Plans kept at most, here and in the other modules of the family.
MAX_PLANS = 1024


def _build(shape, strides, dims, kind: Kind, in_dtype, cast, out_dtype, shifted, keepdim, may_split, p, d) -> _Plan:
    out_shape = lay.reduced_shape(shape, dims, keepdim)
    index_dtype = kind.second_dtype(out_dtype) if kind.index else None
    arg = kind.index != 0 and kind.op in (MAX.value, MIN.value)  # positions are reported in logical order
    lo = lay.layout(shape, strides, dims, arg)
    acc = _acc_of(kind, cast)
    (k1, sk1), (k2, sk2) = lo.kept
    (r1, sr1), (r2, sr2) = lo.reduced
    kept_n, length = k1 * k2, r1 * r2
    if kept_n == 0:
        return _Plan(None, kind, 0, acc, None, None, out_shape, out_dtype, index_dtype)
    itemsize = torch.empty((), dtype=in_dtype).element_size()
    groups = list(lo.kept[: lo.num_kept])
    inner = min(range(len(groups)), key=lambda i: groups[i][1], default=None)
    by_cols = lo.num_reduced <= 1 and inner is not None and groups[inner][1] < sr1
    # Arg-reductions keep a position per lane, or one per output (``tiles.ARG_TILE``: plain tiles then).
    tile = (tiles.ARG_TILE_COLS if by_cols else tiles.ARG_TILE) if arg and kind.index == 1 else 0
    arg = arg and not tile
    step = tiles.step_elements(itemsize, arg)
    per_thread = tiles.thread_elements(itemsize, arg)
    data = kept_n * length * itemsize  # bytes read: what the programs share, unsplit
    if by_cols:
        # Tile the kept group nearest in memory; outputs sit at k1 * K2 + k2 (logical order).
        n, s_n = groups[inner]
        m, s_m = groups[1 - inner] if len(groups) == 2 else (1, 0)
        o_n, o_m = (1, n) if inner == len(groups) - 1 else (m, 1)
        in_thread = bool(tile) and tiles.ARG_TILE_COLS_IN_THREAD
        block_r, block_n, warps = tiles.cols_tiles(n, length, step, itemsize, per_thread, arg, in_thread)
        programs = m * cdiv(n, block_n)
        if not may_split:
            splits, chunk = 1, max(length, 1)
        elif in_thread:
            splits, chunk = tiles.split_count(programs, length, block_r, tiles.IN_THREAD_PROGRAMS_PER_SM, False,
                                              program_bytes=data // programs)
        else:
            splits, chunk = tiles.split_count(programs, length, block_r, tiles.COLS_PROGRAMS_PER_SM,
                                              program_bytes=data // programs)
        kernel, blocks = _reduce_cols_kernel, dict(BLOCK_R=block_r, BLOCK_N=block_n)
        ints = [m, n, length, chunk, kept_n, s_m, s_n, sr1, o_m, o_n]
    else:
        block_k, block_r, warps = tiles.rows_tiles(kept_n, length, step, per_thread)
        programs = cdiv(kept_n, block_k)
        splits, chunk = (tiles.split_count(programs, length, block_r, program_bytes=data // programs) if may_split
                         else (1, max(length, 1)))
        kernel = _reduce_rows_kernel
        blocks = dict(TWO_R=lo.num_reduced == 2, BLOCK_K=block_k, BLOCK_R=block_r)
        ints = [kept_n, k2, length, r2, chunk, kept_n, sk1, sk2, sr1, sr2]
    first = kind.partial() if splits > 1 else kind
    constexprs = dict(OP=first.op, PRE=first.pre, POST=first.post, INDEX=first.index, CAST=tl_dtype(cast),
                      ACC=tl_dtype(acc), INIT=_start(kind, acc), SHIFT=shifted, DIFF=first.diff,
                      INT64=lo.int64, STAGES=tiles.STAGES, TILE=tile, **blocks)
    second = None
    if splits > 1:
        # The partial results are few: one pass over them, never split again.
        second = plan((splits, kept_n), (kept_n, 1), (0,), kind.combine(), acc, acc, out_dtype, shifted,
                      may_split=False, p=p, d=d)
    launch = lay.Launch(shared_launcher(kernel, constexprs, num_warps=warps), (programs, splits), [*ints, p, d])
    return _Plan(launch, first, kept_n, acc, lo.copy_perm, second, out_shape, out_dtype, index_dtype)


def plan(shape, strides, dims, kind: Kind, in_dtype, cast, out_dtype, shifted=False, keepdim=False,
         may_split=True, p: float = 0.0, d: float = 1.0) -> _Plan:
    """The cached launch plan of a reduction signature (``dims`` wrapped and sorted)."""
    key = (shape, strides, dims, kind, in_dtype, cast, out_dtype, shifted, keepdim, may_split, p, d,
           lay.force_int64, tiles.settings())
    found = _plans.get(key)
    if found is None:
        if len(_plans) >= MAX_PLANS:  # shapes that keep changing: keep the cache bounded
            _plans.clear()
        found = _plans[key] = _build(shape, strides, dims, kind, in_dtype, cast, out_dtype, shifted, keepdim,
                                     may_split, p, d)
    return found


def forget_plans() -> None:
    """Drop every cached plan and ready call of the family, and the calls core replays from C++, so that
    changed ``tiles`` knobs apply (a replayed call keeps the kernel its plan chose)."""
    _plans.clear()
    lay.calls.clear()
    native.clear()


def _partials(pl: _Plan, like: torch.Tensor):
    """Buffers for the partial results of a split: values, and second results (positions, or planes
    after the values: MINMAX maxima; MOMENTS means, then counts)."""
    shape = (pl.launch.grid[1], pl.kept)
    kind = pl.kind
    if kind.index == 0:
        return like.new_empty(shape, dtype=pl.acc), None
    if kind.second_dtype(pl.acc) == torch.int64:
        return like.new_empty(shape, dtype=pl.acc), like.new_empty(shape, dtype=torch.int64)
    planes = like.new_empty((3 if kind.op == MOMENTS.value else 2, *shape), dtype=pl.acc)
    return planes[0], planes[1]


def _launch(pl: _Plan, x, y, values, indices, idx_in, shift) -> None:
    if pl.copy_perm is not None:
        x = x.permute(pl.copy_perm).contiguous()
        y = y.permute(pl.copy_perm).contiguous() if y is not None else None
    dest, dest_i = values, indices
    if pl.second is not None:
        dest, dest_i = _partials(pl, x)
    elif pl.kind.index and indices is None:
        # A second result nobody asked for (the mean of a split var): somewhere to write it.
        dest_i = torch.empty(pl.kept, dtype=values.dtype, device=x.device)
    tensors = [x, x if y is None else y, x if idx_in is None else idx_in, x if shift is None else shift, dest,
               dest if dest_i is None else dest_i]
    ptr = x.data_ptr() | (0 if y is None else y.data_ptr()) | (0 if shift is None else shift.data_ptr())
    pl.launch(tensors, ptr | values.data_ptr() | (0 if indices is None else indices.data_ptr()))
    if pl.second is not None:
        _launch(pl.second, dest, None, values, indices, dest_i, shift)


def run(x: torch.Tensor, dims: tuple, kind: Kind, out_dtype: torch.dtype, *, keepdim: bool = False,
        cast: torch.dtype | None = None, p: float = 0.0, d: float = 1.0, shift: torch.Tensor | None = None,
        y: torch.Tensor | None = None, out: torch.Tensor | None = None,
        out_index: torch.Tensor | None = None):
    """Reduce ``x`` over ``dims`` (wrapped and sorted); returns (values, second results or None).

    ``cast``: dtype the input is converted to before accumulating (ATen's ``dtype=``); ``shift``: a
    per-output tensor used by the transforms; ``y``: the subtrahend of a ``diff`` kind, with x's shape
    and strides; ``p``/``d``: norm order and divisor; ``out``/``out_index``: tensors to write (resized
    and copied into when a kernel cannot write them directly).
    """
    pl = plan(x.shape, x.stride(), dims, kind, x.dtype, cast or x.dtype, out_dtype, shift is not None, keepdim,
              p=p, d=d)
    return deliver(pl, x, out, out_index, shift, y)


def cached(make: Callable, x: torch.Tensor, dim, keepdim: bool, option=None) -> _Plan | None:
    """The ready plan of a reduction call on ``x`` with no ``out=``: one lookup under the call's
    signature, ``make(x, dim, keepdim, option)`` (a plan, or None for ATen's cases) on its first call.
    ``option`` is whatever else of the call ``make`` depends on (hashable)."""
    key = (make, x.shape, x.stride(), x.dtype, lay.dims_key(dim), keepdim, option, lay.force_int64,
           tiles.PROGRAMS_PER_SM)
    found = lay.calls.get(key)
    if found is None:
        found = make(x, dim, keepdim, option)
        if found is not None:
            lay.remember(key, found)
    return found


# ---------------------------------------------------------------------------------------------------
# The plain reductions. Each function takes its ATen overloads' arguments (functional and ``out=``
# forms alike) and returns NotImplemented for a case it leaves to ATen. Each has a ``make`` function
# that turns a call into its plan (None for ATen's cases) once per signature (see ``cached``).

SUM_OF = Kind.of(SUM)
NANSUM_OF = Kind.of(SUM, NAN_TO_ZERO)
MEAN_OF = Kind.of(SUM, post=DIVIDE)
PROD_OF = Kind.of(PROD)
MAX_OF = Kind.of(MAX)
MIN_OF = Kind.of(MIN)
ALL_OF = Kind.of(MIN, NONZERO)
ANY_OF = Kind.of(MAX, NONZERO)  # on int32 words too: a word is nonzero when one of its bytes is
ALL_WORDS_OF = Kind.of(MIN, NO_ZERO_BYTE)
MINMAX_OF = Kind.of(MINMAX, index=1)
COUNT_OF = Kind.of(SUM, NONZERO)


def reduced_count(shape, dims) -> int:
    """How many elements each output of a reduction over ``dims`` combines."""
    count = 1
    for d in dims:
        count *= shape[d]
    return count


def deliver(pl: _Plan, x, out, out_index=None, shift=None, y=None) -> tuple:
    """(values, second results or None) of ``pl`` on ``x`` (``shift``: the per-output tensor of a
    shifted plan; ``y``: the subtrahend of a ``diff`` plan), written into ``out``/``out_index`` when
    given (resized and copied into when a kernel cannot write them directly)."""
    if out is None and out_index is None and shift is None and y is None:
        return pl(x)
    values = lay.new_output(out, pl.out_shape, pl.out_dtype, x)
    indices = lay.new_output(out_index, pl.out_shape, pl.index_dtype, x) if pl.index_dtype is not None else None
    if pl.launch is not None:
        _launch(pl, x, y, values, indices, None, shift)
    return lay.deliver(values, out), (lay.deliver(indices, out_index) if indices is not None else None)


def _values(make, x, dim, keepdim, option, out):
    """The values of a plain reduction (``make`` as for ``cached``, with ``out`` as a last argument)."""
    if out is None:
        # ``cached``, inlined: this is the hot path of most reductions.
        pl = lay.calls.get((make, x.shape, x.stride(), x.dtype, dim if dim.__class__ is not list else tuple(dim),
                            keepdim, option, lay.force_int64, tiles.PROGRAMS_PER_SM))
        if pl is None:
            pl = cached(make, x, dim, keepdim, option)
            if pl is None:
                return NotImplemented
        return pl(x)[0]
    pl = make(x, dim, keepdim, option, out)
    return NotImplemented if pl is None else deliver(pl, x, out)[0]


def _promoted_integers(x, dtype, out) -> torch.dtype:
    # sum and prod: integers and bool accumulate into int64 unless dtype= (or out=) says otherwise.
    if dtype is not None:
        return dtype
    if out is not None:
        return out.dtype
    return x.dtype if x.is_floating_point() or x.is_complex() else torch.int64


def _simple(spec: Kind, x, dims, keepdim, out_dtype, cast=None, d=1.0) -> _Plan | None:
    """The plan of a reduction of ``x`` over wrapped ``dims`` (None: invalid), or None for ATen's cases."""
    if dims is None or x.dtype not in lay.KERNEL_DTYPES or out_dtype not in lay.KERNEL_DTYPES:
        return None
    if cast is not None and cast not in lay.KERNEL_DTYPES:
        return None
    return plan(x.shape, x.stride(), dims, spec, x.dtype, cast or x.dtype, out_dtype, False, keepdim, d=d)


def _promoting(spec):
    def make(x, dim, keepdim, dtype, out=None):
        out_dtype = _promoted_integers(x, dtype, out)
        return _simple(spec, x, lay.wrap_dims(dim, x.dim()), keepdim, out_dtype, cast=out_dtype)

    return make


_sum_plan, _nansum_plan, _prod_plan = _promoting(SUM_OF), _promoting(NANSUM_OF), _promoting(PROD_OF)


def sum_dim(x, dim, keepdim=False, *, dtype=None, out=None):
    """sum.dim_IntList / sum.IntList_out."""
    return _values(_sum_plan, x, dim, keepdim, dtype, out)


def sum_all(x, *, dtype=None, out=None):
    """sum / sum.out."""
    return _values(_sum_plan, x, None, False, dtype, out)


def nansum(x, dim=None, keepdim=False, *, dtype=None, out=None):
    """nansum / nansum.out."""
    return _values(_nansum_plan, x, dim, keepdim, dtype, out)


def _mean_plan(x, dim, keepdim, dtype, out=None):
    out_dtype = dtype if dtype is not None else (out.dtype if out is not None else x.dtype)
    dims = lay.wrap_dims(dim, x.dim())
    if not out_dtype.is_floating_point or dims is None:
        return None
    return _simple(MEAN_OF, x, dims, keepdim, out_dtype, cast=out_dtype, d=float(reduced_count(x.shape, dims)))


def mean_dim(x, dim, keepdim=False, *, dtype=None, out=None):
    """mean.dim / mean.out: the sum divided by the count; integer results are ATen's error."""
    return _values(_mean_plan, x, dim, keepdim, dtype, out)


def mean_all(x, *, dtype=None, out=None):
    """mean / mean.dtype_out."""
    return _values(_mean_plan, x, None, False, dtype, out)


def prod_dim(x, dim, keepdim=False, *, dtype=None, out=None):
    """prod.dim_int / prod.int_out."""
    return _values(_prod_plan, x, dim, keepdim, dtype, out)


def prod_all(x, *, dtype=None, out=None):
    """prod / prod.out."""
    return _values(_prod_plan, x, None, False, dtype, out)


def _extremum(spec):
    def make(x, dim, keepdim, everything, out=None):
        dims = lay.wrap_dims(dim, x.dim())
        if dims is None or (out is not None and out.dtype != x.dtype) or (everything and x.numel() == 0):
            return None
        if x.numel() == 0 and any(x.shape[d] == 0 for d in dims):
            return None  # ATen's "Expected reduction dim to have non-zero size"
        return _simple(spec, x, dims, keepdim, x.dtype)

    return make


_amax_plan, _amin_plan = _extremum(MAX_OF), _extremum(MIN_OF)


def amax(x, dim=(), keepdim=False, *, out=None):
    """amax / amax.out (NaN propagates)."""
    return _values(_amax_plan, x, dim, keepdim, False, out)


def amin(x, dim=(), keepdim=False, *, out=None):
    """amin / amin.out (NaN propagates)."""
    return _values(_amin_plan, x, dim, keepdim, False, out)


def max_all(x, *, out=None):
    """max / max.unary_out: the largest element (NaN if any)."""
    return _values(_amax_plan, x, None, False, True, out)


def min_all(x, *, out=None):
    """min / min.unary_out: the smallest element (NaN if any)."""
    return _values(_amin_plan, x, None, False, True, out)


def _aminmax_plan(x, dim, keepdim, option, out=None):
    if x.numel() == 0:
        return None
    return _simple(MINMAX_OF, x, lay.wrap_dims([dim] if dim is not None else None, x.dim()), keepdim, x.dtype)


def aminmax(x, *, dim=None, keepdim=False, min=None, max=None):
    """aminmax / aminmax.out: (amin, amax) over ``dim`` or over everything, in one pass."""
    if min is None and max is None:
        pl = cached(_aminmax_plan, x, dim, keepdim)
        return NotImplemented if pl is None else pl(x)
    if (min is None) != (max is None) or min.dtype != x.dtype or max.dtype != x.dtype:
        return NotImplemented
    pl = _aminmax_plan(x, dim, keepdim, None)
    return NotImplemented if pl is None else deliver(pl, x, min, max)


def _as_words(x: torch.Tensor, dims: tuple) -> torch.Tensor | None:
    """A 1-byte tensor seen as int32 words along its last dim, when the reduction covers that dim and
    the view exists: all/any then test four elements per operation and load 16 per 16-byte vector."""
    if x.element_size() != 1 or x.dim() == 0 or x.dim() - 1 not in dims:
        return None
    if x.stride(-1) != 1 or x.shape[-1] % 4 or x.storage_offset() % 4:
        return None
    if any(stride % 4 for size, stride in zip(x.shape[:-1], x.stride()[:-1]) if size > 1):
        return None
    return x.view(torch.int32)


def _logical(spec, word_spec, x, dim, keepdim, out):
    out_dtype = torch.uint8 if x.dtype == torch.uint8 else torch.bool
    if out is not None and out.dtype != out_dtype:
        return NotImplemented
    dims = lay.wrap_dims(dim, x.dim())
    if dims is None:
        return NotImplemented
    words = _as_words(x, dims)
    if words is not None:
        x, spec = words, word_spec
    pl = _simple(spec, x, dims, keepdim, out_dtype)
    return NotImplemented if pl is None else deliver(pl, x, out)[0]


def all_dims(x, dim=None, keepdim=False, *, out=None):
    """all / all.dim / all.dims and their out forms (uint8 in, uint8 out, as ATen)."""
    return _logical(ALL_OF, ALL_WORDS_OF, x, dim, keepdim, out)


def any_dims(x, dim=None, keepdim=False, *, out=None):
    """any / any.dim / any.dims and their out forms."""
    return _logical(ANY_OF, ANY_OF, x, dim, keepdim, out)


def _count_plan(x, dim, keepdim, option, out=None):
    if out is not None and out.dtype != torch.int64:
        return None
    return _simple(COUNT_OF, x, lay.wrap_dims(dim, x.dim()), False, torch.int64)


def count_nonzero(x, dim=None, *, out=None):
    """count_nonzero (int or list of dims) and its out forms."""
    return _values(_count_plan, x, dim, False, None, out)
