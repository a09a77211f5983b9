"""Group norm: ``native_group_norm`` and ``native_group_norm_backward``.

One program per (sample, group). A group of a contiguous (N, C, *) input is one contiguous run of
C/group channels of HxW elements, walked in (channel, spatial) tiles: a first pass gathers the
statistics (Welford, per lane), a second pass normalises, re-reading the group while it is still in L2.
The backward works the same way and writes per-sample partial weight and bias gradients, which a
second small kernel sums over the batch in a fixed order.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from flag_gems import aten_kernel
from gems_norm.heuristics import launch, strip_tile, warps
from gems_norm.reductions import sum_partials, welford_add, welford_merge
from gems_norm.semantics import FLOAT_DTYPES, params_ok, stats_dtype


@triton.jit
def _group_norm_fwd_kernel(X, W, B, Y, MEAN, RSTD, C, HxW, group, eps,
                           BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, HAS_W: tl.constexpr,
                           HAS_B: tl.constexpr):
    pid = tl.program_id(0)
    cpg = C // group
    first_channel = (pid % group) * cpg
    base = pid.to(tl.int64) * cpg * HxW
    c_idx = tl.arange(0, BLOCK_C)[:, None]
    hw_idx = tl.arange(0, BLOCK_HW)[None, :]
    count = tl.zeros([BLOCK_C, BLOCK_HW], tl.float32)
    mean = tl.zeros([BLOCK_C, BLOCK_HW], tl.float32)
    m2 = tl.zeros([BLOCK_C, BLOCK_HW], tl.float32)
    for c0 in range(0, cpg, BLOCK_C):
        c_ok = c0 + c_idx < cpg
        row = base + (c0 + c_idx) * HxW
        for hw0 in range(0, HxW, BLOCK_HW):
            mask = c_ok & (hw0 + hw_idx < HxW)
            x = tl.load(X + row + hw0 + hw_idx, mask=mask, other=0.0).to(tl.float32)
            count, mean, m2 = welford_add(count, mean, m2, x, mask)
    count, mean, m2 = welford_merge(count, mean, m2, 1)
    _, mean, m2 = welford_merge(count, mean, m2, 0)
    rstd = tl.rsqrt(m2 / (cpg * HxW) + eps)
    here = pid + tl.zeros([1, 1], tl.int32)
    tl.store(MEAN + here, mean.to(MEAN.dtype.element_ty))
    tl.store(RSTD + here, rstd.to(RSTD.dtype.element_ty))
    for c0 in range(0, cpg, BLOCK_C):
        c_ok = c0 + c_idx < cpg
        row = base + (c0 + c_idx) * HxW
        scale = rstd
        if HAS_W:
            scale = scale * tl.load(W + first_channel + c0 + c_idx, mask=c_ok, other=0.0).to(tl.float32)
        shift = tl.zeros([BLOCK_C, 1], tl.float32)
        if HAS_B:
            shift = tl.load(B + first_channel + c0 + c_idx, mask=c_ok, other=0.0).to(tl.float32)
        for hw0 in range(0, HxW, BLOCK_HW):
            mask = c_ok & (hw0 + hw_idx < HxW)
            x = tl.load(X + row + hw0 + hw_idx, mask=mask, other=0.0).to(tl.float32)
            tl.store(Y + row + hw0 + hw_idx, ((x - mean) * scale + shift).to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _group_norm_bwd_kernel(DY, X, W, MEAN, RSTD, DX, PART, C, HxW, group,
                           BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, HAS_W: tl.constexpr,
                           NEED_DX: tl.constexpr, NEED_DW: tl.constexpr, NEED_DB: tl.constexpr):
    pid = tl.program_id(0)
    cpg = C // group
    first_channel = (pid % group) * cpg
    sample = pid // group
    base = pid.to(tl.int64) * cpg * HxW
    mean = tl.load(MEAN + pid).to(tl.float32)
    rstd = tl.load(RSTD + pid).to(tl.float32)
    c_idx = tl.arange(0, BLOCK_C)[:, None]
    hw_idx = tl.arange(0, BLOCK_HW)[None, :]
    acc_xhat = tl.zeros([BLOCK_C, BLOCK_HW], tl.float32)
    acc_dy = tl.zeros([BLOCK_C, BLOCK_HW], tl.float32)
    for c0 in range(0, cpg, BLOCK_C):
        c_ok = c0 + c_idx < cpg
        row = base + (c0 + c_idx) * HxW
        w = tl.full([BLOCK_C, 1], 1.0, tl.float32)
        if HAS_W:
            w = tl.load(W + first_channel + c0 + c_idx, mask=c_ok, other=0.0).to(tl.float32)
        dw = tl.zeros([BLOCK_C, BLOCK_HW], tl.float32)
        db = tl.zeros([BLOCK_C, BLOCK_HW], tl.float32)
        for hw0 in range(0, HxW, BLOCK_HW):
            mask = c_ok & (hw0 + hw_idx < HxW)
            x = tl.load(X + row + hw0 + hw_idx, mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(DY + row + hw0 + hw_idx, mask=mask, other=0.0).to(tl.float32)
            xhat = tl.where(mask, (x - mean) * rstd, 0.0)
            if NEED_DX:
                acc_xhat += xhat * dy * w
                acc_dy += dy * w
            if NEED_DW:
                dw += dy * xhat
            if NEED_DB:
                db += dy
        # Per-sample partial sums: plane 0 of PART (N, C) for the weight, the next for the bias.
        channels = c0 + tl.arange(0, BLOCK_C)
        part = PART + sample.to(tl.int64) * C + first_channel + channels
        if NEED_DW:
            tl.store(part, tl.sum(dw, 1), mask=channels < cpg)
            part += tl.num_programs(0).to(tl.int64) * cpg
        if NEED_DB:
            tl.store(part, tl.sum(db, 1), mask=channels < cpg)
    if NEED_DX:
        size = cpg * HxW
        c_xhat = tl.sum(tl.sum(acc_xhat, 1), 0) / size
        c_dy = tl.sum(tl.sum(acc_dy, 1), 0) / size
        for c0 in range(0, cpg, BLOCK_C):
            c_ok = c0 + c_idx < cpg
            row = base + (c0 + c_idx) * HxW
            w = tl.full([BLOCK_C, 1], 1.0, tl.float32)
            if HAS_W:
                w = tl.load(W + first_channel + c0 + c_idx, mask=c_ok, other=0.0).to(tl.float32)
            for hw0 in range(0, HxW, BLOCK_HW):
                mask = c_ok & (hw0 + hw_idx < HxW)
                x = tl.load(X + row + hw0 + hw_idx, mask=mask, other=0.0).to(tl.float32)
                dy = tl.load(DY + row + hw0 + hw_idx, mask=mask, other=0.0).to(tl.float32)
                xhat = (x - mean) * rstd
                dx = (dy * w - xhat * c_xhat - c_dy) * rstd
                tl.store(DX + row + hw0 + hw_idx, dx.to(DX.dtype.element_ty), mask=mask)


def _handled(input, weight, bias, n, c, hw, group) -> bool:
    return (input.dtype in FLOAT_DTYPES and input.is_contiguous() and input.numel() > 0
            and input.numel() == n * c * hw and group > 0 and c % group == 0
            and all(p is None or (p.numel() == c and p.is_contiguous() and p.device == input.device)
                    for p in (weight, bias))
            and params_ok(input, weight, bias, mixed=False))


def native_group_norm(input, weight, bias, N, C, HxW, group, eps):
    """ATen's ``native_group_norm``: (output, mean, rstd), statistics (N, group)."""
    if not _handled(input, weight, bias, N, C, HxW, group):
        return aten_kernel("native_group_norm")(input, weight, bias, N, C, HxW, group, eps)
    dtype = stats_dtype(input, weight, bias, acc_on_cuda=False)
    mean = torch.empty(N, group, dtype=dtype, device=input.device)
    rstd = torch.empty(N, group, dtype=dtype, device=input.device)
    y = torch.empty_like(input)
    block_c, block_hw = strip_tile(C // group, HxW, inner_contiguous=True)
    launch(_group_norm_fwd_kernel, (N * group,),
           [input, weight if weight is not None else input, bias if bias is not None else input, y, mean, rstd,
            C, HxW, group, eps],
           warps(block_c * block_hw), BLOCK_C=block_c, BLOCK_HW=block_hw, HAS_W=weight is not None,
           HAS_B=bias is not None)
    return y, mean, rstd


def native_group_norm_backward(grad_out, input, mean, rstd, weight, N, C, HxW, group, output_mask):
    """ATen's ``native_group_norm_backward``: (dx, dweight, dbias), None where not asked for."""
    need_dx, need_dw, need_db = output_mask
    if (not _handled(input, weight, None, N, C, HxW, group) or grad_out.shape != input.shape
            or grad_out.dtype != input.dtype or mean.numel() != N * group or rstd.numel() != N * group
            or ((need_dw or need_db) and weight is None)):
        return aten_kernel("native_group_norm_backward")(grad_out, input, mean, rstd, weight, N, C, HxW, group,
                                                          output_mask)
    if not (need_dx or need_dw or need_db):
        return None, None, None
    dx = torch.empty_like(input) if need_dx else None
    planes = int(need_dw) + int(need_db)
    part = torch.empty(planes, N, C, dtype=torch.float32, device=input.device) if planes else input
    block_c, block_hw = strip_tile(C // group, HxW, inner_contiguous=True)
    launch(_group_norm_bwd_kernel, (N * group,),
           [grad_out.contiguous(), input, weight if weight is not None else input, mean.contiguous(),
            rstd.contiguous(), dx if need_dx else input, part, C, HxW, group],
           warps(block_c * block_hw, per_thread=8), BLOCK_C=block_c, BLOCK_HW=block_hw, HAS_W=weight is not None,
           NEED_DX=need_dx, NEED_DW=need_dw, NEED_DB=need_db)
    if not planes:
        return dx, None, None
    sums = sum_partials(part, weight.dtype)
    return dx, sums[0] if need_dw else None, sums[planes - 1] if need_db else None
