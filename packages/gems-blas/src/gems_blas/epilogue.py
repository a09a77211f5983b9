"""The last pass of split products: sum fp32 partial results in a fixed order, then scale and add the bias.

``finish_launch`` plans the launch that writes out = alpha * sum_s partials[s] + beta * bias over a batch of
(M x N) outputs. It serves split-K matrix products, split matrix-vector products and, with no partials at
all, products with K = 0 or alpha = 0 (out = beta * bias, or zeros).
One program sums whole columns of partials in order, so results do not depend on scheduling (no atomics).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from flag_gems.intmath import cdiv
from flag_gems.launch import Launcher
from flag_gems.runtime import device
from gems_blas.operands import PlannedLaunch


@triton.jit(do_not_specialize=["S", "TOTAL", "MN", "N", "stride_ps", "alpha", "beta"])
def finish_kernel(p_ptr, c_ptr, d_ptr, S, TOTAL, MN, N, stride_ps,
                  stride_cb, stride_cm, stride_cn, stride_db, stride_dm, stride_dn, alpha, beta,
                  BLOCK: tl.constexpr, HAS_BIAS: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < TOTAL
    acc = tl.zeros((BLOCK,), tl.float32)
    p_ptrs = p_ptr + offs
    for _ in range(S):
        acc += tl.load(p_ptrs, mask=mask, other=0.0)
        p_ptrs += stride_ps
    batch = offs // MN
    rest = offs % MN
    m = rest // N
    n = rest % N
    acc = acc * alpha
    if HAS_BIAS:
        bias = tl.load(d_ptr + batch * stride_db + m * stride_dm + n * stride_dn, mask=mask, other=0.0)
        acc += beta * bias.to(tl.float32)
    tl.store(c_ptr + batch * stride_cb + m * stride_cm + n * stride_cn, acc.to(c_ptr.dtype.element_ty), mask=mask)


_launchers: dict[tuple, Launcher] = {}


def finish_launch(out: torch.Tensor, partials: torch.Tensor | None, splits: int, bias: torch.Tensor | None,
                  batch: int, m: int, n: int, out_strides: tuple, bias_strides: tuple | None) -> PlannedLaunch:
    """The launch that writes out[b] = alpha * sum(partials[s, b] for s < splits) + beta * bias[b] for
    b < batch (batch * m * n > 0); it takes (partials, out, bias) — out for a missing one — then alpha, beta.

    ``partials`` holds contiguous fp32 slices (splits, batch, m, n), or is None when ``splits`` is 0;
    ``bias`` may be None (then beta is ignored, so NaN in an unused bias never shows).
    """
    total = batch * m * n
    block = 4096 if device.interpreter else 1024
    has_bias = bias is not None
    key = (block, has_bias)
    launcher = _launchers.get(key)
    if launcher is None:
        launcher = _launchers[key] = Launcher(finish_kernel, {"BLOCK": block, "HAS_BIAS": has_bias}, num_warps=4)
    p = partials if partials is not None else out
    d = bias if has_bias else out
    sd = bias_strides if has_bias else (0, 0, 0)
    return PlannedLaunch(launcher, (cdiv(total, block), 1, 1), (p, out, d),
                         (splits, total, m * n, n, total, *out_strides, *sd))
