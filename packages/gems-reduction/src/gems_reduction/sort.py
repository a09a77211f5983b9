"""Selection along a dim: sort (stable), topk, kthvalue, median, nanmedian, mode.

Rows of up to ``MAX_ROW`` elements are sorted in registers by ``tl.sort``: each element becomes one
int64 key, (order-preserving value bits << 32) | position, so that one sort orders by value and
breaks ties by position (a stable sort; NaN after +inf, -0.0 equal to 0.0, as ATen). Values are then
read back at the sorted positions, bit-exact. Longer rows, 64-bit elements and the rest go to ATen, but
for topk of a small k over 16-bit dtypes (an LLM's logits): each program keeps the best k of a chunk of a
row by int32 keys, (value bits << 16) | position in the chunk, widened to int64 keys of the same order as
those above, and one program a row then picks the best k of those (so the same order and ties).

On the GPU rows stop at ``GPU_MAX_ROW``, for speed: longer rows sort right there (a (4096, 4096) float32
kthvalue once came back wrong; ``tuning/ab_sort_probe.py`` later found one ``tl.sort`` a row right for
every length up to 4096 and every warp count, and the tests check such rows on the GPU) but take several
times ATen's time.
``mode`` counts runs of equal values with a scan and no ``tl.gather``: with neighbours fetched by
``tl.gather`` its values were wrong on the GPU for rows whose sort was right (kthvalue of the same
rows), the known weak spot being gathers of tensors smaller than the program's threads.

With ``RADIX_SELECT`` on, kthvalue and the medians of 8- and 16-bit rows longer than the register sort takes (up to
``RADIX_MAX_ROW``) are found by a radix select instead: one program a row, held in registers, picks the
k-th smallest order-preserving key 8 bits at a time from a 256-bin histogram (2 passes for 16-bit dtypes,
4 for 32-bit), then reports the k-th smallest's position as a stable sort would (so the register sort's).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import triton
import triton.language as tl

from flag_gems.intmath import cdiv, next_power_of_2
from flag_gems.launch import Launcher
from flag_gems.runtime import device
from gems_reduction import layout as lay
from gems_reduction import rows
from gems_reduction.reduce import MAX_PLANS
from gems_reduction.rows import lanes

#: Longest row sorted in registers; longer ones go to ATen.
MAX_ROW = 4096
#: The same on a GPU: longer rows are right there (tuning/ab_sort_probe.py, and the tests raise this limit to
#: check them) but slower than ATen's radix sort: (4096, 4096) sort, kthvalue and median took 4-7x ATen's
#: time on an H100.
GPU_MAX_ROW = 1024
#: kthvalue, median and nanmedian of rows longer than the register sort takes go to a radix select, for
#: dtypes of at most RADIX_MAX_ITEMSIZE bytes. On an H100 (tuning/ab_select.py) bf16 (4096, 4096) took
#: 0.47-0.59x ATen's time, (1024, 16384) 0.55-0.60x, the median over dim 0 0.30x; float32 took 1.4x at
#: (4096, 4096) and 9x at (1024, 16384) (four passes over keys that no longer fit in registers): ATen's.
RADIX_SELECT = True
RADIX_MAX_ITEMSIZE = 2
#: Longest row the radix select serves: one program holds the row's keys in registers.
RADIX_MAX_ROW = 16384
#: Keys a thread holds in the radix select (its warps: the row's keys / 32 / this, 4 to 16).
RADIX_KEYS_PER_THREAD = 32
#: topk with k up to this picks the best k one at a time (k min-reductions) instead of sorting.
SELECT_UP_TO = 16
#: topk of 16-bit rows longer than the register sort takes: 0 hands them to ATen; else the elements a program
#: of the first stage keeps its best k of (a power of two), the second stage picking from those. On an H100
#: (tuning/ab_topk.py), k=50 of bf16 (64, 128256) took 130.9 us with 2048 (ATen 126.2, 165.2 handed back),
#: (1, 128256) 62.7 (ATen 57.6, handed back 161.4), k=40 of (256, 32000) 119.0 (ATen 133.6); 4096 was 5-10%
#: slower on two of them. Keys of 32-bit dtypes are int64, twice the registers: float32 (64, 128256) took
#: 238-325 us against ATen's 193, so 32-bit rows stay with ATen.
TOPK_CHUNK = 2048
#: The largest k the two stages serve: each program holds its best k rounded up to a power of two.
TOPK_MAX_K = 128
#: Candidate keys the second stage selects from at once (a power of two); more are merged tile by tile.
TOPK_MERGE = 4096
_SORTABLE = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.uint8, torch.int8, torch.int16,
                       torch.int32, torch.bool})

SORT: tl.constexpr = tl.constexpr(0)  # write all R sorted elements
HEAD: tl.constexpr = tl.constexpr(1)  # write the first K (topk)
PICK: tl.constexpr = tl.constexpr(2)  # write the element at one position per row (kthvalue, medians)
MODE: tl.constexpr = tl.constexpr(3)  # write the most frequent value (mode)
# Which position PICK takes.
KTH: tl.constexpr = tl.constexpr(0)
MEDIAN: tl.constexpr = tl.constexpr(1)
NANMEDIAN: tl.constexpr = tl.constexpr(2)


@triton.jit
def _order_bits(x, TOP: tl.constexpr, DESCENDING: tl.constexpr):
    """int32 bits of ``x`` that order as its values do (reversed where DESCENDING): -0.0 with 0.0, every NaN
    after +inf. TOP is the largest they take: 0x7FFFFFFF, or 0x7FFF to keep a 16-bit dtype's within 16 bits."""
    if x.dtype.is_floating():
        xf = x.to(tl.float32)
        if x.dtype == tl.float32:
            bits = x.to(tl.int32, bitcast=True)
        else:
            bits = x.to(tl.int16, bitcast=True).to(tl.int32)
        bits = tl.where(xf == 0, 0, bits)
        # Negative floats order backwards as integers: flip their magnitude bits.
        bits = bits ^ ((bits >> 31) & TOP)
        bits = tl.where(xf != xf, TOP, bits)
    else:
        bits = x.to(tl.int32)
    if DESCENDING:
        bits = ~bits
    return bits


