"""The softmax family: _softmax, _log_softmax, _safe_softmax and their backward, on the row skeleton.

Along the softmax dim R (see ``rows``):
- R fits a block: one load, the statistics, one store (1 read + 1 write);
- longer: a first loop keeps a running (max, sum of exp) per lane (online softmax), a second loop,
  walking back so that the most recently read blocks are still in L2, writes.

Over a non-last dim, columns too long for one pass may instead be split into chunks of R over many
programs (``tiles.SOFTMAX_SPLIT_PER_SM``): a program owning a few columns over R has too little to
read at once for (8192, 8192). Pass 1 stores each (chunk, column)'s (max, sum of exp); pass 2 combines
its columns' chunks and writes its chunk. The backward splits the same way (per-chunk sums).

Long rows along the last dim take a persistent grid (``tiles.SOFTMAX_ROWS_IN_FLIGHT_BYTES``, the
backward's ``tiles.SOFTMAX_BACKWARD_ROWS_IN_FLIGHT_BYTES``): fewer programs, each taking every grid-th
block of rows, so that the rows in flight stay within L2 and the walk back of the second loop re-reads
them from it, not from DRAM (one program per block would hold every row at once: 128 MB for (512, 131072)
bfloat16). On a GPU the forward over such rows takes neither: ``resident.py`` reads them once.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from flag_gems.intmath import cdiv, next_power_of_2
from flag_gems.launch import shared_launcher
from flag_gems.runtime import device
from gems_reduction import layout as lay
from gems_reduction import resident, rows, tiles
from gems_reduction.reduce import convert, tl_dtype
from gems_reduction.rows import lanes, online_update, r_range, safe_shift, tile, tile_at


@triton.jit
def _softmax_value(x, m, s, LOG: tl.constexpr, SAFE: tl.constexpr, AXIS: tl.constexpr):
    m_t = tl.expand_dims(m, AXIS)
    if LOG:
        y = x - m_t - tl.expand_dims(tl.log(s), AXIS)
    else:
        y = tl.exp(x - m_t) / tl.expand_dims(s, AXIS)
    if SAFE:
        y = tl.where(m_t == float("-inf"), 0.0, y)
    return y


@triton.jit
def _softmax_fwd_lanes(
    x_ptr, y_ptr, pid, R, L, lane_blocks, lane_stride, r_stride, outer_stride,
    LOG: tl.constexpr, SAFE: tl.constexpr, AXIS: tl.constexpr, ONE_PASS: tl.constexpr, ACC: tl.constexpr,
    INT64: tl.constexpr, STAGES: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_R: tl.constexpr,
):
    """The forward of the lanes of program ``pid`` (``STAGES`` None: loops not pipelined)."""
    lane_off, lane_mask = lanes(pid, L, lane_blocks, lane_stride, outer_stride, INT64, BLOCK_L)
    r = r_range(INT64, BLOCK_R)
    if ONE_PASS:
        offs, mask = tile_at(lane_off, lane_mask, r, R, r_stride, AXIS)
        x = tl.where(mask, tl.load(x_ptr + offs, mask=mask, other=0).to(ACC), float("-inf"))
        m = tl.max(x, AXIS)
        s = tl.sum(tl.exp(x - tl.expand_dims(safe_shift(m), AXIS)), AXIS)
        tl.store(y_ptr + offs, convert(_softmax_value(x, m, s, LOG, SAFE, AXIS), y_ptr.dtype.element_ty), mask=mask)
    else:
        m = tl.full([BLOCK_L], float("-inf"), ACC)
        s = tl.zeros([BLOCK_L], ACC)
        for r0 in tl.range(0, R, BLOCK_R, num_stages=STAGES):
            offs, mask = tile_at(lane_off, lane_mask, r0 + r, R, r_stride, AXIS)
            x = tl.where(mask, tl.load(x_ptr + offs, mask=mask, other=0).to(ACC), float("-inf"))
            m, s = online_update(m, s, x, AXIS)
        blocks = tl.cdiv(R, BLOCK_R)
        for i in tl.range(0, blocks, num_stages=STAGES):
            # Backwards: the rows the first pass read last are still in L2.
            offs, mask = tile_at(lane_off, lane_mask, (blocks - 1 - i) * BLOCK_R + r, R, r_stride, AXIS)
            x = tl.load(x_ptr + offs, mask=mask, other=0).to(ACC)
            y = _softmax_value(x, m, s, LOG, SAFE, AXIS)
            tl.store(y_ptr + offs, convert(y, y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _softmax_fwd_kernel(
    x_ptr, y_ptr, R, L, lane_blocks, lane_stride, r_stride, outer_stride,
    LOG: tl.constexpr, SAFE: tl.constexpr, AXIS: tl.constexpr, ONE_PASS: tl.constexpr, ACC: tl.constexpr,
    INT64: tl.constexpr, PERSISTENT: tl.constexpr, STAGES: tl.constexpr, BLOCK_L: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    """One program per lane block, or (``PERSISTENT``) fewer programs, each taking every grid-th block:
    the rows in flight, whose pass 2 re-reads them, then fit in L2."""
    if PERSISTENT:
        for pid in range(tl.program_id(0), lane_blocks, tl.num_programs(0)):
            _softmax_fwd_lanes(x_ptr, y_ptr, pid, R, L, lane_blocks, lane_stride, r_stride, outer_stride, LOG,
                               SAFE, AXIS, ONE_PASS, ACC, INT64, STAGES, BLOCK_L, BLOCK_R)
    else:
        _softmax_fwd_lanes(x_ptr, y_ptr, tl.program_id(0), R, L, lane_blocks, lane_stride, r_stride, outer_stride,
                           LOG, SAFE, AXIS, ONE_PASS, ACC, INT64, STAGES, BLOCK_L, BLOCK_R)


@triton.jit
def _column_block(pid, R, L, col_blocks, INT64: tl.constexpr, BLOCK_N: tl.constexpr):
    """(offsets of row 0, index among all columns, mask) of the BLOCK_N columns program ``pid`` owns, in
    a contiguous (outer, R, L) tensor."""
    outer = pid // col_blocks
    col = (pid % col_blocks) * BLOCK_N + tl.arange(0, BLOCK_N)
    if INT64:
        outer = outer.to(tl.int64)
        col = col.to(tl.int64)
    return outer * R * L + col, outer * L + col, col < L


@triton.jit
def _chunk(R, L, col_blocks, chunk, INT64: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr):
    """What a program of the split owns: (offsets of row 0, index among all columns, mask) of its columns
    (see ``_column_block``), its chunk (index, first row, end), and the row offsets of a step."""
    base, lane, col_mask = _column_block(tl.program_id(0), R, L, col_blocks, INT64, BLOCK_N)
    part = tl.program_id(1)
    r = tl.arange(0, BLOCK_R)
    if INT64:
        part = part.to(tl.int64)
        r = r.to(tl.int64)
    start = part * chunk
    return base, lane, col_mask, part, start, tl.minimum(start + chunk, R), r


@triton.jit
def _parts_of_columns(lane, col_mask, parts, columns, PARTS: tl.constexpr):
    """(offsets, mask) of every chunk's statistic of the program's columns, stored (parts, columns)."""
    p = tl.arange(0, PARTS)
    return p[:, None] * columns + lane[None, :], (p < parts)[:, None] & col_mask[None, :]


@triton.jit
def _step_back(base, col_mask, start, end, i, blocks, r, L, BLOCK_R: tl.constexpr):
    """(offsets, mask) of step ``i`` of a chunk walked from its end (the rows pass 1 read last, still in L2,
    first)."""
    rows = start + (blocks - 1 - i) * BLOCK_R + r
    return base[None, :] + rows[:, None] * L, (rows < end)[:, None] & col_mask[None, :]


@triton.jit
def _chunk_stats_kernel(
    x_ptr, m_ptr, s_ptr, R, L, col_blocks, chunk, columns,
    ACC: tl.constexpr, INT64: tl.constexpr, STAGES: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Split softmax, pass 1: (max, sum of exp(x - max)) of each column over one chunk of R."""
    base, lane, col_mask, part, start, end, r = _chunk(R, L, col_blocks, chunk, INT64, BLOCK_R, BLOCK_N)
    m = tl.full([BLOCK_N], float("-inf"), ACC)
    s = tl.zeros([BLOCK_N], ACC)
    for r0 in tl.range(start, end, BLOCK_R, num_stages=STAGES):
        mask = ((r0 + r) < end)[:, None] & col_mask[None, :]
        x = tl.load(x_ptr + base[None, :] + (r0 + r)[:, None] * L, mask=mask, other=0).to(ACC)
        m, s = online_update(m, s, tl.where(mask, x, float("-inf")), 0)
    tl.store(m_ptr + part * columns + lane, m, mask=col_mask)
    tl.store(s_ptr + part * columns + lane, s, mask=col_mask)


