"""Reduction pieces shared by the norm kernels: lane-wise Welford statistics, and the deterministic
second stage that sums per-program partial results (weight gradients, per-sample channel sums)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from flag_gems.runtime import device
from gems_norm.heuristics import Plans, ReadyLaunch, cdiv, next_pow2, programs, warps


@triton.jit
def welford_add(count, mean, m2, x, mask):
    """Add ``x`` to each lane's running (count, mean, m2); lanes where ``mask`` is False stay as they are.

    Welford's update keeps the variance exact where a sum of squares would cancel.
    """
    new_count = count + mask.to(tl.float32)
    delta = x - mean
    # A correctly rounded division costs memory-bound loops their speed; the fast one is exact enough here.
    new_mean = mean + tl.where(mask, tl.math.fdiv(delta, tl.maximum(new_count, 1.0), ieee_rounding=False), 0.0)
    new_m2 = m2 + tl.where(mask, delta * (x - new_mean), 0.0)
    return new_count, new_mean, new_m2


@triton.jit
def welford_merge(count, mean, m2, axis: tl.constexpr):
    """Merge the lanes' (count, mean, m2) along ``axis`` (Chan et al.); ``axis`` is kept with size 1."""
    total = tl.sum(count, axis, keep_dims=True)
    merged_mean = tl.sum(count * mean, axis, keep_dims=True) / tl.maximum(total, 1.0)
    dev = mean - merged_mean
    merged_m2 = tl.sum(m2 + count * dev * dev, axis, keep_dims=True)
    return total, merged_mean, merged_m2


@triton.jit
def _sum_partials_kernel(PART, OUT, P, N, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr):
    # Program (column block, plane): sums plane ``program_id(1)`` of a (K, P, N) buffer over P.
    plane = tl.program_id(1).to(tl.int64)
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
    col_ok = cols < N
    acc = tl.zeros([BLOCK_P, BLOCK_N], tl.float32)
    for p0 in range(0, P, BLOCK_P):
        rows = p0 + tl.arange(0, BLOCK_P)[:, None]
        acc += tl.load(PART + (plane * P + rows) * N + cols, mask=(rows < P) & col_ok, other=0.0)
    cols1 = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    tl.store(OUT + plane * N + cols1, tl.sum(acc, 0).to(OUT.dtype.element_ty), mask=cols1 < N)


def _sum_launch(k: int, p: int, n: int, dtype: torch.dtype) -> ReadyLaunch:
    # Column strips of 32 to 256 floats (whole cache lines), narrow enough that even one plane of a few
    # thousand columns gives every SM a program or two: (256, 4096) took 8-13 us in 16 programs, 3 us in 128.
    strip = next_pow2(cdiv(n * k, programs(n * k)))
    block_n = min(next_pow2(n), 16384 if device.interpreter else max(32, min(256, strip)))
    block_p = min(next_pow2(p), max(1, 4096 // block_n))
    return ReadyLaunch(_sum_partials_kernel, (cdiv(n, block_n), k), warps(block_p * block_n),
                       (torch.float32, dtype), (p, n), BLOCK_P=block_p, BLOCK_N=block_n)


#: Ready launches of the partial sums, by (K, P, N, output dtype).
_sum_launches = Plans(_sum_launch)


def sum_partials(partials: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Sums over P of float32 ``partials`` (K, P, N), as (K, N) in ``dtype``: in a fixed order, so results
    repeat exactly."""
    k, p, n = partials.shape
    key = (k, p, n, dtype)
    ready = _sum_launches.get(key) or _sum_launches.add(key, *key)
    out = torch.empty(k, n, dtype=dtype, device=partials.device)
    ready((partials, out, p, n), partials.data_ptr() & 15 == 0)  # ``out`` is fresh
    return out


def parameter_grads(part: torch.Tensor, param_dtype: torch.dtype, need_dw: bool, need_db: bool):
    """(dw, db), None where not asked for, from a backward kernel's float32 partial sums (planes, splits, N):
    one plane each for dw and db, in that order, for those asked for."""
    if not (need_dw or need_db):
        return None, None
    sums = sum_partials(part, param_dtype)
    if need_dw and need_db:
        return sums.unbind()
    return (sums[0], None) if need_dw else (None, sums[0])
