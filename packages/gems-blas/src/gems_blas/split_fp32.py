"""Full fp32 products on the bf16 tensor cores: each fp32 operand is split into three bf16 pieces whose sum is
exactly the fp32 value, and the product of the sums is taken term by term.

A value x splits into hi = x rounded toward zero to bf16 (its top 8 significant bits: never an overflow to
inf), mid = x - hi rounded to bf16 and lo = x - hi - mid, which bf16 holds exactly: 3 x 8 bits carry fp32's
24 (for |x| above 2^-110; below, lo falls among bf16's subnormals). Every product of two pieces is exact.
Of the nine piece products, ``terms`` = 6 keeps those down to 2^-16 of |a b| (hi hi, hi mid, mid hi, hi lo,
lo hi, mid mid): what is left out, mid lo + lo mid + lo lo, stays below 2^-22 |a b| and has no bias;
``terms`` = 9 keeps all nine (as NVIDIA's BF16x9 emulation of fp32 does).

The pieces go side by side along K: a' = [a's piece for each term] (M x T.K), b' likewise (T.K x N), so that
one bf16 product a' @ b' of our tiled kernels sums every term, the smallest terms first. The tensor cores'
own fp32 accumulation is less exact than the FMA units' rounding: summed over all of K it left 2-4 times
cuBLAS's error (H100). So the Hopper kernel lets them accumulate ``promote`` K steps at a time and adds each
such partial sum to the accumulator in IEEE fp32: with 4 steps of 64, the products came out 2 to 8 times
closer to the exact result than cuBLAS's fp32 ones, at 1.2-1.8x its speed
(benchmark/results/2026-11-27-h100-6/logs/ab_split_fp32_tiles.txt). Two accumulators need 128x128 tiles
(128x256 ones spill registers).

Splitting reads each operand once and writes it 1.5 times its size (6 terms); the product then does T times
the bf16 work. Below ``SETTINGS``' sizes (and for narrow products, which stream an operand) that costs more
than it saves and the FMA kernel computes the product.

Not exact by construction: a product with an infinite operand, where a zero piece meets an infinite one
(0 * inf is NaN). The output tiles that come out NaN are then computed again on the FMA units from the fp32
operands (the pointer kernel's REPAIR mode in ``mm.py``), right after the split product.
"""

from __future__ import annotations

import dataclasses

import torch
import triton
import triton.language as tl

from flag_gems.intmath import cdiv
from flag_gems.launch import launch
from gems_blas import heuristics
from gems_blas.operands import allow_tf32


@dataclasses.dataclass
class SplitSettings:
    """When fp32 products (tf32 off) take the split path, and how (``terms`` = 0: never). The sizes are
    where the split product won on an H100: 1024^3 broke even, 256 x 4096 x 4096 lost (0.69x cuBLAS)."""

    terms: int = 6
    #: Multiply-adds (batch * M * N * K) from which a product splits, and its smallest output side.
    min_work: int = 1 << 32
    min_side: int = 1024
    #: The most bytes of bf16 pieces a product may allocate (both operands).
    max_bytes: int = 1 << 31
    #: Take the path on any device, not only Hopper (tests on the interpreter).
    everywhere: bool = False
    #: Add each ``promote`` K steps' product to the accumulator in IEEE fp32 (the Hopper kernel; 0: never).
    promote: int = 4
    #: The product's tile (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages); None: the rules'.
    tile: tuple | None = (128, 128, 64, 8, 4)


SETTINGS = SplitSettings()

# Piece pairs (of a, of b) per term count, the smallest products first; 0 = hi, 1 = mid, 2 = lo.
_PAIRS = {
    6: ((2, 0), (0, 2), (1, 1), (1, 0), (0, 1), (0, 0)),
    9: ((2, 2), (1, 2), (2, 1), (2, 0), (0, 2), (1, 1), (1, 0), (0, 1), (0, 0)),
}
_SPLIT_BLOCK = (16, 256)


