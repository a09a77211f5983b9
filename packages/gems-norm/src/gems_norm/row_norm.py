"""The kernels layer norm and RMS norm share: each row of an (M, N) matrix normalised by its own
statistics (mean and variance, or only the mean square when ``CENTER`` is off), then scaled and shifted.

A row that fits in registers (N <= MAX_ROW_BLOCK forward, MAX_ROW_BLOCK_BACKWARD backward) is read
once: one program holds whole rows (several when rows are narrow). A wider row takes two kernels: one
computes its statistics (or, for the backward, its two row sums) in a loop, then a 2-d grid of (row
block, column chunk) programs applies them. The backward writes dx and, per program of a fixed grid,
partial sums of the weight and bias gradients over its rows; a second small kernel sums those partials
in a fixed order (no atomics)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from flag_gems.runtime import device
from gems_norm.heuristics import (
    KNOBS,
    MAX_ROW_BLOCK,
    MAX_ROW_BLOCK_BACKWARD,
    Plans,
    ReadyLaunch,
    caller_aligned,
    cdiv,
    chunk,
    launch,
    programs,
    row_backward_tile,
    row_tile,
    warps,
)
from gems_norm.reductions import parameter_grads, welford_add, welford_merge


@triton.jit
def _row_stats_kernel(X, RES, H, MEAN, RSTD, M, N, eps,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CENTER: tl.constexpr,
                      HAS_RES: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)[:, None]
    row_ok = rows < M
    base = rows.to(tl.int64) * N
    count = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    mean = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    m2 = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)[None, :]
        mask = row_ok & (cols < N)
        x = tl.load(X + base + cols, mask=mask, other=0.0).to(tl.float32)
        if HAS_RES:
            h = (x + tl.load(RES + base + cols, mask=mask, other=0.0).to(tl.float32)).to(H.dtype.element_ty)
            tl.store(H + base + cols, h, mask=mask)
            x = h.to(tl.float32)
        if CENTER:
            count, mean, m2 = welford_add(count, mean, m2, x, mask)
        else:
            m2 += x * x
    if CENTER:
        _, row_mean, row_m2 = welford_merge(count, mean, m2, 1)
        tl.store(MEAN + rows, row_mean, mask=row_ok)
    else:
        row_m2 = tl.sum(m2, 1, keep_dims=True)
    tl.store(RSTD + rows, tl.rsqrt(row_m2 / N + eps), mask=row_ok)


@triton.jit
def _shifted_moments(x, pivot, mask, N):
    """Each row's mean and variance from the sums of x - pivot and of its square, taken in one reduction
    (one round through shared memory instead of two in a row). The pivot, an element of the row, keeps
    the square sum from cancelling where the mean is large against the spread."""
    d = tl.where(mask, x - pivot, 0.0)
    # Both sums as one reduction of a pair a lane (two tl.sum calls would each take their own barriers).
    s1, s2 = tl.split(tl.sum(tl.join(d, d * d), 1, keep_dims=True))
    shift = s1 / N
    return pivot + shift, tl.maximum(s2 / N - shift * shift, 0.0)


@triton.jit
def _row_pivot(X, RES, rows, row_ok, N, BLOCK_M: tl.constexpr, HAS_RES: tl.constexpr):
    """The first element of each row (of x + residual, unrounded: any value near the row's serves as the shift
    of ``_shifted_moments``)."""
    if BLOCK_M == 1:
        # One row a program (the grid has one per row): a scalar load, rather than one per element a thread
        # holds of the broadcast column.
        first = tl.program_id(0).to(tl.int64) * N
        pivot = tl.load(X + first).to(tl.float32)
        if HAS_RES:
            pivot += tl.load(RES + first).to(tl.float32)
    else:
        first = rows.to(tl.int64) * N
        pivot = tl.load(X + first, mask=row_ok, other=0.0).to(tl.float32)
        if HAS_RES:
            pivot += tl.load(RES + first, mask=row_ok, other=0.0).to(tl.float32)
    return pivot


@triton.jit
def _param(P, cols, col_ok, policy: tl.constexpr):
    """A weight or bias vector's columns ``cols`` in float32."""
    return tl.load(P + cols, mask=col_ok, other=0.0, eviction_policy=policy).to(tl.float32)