@triton.jit
def _keys(x, r, R, DESCENDING: tl.constexpr):
    """int64 sort keys: order-preserving value bits in the high half, the position in the low half."""
    keys = (_order_bits(x, 0x7FFFFFFF, DESCENDING).to(tl.int64) << 32) | r.to(tl.int64)
    return tl.where(r < R, keys, 0x7FFFFFFFFFFFFFFF)


@triton.jit
def _at(tile, r, pos):
    """tile[i, pos[i]] for each row i."""
    return tl.sum(tl.where(r[None, :] == pos[:, None], tile, 0), 1)


@triton.jit
def _run_start(a, b):
    """Scan combine over sorted (value bits << 32 | position): ``a`` while the value repeats, else ``b``.

    Associative because the values are sorted: equal values at both ends of a span mean one run."""
    return tl.where((a >> 32) == (b >> 32), a, b)


@triton.jit
def _sorted_outputs(x_ptr, values_ptr, indices_ptr, x, keys, mask, lane_off, lane_mask, out_off, r, R, K, r_stride,
                    WHAT: tl.constexpr, WHICH: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_R: tl.constexpr):
    """Write what ``WHAT`` asks for from each row's sorted keys."""
    order = (keys & 0xFFFFFFFF).to(r.dtype)
    if WHAT == SORT or WHAT == HEAD:
        keep = mask & (r < K)[None, :]
        values = tl.load(x_ptr + lane_off[:, None] + order * r_stride, mask=keep, other=0)
        out = out_off[:, None] + r[None, :] * r_stride
        tl.store(values_ptr + out, values, mask=keep)
        tl.store(indices_ptr + out, order.to(tl.int64), mask=keep)
    else:
        if WHAT == PICK:
            if WHICH == KTH:
                pos = tl.zeros([BLOCK_L], r.dtype) + (K - 1)
            else:
                xf = x.to(tl.float32)
                nans = tl.sum((mask & (xf != xf)).to(tl.int32), 1)
                if WHICH == MEDIAN:
                    # Any NaN: the first NaN (they sort last, in position order).
                    pos = tl.where(nans > 0, R - nans, (R - 1) // 2)
                else:
                    pos = tl.maximum(R - nans - 1, 0) // 2
        else:
            # Equal values are adjacent once sorted: a scan carries each run's first sorted position,
            # packed under the value bits, along the run (no tl.gather: see the module docstring).
            run = tl.associative_scan(((keys >> 32) << 32) | r[None, :].to(tl.int64), 1, _run_start)
            counts = tl.where(mask, r[None, :] - (run & 0xFFFFFFFF).to(r.dtype) + 1, 0)
            best = tl.max(counts, 1)
            # The first position reaching the top count ends the smallest most frequent value's run:
            # that value at its last position (ATen's choice).
            pos = tl.min(tl.where(counts == best[:, None], r[None, :], BLOCK_R), 1)
        index = _at(order, r, pos)
        value = tl.load(x_ptr + lane_off + index * r_stride, mask=lane_mask, other=0)
        tl.store(values_ptr + out_off, value, mask=lane_mask)
        tl.store(indices_ptr + out_off, index.to(tl.int64), mask=lane_mask)


@triton.jit
def _sort_kernel(
    x_ptr, values_ptr, indices_ptr, R, K, L, lane_blocks, lane_stride, r_stride, outer_stride, out_lane_stride,
    out_outer_stride, WHAT: tl.constexpr, WHICH: tl.constexpr, DESCENDING: tl.constexpr, SELECT: tl.constexpr,
    INT64: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_R: tl.constexpr,
):
    pid = tl.program_id(0)
    lane_off, lane_mask = lanes(pid, L, lane_blocks, lane_stride, outer_stride, INT64, BLOCK_L)
    out_off, _ = lanes(pid, L, lane_blocks, out_lane_stride, out_outer_stride, INT64, BLOCK_L)
    r = tl.arange(0, BLOCK_R)
    if INT64:
        r = r.to(tl.int64)
    mask = lane_mask[:, None] & (r < R)[None, :]
    x = tl.load(x_ptr + lane_off[:, None] + r[None, :] * r_stride, mask=mask, other=0)
    keys = _keys(x, r[None, :], R, DESCENDING)
    if SELECT:
        # A few of the best (topk with a small k): take the smallest key K times, no full sort.
        values_at = values_ptr + out_off
        indices_at = indices_ptr + out_off
        for _ in range(0, K):
            best = tl.min(keys, 1)
            index = (best & 0xFFFFFFFF).to(r.dtype)
            tl.store(values_at, tl.load(x_ptr + lane_off + index * r_stride, mask=lane_mask, other=0), mask=lane_mask)
            tl.store(indices_at, index.to(tl.int64), mask=lane_mask)
            keys = tl.where(keys == best[:, None], 0x7FFFFFFFFFFFFFFF, keys)
            values_at += r_stride
            indices_at += r_stride
    else:
        _sorted_outputs(x_ptr, values_ptr, indices_ptr, x, tl.sort(keys, 1), mask, lane_off, lane_mask, out_off,
                        r, R, K, r_stride, WHAT, WHICH, BLOCK_L, BLOCK_R)


@triton.jit
def _digit(bits, shift: tl.constexpr, FLIP: tl.constexpr):
    """8 bits of a key from ``shift`` up; FLIP on the top digit of signed bits makes them order as unsigned."""
    return ((bits >> shift) & 0xFF) ^ FLIP


@triton.jit
def _pick_by_histograms(bits, chosen, k, PASSES: tl.constexpr, SIGNED: tl.constexpr):
    """(the elements whose key is the k-th smallest of those ``chosen``, the k-th's rank among them), 8 bits a
    pass from a 256-bin histogram."""
    bins = tl.arange(0, 256)
    for p in tl.static_range(PASSES):
        digit = _digit(bits, 8 * (PASSES - 1 - p), 0x80 if SIGNED and p == 0 else 0)
        counts = tl.histogram(digit, 256, mask=chosen)
        # The digit is the first bin whose running count reaches k; k becomes the rank within that bin.
        below = tl.sum((tl.cumsum(counts, 0) < k).to(tl.int32), 0)
        k -= tl.sum(tl.where(bins < below, counts, 0), 0)
        chosen = chosen & (digit == below)
    return chosen, k


@triton.jit
def _radix_pick_kernel(x_ptr, values_ptr, indices_ptr, R, K, WHICH: tl.constexpr, TOP: tl.constexpr,
                       PASSES: tl.constexpr, SIGNED: tl.constexpr, BLOCK_R: tl.constexpr):
    """The k-th smallest of each contiguous row (or its median) by a radix select over 8-bit digits."""
    row = tl.program_id(0).to(tl.int64)
    r = tl.arange(0, BLOCK_R)
    inside = r < R
    x = tl.load(x_ptr + row * R + r, mask=inside, other=0)
    bits = _order_bits(x, TOP, False)
    if WHICH == KTH:
        k = K
    else:
        nans = 0
        if x.dtype.is_floating():
            xf = x.to(tl.float32)
            nans = tl.sum((inside & (xf != xf)).to(tl.int32), 0)
        if WHICH == MEDIAN:
            # Any NaN: the first NaN, the smallest of the keys that sort last.
            k = tl.where(nans > 0, R - nans + 1, (R - 1) // 2 + 1)
        else:
            k = tl.maximum(R - nans - 1, 0) // 2 + 1
    chosen, k = _pick_by_histograms(bits, inside, k, PASSES, SIGNED)
    # The k-th of the equal keys in position order: the element a stable sort puts at the k-th place.
    index = tl.min(tl.where(chosen & (tl.cumsum(chosen.to(tl.int32), 0) == k), r, BLOCK_R), 0)
    tl.store(values_ptr + row, tl.load(x_ptr + row * R + index))
    tl.store(indices_ptr + row, index.to(tl.int64))


@triton.jit
def _smallest(keys, KP: tl.constexpr):
    """The KP smallest of a 1-D block of keys, ascending."""
    # tl.topk keeps the largest: on the complements (~key == -key - 1) that is the smallest keys.
    return ~tl.topk(~keys, KP, 0)


@triton.jit
def _row_start(lane, R, inner):
    """Offset of element 0 of row ``lane`` in a contiguous (outer, R, inner) tensor (rows along R)."""
    lane = lane.to(tl.int64)
    return (lane // inner) * R * inner + lane % inner


@triton.jit
def _narrow_keys(x, local, valid, DESCENDING: tl.constexpr):
    """int32 keys of a 16-bit dtype: order-preserving value bits << 16 | position in the chunk."""
    return tl.where(valid, (_order_bits(x, 0x7FFF, DESCENDING) << 16) | local, 0x7FFFFFFF)


@triton.jit
def _topk_chunks_kernel(x_ptr, keys_ptr, R, chunks, inner, DESCENDING: tl.constexpr, CHUNK: tl.constexpr,
                        KP: tl.constexpr):
    """Stage 1 of a long row's topk (16-bit dtypes): the best KP keys of each CHUNK of the row, ascending."""
    pid = tl.program_id(0)
    start = (pid % chunks) * CHUNK
    local = tl.arange(0, CHUNK)
    r = start + local
    x = tl.load(x_ptr + _row_start(pid // chunks, R, inner) + r.to(tl.int64) * inner, mask=r < R, other=0)
    best = _smallest(_narrow_keys(x, local, r < R, DESCENDING), KP)
    # Widened to int64 keys, value bits << 32 | position in the row: the order of ``_keys``.
    best = ((best >> 16).to(tl.int64) << 32) | (start + (best & 0xFFFF)).to(tl.int64)
    # Program pid = row * chunks + chunk: its KP keys follow those of the chunk before.
    tl.store(keys_ptr + pid.to(tl.int64) * KP + tl.arange(0, KP), best)


@triton.jit
def _topk_rows_kernel(x_ptr, keys_ptr, values_ptr, indices_ptr, R, K, candidates, inner, TILE: tl.constexpr,
                      KP: tl.constexpr):
    """Stage 2: the best K of a row's candidate keys, in order; values read back at their positions."""
    lane = tl.program_id(0)
    row_keys = keys_ptr + lane.to(tl.int64) * candidates
    t = tl.arange(0, TILE)
    best = _smallest(tl.load(row_keys + t, mask=t < candidates, other=0x7FFFFFFFFFFFFFFF), KP)
    for start in range(TILE, candidates, TILE):
        tile = tl.load(row_keys + start + t, mask=start + t < candidates, other=0x7FFFFFFFFFFFFFFF)
        best = _smallest(tl.reshape(tl.join(best, _smallest(tile, KP)), [2 * KP]), KP)
    j = tl.arange(0, KP)
    keep = j < K
    position = best & 0xFFFFFFFF
    values = tl.load(x_ptr + _row_start(lane, R, inner) + position * inner, mask=keep, other=0)
    out = _row_start(lane, K, inner) + j * inner
    tl.store(values_ptr + out, values, mask=keep)
    tl.store(indices_ptr + out, position, mask=keep)


def sort_tiles(lane_count: int, length: int) -> tuple[int, int, int]:
    """(BLOCK_L rows, BLOCK_R, num_warps): a whole row per tile, short rows packed up to 4K keys."""
    block_r = next_power_of_2(max(length, 1))
    block_l = min(next_power_of_2(lane_count), max(1, 4096 // block_r))
    if not device.interpreter:
        block_l = min(block_l, max(1, next_power_of_2(cdiv(lane_count, 4 * lay.sm_count()))))
    return block_l, block_r, max(4, min(16, block_l * block_r // 256))


_plans: dict[tuple, object] = {}


def _cached_plan(key: tuple, build: Callable[[], object]):
    """The plan kept for ``key``, built (``build()``) at its first use; the cache is emptied when full."""
    plan = _plans.get(key)
    if plan is None:
        if len(_plans) >= MAX_PLANS:
            _plans.clear()
        plan = _plans[key] = build()
    return plan


def _select(x, dim, what, which=0, descending=False, k=None, keepdim=True, values=None, indices=None):
    """Run the sort kernel along ``dim``; (values, indices) shaped for ``what``, or NotImplemented."""
    dims = lay.wrap_dims(dim, x.dim())
    if dims is None or x.dtype not in _SORTABLE or (values is None) != (indices is None):
        return NotImplemented
    d = dims[0] if dims else 0
    length = x.shape[d] if x.dim() else 1
    if values is not None and (values.dtype != x.dtype or indices.dtype != torch.int64):
        return NotImplemented
    limit = MAX_ROW if device.interpreter else GPU_MAX_ROW
    if length > limit and what == PICK and _takes_radix(length, x.dtype) and x.numel():
        return _radix_pick(x, d, which, k, keepdim, values, indices)
    if length > limit or length == 0 or x.numel() == 0:
        return NotImplemented
    source = x.contiguous()
    outer, _, inner = rows.geometry(source.shape, d)
    count = k if what == HEAD else (length if what == SORT else 1)
    out_shape = list(source.shape)
    if x.dim():
        out_shape[d] = count
    vals = torch.empty(out_shape, dtype=x.dtype, device=x.device)
    idx = torch.empty(out_shape, dtype=torch.int64, device=x.device)
    if vals.numel():
        key = (source.shape, d, x.dtype, what, which, descending, count, k, lay.force_int64)

        def build():
            columns = inner > 1
            lane_count = inner if columns else outer
            block_l, block_r, warps = sort_tiles(lane_count, length)
            lane_blocks = cdiv(lane_count, block_l)
            launcher = Launcher(_sort_kernel, dict(WHAT=what, WHICH=which, DESCENDING=descending,
                                                   SELECT=what == HEAD and count <= SELECT_UP_TO,
                                                   INT64=lay.force_int64 or x.numel() > lay.INT32_MAX,
                                                   BLOCK_L=block_l, BLOCK_R=block_r), num_warps=warps)
            if columns:  # lanes along the inner dim of one outer index
                strides = [1, inner, length * inner, 1, count * inner]
            else:  # lanes are whole rows
                strides = [length, 1, 0, count, 0]
            return (launcher, (lane_blocks * (outer if columns else 1),),
                    [length, count if k is None else k, lane_count, lane_blocks, *strides])

        launcher, grid, ints = _cached_plan(key, build)
        args = [source, vals, idx, *ints]
        lay.launch(launcher, grid, args)
    if what in (PICK, MODE) and x.dim() and not keepdim:
        vals, idx = vals.squeeze(d), idx.squeeze(d)
    elif what == SORT and not x.is_contiguous() and values is None:
        # A sort's results keep the input's layout, as ATen's.
        vals, idx = torch.empty_like(x).copy_(vals), torch.empty_like(x, dtype=torch.int64).copy_(idx)
    return lay.deliver(vals, values), lay.deliver(idx, indices)


def _takes_radix(length: int, dtype: torch.dtype) -> bool:
    """Whether kthvalue / median of rows of ``length``, too long for the register sort, take the radix select."""
    return RADIX_SELECT and length <= RADIX_MAX_ROW and dtype.itemsize <= RADIX_MAX_ITEMSIZE


#: Per dtype: (the order bits' TOP, 8-bit passes, whether the order bits are signed).
_RADIX_DIGITS = {torch.float16: (0x7FFF, 2, True), torch.bfloat16: (0x7FFF, 2, True),
                 torch.float32: (0x7FFFFFFF, 4, True), torch.int32: (0, 4, True), torch.int16: (0, 2, True),
                 torch.int8: (0, 1, True), torch.uint8: (0, 1, False), torch.bool: (0, 1, False)}


def _radix_pick(x, d: int, which, k, keepdim: bool, values, indices):
    """kthvalue / median / nanmedian of long rows by the radix select: rows made contiguous along ``d``."""
    source = x.movedim(d, -1).contiguous()
    length = source.shape[-1]
    lanes_shape = source.shape[:-1]
    vals = torch.empty(lanes_shape, dtype=x.dtype, device=x.device)
    idx = torch.empty(lanes_shape, dtype=torch.int64, device=x.device)
    key = ("radix", length, x.dtype, which, RADIX_KEYS_PER_THREAD)

    def build():
        top, passes, signed = _RADIX_DIGITS[x.dtype]
        block_r = next_power_of_2(length)
        warps = max(4, min(16, block_r // (32 * RADIX_KEYS_PER_THREAD)))
        return Launcher(_radix_pick_kernel, dict(WHICH=which, TOP=top, PASSES=passes, SIGNED=signed,
                                                 BLOCK_R=block_r), num_warps=warps)

    launcher = _cached_plan(key, build)
    lay.launch(launcher, (vals.numel(),), [source, vals, idx, length, 1 if k is None else k])
    if keepdim:
        vals, idx = vals.unsqueeze(d), idx.unsqueeze(d)
    return lay.deliver(vals, values), lay.deliver(idx, indices)


def sort(x, dim=-1, descending=False, *, values=None, indices=None):
    """sort / sort.values: a stable sort (so the unstable overloads give ATen's stable order too)."""
    return _select(x, dim, SORT, descending=descending, values=values, indices=indices)


def sort_stable(x, *, stable=None, dim=-1, descending=False, values=None, indices=None):
    """sort.stable / sort.values_stable."""
    return sort(x, dim, descending, values=values, indices=indices)


def _two_stage_plan(shape, d: int, k: int, descending: bool) -> tuple:
    """(stage 1 launcher, its grid, stage 2 launcher, its grid, workspace columns, stage 2 ints)."""
    outer, length, inner = rows.geometry(shape, d)
    kp = max(2, next_power_of_2(k))  # tl.topk of one key reduces its block to a scalar and fails
    chunk = max(TOPK_CHUNK, kp)
    chunks = cdiv(length, chunk)
    candidates = chunks * kp
    tile = max(kp, min(TOPK_MERGE, next_power_of_2(candidates)))
    # Warps as the register sort's: 256 keys a warp.
    first = Launcher(_topk_chunks_kernel, dict(DESCENDING=descending, CHUNK=chunk, KP=kp),
                     num_warps=max(4, min(16, chunk // 256)))
    second = Launcher(_topk_rows_kernel, dict(TILE=tile, KP=kp), num_warps=max(4, min(16, tile // 256)))
    lane_count = outer * inner
    return (first, (lane_count * chunks,), [length, chunks, inner], second, (lane_count,), candidates,
            [length, k, candidates, inner])


def _two_stage_topk(x, d: int, k: int, largest: bool, values, indices):
    """topk of long rows: each chunk's best k, then each row's best k of those."""
    if (values is None) != (indices is None) or (
            values is not None and (values.dtype != x.dtype or indices.dtype != torch.int64)):
        return NotImplemented
    source = x.contiguous()
    key = ("two-stage", source.shape, d, x.dtype, k, largest, TOPK_CHUNK, TOPK_MERGE)
    plan = _cached_plan(key, lambda: _two_stage_plan(source.shape, d, k, largest))
    first, first_grid, first_ints, second, second_grid, candidates, second_ints = plan
    out_shape = list(source.shape)
    out_shape[d] = k
    vals = torch.empty(out_shape, dtype=x.dtype, device=x.device)
    idx = torch.empty(out_shape, dtype=torch.int64, device=x.device)
    workspace = torch.empty((second_grid[0], candidates), dtype=torch.int64, device=x.device)
    lay.launch(first, first_grid, [source, workspace, *first_ints])
    lay.launch(second, second_grid, [source, workspace, vals, idx, *second_ints])
    return lay.deliver(vals, values), lay.deliver(idx, indices)


def _takes_two_stages(x, length: int, k: int) -> bool:
    """Whether topk of rows of ``length`` goes to the two-stage kernels: 16-bit dtypes, rows too long for one
    sort, chunk positions within the keys' 16 bits, row positions and the last chunk's padding within int32."""
    return (TOPK_CHUNK > 0 and 1 <= k <= TOPK_MAX_K and x.dtype in _SORTABLE and x.element_size() <= 2
            and TOPK_CHUNK <= 2**16 and length <= 2**30 and length > (MAX_ROW if device.interpreter else GPU_MAX_ROW))


def topk(x, k, dim=-1, largest=True, sorted=True, *, values=None, indices=None):
    """topk / topk.values: the ``k`` largest (smallest) in order; ties keep the earlier position."""
    dims = lay.wrap_dims(dim, x.dim())
    if dims is None or not 0 <= k <= (x.shape[dims[0]] if x.dim() else 1):
        return NotImplemented
    if x.dim() and _takes_two_stages(x, x.shape[dims[0]], k):
        return _two_stage_topk(x, dims[0], k, largest, values, indices)
    return _select(x, dim, HEAD, descending=largest, k=k, values=values, indices=indices)


def kthvalue(x, k, dim=-1, keepdim=False, *, values=None, indices=None):
    """kthvalue / kthvalue.values: the k-th smallest along ``dim``."""
    dims = lay.wrap_dims(dim, x.dim())
    if dims is None or not 1 <= k <= (x.shape[dims[0]] if x.dim() else 1):
        return NotImplemented
    return _select(x, dim, PICK, KTH, k=k, keepdim=keepdim, values=values, indices=indices)


def median_dim(x, dim, keepdim=False, *, values=None, indices=None):
    """median.dim / median.dim_values: the lower median; NaN (the first one) if the row has NaN."""
    return _select(x, dim, PICK, MEDIAN, keepdim=keepdim, values=values, indices=indices)


def nanmedian_dim(x, dim, keepdim=False, *, values=None, indices=None):
    """nanmedian.dim / nanmedian.dim_values: the lower median of the non-NaN elements."""
    return _select(x, dim, PICK, NANMEDIAN, keepdim=keepdim, values=values, indices=indices)


def _median_all(which, x, out):
    result = _select(x.reshape(-1), 0, PICK, which, keepdim=False)
    return result if result is NotImplemented else lay.deliver(result[0], out)


def median(x, *, out=None):
    """median / median.out: the lower median of all elements."""
    return _median_all(MEDIAN, x, out)


def nanmedian(x, *, out=None):
    """nanmedian / nanmedian.out."""
    return _median_all(NANMEDIAN, x, out)


def mode(x, dim=-1, keepdim=False, *, values=None, indices=None):
    """mode / mode.values: the most frequent value (the smallest on a tie) and its last position."""
    if not device.interpreter:
        # On an H100 ATen's CUDA mode chose other values than ours among equally frequent ones in
        # rows of 6-9 int32 elements, where kthvalue and median agreed: ATen answers there until
        # its tie rule is pinned down.
        return NotImplemented
    return _select(x, dim, MODE, keepdim=keepdim, values=values, indices=indices)
