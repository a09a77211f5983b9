"""The row skeleton: a tensor seen as (outer, R, inner), reduced or scanned along R.

Shared by the softmax family and the scans. A program owns a few *lanes*: outer rows when inner == 1
(the tile is [lanes, R], ``AXIS`` = 1), else a run of inner positions of one outer index, so that
every load is a coalesced row segment (the tile is [R, lanes], ``AXIS`` = 0). Inputs are contiguous.
"""

from __future__ import annotations

from collections.abc import Callable

import triton
import triton.language as tl

from flag_gems.intmath import cdiv, next_power_of_2
from flag_gems.launch import shared_launcher
from gems_reduction import layout as lay


@triton.jit
def tile(lane_vec, r_vec, AXIS: tl.constexpr):
    """A lane vector and an R vector broadcast into the program's tile (R along ``AXIS``)."""
    return tl.expand_dims(lane_vec, AXIS) + tl.expand_dims(r_vec, 1 - AXIS)


@triton.jit
def tile_mask(lane_mask, r_mask, AXIS: tl.constexpr):
    """Lane and R masks combined over the tile."""
    return tl.expand_dims(lane_mask, AXIS) & tl.expand_dims(r_mask, 1 - AXIS)


@triton.jit
def lanes(pid, L, lane_blocks, lane_stride, outer_stride, INT64: tl.constexpr, BLOCK_L: tl.constexpr):
    """(element offsets, mask) of the lanes program ``pid`` owns."""
    outer = pid // lane_blocks
    lane = (pid % lane_blocks) * BLOCK_L + tl.arange(0, BLOCK_L)
    if INT64:
        outer = outer.to(tl.int64)
        lane = lane.to(tl.int64)
    return outer * outer_stride + lane * lane_stride, lane < L


@triton.jit
def r_range(INT64: tl.constexpr, BLOCK_R: tl.constexpr):
    """Positions 0..BLOCK_R-1 along R: a step's offsets, in int64 where element offsets may pass int32."""
    r = tl.arange(0, BLOCK_R)
    if INT64:
        r = r.to(tl.int64)
    return r


@triton.jit
def tile_at(lane_off, lane_mask, r, R, r_stride, AXIS: tl.constexpr):
    """(element offsets, mask) of the program's tile at positions ``r`` along R."""
    return tile(lane_off, r * r_stride, AXIS), tile_mask(lane_mask, r < R, AXIS)


@triton.jit
def safe_shift(m):
    """A max to subtract before exp: 0 where it is -inf (lanes of -inf only give 0, not NaN)."""
    return tl.where(m == float("-inf"), 0.0, m)


@triton.jit
def online_update(m, s, x, AXIS: tl.constexpr):
    """Running (max, sum of exp(x - max)) per lane, updated with a block ``x``: one exp per element."""
    m_new = tl.maximum(m, tl.max(x, AXIS))
    shift = safe_shift(m_new)
    s = s * tl.exp(m - shift) + tl.sum(tl.exp(x - tl.expand_dims(shift, AXIS)), AXIS)
    return m_new, s


def geometry(shape, dim: int) -> tuple[int, int, int]:
    """(outer, R, inner) of a contiguous ``shape`` along ``dim`` (a 0-d tensor is one element)."""
    outer = 1
    for s in shape[:dim]:
        outer *= s
    inner = 1
    for s in shape[dim + 1:]:
        inner *= s
    return outer, (shape[dim] if shape else 1), inner


def lane_width(lanes: int, outer: int) -> int:
    """Lanes per program along an inner dim: 16-128 (coalesced segments), leaving ~4 programs per SM."""
    wanted = next_power_of_2(cdiv(lanes * outer, 4 * lay.sm_count()))
    return min(next_power_of_2(lanes), 128, max(16, wanted))


def plan(kernel, key: tuple, shape, dim: int, itemsize: int, tiles: Callable, **constexprs) -> lay.Launch:
    """The launch of ``kernel`` over contiguous tensors of ``shape`` along ``dim`` (its tensors to come).

    ``tiles(lanes, R, outer, columns, itemsize)`` gives (BLOCK_L, BLOCK_R, extra constexprs, num_warps);
    the launch is kept with the family's ready calls (``lay.calls``) under ``key``, which must name
    everything the constexprs and the dtypes of the launch's tensors depend on.
    """
    found = lay.calls.get(key)
    if found is None:
        outer, length, inner = geometry(shape, dim)
        columns = inner > 1
        lane_count = inner if columns else outer
        block_l, block_r, extra, warps = tiles(lane_count, length, outer, columns, itemsize)
        lane_blocks = cdiv(lane_count, block_l)
        int64 = lay.force_int64 or outer * length * inner > lay.INT32_MAX
        launcher = shared_launcher(kernel, dict(constexprs, **extra, AXIS=0 if columns else 1, INT64=int64,
                                                BLOCK_L=block_l, BLOCK_R=block_r), num_warps=warps)
        ints = [length, lane_count, lane_blocks, 1 if columns else length, inner, length * inner]
        found = lay.remember(key, lay.Launch(launcher, (lane_blocks * (outer if columns else 1),), ints))
    return found


def launch(kernel, key: tuple, tensors, shape, dim: int, tiles: Callable, **constexprs) -> None:
    """Run ``kernel`` over contiguous ``tensors`` of ``shape`` along ``dim`` (see ``plan``)."""
    ptr = 0
    for t in tensors:
        ptr |= t.data_ptr()
    plan(kernel, key, shape, dim, tensors[0].element_size(), tiles, **constexprs)(list(tensors), ptr)