@triton.jit
def _row_norm_fwd_kernel(X, RES, W, B, Y, H, MEAN, RSTD, M, N, eps,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CENTER: tl.constexpr,
                         STATS_GIVEN: tl.constexpr, HAS_RES: tl.constexpr, HAS_W: tl.constexpr,
                         HAS_B: tl.constexpr, SAVE_STATS: tl.constexpr, PARAMS_FIRST: tl.constexpr,
                         ONE_PASS: tl.constexpr, STREAM: tl.constexpr):
    # PARAMS_FIRST, ONE_PASS and STREAM: the row_fwd_* knobs of heuristics.Knobs.
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)[:, None]
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
    row_ok = rows < M
    col_ok = cols < N
    mask = row_ok & col_ok
    offs = rows.to(tl.int64) * N + cols
    # STREAM: x and y pass through once, so L2 may drop them first; the parameters, read by every row, stay.
    once: tl.constexpr = "evict_first" if STREAM else ""
    kept: tl.constexpr = "evict_last" if STREAM else ""
    if PARAMS_FIRST:
        # Issued with the row's loads: their latency then overlaps the row's instead of following the reductions.
        if HAS_W:
            w = _param(W, cols, col_ok, kept)
        if HAS_B:
            b = _param(B, cols, col_ok, kept)
    x = tl.load(X + offs, mask=mask, other=0.0, eviction_policy=once).to(tl.float32)
    if HAS_RES:
        # Normalise the sum as stored (rounded to its dtype), as the unfused add would.
        h = (x + tl.load(RES + offs, mask=mask, other=0.0).to(tl.float32)).to(H.dtype.element_ty)
        tl.store(H + offs, h, mask=mask)
        x = h.to(tl.float32)
    if STATS_GIVEN:
        rstd = tl.load(RSTD + rows, mask=row_ok, other=0.0)
        if CENTER:
            mean = tl.load(MEAN + rows, mask=row_ok, other=0.0)
    else:
        if CENTER and ONE_PASS:
            pivot = _row_pivot(X, RES, rows, row_ok, N, BLOCK_M, HAS_RES)
            mean, var = _shifted_moments(x, pivot, mask, N)
            rstd = tl.rsqrt(var + eps)
        else:
            if CENTER:
                mean = tl.sum(x, 1, keep_dims=True) / N
                x = tl.where(mask, x - mean, 0.0)
                if SAVE_STATS:
                    tl.store(MEAN + rows, mean.to(MEAN.dtype.element_ty), mask=row_ok)
            rstd = tl.rsqrt(tl.sum(x * x, 1, keep_dims=True) / N + eps)
        if SAVE_STATS:
            if CENTER and ONE_PASS:
                tl.store(MEAN + rows, mean.to(MEAN.dtype.element_ty), mask=row_ok)
            tl.store(RSTD + rows, rstd.to(RSTD.dtype.element_ty), mask=row_ok)
    # Whether x is centred already (the two-pass variance's), else the mean is still to subtract.
    centred: tl.constexpr = CENTER and not (STATS_GIVEN or ONE_PASS)
    if not PARAMS_FIRST:
        if HAS_W:
            w = _param(W, cols, col_ok, kept)
        if HAS_B:
            b = _param(B, cols, col_ok, kept)
    if CENTER and not centred:
        x = x - mean
    y = x * rstd
    if HAS_W:
        y = y * w
    if HAS_B:
        y = y + b
    tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask, cache_modifier=".cs" if STREAM else "")


