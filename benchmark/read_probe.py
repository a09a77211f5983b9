"""A minimal read-only kernel: what reading HBM alone reaches at a given size, the ceiling of a reduction."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 8192  # 16 KiB of bf16 a program: the row of a (8192, 8192) reduction


@triton.jit
def _sum_blocks(x_ptr, out_ptr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    values = tl.load(x_ptr + pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK))
    tl.store(out_ptr + pid, tl.sum(values.to(tl.float32)))


def read_everything(x: torch.Tensor) -> torch.Tensor:
    """One float per 8192 elements of the contiguous ``x`` (whose size they divide): x read once."""
    out = torch.empty(x.numel() // BLOCK, device=x.device, dtype=torch.float32)
    _sum_blocks[(out.numel(),)](x, out, BLOCK, num_warps=8)
    return out
