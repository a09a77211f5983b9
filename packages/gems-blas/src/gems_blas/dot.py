"""Dot products: dot and vdot (the same for real vectors), as a deterministic two-pass reduction.

Each program of the first pass sums a fixed chunk of x * y in fp32; the second pass sums the programs'
partials in one program. The split depends only on the length and the device, so a result never changes
from run to run (no atomics).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from flag_gems import aten_kernel
from flag_gems.intmath import cdiv, next_power_of_2
from flag_gems.launch import Launcher
from flag_gems.runtime import device
from gems_blas import heuristics
from gems_blas.operands import FLOATS, finish_out, prepare_out, spec_key


@triton.jit(do_not_specialize=["CHUNK_BLOCKS"])
def dot_partials_kernel(x_ptr, y_ptr, out_ptr, n, CHUNK_BLOCKS, stride_x, stride_y, BLOCK: tl.constexpr):
    # Each program sums CHUNK_BLOCKS consecutive blocks; counting in blocks keeps loads aligned.
    start = tl.program_id(0).to(tl.int64) * CHUNK_BLOCKS * BLOCK
    acc = tl.zeros((BLOCK,), tl.float32)
    for i in range(CHUNK_BLOCKS):
        idx = start + i * BLOCK + tl.arange(0, BLOCK)
        mask = idx < n
        x = tl.load(x_ptr + idx * stride_x, mask=mask, other=0.0)
        y = tl.load(y_ptr + idx * stride_y, mask=mask, other=0.0)
        acc += x.to(tl.float32) * y.to(tl.float32)
    tl.store(out_ptr + tl.program_id(0), tl.sum(acc).to(out_ptr.dtype.element_ty))


@triton.jit(do_not_specialize=["P"])
def sum_partials_kernel(p_ptr, out_ptr, P, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    partials = tl.load(p_ptr + offs, mask=offs < P, other=0.0)
    tl.store(out_ptr, tl.sum(partials).to(out_ptr.dtype.element_ty))


_launchers: dict[tuple, Launcher] = {}


def _launcher(kernel, block: int) -> Launcher:
    launcher = _launchers.get((kernel, block))
    if launcher is None:
        launcher = _launchers[(kernel, block)] = Launcher(kernel, {"BLOCK": block}, num_warps=4)
    return launcher


def dot_into(out: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """out (0-d) = sum(x * y) for 1-D ``x`` and ``y`` of the same length, accumulated in fp32."""
    n = x.shape[0]
    block, programs = heuristics.dot_config(n, heuristics.device_facts(x.get_device()))
    chunk_blocks = cdiv(cdiv(max(n, 1), programs), block)
    programs = max(1, cdiv(n, chunk_blocks * block))
    target = out if programs == 1 else torch.empty((programs,), dtype=torch.float32, device=out.device)
    args = [x, y, target, n, chunk_blocks, x.stride(0), y.stride(0)]
    spec = None if device.interpreter else spec_key((x.dtype, target.dtype), (x, y, target), args[3:])
    _launcher(dot_partials_kernel, block)((programs, 1, 1), args, spec)
    if programs > 1:
        block_p = next_power_of_2(programs)
        spec = None if device.interpreter else spec_key((out.dtype,), (target, out), (programs,))
        _launcher(sum_partials_kernel, block_p)((1, 1, 1), [target, out, programs], spec)
    return out


def _takes(x: torch.Tensor, y: torch.Tensor) -> bool:
    return (x.dtype in FLOATS and y.dtype is x.dtype and x.dim() == 1 and y.dim() == 1
            and x.shape[0] == y.shape[0] and y.device == x.device)


def dot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """aten::dot"""
    if not _takes(x, y):
        return aten_kernel("dot")(x, y)
    return dot_into(torch.empty((), dtype=x.dtype, device=x.device), x, y)


def dot_out(x: torch.Tensor, y: torch.Tensor, *, out: torch.Tensor) -> torch.Tensor:
    """aten::dot.out"""
    target = prepare_out(out, (), x.dtype, (x, y)) if _takes(x, y) else None
    if target is None:
        return aten_kernel("dot.out")(x, y, out=out)
    return finish_out(out, dot_into(target, x, y))


def vdot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """aten::vdot (conjugating x changes nothing for real vectors; complex ones go to ATen)"""
    if not _takes(x, y):
        return aten_kernel("vdot")(x, y)
    return dot_into(torch.empty((), dtype=x.dtype, device=x.device), x, y)


def vdot_out(x: torch.Tensor, y: torch.Tensor, *, out: torch.Tensor) -> torch.Tensor:
    """aten::vdot.out"""
    target = prepare_out(out, (), x.dtype, (x, y)) if _takes(x, y) else None
    if target is None:
        return aten_kernel("vdot.out")(x, y, out=out)
    return finish_out(out, dot_into(target, x, y))