@triton.jit
def _row_sums_bwd_kernel(DY, X, W, MEAN, RSTD, SUMS, M, N, dy_sm, dy_sn,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CENTER: tl.constexpr,
                         HAS_W: tl.constexpr):
    # Per row: mean(xhat * w * dy) and mean(w * dy), the two terms of dx that need the whole row.
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)[:, None]
    row_ok = rows < M
    base = rows.to(tl.int64) * N
    dy_base = rows.to(tl.int64) * dy_sm
    rstd = tl.load(RSTD + rows, mask=row_ok, other=0.0).to(tl.float32)
    if CENTER:
        mean = tl.load(MEAN + rows, mask=row_ok, other=0.0).to(tl.float32)
    acc_xhat = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    acc_dy = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)[None, :]
        mask = row_ok & (cols < N)
        x = tl.load(X + base + cols, mask=mask, other=0.0).to(tl.float32)
        wdy = tl.load(DY + dy_base + cols.to(tl.int64) * dy_sn, mask=mask, other=0.0).to(tl.float32)
        if HAS_W:
            wdy = wdy * tl.load(W + cols, mask=cols < N, other=0.0).to(tl.float32)
        if CENTER:
            x = tl.where(mask, x - mean, 0.0)
            acc_dy += wdy
        acc_xhat += x * rstd * wdy
    tl.store(SUMS + rows * 2, tl.sum(acc_xhat, 1, keep_dims=True) / N, mask=row_ok)
    tl.store(SUMS + rows * 2 + 1, tl.sum(acc_dy, 1, keep_dims=True) / N, mask=row_ok)


@triton.jit
def _row_norm_bwd_kernel(DY, X, W, MEAN, RSTD, SUMS, DX, PART, PART_B, DH, M, N, rows_per_program, dy_sm, dy_sn,
                         dh_sm, dh_sn, b_plane,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CENTER: tl.constexpr,
                         SUMS_GIVEN: tl.constexpr, HAS_W: tl.constexpr, NEED_DX: tl.constexpr,
                         NEED_DW: tl.constexpr, NEED_DB: tl.constexpr, PREFETCH_STATS: tl.constexpr,
                         ADD_DH: tl.constexpr):
    # ADD_DH: dx also takes DH (read through its strides), the gradient x receives from elsewhere (the sum
    # output of a fused residual add), so that no second pass adds the two.
    split = tl.program_id(1)
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
    col_ok = cols < N
    if HAS_W:
        w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    db = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    first = split * rows_per_program
    last = tl.minimum(first + rows_per_program, M)
    # The next tile is loaded before this one's row sums wait on it: two tiles in flight per program (with
    # PREFETCH_STATS its rows' mean and rstd too).
    # dy is read through its own strides: an expanded gradient (of a sum, say) is never materialised.
    dy_cols = cols.to(tl.int64) * dy_sn
    rows = first + tl.arange(0, BLOCK_M)[:, None]
    offs = rows.to(tl.int64) * N + cols
    x_next = tl.load(X + offs, mask=(rows < last) & col_ok, other=0.0)
    dy_next = tl.load(DY + rows.to(tl.int64) * dy_sm + dy_cols, mask=(rows < last) & col_ok, other=0.0)
    if PREFETCH_STATS:
        rstd_next = tl.load(RSTD + rows, mask=rows < last, other=0.0)
        if CENTER:
            mean_next = tl.load(MEAN + rows, mask=rows < last, other=0.0)
    for r0 in range(first, last, BLOCK_M):
        rows = r0 + tl.arange(0, BLOCK_M)[:, None]
        row_ok = rows < last
        mask = row_ok & col_ok
        offs = rows.to(tl.int64) * N + cols
        x = x_next.to(tl.float32)
        dy = dy_next.to(tl.float32)
        if ADD_DH:
            # Issued before the row sums, which its latency then overlaps.
            dh = tl.load(DH + rows.to(tl.int64) * dh_sm + cols.to(tl.int64) * dh_sn, mask=mask, other=0.0)
        ahead = (rows + BLOCK_M < last) & col_ok
        x_next = tl.load(X + offs + BLOCK_M * N, mask=ahead, other=0.0)
        dy_next = tl.load(DY + (rows + BLOCK_M).to(tl.int64) * dy_sm + dy_cols, mask=ahead, other=0.0)
        if PREFETCH_STATS:
            rstd = rstd_next.to(tl.float32)
            rstd_next = tl.load(RSTD + rows + BLOCK_M, mask=rows + BLOCK_M < last, other=0.0)
            if CENTER:
                mean = mean_next.to(tl.float32)
                mean_next = tl.load(MEAN + rows + BLOCK_M, mask=rows + BLOCK_M < last, other=0.0)
        else:
            rstd = tl.load(RSTD + rows, mask=row_ok, other=0.0).to(tl.float32)
            if CENTER:
                mean = tl.load(MEAN + rows, mask=row_ok, other=0.0).to(tl.float32)
        if CENTER:
            x = tl.where(mask, x - mean, 0.0)
        xhat = x * rstd
        if NEED_DX:
            wdy = dy
            if HAS_W:
                wdy = dy * w
            if SUMS_GIVEN:
                c_xhat = tl.load(SUMS + rows * 2, mask=row_ok, other=0.0)
                c_dy = tl.load(SUMS + rows * 2 + 1, mask=row_ok, other=0.0)
            else:
                c_xhat = tl.sum(xhat * wdy, 1, keep_dims=True) / N
                c_dy = tl.sum(wdy, 1, keep_dims=True) / N
            if CENTER:
                dx = (wdy - xhat * c_xhat - c_dy) * rstd
            else:
                dx = (wdy - xhat * c_xhat) * rstd
            dx = dx.to(DX.dtype.element_ty)
            if ADD_DH:
                # Rounded as autograd sums x's two gradients: each in x's dtype, then their sum.
                dx = (dx.to(tl.float32) + dh.to(tl.float32)).to(DX.dtype.element_ty)
            tl.store(DX + offs, dx, mask=mask)
        if NEED_DW:
            dw += dy * xhat
        if NEED_DB:
            db += dy
    # Per-program partial sums of the weight's and bias' gradients, at PART and ``b_plane`` past PART_B (the
    # next plane of one buffer, or a tensor of its own). With one program per column block they are the
    # gradients themselves, written in the parameters' dtype.
    out_cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    if NEED_DW:
        tl.store(PART + split.to(tl.int64) * N + out_cols, tl.sum(dw, 0).to(PART.dtype.element_ty), mask=out_cols < N)
    if NEED_DB:
        tl.store(PART_B + b_plane + split.to(tl.int64) * N + out_cols, tl.sum(db, 0).to(PART_B.dtype.element_ty),
                 mask=out_cols < N)


