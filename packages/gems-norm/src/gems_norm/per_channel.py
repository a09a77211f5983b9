"""Per-channel reductions and per-channel affine maps over a tensor seen as (NB, C, K) with strides,
shared by batch norm, instance norm and weight norm.

A dense tensor in any memory format has such a view without a copy: (N, C, H*W) for contiguous
NCHW (K contiguous), (1, C, N*H*W) for channels-last and 2-d inputs (C contiguous). Tiles span
(channels, K); Triton's specialisation of a stride equal to 1 lets the loads coalesce along whichever
axis is contiguous.

``channel_sums`` reduces each channel over NB*K elements: Welford statistics of ``a``, or the sums
of ``a`` and of ``a * (b - mu[c])``. Programs cover (channel block, split of the NB*K range); each writes
one partial per channel, and the caller merges the few partials per channel in its own small kernel.
``channel_affine`` writes ``(x - mu[c]) * p[c] + q[c] (+ dy * r[c])`` from a float32 table of rows
(mu, p, q[, r]).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from gems_norm.heuristics import KNOBS, Plans, ReadyLaunch, cdiv, programs, strip_tile, warps
from gems_norm.reductions import welford_add, welford_merge


class ChannelView(NamedTuple):
    """(NB, C, K) sizes and element strides of a tensor for the per-channel kernels."""

    nb: int
    c: int
    k: int
    s_n: int
    s_c: int
    s_k: int


def channel_view(x: torch.Tensor) -> ChannelView | None:
    """The (NB, C, K) view of dense ``x`` (N, C, *), channel dim 1; None when no view exists without a copy."""
    n, c = x.shape[0], x.shape[1]
    k = x.numel() // max(n * c, 1)
    if x.is_contiguous():
        if k == 1:
            return ChannelView(1, c, n, 0, 1, c)
        return ChannelView(n, c, k, c * k, k, 1)
    if x.dim() in (4, 5) and x.is_contiguous(memory_format=torch.channels_last if x.dim() == 4
                                             else torch.channels_last_3d):
        return ChannelView(1, c, n * k, 0, 1, c)
    return None


@triton.jit
def _channel_sums_kernel(A, B, MU, OUT, NB, C, K, s_n, s_c, s_k, iters_per_split,
                         BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr, WELFORD: tl.constexpr,
                         HAS_MU: tl.constexpr, STAGES: tl.constexpr, INTERLEAVED: tl.constexpr,
                         SHIFTED: tl.constexpr):
    c_blocks = tl.cdiv(C, BLOCK_C)
    c_block = tl.program_id(0) % c_blocks
    split = tl.program_id(0) // c_blocks
    k_blocks = tl.cdiv(K, BLOCK_K)
    channels = c_block * BLOCK_C + tl.arange(0, BLOCK_C)[:, None]
    c_ok = channels < C
    c_off = channels.to(tl.int64) * s_c
    k_idx = tl.arange(0, BLOCK_K)[None, :]
    acc0 = tl.zeros([BLOCK_C, BLOCK_K], tl.float32)
    acc1 = tl.zeros([BLOCK_C, BLOCK_K], tl.float32)
    acc2 = tl.zeros([BLOCK_C, BLOCK_K], tl.float32)
    if HAS_MU:
        mu = tl.load(MU + channels, mask=c_ok, other=0.0).to(tl.float32)
    if WELFORD and SHIFTED:
        # The channel's first element: near its mean, so the sum of squares about it does not cancel.
        pivot = tl.load(A + c_off, mask=c_ok, other=0.0).to(tl.float32)
    if INTERLEAVED:
        # Split s takes steps s, s + S, ...: the splits sweep the tensor together, ending at its end.
        first = split
        last = NB * k_blocks
        step = tl.num_programs(0) // c_blocks
    else:
        first = split * iters_per_split
        last = tl.minimum(first + iters_per_split, NB * k_blocks)
        step = 1
    for it in tl.range(first, last, step, num_stages=STAGES):
        ks = (it % k_blocks) * BLOCK_K + k_idx
        mask = c_ok & (ks < K)
        offs = (it // k_blocks).to(tl.int64) * s_n + c_off + ks.to(tl.int64) * s_k
        a = tl.load(A + offs, mask=mask, other=0.0).to(tl.float32)
        if WELFORD and SHIFTED:
            d = tl.where(mask, a - pivot, 0.0)
            acc0 += mask.to(tl.float32)
            acc1 += d
            acc2 += d * d
        elif WELFORD:
            acc0, acc1, acc2 = welford_add(acc0, acc1, acc2, a, mask)
        else:
            b = tl.load(B + offs, mask=mask, other=0.0).to(tl.float32)
            if HAS_MU:
                b = tl.where(mask, b - mu, 0.0)
            acc0 += a
            acc1 += a * b
    # OUT is (planes, splits, C): one plane per partial result.
    plane = tl.num_programs(0) // c_blocks * C
    out = OUT + split.to(tl.int64) * C + c_block * BLOCK_C + tl.arange(0, BLOCK_C)
    out_ok = c_block * BLOCK_C + tl.arange(0, BLOCK_C) < C
    if WELFORD and SHIFTED:
        count = tl.sum(acc0, 1)
        shift = tl.sum(acc1, 1) / tl.maximum(count, 1.0)
        tl.store(out, count, mask=out_ok)
        tl.store(out + plane, tl.sum(pivot, 1) + shift, mask=out_ok)
        tl.store(out + 2 * plane, tl.maximum(tl.sum(acc2, 1) - tl.sum(acc1, 1) * shift, 0.0), mask=out_ok)
    elif WELFORD:
        count, mean, m2 = welford_merge(acc0, acc1, acc2, 1)
        tl.store(out, tl.sum(count, 1), mask=out_ok)
        tl.store(out + plane, tl.sum(mean, 1), mask=out_ok)
        tl.store(out + 2 * plane, tl.sum(m2, 1), mask=out_ok)
    else:
        tl.store(out, tl.sum(acc0, 1), mask=out_ok)
        tl.store(out + plane, tl.sum(acc1, 1), mask=out_ok)


@triton.jit
def _channel_affine_kernel(X, DY, COEF, OUT, NB, C, K, s_n, s_c, s_k,
                           BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr, HAS_DY: tl.constexpr,
                           REVERSED: tl.constexpr):
    c_blocks = tl.cdiv(C, BLOCK_C)
    k_blocks = tl.cdiv(K, BLOCK_K)
    pid = tl.program_id(0)
    if REVERSED:  # from the end, which the sums before read last
        pid = tl.num_programs(0) - 1 - pid
    c_block = pid % c_blocks
    rest = pid // c_blocks
    channels = c_block * BLOCK_C + tl.arange(0, BLOCK_C)[:, None]
    c_ok = channels < C
    ks = (rest % k_blocks) * BLOCK_K + tl.arange(0, BLOCK_K)[None, :]
    mask = c_ok & (ks < K)
    offs = (rest // k_blocks).to(tl.int64) * s_n + channels.to(tl.int64) * s_c + ks.to(tl.int64) * s_k
    mu = tl.load(COEF + channels, mask=c_ok, other=0.0)
    p = tl.load(COEF + C + channels, mask=c_ok, other=0.0)
    q = tl.load(COEF + 2 * C + channels, mask=c_ok, other=0.0)
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    out = (x - mu) * p + q
    if HAS_DY:
        r = tl.load(COEF + 3 * C + channels, mask=c_ok, other=0.0)
        out += tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32) * r
    tl.store(OUT + offs, out.to(OUT.dtype.element_ty), mask=mask)


def channel_tile(view: ChannelView) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_K) of the per-channel elementwise kernels' tiles over ``view``."""
    return strip_tile(view.c, view.k, view.s_k == 1, KNOBS.apply_tile)


