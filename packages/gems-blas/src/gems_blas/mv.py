"""Matrix-vector products: mv, addmv, and the one-row / one-column cases of the matrix products.

A matrix-vector product reads each matrix element once and does two flops with it, so it runs at memory
speed: each program streams BLOCK_M rows of the matrix in (BLOCK_M x BLOCK_K) tiles, loaded along the
matrix's contiguous dimension, and keeps fp32 products in a tile-shaped accumulator that it sums once at
the end. When the rows alone give too few programs to fill the device, K is split and the finish kernel of
``epilogue`` adds the fp32 slices in a fixed order.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from flag_gems import aten_kernel
from flag_gems.intmath import cdiv
from flag_gems.launch import Launcher
from gems_blas import epilogue, heuristics, workspace
from gems_blas.operands import (
    FLOATS,
    PlannedLaunch,
    ProductCall,
    broadcast_strides,
    finish_out,
    prepare_out,
    real_scalar,
    remember,
)


@triton.jit(do_not_specialize=["K_TILES", "alpha", "beta"])
def gemv_kernel(a_ptr, x_ptr, y_ptr, d_ptr, M, K, K_TILES, stride_am, stride_ak, stride_x, stride_y, stride_d,
                alpha, beta, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, SCALE: tl.constexpr,
                HAS_BIAS: tl.constexpr, NUM_STAGES: tl.constexpr):
    pid_m = tl.program_id(0)
    split = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    # Rows past the edge wrap around: loads stay in bounds and those sums are never stored.
    rows = (offs_m % M).to(tl.int64)
    # Slices are whole K tiles (K_TILES each), so each starts at a multiple of BLOCK_K.
    k_lo = split * K_TILES * BLOCK_K
    k_hi = tl.minimum(K, k_lo + K_TILES * BLOCK_K)
    a_rows = a_ptr + rows[:, None] * stride_am
    acc = tl.zeros((BLOCK_M, BLOCK_K), tl.float32)
    # NUM_STAGES > 1 has Triton prefetch later steps' tiles into shared memory (loads that feed no dot
    # are pipelined only on request).
    for k in tl.range(k_lo, k_hi, BLOCK_K, num_stages=NUM_STAGES):
        offs_k = k + tl.arange(0, BLOCK_K)
        in_k = offs_k < k_hi
        cols = offs_k.to(tl.int64)
        a = tl.load(a_rows + cols[None, :] * stride_ak, mask=in_k[None, :], other=0.0)
        x = tl.load(x_ptr + cols * stride_x, mask=in_k, other=0.0)
        acc += a.to(tl.float32) * x.to(tl.float32)[None, :]
    y = tl.sum(acc, axis=1)
    mask = offs_m < M
    m = offs_m.to(tl.int64)
    if SCALE:
        y = y * alpha
        if HAS_BIAS:
            bias = tl.load(d_ptr + m * stride_d, mask=mask, other=0.0)
            y += beta * bias.to(tl.float32)
        tl.store(y_ptr + m * stride_y, y.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        # fp32 partial sums of slice `split`, laid out (splits, M).
        tl.store(y_ptr + split.to(tl.int64) * M + m, y, mask=mask)


_launchers: dict[tuple, Launcher] = {}
_plans: dict[tuple, tuple] = {}
_calls: dict[tuple, ProductCall] = {}


def _make_plan(dev: int, elem: int, m: int, k: int, rows_contiguous: bool, has_bias: bool,
               rule: heuristics.GemvRule | None = None) -> tuple:
    config = heuristics.gemv_config(m, k, rows_contiguous, elem, heuristics.device_facts(dev), rule)
    bk = config.block_k
    k_tiles = cdiv(k, bk)
    splits = config.split_k
    if splits > 1:
        per_slice = cdiv(k_tiles, splits)
        splits = cdiv(k_tiles, per_slice)
        k_tiles = per_slice
    scale = splits == 1
    constexprs = {"BLOCK_M": config.block_m, "BLOCK_K": bk, "SCALE": scale, "HAS_BIAS": has_bias and scale,
                  "NUM_STAGES": config.num_stages}
    key = (tuple(constexprs.items()), config.num_warps)
    launcher = _launchers.get(key)
    if launcher is None:
        launcher = _launchers[key] = Launcher(gemv_kernel, constexprs, num_warps=config.num_warps)
    return launcher, (cdiv(m, config.block_m), splits, 1), splits, k_tiles


def gemv_call(y: torch.Tensor, a: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None, alpha_zero: bool,
              m: int, k: int, stride_am: int, stride_ak: int, stride_x: int, stride_y: int, stride_d: int,
              swap: bool = False, rule: heuristics.GemvRule | None = None) -> ProductCall:
    """The call computing y = alpha * A @ x + beta * bias for the arguments of ``gemv``, taking
    (y, A, x, bias) — (y, x, A, bias) when ``swap`` — and float alpha and beta. An explicit ``rule``
    (the tuners' entry point) replaces the configured one; such plans are not cached."""
    if m == 0:
        return ProductCall(None, None)
    so, sd = (0, stride_y, 0), (0, stride_d, 0)
    if k == 0 or alpha_zero:
        return ProductCall(None, epilogue.finish_launch(y, None, 0, bias, 1, m, 1, so, sd))
    key = (a.get_device(), a.element_size(), m, k, stride_ak == 1 or k == 1, bias is not None)
    if rule is not None:
        plan = _make_plan(*key, rule)
    else:
        plan = _plans.get(key)
        if plan is None:
            plan = remember(_plans, key, _make_plan(*key))
    launcher, grid, splits, k_tiles = plan
    target = y if splits == 1 else workspace.partials(splits * m, y)
    main = PlannedLaunch(launcher, grid, (a, x, target, y if bias is None else bias),
                         (m, k, k_tiles, stride_am, stride_ak, stride_x, stride_y, stride_d))
    if splits == 1:
        return ProductCall(main, None, swap=swap)
    return ProductCall(main, epilogue.finish_launch(y, target, splits, bias, 1, m, 1, so, sd), splits * m, swap)


def gemv(y: torch.Tensor, a: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None, alpha: float,
         beta: float, m: int, k: int, stride_am: int, stride_ak: int, stride_x: int, stride_y: int,
         stride_d: int) -> torch.Tensor:
    """y = alpha * A @ x + beta * bias for the (m x k) matrix A at ``a`` and the vector at ``x``.

    Tensors give base pointers; strides are in elements (``stride_d`` is 0 for a broadcast bias).
    ``bias`` is None when beta is 0, so that NaN or Inf in an ignored input never shows.
    """
    key = (a.dtype, a.get_device(), m, k, stride_am, stride_ak, stride_x, stride_y, stride_d, alpha == 0,
           a.data_ptr() % 16 == 0, x.data_ptr() % 16 == 0, y.data_ptr() % 16 == 0,
           None if bias is None else bias.data_ptr() % 16 == 0)
    call = _calls.get(key)
    if call is None:
        call = remember(_calls, key, gemv_call(y, a, x, bias, alpha == 0, m, k, stride_am, stride_ak, stride_x,
                                               stride_y, stride_d))
    call(y, a, x, bias, float(alpha), float(beta))
    return y


# -- ATen ops ---------------------------------------------------------------------------------------------
def _takes(mat: torch.Tensor, vec: torch.Tensor) -> bool:
    return (mat.dtype in FLOATS and vec.dtype is mat.dtype and mat.dim() == 2 and vec.dim() == 1
            and mat.shape[1] == vec.shape[0] and vec.device == mat.device)


def _mv_into(y: torch.Tensor, mat: torch.Tensor, vec: torch.Tensor, bias, alpha, beta, stride_d: int):
    m, k = mat.shape
    sm, sk = mat.stride()
    return gemv(y, mat, vec, bias, alpha, beta, m, k, sm, sk, vec.stride(0), y.stride(0), stride_d)


def mv(mat: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
    """aten::mv"""
    if not _takes(mat, vec):
        return aten_kernel("mv")(mat, vec)
    y = torch.empty((mat.shape[0],), dtype=mat.dtype, device=mat.device)
    return _mv_into(y, mat, vec, None, 1.0, 0.0, 0)


def mv_out(mat: torch.Tensor, vec: torch.Tensor, *, out: torch.Tensor) -> torch.Tensor:
    """aten::mv.out"""
    target = prepare_out(out, (mat.shape[0],), mat.dtype, (mat, vec)) if _takes(mat, vec) else None
    if target is None:
        return aten_kernel("mv.out")(mat, vec, out=out)
    return finish_out(out, _mv_into(target, mat, vec, None, 1.0, 0.0, 0))


def _addmv_bias(bias: torch.Tensor, mat: torch.Tensor, vec: torch.Tensor, beta, alpha):
    """The bias stride along the output for a call our kernel takes, or None for ATen to handle."""
    if not (_takes(mat, vec) and bias.dtype is mat.dtype and bias.device == mat.device
            and real_scalar(alpha) and real_scalar(beta)):
        return None
    strides = broadcast_strides(bias, (mat.shape[0],))
    return None if strides is None else strides[0]


def addmv(bias: torch.Tensor, mat: torch.Tensor, vec: torch.Tensor, *, beta=1, alpha=1) -> torch.Tensor:
    """aten::addmv"""
    sd = _addmv_bias(bias, mat, vec, beta, alpha)
    if sd is None:
        return aten_kernel("addmv")(bias, mat, vec, beta=beta, alpha=alpha)
    y = torch.empty((mat.shape[0],), dtype=mat.dtype, device=mat.device)
    return _mv_into(y, mat, vec, bias if beta != 0 else None, alpha, beta, sd)


def addmv_out(bias, mat, vec, *, beta=1, alpha=1, out: torch.Tensor) -> torch.Tensor:
    """aten::addmv.out"""
    sd = _addmv_bias(bias, mat, vec, beta, alpha)
    target = None if sd is None else prepare_out(out, (mat.shape[0],), mat.dtype, (mat, vec), bias)
    if target is None:
        return aten_kernel("addmv.out")(bias, mat, vec, beta=beta, alpha=alpha, out=out)
    return finish_out(out, _mv_into(target, mat, vec, bias if beta != 0 else None, alpha, beta, sd))


def addmv_(bias: torch.Tensor, mat: torch.Tensor, vec: torch.Tensor, *, beta=1, alpha=1) -> torch.Tensor:
    """aten::addmv_"""
    sd = _addmv_bias(bias, mat, vec, beta, alpha)
    if sd is None or bias.dim() != 1 or bias.shape[0] != mat.shape[0]:
        return aten_kernel("addmv_")(bias, mat, vec, beta=beta, alpha=alpha)
    target = prepare_out(bias, (mat.shape[0],), mat.dtype, (mat, vec), bias)
    if target is None:
        return aten_kernel("addmv_")(bias, mat, vec, beta=beta, alpha=alpha)
    return finish_out(bias, _mv_into(target, mat, vec, bias if beta != 0 else None, alpha, beta, sd))