def _forward_plan(center: bool, x_dtype: torch.dtype, res_dtype, w_dtype, b_dtype, stats_dtype, m: int, n: int,
                  stats_shape: tuple | None):
    """The forward of this signature: a function (x, residual, weight, bias, eps) -> (y, mean, rstd, h)."""
    has_res, save = res_dtype is not None, stats_shape is not None
    has_w, has_b = w_dtype is not None, b_dtype is not None
    if n > MAX_ROW_BLOCK:
        def wide(x, residual, weight, bias, eps):
            return _wide_forward(x, m, n, weight, bias, eps, center, stats_dtype, stats_shape, residual)
        return wide
    block_m, block_n = row_tile(m, n, KNOBS.row_fwd_tile)
    # Absent tensors are passed as x (never read), unsaved statistics as y (never written).
    dtypes = (x_dtype, res_dtype or x_dtype, w_dtype or x_dtype, b_dtype or x_dtype, x_dtype, x_dtype,
              stats_dtype if save else x_dtype, stats_dtype if save else x_dtype)
    ready = ReadyLaunch(_row_norm_fwd_kernel, (cdiv(m, block_m),), KNOBS.row_fwd_warps or warps(block_m * block_n),
                        dtypes, (m, n), KNOBS.row_fwd_maxnreg, BLOCK_M=block_m, BLOCK_N=block_n, CENTER=center,
                        STATS_GIVEN=False, HAS_RES=has_res, HAS_W=has_w, HAS_B=has_b, SAVE_STATS=save,
                        PARAMS_FIRST=KNOBS.row_fwd_params_first, ONE_PASS=KNOBS.row_fwd_one_pass,
                        STREAM=KNOBS.row_fwd_stream)

    def run(x, residual, weight, bias, eps):
        y = torch.empty_like(x)
        h = torch.empty_like(x) if has_res else None
        # new_empty: no torch.device built per call, the cheapest allocation from Python on the GPU.
        rstd = x.new_empty(stats_shape, dtype=stats_dtype) if save else None
        mean = x.new_empty(stats_shape, dtype=stats_dtype) if save and center else None
        stats = y if rstd is None else rstd
        # caller_aligned(x, residual, weight, bias), inlined: the plan fixes which of them are given.
        ptrs = x.data_ptr()
        if has_res:
            ptrs |= residual.data_ptr()
        if has_w:
            ptrs |= weight.data_ptr()
        if has_b:
            ptrs |= bias.data_ptr()
        ready((x, x if residual is None else residual, x if weight is None else weight, x if bias is None else bias,
               y, x if h is None else h, stats if mean is None else mean, stats, m, n, float(eps)),
              device.interpreter or ptrs & 15 == 0)
        return y, mean, rstd, h

    return run