def _sums_launch(view: ChannelView, dtypes: tuple, welford: bool, has_mu: bool) -> tuple[ReadyLaunch, int, int]:
    block_c, block_k = strip_tile(view.c, view.k, view.s_k == 1, KNOBS.sums_tile)
    c_blocks = cdiv(view.c, block_c)
    iters = view.nb * cdiv(view.k, block_k)
    splits = max(1, min(iters, programs(c_blocks * iters, KNOBS.sums_programs_per_sm) // c_blocks))
    per_split = cdiv(iters, splits)
    splits = cdiv(iters, per_split)
    ready = ReadyLaunch(_channel_sums_kernel, (c_blocks * splits,), warps(block_c * block_k), dtypes,
                        (*view, per_split), BLOCK_C=block_c, BLOCK_K=block_k, WELFORD=welford, HAS_MU=has_mu,
                        STAGES=KNOBS.sums_stages, INTERLEAVED=KNOBS.sums_interleaved, SHIFTED=KNOBS.sums_shifted)
    return ready, splits, per_split


#: Ready launches of the two kernels, by (view, dtypes, options): a model repeats a few shapes every step.
_sums_launches = Plans(_sums_launch)


def channel_sums_launch(view: ChannelView, dtypes: tuple, welford: bool, has_mu: bool) -> tuple[ReadyLaunch, int, int]:
    """(ready launch, splits S, iterations per split) of ``channel_sums`` for tensors (a, b, mu, out) of
    ``dtypes``: its arguments are (a, b, mu, out (planes, S, C), *view, iterations per split)."""
    key = (view, dtypes, welford, has_mu)
    return _sums_launches.get(key) or _sums_launches.add(key, *key)


def channel_sums(view: ChannelView, a: torch.Tensor, b: torch.Tensor | None = None,
                 mu: torch.Tensor | None = None, welford: bool = False) -> torch.Tensor:
    """Per-split, per-channel float32 partials, as planes of one (3 or 2, S, C) tensor: (count, mean, m2)
    of ``a`` with ``welford``, else (sum of ``a``, sum of ``a * (b - mu)``)."""
    b = a if b is None else b
    has_mu = mu is not None
    mu = mu if has_mu else a
    ready, splits, per_split = channel_sums_launch(view, (a.dtype, b.dtype, mu.dtype, torch.float32), welford, has_mu)
    out = torch.empty(3 if welford else 2, splits, view.c, dtype=torch.float32, device=a.device)
    ready((a, b, mu, out, *view, per_split))
    return out


def _affine_launch(view: ChannelView, dtypes: tuple, has_dy: bool) -> ReadyLaunch:
    block_c, block_k = channel_tile(view)
    grid = (cdiv(view.c, block_c) * cdiv(view.k, block_k) * view.nb,)
    return ReadyLaunch(_channel_affine_kernel, grid, warps(block_c * block_k), dtypes, tuple(view),
                       BLOCK_C=block_c, BLOCK_K=block_k, HAS_DY=has_dy, REVERSED=KNOBS.apply_reversed)


_affine_launches = Plans(_affine_launch)


def channel_affine_launch(view: ChannelView, dtypes: tuple, has_dy: bool) -> ReadyLaunch:
    """The ready launch of ``channel_affine`` for tensors (x, dy, coef, out) of ``dtypes``: its arguments are
    (x, dy, coef, out, *view)."""
    key = (view, dtypes, has_dy)
    return _affine_launches.get(key) or _affine_launches.add(key, *key)


def channel_affine(view: ChannelView, x: torch.Tensor, coef: torch.Tensor, out: torch.Tensor,
                   dy: torch.Tensor | None = None) -> torch.Tensor:
    """``out = (x - mu[c]) * p[c] + q[c] (+ dy * r[c])`` with ``coef`` rows (mu, p, q, r); returns ``out``."""
    has_dy = dy is not None
    dy = dy if has_dy else x
    channel_affine_launch(view, (x.dtype, dy.dtype, coef.dtype, out.dtype), has_dy)((x, dy, coef, out, *view))
    return out
