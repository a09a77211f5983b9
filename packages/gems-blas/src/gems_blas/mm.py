"""Tiled matrix products: the kernels behind mm, addmm, bmm, baddbmm and addbmm, and their launcher.

Both kernels compute out[b] = alpha * a[b] @ b[b] + beta * bias[b] one output tile at a time, with fp32
accumulation (fp16/bf16 on the tensor cores; fp32 as full fp32, or tf32 when torch allows it):
- ``mm_tma_kernel`` (Hopper): persistent programs walk the tiles in grouped order and load operand tiles
  through tensor descriptors (the tensor memory accelerator), so address arithmetic leaves the main loop;
  with the ``fuse_tiles`` option one software pipeline runs across a program's tiles, with
  ``split_epilogue`` each tile's epilogue runs on its two halves in turn, and ``tile_bias`` or
  ``prefetch_bias`` load a bias vector once per tile (at its end or at its start) instead of once per half.
- ``mm_tiled_kernel`` (the interpreter, older GPUs, operands a descriptor cannot address): one program per
  tile, pointer arithmetic over any strides.
Either may split K over programs (few output tiles, long K): each slice then writes an fp32 partial
product and the finish kernel of ``epilogue`` sums the slices in a fixed order, so results are deterministic.
Products with one row or one column go to the matrix-vector kernel, which streams the matrix once.
All of that is decided once per call key: a later call with the same key finds a ``ProductCall`` with its
launches' grids, integer arguments and compiled specialisations fixed, and only allocates and launches.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import torch
import triton
import triton.language as tl

from flag_gems import aten_kernel, native
from flag_gems.intmath import cdiv
from flag_gems.launch import Launcher
from flag_gems.runtime import device
from gems_blas import autotune, epilogue, heuristics, mv, split_fp32, workspace
from gems_blas.operands import FLOATS, PlannedLaunch, ProductCall, allow_tf32, finish_out, prepare_out, remember

_NO_SPECIALIZE = ["B", "K_TILES", "SPLITS", "alpha", "beta", "NUM_PROGRAMS"]
# Descriptors take operand shapes and strides at run time: specialising on them (only N matters, for the
# stores) would just multiply compilations, and with them the first calls of new shapes.
_NO_SPECIALIZE_TMA = _NO_SPECIALIZE + ["M", "K", "stride_ab", "stride_am", "stride_ak", "stride_bb", "stride_bk",
                                       "stride_bn"]


@triton.jit
def _tile_coords(tile, tiles_m, tiles_n, GROUP_M: tl.constexpr):
    # Grouped order: GROUP_M consecutive row tiles share each column tile of B while it is in L2.
    per_group = GROUP_M * tiles_n
    first_m = (tile // per_group) * GROUP_M
    rows = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (tile % per_group) % rows
    pid_n = (tile % per_group) // rows
    return pid_m, pid_n


@triton.jit
def _bias_tile(d_ptr, offs_m, offs_n, M, N, stride_dm, stride_dn, BIAS: tl.constexpr):
    # A bias broadcast along one side (addmm's vector, nn.Linear's bias) is loaded once per column or row:
    # a whole tile of pointers into the same few values costs registers and instructions in every epilogue.
    if BIAS == "per_column":
        bias = tl.load(d_ptr + offs_n.to(tl.int64) * stride_dn, mask=offs_n < N, other=0.0)[None, :]
    elif BIAS == "per_row":
        bias = tl.load(d_ptr + offs_m.to(tl.int64) * stride_dm, mask=offs_m < M, other=0.0)[:, None]
    elif BIAS == "scalar":
        bias = tl.load(d_ptr)
    else:
        mask = (offs_m < M)[:, None] & (offs_n < N)[None, :]
        bias_ptrs = d_ptr + offs_m.to(tl.int64)[:, None] * stride_dm + offs_n.to(tl.int64)[None, :] * stride_dn
        bias = tl.load(bias_ptrs, mask=mask, other=0.0)
    return bias.to(tl.float32)


@triton.jit
def _bias_vector(d_ptr, off_m, off_n, M, N, stride_dm, stride_dn, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 BIAS: tl.constexpr):
    # The values of a bias broadcast along one side for the tile at (off_m, off_n), as one vector along the
    # other side in the bias's dtype: loaded once per tile, and small enough to keep through its K loop.
    if BIAS == "per_column":
        offs = off_n + tl.arange(0, BLOCK_N)
        bias = tl.load(d_ptr + offs.to(tl.int64) * stride_dn, mask=offs < N, other=0.0)
    else:
        offs = off_m + tl.arange(0, BLOCK_M)
        bias = tl.load(d_ptr + offs.to(tl.int64) * stride_dm, mask=offs < M, other=0.0)
    return bias


@triton.jit
def _with_bias_vector(acc, bias, alpha, beta, BIAS: tl.constexpr):
    # alpha * acc + beta * bias, the vector from ``_bias_vector`` broadcast over the tile.
    scaled = beta * bias.to(tl.float32)
    if BIAS == "per_column":
        acc = acc * alpha + scaled[None, :]
    else:
        acc = acc * alpha + scaled[:, None]
    return acc


@triton.jit
def _finished(acc, d_ptr, offs_m, offs_n, M, N, stride_dm, stride_dn, alpha, beta,
              SCALE: tl.constexpr, BIAS: tl.constexpr):
    # SCALE: the tile is a final result (alpha, bias); otherwise the fp32 partial of a K slice.
    if SCALE:
        acc = acc * alpha
        if BIAS != "none":
            acc += beta * _bias_tile(d_ptr, offs_m, offs_n, M, N, stride_dm, stride_dn, BIAS)
    return acc


@triton.jit
def _store_tile(values, c_ptr, offs_m, offs_n, M, N, stride_cm, stride_cn):
    mask = (offs_m < M)[:, None] & (offs_n < N)[None, :]
    c_ptrs = c_ptr + offs_m.to(tl.int64)[:, None] * stride_cm + offs_n.to(tl.int64)[None, :] * stride_cn
    tl.store(c_ptrs, values.to(c_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=_NO_SPECIALIZE)
def mm_tiled_kernel(a_ptr, b_ptr, c_ptr, d_ptr, B, M, N, K, K_TILES, SPLITS,
                    stride_ab, stride_am, stride_ak, stride_bb, stride_bk, stride_bn,
                    stride_cb, stride_cm, stride_cn, stride_db, stride_dm, stride_dn,
                    alpha, beta, NUM_PROGRAMS,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                    EVEN_K: tl.constexpr, SCALE: tl.constexpr, BIAS: tl.constexpr,
                    PRECISION: tl.constexpr, UPCAST: tl.constexpr, REPAIR: tl.constexpr):
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    tiles = tiles_m * tiles_n
    pid = tl.program_id(0)
    split = tl.program_id(1)
    mat = pid // tiles
    pid_m, pid_n = _tile_coords(pid % tiles, tiles_m, tiles_n, GROUP_M)
    # A split product has B == 1: its partials go to slice `split` of the workspace.
    mat_c = mat + split
    mat = mat.to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    # Rows and columns past the edge wrap around: loads stay in bounds and those results are never stored.
    rows = (offs_m % M).to(tl.int64)
    cols = (offs_n % N).to(tl.int64)
    # Slices are whole K tiles (K_TILES each), so each starts at a multiple of BLOCK_K.
    k_lo = split * K_TILES * BLOCK_K
    k_hi = tl.minimum(K, k_lo + K_TILES * BLOCK_K)
    rows_out = M
    if REPAIR:
        # After a split fp32 product (split_fp32.py): only its output tiles holding a NaN are computed again;
        # the others skip the K loop and store nothing.
        done = tl.load(c_ptr + mat_c.to(tl.int64) * stride_cb + offs_m.to(tl.int64)[:, None] * stride_cm
                       + offs_n.to(tl.int64)[None, :] * stride_cn,
                       mask=(offs_m < M)[:, None] & (offs_n < N)[None, :], other=0.0)
        again = tl.sum((done != done).to(tl.int32)) > 0
        k_hi = tl.where(again, k_hi, k_lo)
        rows_out = tl.where(again, M, 0)
    offs_k = k_lo + tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + mat * stride_ab + rows[:, None] * stride_am + offs_k.to(tl.int64)[None, :] * stride_ak
    b_ptrs = b_ptr + mat * stride_bb + offs_k.to(tl.int64)[:, None] * stride_bk + cols[None, :] * stride_bn
    step_a = tl.cast(stride_ak, tl.int64) * BLOCK_K
    step_b = tl.cast(stride_bk, tl.int64) * BLOCK_K
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k in range(k_lo, k_hi, BLOCK_K):
        if EVEN_K:
            a = tl.load(a_ptrs)
            b = tl.load(b_ptrs)
        else:
            in_k = (k + tl.arange(0, BLOCK_K)) < k_hi
            a = tl.load(a_ptrs, mask=in_k[None, :], other=0.0)
            b = tl.load(b_ptrs, mask=in_k[:, None], other=0.0)
        if UPCAST:
            # The interpreter computes 16-bit dots on raw bits: give it fp32 operands.
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        a_ptrs += step_a
        b_ptrs += step_b
    acc = _finished(acc, d_ptr + mat * stride_db, offs_m, offs_n, M, N, stride_dm, stride_dn, alpha, beta,
                    SCALE, BIAS)
    _store_tile(acc, c_ptr + mat_c.to(tl.int64) * stride_cb, offs_m, offs_n, rows_out, N, stride_cm, stride_cn)


@triton.jit
def _load_operand(desc, mat, r0, c0, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
                  ROW_MAJOR: tl.constexpr, BATCHED: tl.constexpr):
    # A (rows x cols) operand tile; a column-major operand is read as the transposed tile it is stored as.
    if ROW_MAJOR:
        if BATCHED:
            tile = desc.load([mat, r0, c0]).reshape(BLOCK_R, BLOCK_C)
        else:
            tile = desc.load([r0, c0])
    else:
        if BATCHED:
            tile = desc.load([mat, c0, r0]).reshape(BLOCK_C, BLOCK_R).T
        else:
            tile = desc.load([c0, r0]).T
    return tile


@triton.jit
def _write_tile(acc, c_out, c_ptr, d_ptr, mat, off_m, off_n, M, N, stride_cb, stride_cm, stride_cn,
                stride_dm, stride_dn, alpha, beta, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                C_DESC: tl.constexpr, C_3D: tl.constexpr, SCALE: tl.constexpr, BIAS: tl.constexpr):
    # The epilogue of the descriptor kernel for the (BLOCK_M x BLOCK_N) block at (off_m, off_n) of matrix
    # ``mat``: ``c_out`` is the output's descriptor (C_DESC) or ``c_ptr`` itself.
    offs_m = off_m + tl.arange(0, BLOCK_M)
    offs_n = off_n + tl.arange(0, BLOCK_N)
    acc = _finished(acc, d_ptr, offs_m, offs_n, M, N, stride_dm, stride_dn, alpha, beta, SCALE, BIAS)
    if C_DESC:
        values = acc.to(c_ptr.dtype.element_ty)
        if C_3D:
            c_out.store([mat, off_m, off_n], values.reshape(1, BLOCK_M, BLOCK_N))
        else:
            c_out.store([off_m, off_n], values)
    else:
        _store_tile(acc, c_ptr + mat.to(tl.int64) * stride_cb, offs_m, offs_n, M, N, stride_cm, stride_cn)


@triton.jit(do_not_specialize=_NO_SPECIALIZE_TMA)
def mm_tma_kernel(a_ptr, b_ptr, c_ptr, d_ptr, B, M, N, K, K_TILES, SPLITS,
                  stride_ab, stride_am, stride_ak, stride_bb, stride_bk, stride_bn,
                  stride_cb, stride_cm, stride_cn, stride_db, stride_dm, stride_dn,
                  alpha, beta, NUM_PROGRAMS,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                  A_ROW_MAJOR: tl.constexpr, B_ROW_MAJOR: tl.constexpr, BATCHED: tl.constexpr,
                  C_DESC: tl.constexpr, SCALE: tl.constexpr, BIAS: tl.constexpr, PRECISION: tl.constexpr,
                  UPCAST: tl.constexpr, FLATTEN: tl.constexpr, WARP_SPECIALIZE: tl.constexpr,
                  EPILOGUE_N: tl.constexpr, BIAS_AT: tl.constexpr, PROMOTE: tl.constexpr):
    # Descriptors see each operand in its storage order; the tile loads transpose column-major ones back.
    if BATCHED:
        if A_ROW_MAJOR:
            a_desc = tl.make_tensor_descriptor(a_ptr, [B, M, K], [stride_ab, stride_am, 1], [1, BLOCK_M, BLOCK_K])
        else:
            a_desc = tl.make_tensor_descriptor(a_ptr, [B, K, M], [stride_ab, stride_ak, 1], [1, BLOCK_K, BLOCK_M])
        if B_ROW_MAJOR:
            b_desc = tl.make_tensor_descriptor(b_ptr, [B, K, N], [stride_bb, stride_bk, 1], [1, BLOCK_K, BLOCK_N])
        else:
            b_desc = tl.make_tensor_descriptor(b_ptr, [B, N, K], [stride_bb, stride_bn, 1], [1, BLOCK_N, BLOCK_K])
    else:
        if A_ROW_MAJOR:
            a_desc = tl.make_tensor_descriptor(a_ptr, [M, K], [stride_am, 1], [BLOCK_M, BLOCK_K])
        else:
            a_desc = tl.make_tensor_descriptor(a_ptr, [K, M], [stride_ak, 1], [BLOCK_K, BLOCK_M])
        if B_ROW_MAJOR:
            b_desc = tl.make_tensor_descriptor(b_ptr, [K, N], [stride_bk, 1], [BLOCK_K, BLOCK_N])
        else:
            b_desc = tl.make_tensor_descriptor(b_ptr, [N, K], [stride_bn, 1], [BLOCK_N, BLOCK_K])
    # Output tiles (or fp32 partials: one matrix per K slice) also go out through a descriptor when rows
    # are contiguous and 16-byte aligned; the hardware clips the edges.
    # The epilogue handles EPILOGUE_N columns at a time: the whole tile, or each half of it in turn.
    C_3D: tl.constexpr = BATCHED or not SCALE
    if C_DESC:
        if C_3D:
            c_out = tl.make_tensor_descriptor(c_ptr, [B * SPLITS, M, N], [stride_cb, stride_cm, 1],
                                              [1, BLOCK_M, EPILOGUE_N])
        else:
            c_out = tl.make_tensor_descriptor(c_ptr, [M, N], [stride_cm, 1], [BLOCK_M, EPILOGUE_N])
    else:
        c_out = c_ptr
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    tiles = tiles_m * tiles_n
    total = tiles * B * SPLITS
    # Triton fuses the tile loop with the K loop (FLATTEN) only where the K loop's bounds are fixed outside
    # it, as they are when K is not split; one pipeline then loads the next tile while this one's epilogue runs.
    k_whole = tl.cdiv(K, BLOCK_K)
    # A fused loop's epilogue finds its tile again from a counter of its own: values carried over from the
    # loads' side would stay live in registers across the pipeline (128x256 tiles with a bias then spill).
    tile_out = tl.program_id(0) - NUM_PROGRAMS
    # Where a bias vector (one value per column or per row) is read: BIAS_AT "part" in each part the
    # epilogue stores (a split epilogue loads its second half's after storing the first); "tile" once per
    # tile, added before the parts are stored; "start" at the tile's start, so that the load's latency
    # hides under the tile's products (the vector is then carried through the K loop).
    VECTOR_BIAS: tl.constexpr = SCALE and (BIAS == "per_column" or BIAS == "per_row")
    BIAS_FIRST: tl.constexpr = VECTOR_BIAS and BIAS_AT != "part"
    BIAS_EARLY: tl.constexpr = VECTOR_BIAS and BIAS_AT == "start"
    for tile in tl.range(tl.program_id(0), total, NUM_PROGRAMS, flatten=FLATTEN, warp_specialize=WARP_SPECIALIZE):
        # `mat` counts matrices (B > 1) or K slices (SPLITS > 1), never both.
        mat = tile // tiles
        pid_m, pid_n = _tile_coords(tile % tiles, tiles_m, tiles_n, GROUP_M)
        batch = mat // SPLITS
        if FLATTEN and SCALE:
            k_lo = 0
            k_tiles = k_whole
        else:
            k_lo = (mat % SPLITS) * K_TILES * BLOCK_K
            k_tiles = tl.cdiv(tl.minimum(K - k_lo, K_TILES * BLOCK_K), BLOCK_K)
        off_m = pid_m * BLOCK_M
        off_n = pid_n * BLOCK_N
        if BIAS_EARLY:
            bias = _bias_vector(d_ptr + batch.to(tl.int64) * stride_db, off_m, off_n, M, N, stride_dm, stride_dn,
                                BLOCK_M, BLOCK_N, BIAS)
        acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
        part = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
        for kt in range(k_tiles):
            k = k_lo + kt * BLOCK_K
            a = _load_operand(a_desc, batch, off_m, k, BLOCK_M, BLOCK_K, A_ROW_MAJOR, BATCHED)
            b = _load_operand(b_desc, batch, k, off_n, BLOCK_K, BLOCK_N, B_ROW_MAJOR, BATCHED)
            if UPCAST:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            if PROMOTE > 0:
                # The tensor cores accumulate PROMOTE K steps, whose sum is then added to acc in IEEE fp32:
                # their own accumulation over all of K is less exact (split_fp32.py).
                part = tl.dot(a, b, part, input_precision=PRECISION)
                if kt % PROMOTE == PROMOTE - 1:
                    acc += part
                    part = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
            else:
                acc = tl.dot(a, b, acc, input_precision=PRECISION)
        if PROMOTE > 0:
            acc += part
        if FLATTEN:
            tile_out += NUM_PROGRAMS
            mat = tile_out // tiles
            pid_m, pid_n = _tile_coords(tile_out % tiles, tiles_m, tiles_n, GROUP_M)
            batch = mat // SPLITS
            off_m = pid_m * BLOCK_M
            off_n = pid_n * BLOCK_N
        d_mat = d_ptr + batch.to(tl.int64) * stride_db
        # The parts' epilogues scale and add the bias themselves unless the whole tile already has it.
        PART_SCALE: tl.constexpr = SCALE and not BIAS_FIRST
        if BIAS_FIRST:
            if not BIAS_EARLY:
                bias = _bias_vector(d_mat, off_m, off_n, M, N, stride_dm, stride_dn, BLOCK_M, BLOCK_N, BIAS)
            acc = _with_bias_vector(acc, bias, alpha, beta, BIAS)
        if EPILOGUE_N < BLOCK_N:
            left, right = acc.reshape(BLOCK_M, 2, EPILOGUE_N).permute(0, 2, 1).split()
            _write_tile(left, c_out, c_ptr, d_mat, mat, off_m, off_n, M, N, stride_cb, stride_cm, stride_cn,
                        stride_dm, stride_dn, alpha, beta, BLOCK_M, EPILOGUE_N, C_DESC, C_3D, PART_SCALE, BIAS)
            _write_tile(right, c_out, c_ptr, d_mat, mat, off_m, off_n + EPILOGUE_N, M, N, stride_cb, stride_cm,
                        stride_cn, stride_dm, stride_dn, alpha, beta, BLOCK_M, EPILOGUE_N, C_DESC, C_3D, PART_SCALE,
                        BIAS)
        else:
            _write_tile(acc, c_out, c_ptr, d_mat, mat, off_m, off_n, M, N, stride_cb, stride_cm, stride_cn,
                        stride_dm, stride_dn, alpha, beta, BLOCK_M, BLOCK_N, C_DESC, C_3D, PART_SCALE, BIAS)


# -- launcher ---------------------------------------------------------------------------------------------
_launchers: dict[tuple, Launcher] = {}
_plans: dict[tuple, _Plan] = {}
# Calls of ``matmul`` by their key (see ``product_call``), and of the ATen ops by theirs (see "ATen ops").
_calls: dict[tuple, ProductCall] = {}
op_calls: dict[tuple, tuple] = {}
# Tests on the interpreter force the Hopper kernel ("tma") or the pointer kernel ("tiled").
_forced_kernel: str | None = None


class _Plan:
    """What one (shape, dtype, layout) decides once: kernel ("tma" or "tiled"), launch grid and K slicing."""

    __slots__ = ("kind", "launcher", "grid", "splits", "k_tiles", "num_programs")

    def __init__(self, kind, launcher, grid, splits, k_tiles, num_programs):
        self.kind = kind
        self.launcher = launcher
        self.grid = grid
        self.splits = splits
        self.k_tiles = k_tiles
        self.num_programs = num_programs


def _launcher(kernel, constexprs: dict, config: heuristics.MatmulConfig) -> Launcher:
    key = (kernel, tuple(constexprs.items()), config.num_warps, config.num_stages)
    launcher = _launchers.get(key)
    if launcher is None:
        launcher = _launchers[key] = Launcher(kernel, constexprs, num_warps=config.num_warps,
                                              num_stages=config.num_stages)
    return launcher


def _uses_tma(dev: int) -> bool:
    if _forced_kernel is not None:
        return _forced_kernel == "tma"
    return not device.interpreter and heuristics.device_facts(dev).hopper


def _tma_ready(t: torch.Tensor, batch: int, s_batch: int, s_outer: int, elem: int) -> bool:
    # A descriptor needs a 16-byte aligned base and 16-byte multiples for every stride but the unit one.
    return (t.data_ptr() % 16 == 0 and (s_outer * elem) % 16 == 0
            and (batch == 1 or (s_batch != 0 and (s_batch * elem) % 16 == 0)))


def _aligned_strides(elem: int, rows: int, cols: int) -> tuple:
    """(batch, row, column) strides of a row-major (rows x cols) copy whose rows start 16-byte aligned."""
    align = 16 // elem
    ld = cdiv(cols, align) * align
    return rows * ld, ld, 1


def _aligned_copy(t: torch.Tensor, batch: int, rows: int, cols: int, strides: tuple) -> tuple:
    """A row-major copy of a (batch x rows x cols) operand with 16-byte aligned rows, and its strides.
    ATen's copy kernel makes it, called directly: through the dispatcher, a served ``copy_`` would add its
    host time to every product (the 1000x3000x777 product's kernels take about 24 us on an H100)."""
    copy_strides = _aligned_strides(t.element_size(), rows, cols)
    buf = t.new_empty((batch, rows, copy_strides[1]))[:, :, :cols]
    _ATEN_COPY.call_quietly(buf, torch.as_strided(t, (batch, rows, cols), strides))
    return buf, copy_strides


_ATEN_COPY = aten_kernel("copy_")


class OperandCopy:
    """The copy of one operand that a product makes at each call: ``_aligned_copy`` (row-major with aligned
    rows) of a (batch x rows x cols) operand with ``strides``."""

    __slots__ = ("args",)

    def __init__(self, batch: int, rows: int, cols: int, strides: tuple):
        self.args = (batch, rows, cols, strides)

    def strides(self, elem: int) -> tuple:
        """The copy's (batch, row, column) strides."""
        _, rows, cols, _ = self.args
        return _aligned_strides(elem, rows, cols)

    def stand_in(self, t: torch.Tensor) -> torch.Tensor:
        """An empty tensor standing for the copy where a launch is specialised (fresh memory is aligned)."""
        return t.new_empty(0)

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        return _aligned_copy(t, *self.args)[0]


@dataclasses.dataclass(frozen=True)
class OperandLayout:
    """The kernel a product runs on and how it takes its operands: as given, or copied at each call (the
    copies' strides and orders are the ones listed). A split fp32 product (``split_fp32``) reads bf16
    pieces, ``terms`` of them along K for each element of an operand."""

    kind: str
    copy_a: OperandCopy | split_fp32.SplitOperand | None
    copy_b: OperandCopy | split_fp32.SplitOperand | None
    sa: tuple
    sb: tuple
    a_row_major: bool
    b_row_major: bool
    terms: int = 0

    def operands(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The operands the kernel reads: ``a`` and ``b``, or their copies."""
        return (a if self.copy_a is None else self.copy_a(a)), (b if self.copy_b is None else self.copy_b(b))


# Below this many multiply-adds, copying a misaligned operand costs more than the descriptors save.
_ALIGN_COPY_MIN_WORK = 1 << 24


def operand_layout(dev: int, a: torch.Tensor, b: torch.Tensor, batch: int, m: int, n: int, k: int, sa: tuple,
                   sb: tuple) -> OperandLayout:
    """How a product takes its operands: on which kernel, and which operands it copies (with aligned rows)
    where that lets a large product use the Hopper kernel at full speed."""
    a_row_major = sa[2] == 1 or k == 1
    b_row_major = sb[2] == 1 or n == 1
    if not _uses_tma(dev):
        return OperandLayout("tiled", None, None, sa, sb, a_row_major, b_row_major)
    elem = a.element_size()
    large = batch * m * n * k >= _ALIGN_COPY_MIN_WORK
    a_ready = _tma_ready(a, batch, sa[0], sa[1] if a_row_major else sa[2], elem)
    b_ready = _tma_ready(b, batch, sb[0], sb[1] if b_row_major else sb[2], elem)
    copy_a = copy_b = None
    # A broadcast batch (stride 0) is not copied: that would materialise every repetition.
    if not (a_ready and b_ready) and large:
        if not a_ready and (batch == 1 or sa[0] != 0):
            copy_a = OperandCopy(batch, m, k, sa)
            sa, a_row_major, a_ready = copy_a.strides(elem), True, True
        if not b_ready and (batch == 1 or sb[0] != 0):
            copy_b = OperandCopy(batch, k, n, sb)
            sb, b_row_major, b_ready = copy_b.strides(elem), True, True
    kind = "tma" if a_ready and b_ready else "tiled"
    return OperandLayout(kind, copy_a, copy_b, sa, sb, a_row_major, b_row_major)


def split_layout(dev: int, batch: int, m: int, n: int, k: int, sa: tuple, sb: tuple) -> OperandLayout:
    """The layout of a split fp32 product: both operands' bf16 pieces, each in its operand's order."""
    split_a, split_b = split_fp32.split_operands(batch, m, n, k, sa, sb)
    s_batch, s_n, s_k = split_b.strides
    return OperandLayout("tma" if _uses_tma(dev) else "tiled", split_a, split_b, split_a.strides,
                         (s_batch, s_k, s_n), split_a.k_contiguous, not split_b.k_contiguous, split_fp32.terms())


def tf32_to_aten(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether a float32 product of ``a`` and ``b`` (2-D or batched) goes to ATen: with tf32 allowed on
    Hopper, whose tf32 tensor-core instructions take both operands K-major only (Triton runs any other layout
    on the older instructions: 0.31x cuBLAS at 4096^3), a large product with an operand in the other order.
    Copying it K-major first and running our kernel took 498 us for 4096^3 against cuBLAS's 346 on an H100
    (benchmark/results/2026-11-27-h100-5), our kernel alone 376: ATen computes those."""
    if not allow_tf32() or a.dtype is not torch.float32:
        return False
    m, k = a.shape[-2], a.shape[-1]
    n = b.shape[-1]
    batch = a.shape[0] if a.dim() == 3 else 1
    if batch * m * n * k < _ALIGN_COPY_MIN_WORK or not _uses_tma(a.get_device()):
        return False
    sa, sb = a.stride(), b.stride()
    # K-major: A's rows and B's columns contiguous; an operand with no unit stride is made row-major.
    a_k_major = k == 1 or sa[-1] == 1 or sa[-2] != 1
    b_k_major = n == 1 or (sb[-2] == 1 and sb[-1] != 1)
    return not (a_k_major and b_k_major)


def bias_layout(bias: torch.Tensor | None, sd: tuple | None) -> str:
    """How the kernels read the bias, from its (batch, row, column) strides broadcast to the output: "none",
    "per_column" (one value per column, as addmm's vector), "per_row", "scalar" or "full"."""
    if bias is None:
        return "none"
    _, s_row, s_col = sd
    if s_row == 0:
        return "scalar" if s_col == 0 else "per_column"
    return "per_row" if s_col == 0 else "full"


# Shared memory a Hopper program may use (227 KB), less a little for barriers.
_SMEM_LIMIT = 232448 - 1024


def _fit_stages(config: heuristics.MatmulConfig, elem: int, extra: int) -> heuristics.MatmulConfig:
    """``config`` with as many pipeline stages as fit beside ``extra`` bytes of shared memory."""
    per_stage = (config.block_m + config.block_n) * config.block_k * elem
    stages = config.num_stages
    while stages > 2 and per_stage * stages + extra > _SMEM_LIMIT:
        stages -= 1
    return dataclasses.replace(config, num_stages=stages)


def _bias_at(config: heuristics.MatmulConfig, bias: str) -> str:
    # Where the Hopper kernel reads a bias vector (see BIAS_AT in ``mm_tma_kernel``); products without one
    # keep "part", so that the option does not multiply their compilations. A split epilogue reads it once
    # a tile whatever the option: addmm bf16 4096^3 1.8-2.7% faster on an H100 over three configurations
    # (benchmark/results/2026-11-27-h100-4/logs/ab_blas_bias_8k_bmm.txt).
    if bias not in ("per_column", "per_row"):
        return "part"
    if config.prefetch_bias:
        return "start"
    return "tile" if config.tile_bias or config.split_epilogue else "part"


def _make_plan(kernel_kind: str, dtype: torch.dtype, tf32: bool, dev: int, batch: int, m: int, n: int, k: int,
               a_row_major: bool, b_row_major: bool, out_desc: bool, bias: str, out_elem: int, config=None,
               precision: str | None = None, repair: bool = False, promote: int = 0) -> _Plan:
    facts = heuristics.device_facts(dev)
    pclass = heuristics.precision_class(dtype, tf32)
    if config is None:
        config = heuristics.matmul_config(batch, m, n, k, pclass, facts)
    bk = config.block_k
    k_tiles = cdiv(k, bk)
    splits = config.split_k if batch == 1 else 1
    if splits > 1:
        # Slices are whole K tiles, so only the last one meets the end of K.
        per_slice = cdiv(k_tiles, splits)
        splits = cdiv(k_tiles, per_slice)
        k_tiles = per_slice
    constexprs = dict(BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=bk, GROUP_M=config.group_m)
    precision = precision or ("tf32" if (tf32 or pclass == "f16") else "ieee")
    scale = splits == 1
    bias = bias if scale else "none"
    tiles = cdiv(m, config.block_m) * cdiv(n, config.block_n)
    if kernel_kind == "tma" and not config.pointer_kernel:
        # Stores go through a descriptor where masked pointer stores could not be vectorised (N not a
        # multiple of 16), or where the configuration asks for it: the staging buffer costs shared memory.
        # Split partials are contiguous fp32, with aligned rows when N is a multiple of 4.
        c_desc = (config.tma_store or n % 16 != 0) and (out_desc if scale else n % 4 == 0)
        elem = dtype.itemsize
        epilogue_n = config.block_n // 2 if config.split_epilogue else config.block_n
        staging = config.block_m * epilogue_n * (out_elem if scale else 4) if c_desc else 0
        if c_desc:
            config = _fit_stages(config, elem, staging)
        constexprs.update(A_ROW_MAJOR=a_row_major, B_ROW_MAJOR=b_row_major, BATCHED=batch > 1, C_DESC=c_desc,
                          SCALE=scale, BIAS=bias, PRECISION=precision, UPCAST=device.interpreter,
                          FLATTEN=config.fuse_tiles and not config.warp_specialize,
                          WARP_SPECIALIZE=config.warp_specialize and not device.interpreter,
                          EPILOGUE_N=epilogue_n, BIAS_AT=_bias_at(config, bias), PROMOTE=promote)
        total = tiles * batch * splits
        # A promoting product keeps two accumulators: registers for one program an SM.
        per_sm = 1 if promote else config.programs_per_sm(elem, staging)
        programs = max(1, min(total, facts.num_sms * per_sm))
        launcher = _launcher(mm_tma_kernel, constexprs, config)
        return _Plan("tma", launcher, (programs, 1, 1), splits, k_tiles, programs)
    constexprs.update(EVEN_K=k % bk == 0, SCALE=scale, BIAS=bias, PRECISION=precision, UPCAST=device.interpreter,
                      REPAIR=repair)
    launcher = _launcher(mm_tiled_kernel, constexprs, config)
    return _Plan("tiled", launcher, (tiles * batch, splits, 1), splits, k_tiles, 1)


def matmul(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None,
           alpha: float, beta: float, batch: int, m: int, n: int, k: int,
           sa: tuple, sb: tuple, so: tuple, sd: tuple | None) -> torch.Tensor:
    """out[i] = alpha * a[i] @ b[i] + beta * bias[i] for i < ``batch``, and return ``out``.

    Tensors are passed with their (batch, row, column) strides: ``sa`` for the (m x k) operands ``a``,
    ``sb`` for the (k x n) operands ``b``, ``so`` for ``out``, ``sd`` for ``bias`` broadcast to ``out``
    (0 where broadcast). Each operand must have a unit stride along one of its two matrix dimensions.
    ``bias`` is None when beta is 0: ATen then ignores the input, NaN and Inf included.
    """
    call = product_call(out, a, b, bias, alpha, beta, batch, m, n, k, sa, sb, so, sd)
    call(out, a, b, bias, float(alpha), float(beta))
    return out


def product_call(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, alpha, beta,
                 batch: int, m: int, n: int, k: int, sa: tuple, sb: tuple, so: tuple, sd: tuple | None) -> ProductCall:
    """The call that ``matmul`` runs for its arguments; it takes ``a`` and ``b`` as given and makes any copy
    of them that its kernel needs itself.

    Calls are cached by everything they depend on: dtypes, tf32, device, sizes, strides, bias or not,
    alpha = 0 and each tensor's 16-byte alignment (kernel choice and compiled specialisation both follow it).
    """
    key = (a.dtype, out.dtype, allow_tf32(), a.get_device(), batch, m, n, k, sa, sb, so,
           None if bias is None else (bias.dtype, sd, bias.data_ptr() % 16 == 0), alpha == 0,
           a.data_ptr() % 16 == 0, b.data_ptr() % 16 == 0, out.data_ptr() % 16 == 0)
    call = _calls.get(key)
    if call is None:
        call = remember(_calls, key, _new_call(out, a, b, bias, alpha, beta, batch, m, n, k, sa, sb, so, sd))
    return call


def _new_call(out, a, b, bias, alpha, beta, batch, m, n, k, sa, sb, so, sd) -> ProductCall:
    if m == 0 or n == 0 or batch == 0:
        return ProductCall(None, None)
    if k == 0 or alpha == 0:
        # Nothing to multiply (BLAS reads neither operand when alpha is 0): out = beta * bias, or zeros.
        return ProductCall(None, epilogue.finish_launch(out, None, 0, bias, batch, m, n, so, sd))
    if batch == 1 and (m == 1 or n == 1):
        if n == 1:
            return mv.gemv_call(out, a, b, bias, False, m, k, sa[1], sa[2], sb[1], so[1], sd[1] if sd else 0)
        return mv.gemv_call(out, b, a, bias, False, n, k, sb[2], sb[1], sa[2], so[2], sd[2] if sd else 0,
                            swap=True)
    dev = a.get_device()
    split = split_fp32.applies(a, bias, out, batch, m, n, k, sa, sb, _uses_tma(dev))
    if split:
        layout = split_layout(dev, batch, m, n, k, sa, sb)
        dtype, k_read = torch.bfloat16, k * layout.terms
    else:
        layout = operand_layout(dev, a, b, batch, m, n, k, sa, sb)
        dtype, k_read = a.dtype, k
    key = plan_key(layout, out, dtype, batch, m, n, k_read, bias, so, sd)
    # A split product's plan is its own: a bf16 product of the same shape takes neither its tile nor its
    # promotion (nor the other way round).
    options = split_fp32.plan_options() if split else None
    plan = _plans.get((key, options))
    if plan is None:
        if split:
            plan = _make_plan(*key, split_fp32.config(), promote=split_fp32.SETTINGS.promote)
        else:
            config = None
            if autotune.enabled:
                config = _tuned(key, out, *layout.operands(a, b), bias, alpha, beta, layout.sa, layout.sb, so, sd)
            plan = _make_plan(*key, config)
        remember(_plans, (key, options), plan)
    call = layout_call(plan, layout, out, a, b, bias, batch, m, n, k_read, so, sd)
    if split:
        call.repair = _repair_launch(out, a, b, bias, batch, m, n, k, sa, sb, so, sd)
    return call


# The pointer kernel's tile for repairing a split product's NaN tiles (rare: an infinite operand).
_REPAIR_CONFIG = heuristics.MatmulConfig(64, 64, 32, 8, 4, 3, 1)


def _repair_launch(out, a, b, bias, batch, m, n, k, sa, sb, so, sd) -> PlannedLaunch:
    """The launch that computes again, in full fp32 from ``a`` and ``b``, the output tiles of a split
    product that hold a NaN (see ``split_fp32``)."""
    plan = _make_plan("tiled", torch.float32, False, a.get_device(), batch, m, n, k, sa[2] == 1 or k == 1,
                      sb[2] == 1, False, bias_layout(bias, sd), out.element_size(), _REPAIR_CONFIG, repair=True)
    return planned_call(plan, out, a, b, bias, batch, m, n, k, sa, sb, so, sd).main


def plan_key(layout: OperandLayout, out: torch.Tensor, dtype: torch.dtype, batch: int, m: int, n: int, k: int,
             bias: torch.Tensor | None, so: tuple, sd: tuple | None) -> tuple:
    """What a product's plan depends on: kernel, operand dtype, tf32, device, sizes, operand orders, whether
    the output takes descriptor stores, the bias layout and the output's element size (also the tuners'
    handle on a product)."""
    out_desc = (layout.kind == "tma" and so[2] == 1
                and _tma_ready(out, batch, so[0], so[1], out.element_size()))
    tf32 = dtype is torch.float32 and allow_tf32()
    return (layout.kind, dtype, tf32, out.get_device(), batch, m, n, k, layout.a_row_major, layout.b_row_major,
            out_desc, bias_layout(bias, sd), out.element_size())


def layout_call(plan: _Plan, layout: OperandLayout, out, a, b, bias, batch, m, n, k, so, sd) -> ProductCall:
    """The call running ``plan`` on operands ``a`` and ``b`` taken as ``layout`` says: as they are, or copied
    at each call."""
    # The kernel's specialisation follows the operands it reads: a copy is fresh memory, 16-byte aligned
    # (an empty tensor stands in for it here).
    a_read = a if layout.copy_a is None else layout.copy_a.stand_in(a)
    b_read = b if layout.copy_b is None else layout.copy_b.stand_in(b)
    call = planned_call(plan, out, a_read, b_read, bias, batch, m, n, k, layout.sa, layout.sb, so, sd)
    if layout.copy_a is not None or layout.copy_b is not None:
        call.prepare = layout.operands
    return call


def _tuned(key: tuple, out, a, b, bias, alpha, beta, sa, sb, so, sd) -> heuristics.MatmulConfig:
    # On-line tuning (off by default): the shared cache, or else a time-bounded sweep on these operands.
    _, dtype, tf32, dev, batch, m, n, k = key[:8]
    key_args = key[:10]
    config = autotune.tuned_config(*key_args)
    if config is not None:
        return config
    facts = heuristics.device_facts(dev)
    pclass = heuristics.precision_class(dtype, tf32)
    # Timing writes a scratch output laid out like the real one, which may also be read as the bias.
    scratch = torch.empty_strided((batch, m, n), so, dtype=out.dtype, device=out.device)

    def time_ms(config):
        call = planned_call(_make_plan(*key, config), scratch, a, b, bias, batch, m, n, k, sa, sb, so, sd)
        return triton.testing.do_bench(lambda: call(scratch, a, b, bias, float(alpha), float(beta)), warmup=5,
                                       rep=25)

    return autotune.tune(key_args, heuristics.candidates(batch, m, n, k, pclass, facts), time_ms)


def planned_call(plan: _Plan, out, a, b, bias, batch, m, n, k, sa, sb, so, sd) -> ProductCall:
    """The call running ``plan`` on tensors like these (same dtypes, alignment, sizes and strides), which
    it takes with float alpha and beta at each call."""
    splits = plan.splits
    d, sd = (out, (0, 0, 0)) if bias is None else (bias, sd)
    if splits > 1:
        c, sc = workspace.partials(splits * m * n, out), (m * n, n, 1)
    else:
        c, sc = out, so
    main = PlannedLaunch(plan.launcher, plan.grid, (a, b, c, d),
                         (batch, m, n, k, plan.k_tiles, splits, *sa, *sb, *sc, *sd), (plan.num_programs,))
    descriptors = plan.kind == "tma" and not device.interpreter
    if splits == 1:
        return ProductCall(main, None, descriptors=descriptors)
    finish = epilogue.finish_launch(out, c, splits, bias, 1, m, n, so, sd)
    return ProductCall(main, finish, splits * m * n, descriptors=descriptors)


def default_config(key: tuple) -> heuristics.MatmulConfig:
    """The configuration a product with this ``plan_key`` gets: the table's, or the rules'."""
    _, dtype, tf32, dev, batch, m, n, k = key[:8]
    return heuristics.matmul_config(batch, m, n, k, heuristics.precision_class(dtype, tf32),
                                    heuristics.device_facts(dev))


def plan_for(key: tuple, config: heuristics.MatmulConfig, precision: str | None = None) -> _Plan:
    """A plan for ``plan_key`` with an explicit configuration (the offline tuners' entry point; not cached).
    ``precision`` replaces the kernel's ``tl.dot`` input precision (a tuner's experiment: "tf32x3")."""
    return _make_plan(*key, config, precision)


def clear_caches() -> None:
    """Forget the products' plans and calls, and the calls core replays from C++ (after a change to what
    decides them: the forced kernel)."""
    _plans.clear()
    _calls.clear()
    op_calls.clear()
    native.clear()


@contextlib.contextmanager
def forced_kernel(kind: str | None) -> Iterator[None]:
    """Run products on the given kernel ("tma" or "tiled") inside the block: lets the interpreter check
    the Hopper kernel's indexing, which the device choice would otherwise never run there."""
    global _forced_kernel
    previous = _forced_kernel
    _forced_kernel = kind
    clear_caches()
    try:
        yield
    finally:
        _forced_kernel = previous
        clear_caches()


def unit_stride(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself when one of its last two dimensions has stride 1 (or size 1), else a contiguous copy:
    kernels then load along a contiguous dimension."""
    s = t.stride()
    shape = t.shape
    if s[-1] == 1 or s[-2] == 1 or shape[-1] == 1 or shape[-2] == 1:
        return t
    return t.contiguous()


# -- ATen ops ---------------------------------------------------------------------------------------------
# The ops that allocate their output (mm, addmm, bmm, baddbmm) keep their calls in ``op_calls`` by a key
# made of the arguments as given: dtypes, sizes, strides, devices, tf32, alpha/beta types and zeros, and the
# operands' 16-byte alignment. An entry (shape, dtype, device, call) exists for every call whose operands
# have a unit stride, so a hit allocates the output and launches (after copying an operand whose rows a
# descriptor cannot address, which the call does itself), nothing more. The fresh output is 16-byte aligned
# (PyTorch's allocators align far more), as the call's specialisation assumes.


def op_key(name: str, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None, alpha=1,
           beta=0) -> tuple:
    """The ``op_calls`` key of a call of op ``name`` (see above)."""
    key = (name, a.dtype, b.dtype, a.shape, b.shape, a.stride(), b.stride(), a.get_device(), b.get_device(),
           allow_tf32(), a.data_ptr() % 16 == 0, b.data_ptr() % 16 == 0)
    if bias is None:
        return key
    return key + (bias.dtype, bias.shape, bias.stride(), bias.get_device(), type(alpha), type(beta), alpha == 0,
                  beta == 0, bias.data_ptr() % 16 == 0)


def cached_call(key: tuple, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None, alpha=1,
                beta=0) -> torch.Tensor | None:
    """The result of the call kept under ``key``, or None when none is kept."""
    entry = op_calls.get(key)
    if entry is None:
        return None
    shape, dtype, dev, call = entry
    # new_empty takes a's device without building a torch.device: Python's cheapest allocation on the GPU.
    out = a.new_empty(shape) if dtype is a.dtype else torch.empty(shape, dtype=dtype, device=dev)
    # beta == 0: the input is not read at all, so NaN or Inf in it never shows (ATen's rule).
    call(out, a, b, bias if beta != 0 else None, float(alpha), float(beta))
    return out


def first_call(key: tuple, out: torch.Tensor, planned: tuple, a: torch.Tensor, b: torch.Tensor,
               bias: torch.Tensor | None, alpha: float, beta: float) -> torch.Tensor:
    """Run ``planned`` = (call, operands it takes) for an op call that ``op_calls`` lacked, remember it
    under ``key`` when it takes ``a`` and ``b`` themselves (not contiguous copies), and return ``out``."""
    call, a_used, b_used = planned
    if a_used is a and b_used is b:
        remember(op_calls, key, (tuple(out.shape), out.dtype, out.device, call))
    call(out, a_used, b_used, bias, alpha, beta)
    return out


def takes(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether our kernel computes ``a @ b`` for 2-D operands (others, and bad shapes, go to ATen)."""
    return (a.dtype in FLOATS and b.dtype is a.dtype and a.dim() == 2 and b.dim() == 2
            and a.shape[1] == b.shape[0] and b.device == a.device and not tf32_to_aten(a, b))


def mm_call(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None,
            alpha=1.0, beta=0.0, sd: tuple | None = None) -> tuple[ProductCall, torch.Tensor, torch.Tensor]:
    """(call, a, b) computing out = alpha * a @ b + beta * bias for 2-D operands, ``sd`` being the bias
    strides broadcast to out, with the operands the call takes (contiguous copies of operands that have no
    unit stride)."""
    a = unit_stride(a)
    b = unit_stride(b)
    m, k = a.shape
    sam, sak = a.stride()
    sbk, sbn = b.stride()
    som, son = out.stride()
    call = product_call(out, a, b, bias, alpha, beta, 1, m, b.shape[1], k, (0, sam, sak), (0, sbk, sbn),
                        (0, som, son), None if sd is None else (0, *sd))
    return call, a, b


def mm_into(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None,
            alpha=1.0, beta=0.0, sd: tuple | None = None) -> torch.Tensor:
    """out = alpha * a @ b + beta * bias for 2-D operands; ``sd`` are the bias strides broadcast to out."""
    call, a, b = mm_call(out, a, b, bias, alpha, beta, sd)
    call(out, a, b, bias, float(alpha), float(beta))
    return out


def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """aten::mm"""
    key = op_key("mm", a, b)
    out = cached_call(key, a, b)
    if out is not None:
        return out
    if not takes(a, b):
        return aten_kernel("mm")(a, b)
    out = torch.empty((a.shape[0], b.shape[1]), dtype=a.dtype, device=a.device)
    return first_call(key, out, mm_call(out, a, b), a, b, None, 1.0, 0.0)


def mm_out(a: torch.Tensor, b: torch.Tensor, *, out: torch.Tensor) -> torch.Tensor:
    """aten::mm.out"""
    target = prepare_out(out, (a.shape[0], b.shape[1]), a.dtype, (a, b)) if takes(a, b) else None
    if target is None:
        return aten_kernel("mm.out")(a, b, out=out)
    return finish_out(out, mm_into(target, a, b))