#: Forward plans by (center, dtypes of x, residual, weight, bias and the statistics, M, N, statistics' shape
#: (None: not saved)): a decoding step repeats a few of these every token.
_forward_plans = Plans(_forward_plan)


def forward_plan(center: bool, x_dtype: torch.dtype, res_dtype, w_dtype, b_dtype, stats_dtype, m: int, n: int,
                 stats_shape: tuple | None):
    """The function (x, residual, weight, bias, eps) -> (y, mean, rstd, h) that ``forward`` calls for this
    signature (dtypes None for absent tensors), for callers that keep it in plans of their own."""
    key = (center, x_dtype, res_dtype, w_dtype, b_dtype, stats_dtype, m, n, stats_shape)
    return _forward_plans.get(key) or _forward_plans.add(key, *key)


def forward(x: torch.Tensor, m: int, n: int, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float,
            center: bool, stats_dtype: torch.dtype, stats_shape, residual: torch.Tensor | None = None):
    """Normalise contiguous ``x`` as M rows of N: (y like x, mean or None, rstd, x + residual or None).

    ``center=False`` gives RMS norm (no mean). Statistics have ``stats_shape`` (M elements) and
    ``stats_dtype``; with ``stats_shape`` None they are not kept (mean and rstd None). ``weight`` and
    ``bias`` are contiguous N-vectors, ``residual`` is laid out as ``x``.
    """
    plan = forward_plan(center, x.dtype, None if residual is None else residual.dtype,
                        None if weight is None else weight.dtype, None if bias is None else bias.dtype, stats_dtype,
                        m, n, None if stats_shape is None else tuple(stats_shape))
    return plan(x, residual, weight, bias, eps)


def _wide_forward(x, m, n, weight, bias, eps, center, stats_dtype, stats_shape, residual):
    y = torch.empty_like(x)
    h = torch.empty_like(x) if residual is not None else None
    dummy = x
    args_tail = [m, n, eps]
    # Wide rows: statistics in float32 first (the normalisation must not see them rounded), then apply.
    mean = torch.empty(m, dtype=torch.float32, device=x.device) if center else None
    rstd = torch.empty(m, dtype=torch.float32, device=x.device)
    block_n = chunk()
    launch(_row_stats_kernel, (m,),
           [x, residual if residual is not None else dummy, h if h is not None else dummy,
            mean if center else rstd, rstd, *args_tail],
           warps(block_n), BLOCK_M=1, BLOCK_N=block_n, CENTER=center, HAS_RES=residual is not None)
    src = h if h is not None else x
    launch(_row_norm_fwd_kernel, (m, cdiv(n, block_n)),
           [src, dummy, weight if weight is not None else dummy, bias if bias is not None else dummy, y,
            dummy, mean if center else rstd, rstd, *args_tail],
           warps(block_n), BLOCK_M=1, BLOCK_N=block_n, CENTER=center, STATS_GIVEN=True, HAS_RES=False,
           HAS_W=weight is not None, HAS_B=bias is not None, SAVE_STATS=False, PARAMS_FIRST=False, ONE_PASS=False,
           STREAM=False)
    if stats_shape is None:
        return y, None, None, h
    mean = mean.to(stats_dtype).view(stats_shape) if center else None
    return y, mean, rstd.to(stats_dtype).view(stats_shape), h


