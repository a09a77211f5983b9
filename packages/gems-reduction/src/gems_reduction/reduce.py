"""The reduce-over-dims skeleton, and the plain reductions built on it.

Two kernels serve every reduction of this family that combines one value (and, for arg-reductions,
its position) per output:

- ``_reduce_rows_kernel``: programs own a few output positions ("rows") and walk the reduced index
  space in ``BLOCK_R`` chunks. Used when the reduced elements are the closest ones in memory
  (last-dim reductions, full reductions).
- ``_reduce_cols_kernel``: programs own a tile of output positions along the kept group with the
  smallest stride and walk the reduced dim; each load is a coalesced row segment. Used for dim-0
  style reductions, without any transposing copy.

Both may split the reduced range over several programs (``chunk``), writing partial results that a
second launch of the same skeleton combines: two passes, no atomics, deterministic.

What an op does is three compile-time codes: ``PRE`` (elementwise transform of each element), ``OP``
(how elements combine) and ``POST`` (transform of the result). Ops differ in those codes only.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from flag_gems.launch import Launcher
from flag_gems.runtime import device
from gems_reduction import layout as lay

# How elements combine.
SUM: tl.constexpr = tl.constexpr(0)
PROD: tl.constexpr = tl.constexpr(1)
MAX: tl.constexpr = tl.constexpr(2)
MIN: tl.constexpr = tl.constexpr(3)
# Elementwise transforms applied before combining (``shift`` is a per-output value).
NONE: tl.constexpr = tl.constexpr(0)
NONZERO: tl.constexpr = tl.constexpr(1)
NAN_TO_ZERO: tl.constexpr = tl.constexpr(2)
ABS: tl.constexpr = tl.constexpr(3)
SQUARE: tl.constexpr = tl.constexpr(4)
ABS_POW: tl.constexpr = tl.constexpr(5)
EXP_SHIFTED: tl.constexpr = tl.constexpr(6)
SQUARED_DEVIATION: tl.constexpr = tl.constexpr(7)
# Transforms of the combined result (``d`` is a divisor, ``p`` the norm order).
KEEP: tl.constexpr = tl.constexpr(0)
DIVIDE: tl.constexpr = tl.constexpr(1)
SQRT_DIVIDE: tl.constexpr = tl.constexpr(2)
ROOT: tl.constexpr = tl.constexpr(3)
LOG_SHIFTED: tl.constexpr = tl.constexpr(4)


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
        elif PRE == SQUARED_DEVIATION:
            y = (y - shift) * (y - shift)
    return y


@triton.jit
def _accumulate(acc, acc_i, v, idx, mask, OP: tl.constexpr, INDEX: tl.constexpr):
    """Fold a tile into per-lane accumulators (``mask``ed elements leave them unchanged).

    Arg-reductions keep the first position of the best value and let NaN beat every number (ATen's
    rules): a lane sees its positions in increasing order, so only a strictly better value moves it;
    partial results (INDEX == 2) also break ties by position, since their lanes may start empty.
    """
    if INDEX != 0:
        if OP == MAX:
            better = v > acc
        else:
            better = v < acc
        if v.dtype.is_floating():
            better = better | ((v != v) & (acc == acc))
        if INDEX == 2:
            same = (v == acc) | ((v != v) & (acc != acc))
            better = better | (same & (idx < acc_i))
        take = mask & better
        acc = tl.where(take, v, acc)
        acc_i = tl.where(take, idx, acc_i)
    elif OP == SUM:
        acc = acc + tl.where(mask, v, 0)
    elif OP == PROD:
        acc = acc * tl.where(mask, v, 1)
    elif OP == MAX:
        acc = tl.maximum(acc, tl.where(mask, v, acc), propagate_nan=tl.PropagateNan.ALL)
    else:
        acc = tl.minimum(acc, tl.where(mask, v, acc), propagate_nan=tl.PropagateNan.ALL)
    return acc, acc_i


@triton.jit
def _first_positions(lane_r, start, AXIS: tl.constexpr, INDEX: tl.constexpr, acc):
    """Initial positions of the lanes: each lane's first element (so that a lane whose elements all
    equal the initial value reports its first one), or "none yet" for partial results."""
    if INDEX == 2:
        acc_i = tl.zeros(acc.shape, tl.int64) + 2**62
    elif INDEX == 1:
        acc_i = tl.zeros(acc.shape, lane_r.dtype) + tl.expand_dims(start + lane_r, 1 - AXIS)
    else:
        acc_i = tl.zeros([1, 1], tl.int32)
    return acc_i


@triton.jit
def _mul(a, b):
    return a * b


@triton.jit
def _finish(acc, acc_i, AXIS: tl.constexpr, OP: tl.constexpr, INDEX: tl.constexpr):
    """Combine the lanes of the accumulators along ``AXIS``: (value, position or a dummy).

    Built-in reductions only (custom combines are slow in the interpreter): the extremum, NaN if any
    lane holds NaN, then the smallest position among the lanes holding it.
    """
    index = acc_i
    if OP == SUM:
        value = tl.sum(acc, AXIS)
    elif OP == PROD:
        value = tl.reduce(acc, AXIS, _mul)
    else:
        if OP == MAX:
            value = tl.max(acc, AXIS)
        else:
            value = tl.min(acc, AXIS)
        is_nan = acc != acc
        if acc.dtype.is_floating():
            any_nan = tl.max(is_nan.to(tl.int32), AXIS) > 0
            value = tl.where(any_nan, float("nan"), value)
        if INDEX:
            best = tl.expand_dims(value, AXIS)
            hit = (acc == best) | (is_nan & (best != best))
            if acc_i.dtype == tl.int32:
                index = tl.min(tl.where(hit, acc_i, 2**31 - 1), AXIS)
            else:
                index = tl.min(tl.where(hit, acc_i, 2**62), AXIS)
    return value, index


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
def _load_shift(ptrs, mask, PRE: tl.constexpr, POST: tl.constexpr, ACC: tl.constexpr):
    shift = tl.load(ptrs, mask=mask, other=0).to(ACC)
    if PRE == EXP_SHIFTED or POST == LOG_SHIFTED:
        # logsumexp shifts by the maximum, except an infinite one (ATen's rule).
        shift = tl.where(tl.abs(shift) == float("inf"), 0, shift)
    return shift


@triton.jit
def _reduce_rows_kernel(
    x_ptr, y_ptr, idx_in_ptr, shift_ptr, out_ptr, idx_out_ptr,
    K, K2, R, R2, chunk, part_stride, s_k1, s_k2, s_r1, s_r2, p, d,
    OP: tl.constexpr, PRE: tl.constexpr, POST: tl.constexpr, INDEX: tl.constexpr,
    CAST: tl.constexpr, ACC: tl.constexpr, INIT: tl.constexpr, SHIFT: tl.constexpr, DIFF: tl.constexpr,
    TWO_R: tl.constexpr, INT64: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
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
    shift = tl.zeros([BLOCK_K], ACC)
    if SHIFT:
        shift = _load_shift(shift_ptr + rows, row_mask, PRE, POST, ACC)
    lane_r = tl.arange(0, BLOCK_R)
    if INT64:
        lane_r = lane_r.to(tl.int64)
    start = split * chunk
    end = tl.minimum(start + chunk, R)
    acc = tl.full([BLOCK_K, BLOCK_R], INIT, ACC)
    acc_i = _first_positions(lane_r, start, 1, INDEX, acc)
    for r0 in range(start, end, BLOCK_R):
        r = r0 + lane_r
        mask = row_mask[:, None] & (r < end)[None, :]
        if TWO_R:
            r_off = (r // R2) * s_r1 + (r % R2) * s_r2
        else:
            r_off = r * s_r1
        offs = base[:, None] + r_off[None, :]
        x = convert(tl.load(x_ptr + offs, mask=mask, other=0), CAST)
        if DIFF:
            x = x.to(ACC) - convert(tl.load(y_ptr + offs, mask=mask, other=0), CAST).to(ACC)
        v = _transform(x, shift[:, None], p, PRE, ACC)
        if INDEX == 2:
            idx = tl.load(idx_in_ptr + offs, mask=mask, other=0)
        else:
            idx = r[None, :]
        acc, acc_i = _accumulate(acc, acc_i, v, idx, mask, OP, INDEX)
    value, index = _finish(acc, acc_i, 1, OP, INDEX)
    value = _finalize(value, shift, p, d, POST)
    out_offs = split * part_stride + rows
    tl.store(out_ptr + out_offs, convert(value, out_ptr.dtype.element_ty), mask=row_mask)
    if INDEX != 0:
        tl.store(idx_out_ptr + out_offs, index, mask=row_mask)


@triton.jit
def _reduce_cols_kernel(
    x_ptr, y_ptr, idx_in_ptr, shift_ptr, out_ptr, idx_out_ptr,
    M, N, R, chunk, part_stride, s_m, s_n, s_r, o_m, o_n, p, d,
    OP: tl.constexpr, PRE: tl.constexpr, POST: tl.constexpr, INDEX: tl.constexpr,
    CAST: tl.constexpr, ACC: tl.constexpr, INIT: tl.constexpr, SHIFT: tl.constexpr, DIFF: tl.constexpr,
    INT64: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
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
    shift = tl.zeros([BLOCK_N], ACC)
    if SHIFT:
        shift = _load_shift(shift_ptr + out_offs, n_mask, PRE, POST, ACC)
    lane_r = tl.arange(0, BLOCK_R)
    if INT64:
        lane_r = lane_r.to(tl.int64)
    start = split * chunk
    end = tl.minimum(start + chunk, R)
    acc = tl.full([BLOCK_R, BLOCK_N], INIT, ACC)
    acc_i = _first_positions(lane_r, start, 0, INDEX, acc)
    for r0 in range(start, end, BLOCK_R):
        r = r0 + lane_r
        mask = (r < end)[:, None] & n_mask[None, :]
        offs = base[None, :] + r[:, None] * s_r
        x = convert(tl.load(x_ptr + offs, mask=mask, other=0), CAST)
        if DIFF:
            x = x.to(ACC) - convert(tl.load(y_ptr + offs, mask=mask, other=0), CAST).to(ACC)
        v = _transform(x, shift[None, :], p, PRE, ACC)
        if INDEX == 2:
            idx = tl.load(idx_in_ptr + offs, mask=mask, other=0)
        else:
            idx = r[:, None]
        acc, acc_i = _accumulate(acc, acc_i, v, idx, mask, OP, INDEX)
    value, index = _finish(acc, acc_i, 0, OP, INDEX)
    value = _finalize(value, shift, p, d, POST)
    out_offs = split * part_stride + out_offs
    tl.store(out_ptr + out_offs, convert(value, out_ptr.dtype.element_ty), mask=n_mask)
    if INDEX != 0:
        tl.store(idx_out_ptr + out_offs, index, mask=n_mask)


# ---------------------------------------------------------------------------------------------------
# Launching


class Kind(NamedTuple):
    """What a reduction computes: the OP/PRE/POST codes; ``index``: 0 for values only, 1 to also
    report the position of the chosen element, 2 to carry positions loaded with partial results;
    ``diff``: the elements are differences x - y of two tensors laid out alike. Plain ints, so that
    the tuple is a cheap cache key."""

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
        """The first pass of a split reduction: transform and combine, no final transform."""
        return self._replace(post=0)

    def combine(self) -> Kind:
        """The second pass: combine partial results, then the final transform."""
        return Kind(self.op, 0, self.post, 2 if self.index else 0)


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


def _init(op: int, acc: torch.dtype):
    """The identity of ``op`` in ``acc``."""
    if op == SUM.value:
        return 0
    if op == PROD.value:
        return 1
    if acc.is_floating_point:
        return float("-inf") if op == MAX.value else float("inf")
    return -(2**63) if op == MAX.value else 2**63 - 1


def warps_for(elements: int) -> int:
    """num_warps for a tile of ``elements``: about 16 elements per thread, 4 to 16 warps."""
    return max(4, min(16, elements // 512))


def step_elements(itemsize: int, index: bool) -> int:
    """Elements each program loads per loop step: 16 KB of input keeps enough loads in flight on an
    H100; arg-reductions carry a position per element too, so they take 4K elements."""
    if device.interpreter:
        return 16384  # few, large programs
    return 4096 if index else 16384 // itemsize


def rows_tiles(rows: int, length: int, step: int) -> tuple[int, int, int]:
    """(BLOCK_K rows, BLOCK_R elements, num_warps) for the rows kernel: ``step`` elements per loop
    step; short rows are packed several per program, but never so many that fewer than ~4 programs
    per SM remain."""
    block_r = min(triton.next_power_of_2(max(length, 1)), step)
    block_k = min(triton.next_power_of_2(rows), max(1, step // block_r))
    if not device.interpreter:
        block_k = max(1, min(block_k, triton.next_power_of_2(triton.cdiv(rows, 4 * lay.sm_count()))))
    return block_k, block_r, warps_for(block_k * block_r)


def cols_tiles(cols: int, length: int, step: int, itemsize: int) -> tuple[int, int, int]:
    """(BLOCK_R, BLOCK_N, num_warps) for the cols kernel: 256-byte row segments (coalesced), ``step``
    elements per loop step."""
    block_n = min(triton.next_power_of_2(cols), 256 if device.interpreter else max(16, 256 // itemsize))
    block_r = min(triton.next_power_of_2(max(length, 1)), max(1, step // block_n))
    return block_r, block_n, warps_for(block_r * block_n)


def split_count(programs: int, length: int, block: int) -> tuple[int, int]:
    """(splits, chunk): how many programs share one reduced range, and the length each takes.

    Enough programs to fill the GPU (about 4 per SM); a split always covers whole blocks.
    """
    splits = 1
    target = 4 * lay.sm_count()
    if programs < target and length > 2 * block:
        splits = min(triton.cdiv(target, programs), triton.cdiv(length, block))
    chunk = max(triton.cdiv(triton.cdiv(length, splits), block) * block, 1)
    return max(triton.cdiv(length, chunk), 1), chunk


class _Plan:
    """A ready launch for one signature: kernel with constexprs, grid and integer arguments, the
    output shape, and the second pass when the reduced range is split."""

    __slots__ = ("launcher", "grid", "ints", "index", "kept", "acc", "copy_perm", "second", "out_shape")

    def __init__(self, launcher, grid, ints, index, kept, acc, copy_perm, second, out_shape):
        self.launcher = launcher
        self.grid = grid
        self.ints = ints
        self.index = index
        self.kept = kept
        self.acc = acc
        self.copy_perm = copy_perm
        self.second = second
        self.out_shape = out_shape


_plans: dict[tuple, _Plan] = {}
#: Plans kept at most, here and in the other modules of the family.
MAX_PLANS = 1024


def _build(shape, strides, dims, kind: Kind, in_dtype, cast, out_dtype, shifted, keepdim) -> _Plan:
    out_shape = lay.reduced_shape(shape, dims, keepdim)
    lo = lay.layout(shape, strides, dims, kind.index != 0)
    # Counting stays exact in integers whatever the input dtype.
    acc = torch.int64 if kind.pre == NONZERO.value else acc_dtype(cast)
    (k1, sk1), (k2, sk2) = lo.kept
    (r1, sr1), (r2, sr2) = lo.reduced
    kept_n, length = k1 * k2, r1 * r2
    if kept_n == 0:
        return _Plan(None, None, None, kind.index, 0, acc, None, None, out_shape)
    itemsize = torch.empty((), dtype=in_dtype).element_size()
    step = step_elements(itemsize, kind.index != 0)
    groups = list(lo.kept[: lo.num_kept])
    inner = min(range(len(groups)), key=lambda i: groups[i][1], default=None)
    if lo.num_reduced <= 1 and inner is not None and groups[inner][1] < sr1:
        # Tile the kept group nearest in memory; outputs sit at k1 * K2 + k2 (logical order).
        n, s_n = groups[inner]
        m, s_m = groups[1 - inner] if len(groups) == 2 else (1, 0)
        o_n, o_m = (1, n) if inner == len(groups) - 1 else (m, 1)
        block_r, block_n, warps = cols_tiles(n, length, step, itemsize)
        programs = m * triton.cdiv(n, block_n)
        splits, chunk = split_count(programs, length, block_r)
        kernel, tiles = _reduce_cols_kernel, dict(BLOCK_R=block_r, BLOCK_N=block_n)
        ints = [m, n, length, chunk, kept_n, s_m, s_n, sr1, o_m, o_n]
    else:
        block_k, block_r, warps = rows_tiles(kept_n, length, step)
        programs = triton.cdiv(kept_n, block_k)
        splits, chunk = split_count(programs, length, block_r)
        kernel = _reduce_rows_kernel
        tiles = dict(TWO_R=lo.num_reduced == 2, BLOCK_K=block_k, BLOCK_R=block_r)
        ints = [kept_n, k2, length, r2, chunk, kept_n, sk1, sk2, sr1, sr2]
    first = kind.partial() if splits > 1 else kind
    constexprs = dict(OP=first.op, PRE=first.pre, POST=first.post, INDEX=first.index, CAST=tl_dtype(cast),
                      ACC=tl_dtype(acc), INIT=_init(kind.op, acc), SHIFT=shifted, DIFF=first.diff,
                      INT64=lo.int64, **tiles)
    second = None
    if splits > 1:
        second = plan((splits, kept_n), (kept_n, 1), (0,), kind.combine(), acc, acc, out_dtype, shifted)
    return _Plan(Launcher(kernel, constexprs, num_warps=warps), (programs, splits), ints, kind.index, kept_n,
                 acc, lo.copy_perm, second, out_shape)


def plan(shape, strides, dims, kind: Kind, in_dtype, cast, out_dtype, shifted=False, keepdim=False) -> _Plan:
    """The cached launch plan of a reduction signature (``dims`` wrapped and sorted)."""
    key = (shape, strides, dims, kind, in_dtype, cast, out_dtype, shifted, keepdim, lay.force_int64)
    found = _plans.get(key)
    if found is None:
        if len(_plans) >= MAX_PLANS:  # shapes that keep changing: keep the cache bounded
            _plans.clear()
        found = _plans[key] = _build(shape, strides, dims, kind, in_dtype, cast, out_dtype, shifted, keepdim)
    return found


def _launch(pl: _Plan, x, y, values, indices, idx_in, shift, p, d) -> None:
    if pl.copy_perm is not None:
        x = x.permute(pl.copy_perm).contiguous()
        y = y.permute(pl.copy_perm).contiguous() if y is not None else None
    dest, dest_i = values, indices
    if pl.second is not None:
        dest = torch.empty((pl.grid[1], pl.kept), dtype=pl.acc, device=x.device)
        dest_i = torch.empty((pl.grid[1], pl.kept), dtype=torch.int64, device=x.device) if pl.index else None
    args = [x, x if y is None else y, x if idx_in is None else idx_in, x if shift is None else shift, dest,
            dest if dest_i is None else dest_i, *pl.ints, p, d]
    lay.launch(pl.launcher, pl.grid, args)
    if pl.second is not None:
        _launch(pl.second, dest, None, values, indices, dest_i, shift, p, d)


def run(x: torch.Tensor, dims: tuple, kind: Kind, out_dtype: torch.dtype, *, keepdim: bool = False,
        cast: torch.dtype | None = None, p: float = 0.0, d: float = 1.0, shift: torch.Tensor | None = None,
        y: torch.Tensor | None = None, out: torch.Tensor | None = None,
        out_index: torch.Tensor | None = None):
    """Reduce ``x`` over ``dims`` (wrapped and sorted); returns (values, positions or None).

    ``cast``: dtype the input is converted to before accumulating (ATen's ``dtype=``); ``shift``: a
    per-output tensor used by the transforms; ``y``: the subtrahend of a ``diff`` kind, with x's shape
    and strides; ``p``/``d``: norm order and divisor; ``out``/``out_index``: tensors to write (resized
    and copied into when a kernel cannot write them directly).
    """
    pl = plan(x.shape, x.stride(), dims, kind, x.dtype, cast or x.dtype, out_dtype, shift is not None, keepdim)
    values = lay.new_output(out, pl.out_shape, out_dtype, x)
    indices = lay.new_output(out_index, pl.out_shape, torch.int64, x) if kind.index else None
    if pl.launcher is not None:
        _launch(pl, x, y, values, indices, None, shift, p, d)
    if out is None and out_index is None:
        return values, indices
    return lay.deliver(values, out), (lay.deliver(indices, out_index) if kind.index else None)


# ---------------------------------------------------------------------------------------------------
# The plain reductions. Each function takes its ATen overloads' arguments (functional and ``out=``
# forms alike) and returns NotImplemented for a case it leaves to ATen.

SUM_OF = Kind.of(SUM)
NANSUM_OF = Kind.of(SUM, NAN_TO_ZERO)
MEAN_OF = Kind.of(SUM, post=DIVIDE)
PROD_OF = Kind.of(PROD)
MAX_OF = Kind.of(MAX)
MIN_OF = Kind.of(MIN)
ALL_OF = Kind.of(MIN, NONZERO)
ANY_OF = Kind.of(MAX, NONZERO)
COUNT_OF = Kind.of(SUM, NONZERO)


def reduced_count(shape, dims) -> int:
    """How many elements each output of a reduction over ``dims`` combines."""
    count = 1
    for d in dims:
        count *= shape[d]
    return count


def _promoted_integers(x, dtype, out) -> torch.dtype:
    # sum and prod: integers and bool accumulate into int64 unless dtype= (or out=) says otherwise.
    if dtype is not None:
        return dtype
    if out is not None:
        return out.dtype
    return x.dtype if x.is_floating_point() or x.is_complex() else torch.int64


def _simple(spec: Kind, x, dim, keepdim, out_dtype, out, cast=None, d=1.0):
    dims = lay.wrap_dims(dim, x.dim())
    if dims is None or x.dtype not in lay.KERNEL_DTYPES or out_dtype not in lay.KERNEL_DTYPES:
        return NotImplemented
    if cast is not None and cast not in lay.KERNEL_DTYPES:
        return NotImplemented
    return run(x, dims, spec, out_dtype, keepdim=keepdim, cast=cast, out=out, d=d)[0]


def sum_dim(x, dim, keepdim=False, *, dtype=None, out=None):
    """sum.dim_IntList / sum.IntList_out."""
    out_dtype = _promoted_integers(x, dtype, out)
    return _simple(SUM_OF, x, dim, keepdim, out_dtype, out, cast=out_dtype)


def sum_all(x, *, dtype=None, out=None):
    """sum / sum.out."""
    return sum_dim(x, None, False, dtype=dtype, out=out)


def nansum(x, dim=None, keepdim=False, *, dtype=None, out=None):
    """nansum / nansum.out."""
    out_dtype = _promoted_integers(x, dtype, out)
    return _simple(NANSUM_OF, x, dim, keepdim, out_dtype, out, cast=out_dtype)


def mean_dim(x, dim, keepdim=False, *, dtype=None, out=None):
    """mean.dim / mean.out: the sum divided by the count; integer results are ATen's error."""
    out_dtype = dtype if dtype is not None else (out.dtype if out is not None else x.dtype)
    dims = lay.wrap_dims(dim, x.dim())
    if not out_dtype.is_floating_point or dims is None:
        return NotImplemented
    return _simple(MEAN_OF, x, dims, keepdim, out_dtype, out, cast=out_dtype,
                   d=float(reduced_count(x.shape, dims)))


def mean_all(x, *, dtype=None, out=None):
    """mean / mean.dtype_out."""
    return mean_dim(x, None, False, dtype=dtype, out=out)


def prod_dim(x, dim, keepdim=False, *, dtype=None, out=None):
    """prod.dim_int / prod.int_out."""
    out_dtype = _promoted_integers(x, dtype, out)
    return _simple(PROD_OF, x, dim, keepdim, out_dtype, out, cast=out_dtype)


def prod_all(x, *, dtype=None, out=None):
    """prod / prod.out."""
    out_dtype = _promoted_integers(x, dtype, out)
    return _simple(PROD_OF, x, None, False, out_dtype, out, cast=out_dtype)


def _extremum(spec, x, dim, keepdim, out):
    dims = lay.wrap_dims(dim, x.dim())
    if dims is None or (out is not None and out.dtype != x.dtype):
        return NotImplemented
    if x.numel() == 0 and any(x.shape[d] == 0 for d in dims):
        return NotImplemented  # ATen's "Expected reduction dim to have non-zero size"
    return _simple(spec, x, dims, keepdim, x.dtype, out)


def amax(x, dim=(), keepdim=False, *, out=None):
    """amax / amax.out (NaN propagates)."""
    return _extremum(MAX_OF, x, dim, keepdim, out)


def amin(x, dim=(), keepdim=False, *, out=None):
    """amin / amin.out (NaN propagates)."""
    return _extremum(MIN_OF, x, dim, keepdim, out)


def max_all(x, *, out=None):
    """max / max.unary_out: the largest element (NaN if any)."""
    if x.numel() == 0:
        return NotImplemented
    return _extremum(MAX_OF, x, None, False, out)


def min_all(x, *, out=None):
    """min / min.unary_out: the smallest element (NaN if any)."""
    if x.numel() == 0:
        return NotImplemented
    return _extremum(MIN_OF, x, None, False, out)


def aminmax(x, *, dim=None, keepdim=False, min=None, max=None):
    """aminmax / aminmax.out: (amin, amax) over ``dim`` or over everything."""
    if (min is None) != (max is None) or x.numel() == 0:
        return NotImplemented
    dims = [dim] if dim is not None else None
    low = _extremum(MIN_OF, x, dims, keepdim, min)
    if low is NotImplemented:
        return NotImplemented
    return low, _extremum(MAX_OF, x, dims, keepdim, max)


def _logical(spec, x, dim, keepdim, out):
    out_dtype = torch.uint8 if x.dtype == torch.uint8 else torch.bool
    if out is not None and out.dtype != out_dtype:
        return NotImplemented
    return _simple(spec, x, dim, keepdim, out_dtype, out)


def all_dims(x, dim=None, keepdim=False, *, out=None):
    """all / all.dim / all.dims and their out forms (uint8 in, uint8 out, as ATen)."""
    return _logical(ALL_OF, x, dim, keepdim, out)


def any_dims(x, dim=None, keepdim=False, *, out=None):
    """any / any.dim / any.dims and their out forms."""
    return _logical(ANY_OF, x, dim, keepdim, out)


def count_nonzero(x, dim=None, *, out=None):
    """count_nonzero (int or list of dims) and its out forms."""
    if out is not None and out.dtype != torch.int64:
        return NotImplemented
    return _simple(COUNT_OF, x, dim, False, torch.int64, out)