@triton.jit(do_not_specialize=["block_offset"])
def split_kernel(x_ptr, out_ptr, R, C, stride_xb, stride_xr, stride_ob, stride_or, block_offset,
                 BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, TERMS: tl.constexpr,
                 HI_AT: tl.constexpr, MID_AT: tl.constexpr, LO_AT: tl.constexpr):
    # One (BLOCK_R x BLOCK_C) tile of a matrix whose columns are contiguous; each piece is written to every
    # term that takes it (bit t of HI_AT, MID_AT, LO_AT), term t starting block_offset * t elements in.
    tiles_c = tl.cdiv(C, BLOCK_C)
    pid = tl.program_id(0)
    mat = tl.program_id(1).to(tl.int64)
    rows = (pid // tiles_c) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = (pid % tiles_c) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (rows < R)[:, None] & (cols < C)[None, :]
    rows = rows.to(tl.int64)
    x = tl.load(x_ptr + mat * stride_xb + rows[:, None] * stride_xr + cols[None, :], mask=mask, other=0.0)
    hi = x.to(tl.bfloat16, fp_downcast_rounding="rtz")
    # inf and NaN stay whole in hi (inf - inf would make NaN pieces)
    rest = tl.where(tl.abs(x) < float("inf"), x - hi.to(tl.float32), 0.0)
    mid = rest.to(tl.bfloat16)
    lo = (rest - mid.to(tl.float32)).to(tl.bfloat16)
    base = out_ptr + mat * stride_ob + rows[:, None] * stride_or + cols[None, :]
    for t in tl.static_range(TERMS):
        at = base + t * block_offset.to(tl.int64)
        if (HI_AT >> t) & 1:
            tl.store(at, hi, mask=mask)
        if (MID_AT >> t) & 1:
            tl.store(at, mid, mask=mask)
        if (LO_AT >> t) & 1:
            tl.store(at, lo, mask=mask)


def terms() -> int:
    return SETTINGS.terms


def config() -> heuristics.MatmulConfig | None:
    """The split product's configuration, where the settings fix one (else the rules')."""
    if SETTINGS.tile is None:
        return None
    bm, bn, bk, warps, stages = SETTINGS.tile
    return heuristics.MatmulConfig(bm, bn, bk, 8, warps, stages)


def plan_options() -> tuple:
    """What a split product's plan depends on beyond its bf16 product's key."""
    return (SETTINGS.terms, SETTINGS.promote, SETTINGS.tile)


def applies(a: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor, batch: int, m: int, n: int, k: int,
            sa: tuple, sb: tuple, hopper: bool) -> bool:
    """Whether a product (of neither side 1) takes the split path: fp32 with tf32 off, large enough."""
    s = SETTINGS
    if s.terms == 0 or a.dtype is not torch.float32 or allow_tf32() or not (hopper or s.everywhere):
        return False
    if batch * m * n * k < s.min_work or min(m, n) < s.min_side:
        return False
    # A broadcast batch would be split once per matrix; an in-place bias would be read again by the repair.
    if batch > 1 and (sa[0] == 0 or sb[0] == 0):
        return False
    if bias is not None and bias.untyped_storage().data_ptr() == out.untyped_storage().data_ptr():
        return False
    return 2 * s.terms * k * (m + n) * batch <= s.max_bytes


def _padded(n: int) -> int:
    # bf16 rows of a multiple of 8 elements start 16-byte aligned, as tensor descriptors want.
    return cdiv(n, 8) * 8


class SplitOperand:
    """The pieces of one (batch x outer x K) fp32 operand, side by side along K, in the operand's own order:
    with K contiguous, (outer x T.K) rows; otherwise (T.K x outer) rows. ``strides`` are the pieces'
    (batch, outer, K) strides, ``k_contiguous`` their order; calling it on an operand makes its pieces."""

    __slots__ = ("strides", "k_contiguous", "_shape", "_args", "_grid", "_constexprs")

    def __init__(self, batch: int, outer: int, k: int, strides: tuple, piece_of_term: tuple):
        n_terms = len(piece_of_term)
        s_batch, s_outer, s_k = strides
        self.k_contiguous = s_k == 1 or k == 1
        if self.k_contiguous:
            ld = _padded(n_terms * k)
            rows, cols, s_row, offset = outer, k, s_outer, k
            self._shape = (batch, outer, ld)
            self.strides = (outer * ld, ld, 1)
        else:
            ld = _padded(outer)
            rows, cols, s_row, offset = k, outer, s_k, k * ld
            self._shape = (batch, n_terms * k, ld)
            self.strides = (n_terms * k * ld, 1, ld)
        masks = [sum(1 << t for t, p in enumerate(piece_of_term) if p == piece) for piece in range(3)]
        self._args = (rows, cols, s_batch, s_row, self._shape[1] * self._shape[2], self._shape[2], offset)
        br, bc = _SPLIT_BLOCK
        self._grid = (cdiv(rows, br) * cdiv(cols, bc), batch, 1)
        self._constexprs = dict(BLOCK_R=br, BLOCK_C=bc, TERMS=n_terms, HI_AT=masks[0], MID_AT=masks[1],
                                LO_AT=masks[2])

    def stand_in(self, t: torch.Tensor) -> torch.Tensor:
        """An empty tensor of the pieces' dtype, for specialising the product's launch."""
        return t.new_empty(0, dtype=torch.bfloat16)

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        pieces = torch.empty(self._shape, dtype=torch.bfloat16, device=t.device)
        launch(split_kernel, self._grid, t, pieces, *self._args, num_warps=4, **self._constexprs)
        return pieces


def split_operands(batch: int, m: int, n: int, k: int, sa: tuple, sb: tuple) -> tuple[SplitOperand, SplitOperand]:
    """The splits of a (batch x m x k) operand with strides ``sa`` and a (batch x k x n) one with ``sb``."""
    pairs = _PAIRS[SETTINGS.terms]
    split_a = SplitOperand(batch, m, k, sa, tuple(p for p, _ in pairs))
    split_b = SplitOperand(batch, n, k, (sb[0], sb[2], sb[1]), tuple(q for _, q in pairs))
    return split_a, split_b
