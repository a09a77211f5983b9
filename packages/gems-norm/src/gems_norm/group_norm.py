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
from gems_norm.heuristics import (
    TO_ATEN,
    Plans,
    ReadyLaunch,
    caller_aligned,
    no_grads,
    signature,
    strip_tile,
    warps,
)
from gems_norm.reductions import parameter_grads, welford_add, welford_merge
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


def _forward_plan(input, weight, bias, n, c, hw, group):
    """The forward of this signature: a function (input, weight, bias, eps) -> (output, mean, rstd), or TO_ATEN."""
    if not _handled(input, weight, bias, n, c, hw, group):
        return TO_ATEN
    dtype = stats_dtype(input, weight, bias, acc_on_cuda=False)
    block_c, block_hw = strip_tile(c // group, hw, inner_contiguous=True)
    x_dtype = input.dtype
    # Absent parameters are passed as the input (never read).
    ready = ReadyLaunch(_group_norm_fwd_kernel, (n * group,), warps(block_c * block_hw),
                        (x_dtype, x_dtype if weight is None else weight.dtype, x_dtype if bias is None else bias.dtype,
                         x_dtype, dtype, dtype), (c, hw, group), BLOCK_C=block_c, BLOCK_HW=block_hw,
                        HAS_W=weight is not None, HAS_B=bias is not None)

    def run(input, weight, bias, eps):
        mean = torch.empty(n, group, dtype=dtype, device=input.device)
        rstd = torch.empty_like(mean)
        y = torch.empty_like(input)
        ready((input, input if weight is None else weight, input if bias is None else bias, y, mean, rstd, c, hw, group,
               float(eps)), caller_aligned(input, weight, bias))
        return y, mean, rstd

    return run


def _backward_plan(grad_out, input, mean, rstd, weight, n, c, hw, group, need_dx, need_dw, need_db):
    """The backward of this signature: a function (grad_out, input, mean, rstd, weight) -> (dx, dweight, dbias),
    or TO_ATEN."""
    if (not _handled(input, weight, None, n, c, hw, group) or grad_out.shape != input.shape
            or grad_out.dtype != input.dtype or mean.numel() != n * group or rstd.numel() != n * group
            or ((need_dw or need_db) and weight is None)):
        return TO_ATEN
    if not (need_dx or need_dw or need_db):
        return no_grads
    planes = int(need_dw) + int(need_db)
    block_c, block_hw = strip_tile(c // group, hw, inner_contiguous=True)
    x_dtype = input.dtype
    dense = grad_out.is_contiguous() and mean.is_contiguous() and rstd.is_contiguous()
    # Absent tensors are passed as the input (never read or written).
    ready = ReadyLaunch(_group_norm_bwd_kernel, (n * group,), warps(block_c * block_hw, per_thread=8),
                        (x_dtype, x_dtype, x_dtype if weight is None else weight.dtype, mean.dtype, rstd.dtype,
                         x_dtype, torch.float32 if planes else x_dtype), (c, hw, group), BLOCK_C=block_c,
                        BLOCK_HW=block_hw, HAS_W=weight is not None, NEED_DX=need_dx, NEED_DW=need_dw,
                        NEED_DB=need_db)

    def run(grad_out, input, mean, rstd, weight):
        if not dense:
            grad_out, mean, rstd = grad_out.contiguous(), mean.contiguous(), rstd.contiguous()
        dx = torch.empty_like(input) if need_dx else None
        part = torch.empty(planes, n, c, dtype=torch.float32, device=input.device) if planes else input
        ready((grad_out, input, input if weight is None else weight, mean, rstd, input if dx is None else dx, part,
               c, hw, group), caller_aligned(grad_out, input, weight, mean, rstd))
        if not planes:
            return dx, None, None
        return (dx, *parameter_grads(part, weight.dtype, need_dw, need_db))

    return run


#: Plans of both ops, by the signatures of their tensors and their sizes and flags.
_forward_plans = Plans(_forward_plan)
_backward_plans = Plans(_backward_plan)


def native_group_norm(input, weight, bias, N, C, HxW, group, eps):
    """ATen's ``native_group_norm``: (output, mean, rstd), statistics (N, group)."""
    key = (signature(input), signature(weight), signature(bias), N, C, HxW, group)
    plan = _forward_plans.get(key) or _forward_plans.add(key, input, weight, bias, N, C, HxW, group)
    if plan is TO_ATEN:
        return aten_kernel("native_group_norm")(input, weight, bias, N, C, HxW, group, eps)
    return plan(input, weight, bias, eps)


def native_group_norm_backward(grad_out, input, mean, rstd, weight, N, C, HxW, group, output_mask):
    """ATen's ``native_group_norm_backward``: (dx, dweight, dbias), None where not asked for."""
    need_dx, need_dw, need_db = output_mask
    key = (signature(grad_out), signature(input), signature(mean), signature(rstd), signature(weight), N, C, HxW,
           group, need_dx, need_dw, need_db)
    plan = (_backward_plans.get(key)
            or _backward_plans.add(key, grad_out, input, mean, rstd, weight, N, C, HxW, group, need_dx, need_dw,
                                   need_db))
    if plan is TO_ATEN:
        return aten_kernel("native_group_norm_backward")(grad_out, input, mean, rstd, weight, N, C, HxW, group,
                                                          output_mask)
    return plan(grad_out, input, mean, rstd, weight)