@triton.jit
def _chunk_apply_kernel(
    x_ptr, y_ptr, m_ptr, s_ptr, R, L, col_blocks, chunk, columns, parts,
    LOG: tl.constexpr, SAFE: tl.constexpr, ACC: tl.constexpr, INT64: tl.constexpr, STAGES: tl.constexpr,
    PARTS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Split softmax, pass 2: combine the chunks' statistics of the program's columns, then write its
    chunk, walking back (``_step_back``)."""
    base, lane, col_mask, part, start, end, r = _chunk(R, L, col_blocks, chunk, INT64, BLOCK_R, BLOCK_N)
    stat, stat_mask = _parts_of_columns(lane, col_mask, parts, columns, PARTS)
    m_parts = tl.load(m_ptr + stat, mask=stat_mask, other=float("-inf"))
    m = tl.max(m_parts, 0)
    s = tl.sum(tl.load(s_ptr + stat, mask=stat_mask, other=0) * tl.exp(m_parts - safe_shift(m)[None, :]), 0)
    # Per column, so that an element costs one exp and one multiply (not a division).
    scale = 1.0 / s
    if LOG:
        m = m + tl.log(s)
    elif SAFE:
        scale = tl.where(m == float("-inf"), 0.0, scale)
        m = safe_shift(m)
    blocks = tl.cdiv(end - start, BLOCK_R)
    for i in tl.range(0, blocks, num_stages=STAGES):
        offs, mask = _step_back(base, col_mask, start, end, i, blocks, r, L, BLOCK_R)
        x = tl.load(x_ptr + offs, mask=mask, other=0).to(ACC)
        if LOG:
            y = x - m[None, :]
        else:
            y = tl.exp(x - m[None, :]) * scale[None, :]
        tl.store(y_ptr + offs, convert(y, y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _backward_value(g, y, total, LOG: tl.constexpr, AXIS: tl.constexpr):
    if LOG:
        gi = g - tl.exp(y) * tl.expand_dims(total, AXIS)
    else:
        gi = y * (g - tl.expand_dims(total, AXIS))
    return gi


@triton.jit
def _softmax_bwd_lanes(
    g_ptr, y_ptr, gi_ptr, pid, R, L, lane_blocks, lane_stride, r_stride, outer_stride,
    LOG: tl.constexpr, AXIS: tl.constexpr, ONE_PASS: tl.constexpr, ACC: tl.constexpr,
    INT64: tl.constexpr, STAGES: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_R: tl.constexpr,
):
    """softmax: gi = y * (g - sum(g * y)); log_softmax: gi = g - exp(y) * sum(g), over the lanes of
    program ``pid``."""
    lane_off, lane_mask = lanes(pid, L, lane_blocks, lane_stride, outer_stride, INT64, BLOCK_L)
    r = r_range(INT64, BLOCK_R)
    if ONE_PASS:
        offs, mask = tile_at(lane_off, lane_mask, r, R, r_stride, AXIS)
        g = tl.load(g_ptr + offs, mask=mask, other=0).to(ACC)
        y = tl.load(y_ptr + offs, mask=mask, other=0).to(ACC)
        if LOG:
            total = tl.sum(g, AXIS)
        else:
            total = tl.sum(g * y, AXIS)
        gi = _backward_value(g, y, total, LOG, AXIS)
        tl.store(gi_ptr + offs, convert(gi, gi_ptr.dtype.element_ty), mask=mask)
    else:
        acc = tile(tl.zeros([BLOCK_L], ACC), tl.zeros([BLOCK_R], ACC), AXIS)
        for r0 in tl.range(0, R, BLOCK_R, num_stages=STAGES):
            offs, mask = tile_at(lane_off, lane_mask, r0 + r, R, r_stride, AXIS)
            g = tl.load(g_ptr + offs, mask=mask, other=0).to(ACC)
            if LOG:
                acc += g
            else:
                acc += g * tl.load(y_ptr + offs, mask=mask, other=0).to(ACC)
        total = tl.sum(acc, AXIS)
        blocks = tl.cdiv(R, BLOCK_R)
        for i in tl.range(0, blocks, num_stages=STAGES):
            # Backwards: the rows the first pass read last are still in L2.
            offs, mask = tile_at(lane_off, lane_mask, (blocks - 1 - i) * BLOCK_R + r, R, r_stride, AXIS)
            g = tl.load(g_ptr + offs, mask=mask, other=0).to(ACC)
            y = tl.load(y_ptr + offs, mask=mask, other=0).to(ACC)
            gi = _backward_value(g, y, total, LOG, AXIS)
            tl.store(gi_ptr + offs, convert(gi, gi_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _softmax_bwd_kernel(
    g_ptr, y_ptr, gi_ptr, R, L, lane_blocks, lane_stride, r_stride, outer_stride,
    LOG: tl.constexpr, AXIS: tl.constexpr, ONE_PASS: tl.constexpr, ACC: tl.constexpr,
    INT64: tl.constexpr, PERSISTENT: tl.constexpr, STAGES: tl.constexpr, BLOCK_L: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    """The backward's programs, as the forward's (``PERSISTENT``: fewer programs looping over blocks)."""
    if PERSISTENT:
        for pid in range(tl.program_id(0), lane_blocks, tl.num_programs(0)):
            _softmax_bwd_lanes(g_ptr, y_ptr, gi_ptr, pid, R, L, lane_blocks, lane_stride, r_stride, outer_stride,
                               LOG, AXIS, ONE_PASS, ACC, INT64, STAGES, BLOCK_L, BLOCK_R)
    else:
        _softmax_bwd_lanes(g_ptr, y_ptr, gi_ptr, tl.program_id(0), R, L, lane_blocks, lane_stride, r_stride,
                           outer_stride, LOG, AXIS, ONE_PASS, ACC, INT64, STAGES, BLOCK_L, BLOCK_R)


@triton.jit
def _chunk_sums_kernel(
    g_ptr, y_ptr, t_ptr, R, L, col_blocks, chunk, columns,
    LOG: tl.constexpr, ACC: tl.constexpr, INT64: tl.constexpr, STAGES: tl.constexpr, BLOCK_R: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Split backward, pass 1: each column's sum over one chunk of R of g * y (softmax) or g (log)."""
    base, lane, col_mask, part, start, end, r = _chunk(R, L, col_blocks, chunk, INT64, BLOCK_R, BLOCK_N)
    acc = tl.zeros([BLOCK_R, BLOCK_N], ACC)
    for r0 in tl.range(start, end, BLOCK_R, num_stages=STAGES):
        offs = base[None, :] + (r0 + r)[:, None] * L
        mask = ((r0 + r) < end)[:, None] & col_mask[None, :]
        g = tl.load(g_ptr + offs, mask=mask, other=0).to(ACC)
        if LOG:
            acc += g
        else:
            acc += g * tl.load(y_ptr + offs, mask=mask, other=0).to(ACC)
    tl.store(t_ptr + part * columns + lane, tl.sum(acc, 0), mask=col_mask)


@triton.jit
def _chunk_backward_kernel(
    g_ptr, y_ptr, gi_ptr, t_ptr, R, L, col_blocks, chunk, columns, parts,
    LOG: tl.constexpr, ACC: tl.constexpr, INT64: tl.constexpr, STAGES: tl.constexpr, PARTS: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Split backward, pass 2: add up the chunks' sums of the program's columns, then write its chunk
    (walking back, as the forward does)."""
    base, lane, col_mask, part, start, end, r = _chunk(R, L, col_blocks, chunk, INT64, BLOCK_R, BLOCK_N)
    stat, stat_mask = _parts_of_columns(lane, col_mask, parts, columns, PARTS)
    total = tl.sum(tl.load(t_ptr + stat, mask=stat_mask, other=0), 0)
    blocks = tl.cdiv(end - start, BLOCK_R)
    for i in tl.range(0, blocks, num_stages=STAGES):
        offs, mask = _step_back(base, col_mask, start, end, i, blocks, r, L, BLOCK_R)
        g = tl.load(g_ptr + offs, mask=mask, other=0).to(ACC)
        y = tl.load(y_ptr + offs, mask=mask, other=0).to(ACC)
        gi = _backward_value(g, y, total, LOG, 0)
        tl.store(gi_ptr + offs, convert(gi, gi_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------------
# Launching


def _columns_fit(lane_count: int, length: int, outer: int) -> bool:
    """Whether whole columns go in registers on the GPU: when 16 lanes of them fit (one pass beats wider
    lanes)."""
    return next_power_of_2(length) * min(rows.lane_width(lane_count, outer), 16) <= 16384


def softmax_tiles(lane_count: int, length: int, outer: int, columns: bool, itemsize: int):
    """The tile policy of softmax-like kernels: a row of up to 16K elements is held in registers (one
    pass); longer rows loop over 16 KB blocks. Short rows are packed several per program, never
    fewer than ~4 programs per SM."""
    padded = next_power_of_2(length)
    if device.interpreter:
        block_r = min(padded, 16384)
        block_l = min(next_power_of_2(lane_count), max(1, 16384 // block_r))
        return block_l, block_r, dict(ONE_PASS=block_r >= length), 4
    hold = 16384
    if columns:
        block_l = rows.lane_width(lane_count, outer)
        one_pass = _columns_fit(lane_count, length, outer)
        if one_pass:
            block_l = min(block_l, hold // padded)
        block_r = padded if one_pass else max(1, (16384 // itemsize) // block_l)
    else:
        one_pass = padded <= hold
        block_r = padded if one_pass else 16384 // itemsize
        spread = next_power_of_2(cdiv(lane_count, 4 * lay.sm_count()))
        block_l = max(1, min(4096 // block_r if one_pass else 1, spread))
    return block_l, block_r, dict(ONE_PASS=one_pass), max(4, min(16, block_l * block_r // 512))


def split_tiles(columns: int, length: int, outer: int, itemsize: int, per_sm: int, cols_bytes: int):
    """(BLOCK_R, BLOCK_N, chunk, parts, num_warps) of the split softmax (or its backward) over a non-last
    dim, or None where it is off (``per_sm`` 0) or whole columns fit one pass: row segments of
    ``cols_bytes``, 16 KB steps, and the reduced dim cut into whole-step chunks
    until about ``per_sm`` programs per SM exist."""
    if not per_sm:
        return None
    if tiles.INTERPRETER_TILES and softmax_tiles(columns, length, outer, True, itemsize)[2]["ONE_PASS"]:
        return None
    if not tiles.INTERPRETER_TILES and _columns_fit(columns, length, outer):
        return None
    block_n = min(next_power_of_2(columns), max(16, cols_bytes // itemsize))
    block_r = min(next_power_of_2(length), max(1, tiles.STEP_BYTES // (block_n * itemsize)))
    col_programs = outer * cdiv(columns, block_n)
    wanted = cdiv(per_sm * lay.sm_count(), col_programs)
    splits = max(1, min(wanted, cdiv(length, block_r)))
    chunk = cdiv(cdiv(length, splits), block_r) * block_r
    per_thread = max(1, tiles.THREAD_BYTES // itemsize)
    return block_r, block_n, chunk, cdiv(length, chunk), tiles.warps_for(block_r * block_n, per_thread)


class _SplitLaunch:
    """The two launches of a split over a non-last dim and the buffer of chunk statistics between them:
    the first reads the inputs, the second the inputs and writes the result."""

    __slots__ = ("stats", "apply", "inputs", "shape", "dtype")

    def __init__(self, stats: lay.Launch, apply: lay.Launch, inputs: int, shape: tuple, dtype: torch.dtype):
        self.stats = stats
        self.apply = apply
        self.inputs = inputs
        self.shape = shape  # of the statistics: (kinds, parts, columns)
        self.dtype = dtype

    def __call__(self, tensors: list, ptr: int = 0) -> None:
        """Run over ``tensors``: the inputs, then the result."""
        planes = tensors[0].new_empty(self.shape, dtype=self.dtype).unbind(0)
        for plane in planes:
            ptr |= plane.data_ptr()
        self.stats([*tensors[: self.inputs], *planes], ptr)
        self.apply([*tensors, *planes], ptr)


def _split_plan(shape, dim: int, itemsize: int, acc, split: tuple[int, int], kernels: tuple, inputs: int,
                stats: int, few_rows: bool = False, **constexprs) -> _SplitLaunch | None:
    """The split launches of ``kernels`` (pass 1, pass 2) over contiguous tensors of ``shape`` along
    ``dim`` (``inputs`` of them read), keeping ``stats`` values per (chunk, column); None where the split
    does not apply. ``few_rows``: also along the last dim (each row one column) when rows are fewer than
    SMs. ``constexprs`` go to pass 2, those it shares with pass 1 (``LOG``) to both."""
    outer, length, inner = rows.geometry(shape, dim)
    along = inner > 1 or (few_rows and outer < lay.sm_count())
    found = split_tiles(inner, length, outer, itemsize, *split) if along else None
    if found is None:
        return None
    block_r, block_n, chunk, parts, warps = found
    col_blocks = cdiv(inner, block_n)
    int64 = lay.force_int64 or outer * length * inner > lay.INT32_MAX
    common = dict(ACC=tl_dtype(acc), INT64=int64, STAGES=tiles.STAGES)
    blocks = dict(BLOCK_R=block_r, BLOCK_N=block_n)
    first, second = kernels
    shared = {"LOG": constexprs["LOG"]} if first is _chunk_sums_kernel else {}
    grid = (outer * col_blocks, parts)
    ints = [length, inner, col_blocks, chunk, outer * inner]
    stats_launch = lay.Launch(shared_launcher(first, dict(shared, **common, **blocks), num_warps=warps), grid, ints)
    apply = lay.Launch(shared_launcher(second, dict(constexprs, **common, PARTS=next_power_of_2(parts),
                                                    **blocks), num_warps=warps), grid, [*ints, parts])
    return _SplitLaunch(stats_launch, apply, inputs, (stats, parts, outer * inner), acc)


def rows_in_flight(rows_count: int, row_bytes: int, budget: int) -> int:
    """Programs of the persistent path over long rows: as many as ``budget`` bytes of rows hold (at least
    one); 0 where it is off (``budget`` 0) or no fewer than the rows."""
    if not budget:
        return 0
    programs = max(1, budget // row_bytes)
    return programs if programs < rows_count else 0


def _persistent_plan(kernel, shape, dim: int, itemsize: int, inputs: int, budget: int, step: int,
                     **constexprs) -> lay.Launch | None:
    """The launch of ``kernel`` over rows too long for one pass (along the last dim) by a persistent grid,
    each program taking every grid-th block of rows, so that the rows in flight (``inputs`` tensors read)
    fit ``budget`` bytes (``tiles.SOFTMAX_ROWS_IN_FLIGHT_BYTES`` or the backward's), loading ``step`` bytes
    of a row per loop step on the GPU; None where it does not apply."""
    outer, length, inner = rows.geometry(shape, dim)
    if not budget or inner > 1:
        return None
    block_l, block_r, extra, warps = softmax_tiles(outer, length, outer, False, itemsize)
    if extra["ONE_PASS"]:
        return None
    if not device.interpreter:
        # With few programs per SM, each may need more bytes in flight per step than the other path's 16 KB.
        block_r = next_power_of_2(max(1, step // itemsize))
        warps = max(4, min(16, block_l * block_r // 512))
    lane_blocks = cdiv(outer, block_l)
    programs = rows_in_flight(lane_blocks, block_l * length * itemsize * inputs, budget)
    if not programs:
        return None
    int64 = lay.force_int64 or outer * length > lay.INT32_MAX
    launcher = shared_launcher(kernel, dict(constexprs, **extra, AXIS=1, INT64=int64, PERSISTENT=True,
                                            STAGES=tiles.STAGES, BLOCK_L=block_l, BLOCK_R=block_r),
                               num_warps=warps)
    return lay.Launch(launcher, (programs,), [length, outer, lane_blocks, length, 1, length])


class _Call:
    """A ready softmax-like call: the launch (None for an empty tensor), the result dtype, and whether
    the input needs a contiguous copy first."""

    __slots__ = ("launch", "out_dtype", "copy")

    def __init__(self, launch, out_dtype, copy):
        self.launch = launch
        self.out_dtype = out_dtype
        self.copy = copy

    def __call__(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        if self.copy:
            x = x.contiguous()
        if out is None:
            y = torch.empty_like(x, dtype=self.out_dtype, memory_format=torch.contiguous_format)
        else:
            y = lay.new_output(out, x.shape, self.out_dtype, x)
        if self.launch is not None:
            self.launch([x, y], x.data_ptr() | y.data_ptr())
        return y if out is None else lay.deliver(y, out)


def _forward_call(x, dim, half_to_float, log, safe) -> _Call | None:
    # half_to_float: a float16 input gives a float32 result (other dtypes: ATen's error).
    out_dtype = x.dtype if not half_to_float else torch.float32 if x.dtype == torch.float16 else None
    dims = lay.wrap_dims(dim, x.dim())
    if dims is None or x.dtype not in lay.FLOATING or out_dtype not in lay.FLOATING:
        return None
    launch = None
    d = dims[0] if dims else 0
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    if x.numel() and acc is torch.float32:
        launch = resident.plan(x.shape, d, x.dtype, out_dtype, acc, log, safe)
    if x.numel() and launch is None:
        launch = _split_plan(x.shape, d, x.element_size(), acc,
                             (tiles.SOFTMAX_SPLIT_PER_SM, tiles.SOFTMAX_SPLIT_COLS_BYTES),
                             (_chunk_stats_kernel, _chunk_apply_kernel), 1, 2, tiles.SOFTMAX_SPLIT_FEW_ROWS,
                             LOG=log, SAFE=safe)
    if x.numel() and launch is None:
        launch = _persistent_plan(_softmax_fwd_kernel, x.shape, d, x.element_size(), 1,
                                  tiles.SOFTMAX_ROWS_IN_FLIGHT_BYTES, tiles.SOFTMAX_ROWS_STEP_BYTES, LOG=log,
                                  SAFE=safe, ACC=tl_dtype(acc))
    if x.numel() and launch is None:
        key = (_softmax_fwd_kernel, tuple(x.shape), d, x.dtype, out_dtype, log, safe, lay.force_int64)
        launch = rows.plan(_softmax_fwd_kernel, key, x.shape, d, x.element_size(), softmax_tiles, LOG=log,
                           SAFE=safe, ACC=tl_dtype(acc), PERSISTENT=False, STAGES=None)
    return _Call(launch, out_dtype, not x.is_contiguous())


def _forward(x, dim, half_to_float, out, log, safe):
    key = (_forward, log, safe, x.shape, x.stride(), x.dtype, dim, half_to_float, lay.force_int64)
    call = lay.calls.get(key)
    if call is None:
        call = _forward_call(x, dim, half_to_float, log, safe)
        if call is None:
            return NotImplemented
        lay.remember(key, call)
    if out is not None and out.dtype != call.out_dtype:
        return NotImplemented
    return call(x, out)


def softmax(x, dim, half_to_float, *, out=None):
    """_softmax / _softmax.out (``half_to_float``: a float16 input gives a float32 result)."""
    return _forward(x, dim, half_to_float, out, False, False)


def log_softmax(x, dim, half_to_float, *, out=None):
    """_log_softmax / _log_softmax.out."""
    return _forward(x, dim, half_to_float, out, True, False)


def safe_softmax(x, dim, dtype=None):
    """_safe_softmax: softmax whose rows of -inf only give zeros instead of NaN."""
    if dtype is not None and dtype != x.dtype:
        if dtype not in lay.FLOATING or x.dtype not in lay.FLOATING:
            return NotImplemented
        x = x.to(dtype)
    return _forward(x, dim, False, None, False, True)


def _backward_split(grad, d: int, input_dtype, acc, log: bool) -> _SplitLaunch | None:
    """The split backward of this signature (``tiles.SOFTMAX_BACKWARD_SPLIT_PER_SM``), or None."""
    key = (_backward_split, grad.shape, d, grad.dtype, input_dtype, log, lay.force_int64)
    found = lay.calls.get(key)
    if found is None:
        found = _split_plan(grad.shape, d, grad.element_size(), acc,
                            (tiles.SOFTMAX_BACKWARD_SPLIT_PER_SM, tiles.SOFTMAX_BACKWARD_SPLIT_COLS_BYTES),
                            (_chunk_sums_kernel, _chunk_backward_kernel), 2, 1, LOG=log)
        lay.remember(key, found or False)
    return found or None


def _backward_rows(grad, d: int, input_dtype, acc, log: bool) -> lay.Launch | None:
    """The persistent backward over long rows of this signature
    (``tiles.SOFTMAX_BACKWARD_ROWS_IN_FLIGHT_BYTES``), or None."""
    key = (_backward_rows, grad.shape, d, grad.dtype, input_dtype, log, lay.force_int64)
    found = lay.calls.get(key)
    if found is None:
        found = _persistent_plan(_softmax_bwd_kernel, grad.shape, d, grad.element_size(), 2,
                                 tiles.SOFTMAX_BACKWARD_ROWS_IN_FLIGHT_BYTES, tiles.SOFTMAX_BACKWARD_ROWS_STEP_BYTES,
                                 LOG=log, ACC=tl_dtype(acc))
        lay.remember(key, found or False)
    return found or None


def _backward(grad, output, dim, input_dtype, grad_input, log):
    dims = lay.wrap_dims(dim, output.dim())
    widened = grad.dtype == torch.float32 and input_dtype == torch.float16
    if (dims is None or grad.dtype not in lay.FLOATING or output.dtype != grad.dtype
            or (grad.dtype != input_dtype and not widened) or grad.shape != output.shape
            or (grad_input is not None and grad_input.dtype != input_dtype)):
        return NotImplemented
    grad, output = grad.contiguous(), output.contiguous()
    result = lay.new_output(grad_input, grad.shape, input_dtype, grad)
    if grad.numel():
        d = dims[0] if dims else 0
        acc = torch.float64 if grad.dtype == torch.float64 else torch.float32
        ready = _backward_split(grad, d, input_dtype, acc, log) or _backward_rows(grad, d, input_dtype, acc, log)
        if ready is not None:
            ready([grad, output, result], grad.data_ptr() | output.data_ptr() | result.data_ptr())
        else:
            key = (_softmax_bwd_kernel, grad.shape, d, grad.dtype, input_dtype, log, lay.force_int64)
            rows.launch(_softmax_bwd_kernel, key, (grad, output, result), grad.shape, d, softmax_tiles, LOG=log,
                        ACC=tl_dtype(acc), PERSISTENT=False, STAGES=None)
    return lay.deliver(result, grad_input)


def softmax_backward(grad_output, output, dim, input_dtype, *, grad_input=None):
    """_softmax_backward_data / _softmax_backward_data.out."""
    return _backward(grad_output, output, dim, input_dtype, grad_input, False)


def log_softmax_backward(grad_output, output, dim, input_dtype, *, out=None):
    """_log_softmax_backward_data / _log_softmax_backward_data.out."""
    return _backward(grad_output, output, dim, input_dtype, out, True)