def _backward_plan(center: bool, dy_dtype: torch.dtype, x_dtype: torch.dtype, w_dtype, mean_dtype,
                   rstd_dtype: torch.dtype, m: int, n: int, dy_sm: int, dy_sn: int, need_dx: bool, need_dw: bool,
                   need_db: bool, param_dtype: torch.dtype, dh_dtype=None, dh_sm: int = 0, dh_sn: int = 0):
    """The backward of this signature: a function (dy as rows, x, mean, rstd, weight, dh as rows or None) ->
    (dx, dw, db). With ``dh_dtype`` (dx asked for), dh is added to dx in the kernel."""
    planes = int(need_dw) + int(need_db)
    add_dh = need_dx and dh_dtype is not None
    if n > MAX_ROW_BLOCK_BACKWARD:
        def wide(dy, x, mean, rstd, weight, dh=None):
            return _wide_backward(dy, x, m, n, mean, rstd, weight, center, need_dx, need_dw, need_db, param_dtype,
                                  dy_sm, dy_sn, dh if add_dh else None, dh_sm, dh_sn)
        return wide
    block_m, block_n = row_tile(m, n, row_backward_tile(x_dtype.itemsize))
    col_blocks = cdiv(n, block_n)
    row_blocks = cdiv(m, block_m)
    splits = max(1, programs(row_blocks * col_blocks, KNOBS.row_bwd_programs_per_sm) // col_blocks)
    rows_per_program = cdiv(row_blocks, splits) * block_m
    splits = cdiv(m, rows_per_program)
    # One split (few rows: a decoding step) writes the parameter gradients whole: no second kernel.
    whole = splits == 1
    part_dtype = param_dtype if whole else torch.float32
    b_plane = splits * n if need_dw and not whole else 0
    # Absent tensors are passed as x (never read or written).
    dtypes = (dy_dtype, x_dtype, w_dtype or x_dtype, mean_dtype or rstd_dtype, rstd_dtype, x_dtype, x_dtype,
              part_dtype if planes else x_dtype, part_dtype if planes else x_dtype, dh_dtype if add_dh else x_dtype)
    num_warps = KNOBS.row_bwd_warps or warps(block_m * block_n, per_thread=8)
    ready = ReadyLaunch(_row_norm_bwd_kernel, (col_blocks, splits), num_warps, dtypes,
                        (m, n, rows_per_program, dy_sm, dy_sn, dh_sm, dh_sn, b_plane), BLOCK_M=block_m,
                        BLOCK_N=block_n, CENTER=center, SUMS_GIVEN=False, HAS_W=w_dtype is not None, NEED_DX=need_dx,
                        NEED_DW=need_dw, NEED_DB=need_db, PREFETCH_STATS=KNOBS.row_bwd_prefetch_stats,
                        ADD_DH=add_dh)

    def run(dy, x, mean, rstd, weight, dh=None):
        dx = torch.empty_like(x) if need_dx else None
        if whole:
            dw = x.new_empty(n, dtype=param_dtype) if need_dw else None
            db = x.new_empty(n, dtype=param_dtype) if need_db else None
            part = dw if need_dw else db if need_db else x
            part_b = db if need_db else part
        else:
            part = part_b = x.new_empty((planes, splits, n), dtype=torch.float32) if planes else x
        dh = dh if add_dh else None
        ready((dy, x, x if weight is None else weight, rstd if mean is None else mean, rstd, x,
               x if dx is None else dx, part, part_b, x if dh is None else dh, m, n, rows_per_program, dy_sm, dy_sn,
               dh_sm, dh_sn, b_plane),
              caller_aligned(dy, x, weight, mean, rstd, dh))
        if whole:
            return dx, dw, db
        return (dx, *parameter_grads(part, param_dtype, need_dw, need_db))

    return run


#: Backward plans by (center, dtypes, M, N, dy's strides, gradients asked for, the parameters' dtype, dh's dtype
#: and strides).
_backward_plans = Plans(_backward_plan)


def backward_plan(center: bool, dy_dtype: torch.dtype, x_dtype: torch.dtype, w_dtype, mean_dtype,
                  rstd_dtype: torch.dtype, m: int, n: int, dy_sm: int, dy_sn: int, need_dx: bool, need_dw: bool,
                  need_db: bool, param_dtype: torch.dtype, dh_dtype=None, dh_sm: int = 0, dh_sn: int = 0):
    """The function (dy as rows, x, mean, rstd, weight, dh as rows) -> (dx, dw, db) that ``backward`` calls for
    this signature (``grad_rows`` gives dy's and dh's rows and strides; ``dh_dtype`` None: no dh), for callers
    that keep it in plans of their own."""
    key = (center, dy_dtype, x_dtype, w_dtype, mean_dtype, rstd_dtype, m, n, dy_sm, dy_sn, need_dx, need_dw,
           need_db, param_dtype, dh_dtype, dh_sm, dh_sn)
    return _backward_plans.get(key) or _backward_plans.add(key, *key)


def grad_rows(dy: torch.Tensor, m: int, n: int) -> tuple[torch.Tensor, int, int]:
    """``dy`` (laid out like the input) as M rows of N: (tensor, row stride, column stride). A gradient
    that is expanded (the gradient of a sum) or strided is read where it lies whenever its layout has
    such a view; only a layout that has none is copied."""
    if dy.is_contiguous():
        return dy, n, 1
    rows = dy.reshape(m, n)
    return (rows, *rows.stride())


def backward(dy: torch.Tensor, x: torch.Tensor, m: int, n: int, mean: torch.Tensor | None, rstd: torch.Tensor,
             weight: torch.Tensor | None, center: bool, need_dx: bool, need_dw: bool, need_db: bool,
             param_dtype: torch.dtype, dh: torch.Tensor | None = None):
    """Gradients of the row norm of contiguous ``x`` (M rows of N) given ``dy`` of x's shape (any strides)
    and the contiguous statistics: (dx like x, dw (N,), db (N,)), each None unless asked for; dw, db in
    ``param_dtype``. ``dh`` (x's shape and dtype, any strides), where given, is added to dx in the kernel,
    rounded as ``dx + dh`` would be."""
    dy, dy_sm, dy_sn = grad_rows(dy, m, n)
    dh_sm = dh_sn = 0
    if dh is not None:
        dh, dh_sm, dh_sn = grad_rows(dh, m, n)
    plan = backward_plan(center, dy.dtype, x.dtype, None if weight is None else weight.dtype,
                         mean.dtype if center else None, rstd.dtype, m, n, dy_sm, dy_sn, need_dx, need_dw, need_db,
                         param_dtype, None if dh is None else dh.dtype, dh_sm, dh_sn)
    return plan(dy, x, mean if center else None, rstd, weight, dh)


def _wide_backward(dy, x, m, n, mean, rstd, weight, center, need_dx, need_dw, need_db, param_dtype, dy_sm, dy_sn,
                   dh, dh_sm, dh_sn):
    # Rows too wide for registers: their two row sums first, then (row, column chunk) programs.
    dummy = x
    dx = torch.empty_like(x) if need_dx else dummy
    planes = int(need_dw) + int(need_db)
    stats = (mean if center else rstd, rstd)
    block_n = chunk()
    sums = dummy
    if need_dx:
        sums = x.new_empty((m, 2), dtype=torch.float32)
        launch(_row_sums_bwd_kernel, (m,),
               [dy, x, dummy if weight is None else weight, *stats, sums, m, n, dy_sm, dy_sn],
               warps(block_n), BLOCK_M=1, BLOCK_N=block_n, CENTER=center, HAS_W=weight is not None)
    col_blocks = cdiv(n, block_n)
    splits = max(1, programs(m * col_blocks) // col_blocks)
    rows_per_program = cdiv(m, splits)
    splits = cdiv(m, rows_per_program)
    part = x.new_empty((planes, splits, n), dtype=torch.float32) if planes else dummy
    launch(_row_norm_bwd_kernel, (col_blocks, splits),
           [dy, x, dummy if weight is None else weight, *stats, sums, dx, part, part,
            dummy if dh is None else dh, m, n, rows_per_program, dy_sm, dy_sn, dh_sm, dh_sn,
            splits * n if need_dw else 0],
           warps(block_n, per_thread=8), BLOCK_M=1, BLOCK_N=block_n, CENTER=center, SUMS_GIVEN=need_dx,
           HAS_W=weight is not None, NEED_DX=need_dx, NEED_DW=need_dw, NEED_DB=need_db,
           PREFETCH_STATS=KNOBS.row_bwd_prefetch_stats, ADD_DH=dh is not None)
    return (dx if need_dx else None, *parameter_grads(part, param_dtype, need_dw, need_db))
