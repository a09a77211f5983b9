"""A focused A/B sweep of the BLAS products that trail cuBLAS on an H100: for each case, cuBLAS (through ATen),
the op through flag_gems as it stands, and a short list of candidate configurations, each checked against ATen.

    python packages/gems-blas/tuning/ab_blas.py                   # time, print the table and the winners
    python packages/gems-blas/tuning/ab_blas.py --write           # ... and write the winners into mm_table.json
    python packages/gems-blas/tuning/ab_blas.py --only mv,bmm     # cases whose name starts with these
    python packages/gems-blas/tuning/ab_blas.py --smoke           # tiny shapes (runs through the interpreter)

``--table PATH`` writes the table elsewhere (starting from the package's when PATH does not exist yet),
``--json PATH`` saves every measurement, ``--warp-specialize`` adds Triton's warp-specialised candidates
(left out by default: on an H100 the sweep with them stopped answering after its first case).

Products: each candidate is a ``MatmulConfig`` timed on the kernel the op would run, operand copies included
(the 1000x3000x777 product copies A into aligned rows at each call). Cases that share a shape-table entry
(addmm, nn.Linear and plain mm of one shape) form a group, and a group's winner is the configuration with
the best geometric-mean speed over its cases; the plain mm cases are there only to keep that entry honest.
Matrix-vector products: each candidate is a ``GemvRule``; the winner is the rule with the best geometric
mean over the bf16 cases, written to the table's "gemv" entry.
Rows marked "info" (3xTF32 for fp32) are experiments that change numerics: printed, never written.
Candidates marked ``fuse_tiles`` run the Hopper kernel with its tile and K loops fused into one pipeline; a
winning one is written with the option, and ``heuristics.matmul_config`` serves it for that table entry;
so are those marked ``split_epilogue`` (each output tile scaled and stored in two halves along N), ``tile_bias``
(a bias vector loaded once per tile and added before the halves are stored) and ``prefetch_bias`` (the bias
vector loaded when the tile starts). A guard may stand for another shape that the same table entry serves
(the 8192^3 entry serves the 8192x14336x4096 and 8192x4096x14336 products).

All candidates compile in parallel threads before anything is timed; the timing stops at ``--budget``
seconds (default 170) and skips what is left, saying so. Speeds are cuBLAS time / ours (higher is better);
matrix-vector rows also give the fraction of the copy ceiling measured in the same process.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# isort: split
# Without a GPU flag_gems switches Triton's interpreter on, which must come before Triton decorates any
# kernel (its own library's included): flag_gems is imported before triton.
import flag_gems

# isort: split
import torch
import torch.nn.functional as F
import triton

import gems_blas.plugin
from flag_gems import plugins
from flag_gems.launch import Launcher
from flag_gems.runtime import device
from gems_blas import heuristics, mm, mv
from gems_blas.heuristics import GemvRule, MatmulConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tune_mm  # noqa: E402  (the table's writer and the results' naming)

BF16, FP32 = torch.bfloat16, torch.float32
# Relative error (Frobenius norm) against ATen's result that a correct candidate stays under.
_TOLERANCE = {BF16: 1e-2, FP32: 1e-5}


def config(text: str) -> MatmulConfig:
    """``MatmulConfig`` from its label: "128x256x64 w8 s3", then "splitN", "gN" and option names."""
    words = text.split()
    bm, bn, bk = (int(v) for v in words[0].split("x"))
    values = {"num_warps": 4, "num_stages": 3, "split_k": 1, "group_m": 8}
    options = {}
    for word in words[1:]:
        if word.startswith("split") and word[5:].isdigit():
            values["split_k"] = int(word[5:])
        elif word[0] in "wsg" and word[1:].isdigit():
            values[{"w": "num_warps", "s": "num_stages", "g": "group_m"}[word[0]]] = int(word[1:])
        else:
            options[word] = True
    return MatmulConfig(bm, bn, bk, **values, **options)


# -- cases ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class ProductCase:
    """A matrix product: ``op`` is mm, addmm (bias along N), linear (nn.Linear: B = w.T, bias) or bmm."""

    name: str
    op: str
    shape: tuple[int, int, int, int]  # batch, M, N, K
    dtype: torch.dtype
    candidates: list[MatmulConfig]
    guard: bool = False  # timed only for its shape-table entry, which other ops of this shape share
    tf32x3: bool = False  # add the 3xTF32 experiment (fp32 only)
    entry: tuple[int, int, int, int] | None = None  # the table shape serving this case, when not its own

    @property
    def pclass(self) -> str:
        return heuristics.precision_class(self.dtype, False)

    @property
    def table_key(self) -> tuple:
        return (self.pclass, *(self.entry or self.shape))


@dataclasses.dataclass
class GemvCase:
    """y = A @ x (+ bias: addmv) with A (M x K) row-major; with ``columns``, A column-major: the product
    x @ W of a row vector and a row-major (K x M) W, as ATen's mm computes it."""

    name: str
    m: int
    k: int
    dtype: torch.dtype
    bias: bool = False
    columns: bool = False


def _configs(*labels: str) -> list[MatmulConfig]:
    return [config(label) for label in labels]


# Each list ends with "fuse_tiles" candidates: the descriptor kernel's tile loop fused with its K loop into one
# pipeline, so that the next tile's operands load while this tile's epilogue stores (see MatmulConfig).
# Big bf16 products: the table's tiles with fewer stages, descriptor stores, 2 programs per SM (128x128 with
# 8 warps), and Triton's warp specialisation (4 warps a consumer group).
_BIG = _configs("128x256x64 w8 s4", "128x256x64 w8 s3", "128x256x64 w8 s3 tma_store", "256x128x64 w8 s3",
                "128x128x64 w8 s3", "128x256x64 w4 s3 warp_specialize", "128x256x64 w4 s4 warp_specialize",
                "128x128x64 w4 s4 warp_specialize", "128x256x64 w8 s4 fuse_tiles", "128x256x64 w8 s3 fuse_tiles",
                "128x256x64 w8 s3 tma_store fuse_tiles", "256x128x64 w8 s3 fuse_tiles",
                "128x128x64 w8 s3 fuse_tiles")
# 4096^3 (addmm and its plain-mm guard): 512 tiles of 128x256 are 3.9 waves of one program a SM whatever the
# grid, so the knobs left are the tile order (GROUP_M 4 or 16 row tiles per band of B), the pipeline depth
# with fused loops, and the epilogue: "split_epilogue" scales and stores each 128x256 tile as two 128x128
# halves (half the descriptor staging, so descriptor stores keep 4 stages). Compiled for sm_90 with the bias,
# 256x128 tiles with fused loops spill (1 KB with 4 stages), so they get no more candidates here.
_SQUARE = _BIG + _configs("128x256x64 w8 s3 g4 fuse_tiles", "128x256x64 w8 s3 g16 fuse_tiles",
                          "128x256x64 w8 s4 g4 fuse_tiles", "128x256x64 w8 s4 g16 fuse_tiles",
                          "128x256x64 w8 s4 g16", "128x256x64 w8 s4 split_epilogue",
                          "128x256x64 w8 s3 fuse_tiles split_epilogue", "128x256x64 w8 s4 fuse_tiles split_epilogue",
                          "128x256x64 w8 s3 tma_store split_epilogue",
                          "128x256x64 w8 s4 tma_store fuse_tiles split_epilogue",
                          "128x256x64 w8 s3 g16 fuse_tiles split_epilogue")
# Two 128x128 programs of 8 warps resident on each SM, so that one's epilogue runs while the other's products
# do. Compiled for sm_90, each of these fits twice in an SM's shared memory (at most 112 KB with the fused
# loops' epilogue scratch) and registers (at most 108 a thread); "128x128x64 w8 s3 fuse_tiles" does not (128 KB:
# the epilogue's layout change needs 32 KB beside the live pipeline), so half of its 2 programs an SM wait
# for the other half to finish: likely why it ran at 0.63-0.70x cuBLAS.
_TWO_A_SM = _configs("128x128x64 w8 s3 fuse_tiles split_epilogue", "128x128x64 w8 s2 fuse_tiles",
                     "128x128x64 w8 s2 fuse_tiles split_epilogue", "128x128x32 w8 s5 fuse_tiles split_epilogue")
# The bias vector's load (addmm's, nn.Linear's): compiled for sm_90 with 128x256 tiles, fused loops and the
# split epilogue, the table's 4096^3 choice loads it per half as 16 four-byte loads a thread, the second
# half's only after the first half is stored (205 registers against mm's 166); "tile_bias" loads it once a
# tile as one vector (198), "prefetch_bias" when the tile starts, its latency under the K loop (239 registers
# with that choice's loops, 186 with 4 stages unfused; fused with 4 stages and the split epilogue it spills
# 192 bytes, so that one is left out).
_SQUARE_BIAS = _configs("128x256x64 w8 s3 fuse_tiles split_epilogue tile_bias",
                        "128x256x64 w8 s3 fuse_tiles split_epilogue prefetch_bias",
                        "128x256x64 w8 s4 fuse_tiles split_epilogue tile_bias",
                        "128x256x64 w8 s3 g16 fuse_tiles split_epilogue tile_bias",
                        "128x256x64 w8 s3 g16 fuse_tiles prefetch_bias", "128x256x64 w8 s3 fuse_tiles prefetch_bias",
                        "128x256x64 w8 s4 prefetch_bias", "128x256x64 w8 s4 split_epilogue tile_bias",
                        "128x256x64 w8 s3 tma_store split_epilogue tile_bias",
                        "128x256x64 w8 s4 tma_store fuse_tiles split_epilogue tile_bias")
# With a bias, two 128x128 programs an SM still fit with the bias loaded per half (112-114 registers), not with
# it prefetched (154: one program an SM), so only the first two of those candidates join the 4096^3 group.
_SQUARE_ADDMM = _SQUARE + _SQUARE_BIAS + _TWO_A_SM[:2]
# The same bias options at 8192x14336x4096 (addmm and nn.Linear at 0.90x cuBLAS, its mm at 0.97x).
_BIG_BIAS = _configs("128x256x64 w8 s3 fuse_tiles split_epilogue tile_bias", "128x256x64 w8 s4 prefetch_bias",
                     "128x256x64 w8 s3 fuse_tiles prefetch_bias", "128x256x64 w8 s4 split_epilogue tile_bias")
# 8192^3 (its entry also serves 8192x14336x4096 and 8192x4096x14336, timed as guards): 2048 tiles of 128x256
# are 15.5 waves, so the tile loop's fill and drain weigh less than at 4096^3 and the epilogue and the tile
# order (how much of A and B the concurrent tiles share in L2) more. The table's choice is the first.
_SQUARE_8K = _configs("128x256x64 w8 s3", "128x256x64 w8 s4", "128x256x64 w8 s3 fuse_tiles",
                      "128x256x64 w8 s4 fuse_tiles", "128x256x64 w8 s3 fuse_tiles split_epilogue",
                      "128x256x64 w8 s4 fuse_tiles split_epilogue", "128x256x64 w8 s4 split_epilogue",
                      "128x256x64 w8 s3 tma_store split_epilogue", "128x256x64 w8 s4 tma_store split_epilogue",
                      "128x256x64 w8 s4 tma_store fuse_tiles split_epilogue",
                      "128x256x64 w8 s3 g16 fuse_tiles split_epilogue", "128x256x64 w8 s4 g16 fuse_tiles",
                      "128x256x64 w8 s4 g16 split_epilogue", "128x256x64 w8 s3 g4 fuse_tiles split_epilogue",
                      "256x128x64 w8 s4 fuse_tiles") + _TWO_A_SM[:2]
# 32 products of 1024^3: 16 K steps a tile, so each tile's pipeline fill and epilogue weigh four times what they
# do at 4096^3 unless the tile loop is fused.
_BMM = _configs("128x256x64 w8 s4", "128x256x64 w8 s3", "128x256x64 w8 s3 tma_store", "256x128x64 w8 s4",
                "128x128x64 w8 s3", "128x128x64 w8 s3 tma_store", "128x128x64 w4 s3",
                "128x256x64 w4 s3 warp_specialize", "128x256x64 w4 s4 warp_specialize",
                "128x128x64 w4 s4 warp_specialize", "128x256x64 w8 s4 fuse_tiles", "128x256x64 w8 s3 fuse_tiles",
                "128x256x64 w8 s3 tma_store fuse_tiles", "256x128x64 w8 s3 fuse_tiles",
                "128x128x64 w8 s3 fuse_tiles", "128x128x64 w8 s4 fuse_tiles", "128x128x64 w4 s3 fuse_tiles",
                # A matrix is 8 row tiles by 4 (128x256): GROUP_M 8 already walks it whole, 4 and 2 walk it in
                # bands; then the split epilogue and 4-warp 128x128 tiles with deeper pipelines.
                "128x256x64 w8 s4 g4 fuse_tiles", "128x256x64 w8 s4 g2 fuse_tiles",
                "128x256x64 w8 s4 fuse_tiles split_epilogue", "128x256x64 w8 s3 fuse_tiles split_epilogue",
                "128x256x64 w8 s4 tma_store fuse_tiles split_epilogue", "128x256x64 w8 s4 split_epilogue",
                "256x128x64 w8 s4 fuse_tiles", "128x128x64 w4 s4 fuse_tiles", "128x128x64 w4 s5 fuse_tiles",
                # Around the best so far (s4 fused, split epilogue: 0.94x): descriptor stores, row-major tile
                # order, the split along N of 256x128 tiles, and half-depth K steps with twice the stages
                # (the same bytes in flight, a shorter wait for the first step of each tile).
                "128x256x64 w8 s4 g1 fuse_tiles split_epilogue", "128x256x64 w8 s4 g16 fuse_tiles split_epilogue",
                "256x128x64 w8 s4 fuse_tiles split_epilogue", "128x256x32 w8 s6 fuse_tiles",
                "128x256x32 w8 s8 fuse_tiles split_epilogue",
                "128x256x32 w8 s6 tma_store fuse_tiles split_epilogue") + _TWO_A_SM
# K = 128: the output dominates the bytes (34 of 50 MB); stores and programs in flight matter most, and with
# two K steps a tile only a fused loop keeps operand loads going during the stores.
_BMM_SHORT_K = _configs("128x128x64 w4 s3", "128x128x64 w4 s3 tma_store", "128x128x64 w8 s3",
                        "128x128x64 w8 s3 tma_store", "128x128x128 w8 s2", "128x256x64 w8 s3",
                        "128x256x64 w8 s3 tma_store", "64x128x128 w4 s2", "256x128x64 w8 s3",
                        "128x128x64 w4 s3 warp_specialize", "128x256x64 w4 s3 warp_specialize",
                        "128x128x64 w4 s3 fuse_tiles", "128x128x64 w4 s3 tma_store fuse_tiles",
                        "128x128x64 w8 s3 fuse_tiles", "128x128x64 w8 s3 tma_store fuse_tiles",
                        "128x128x64 w8 s4 fuse_tiles", "128x256x64 w8 s3 fuse_tiles",
                        "128x256x64 w8 s3 tma_store fuse_tiles", "64x128x64 w4 s4 fuse_tiles")
# N = 3000 is not a multiple of 16: every candidate stores through a descriptor, whose staging buffer leaves
# 128x256 tiles 3 stages at most.
_ODD = _configs("128x256x64 w8 s3", "256x128x64 w8 s3", "128x128x64 w8 s3", "128x128x64 w8 s2",
                "128x128x64 w4 s3", "128x128x64 w4 s2", "64x256x64 w4 s3", "64x128x64 w4 s4",
                "128x256x64 w4 s3 warp_specialize", "128x128x64 w4 s4 warp_specialize",
                "128x256x64 w8 s3 fuse_tiles", "128x128x64 w8 s3 fuse_tiles")
# Full fp32 runs on the FMA units: 8x8 accumulators a thread; the pointer kernel loads operand tiles into
# the shared layout the FMA loop reads, where descriptor loads need a second copy.
_F32 = _configs("128x128x32 w8 s5", "128x128x32 w8 s3", "128x128x16 w8 s4", "128x128x32 w8 s3 pointer_kernel",
                "128x128x32 w8 s4 pointer_kernel", "128x128x16 w8 s4 pointer_kernel",
                "128x128x16 w8 s5 pointer_kernel", "64x128x32 w4 s4 pointer_kernel",
                "128x64x32 w4 s4 pointer_kernel", "128x128x32 w8 s3 g16 pointer_kernel",
                "128x128x32 w8 s5 fuse_tiles", "128x128x32 w8 s3 fuse_tiles",
                # Compiled for sm_90, every one of these runs its fp32 dot as FFMA fed by 128-bit shared loads
                # without spills (128x128x32 w8: 170 registers, 2048 FFMA to 160 LDS.128 a K step): 8x8
                # accumulators a thread with 4 or 8 warps, 4x8 with 16 warps (96 registers). 16 warps on
                # 256-wide tiles and 4 warps on 128x128 tiles spill; they are left out.
                "128x128x32 w8 s4", "128x128x16 w8 s3", "128x128x16 w8 s6", "128x128x64 w8 s3",
                "128x64x32 w4 s4", "64x128x32 w4 s4", "128x64x32 w4 s6", "256x64x32 w8 s4", "64x256x32 w8 s4",
                "128x128x32 w16 s4", "128x128x32 w8 s5 g4", "128x128x32 w8 s5 g16", "128x128x32 w8 s4 fuse_tiles",
                "128x64x32 w4 s4 fuse_tiles")

PRODUCTS = [
    ProductCase("mm-odd bf16 1000x3000x777", "mm", (1, 1000, 3000, 777), BF16, _ODD),
    ProductCase("bmm bf16 32x1024x1024x1024", "bmm", (32, 1024, 1024, 1024), BF16, _BMM),
    ProductCase("bmm bf16 64x512x512x128", "bmm", (64, 512, 512, 128), BF16, _BMM_SHORT_K),
    ProductCase("addmm bf16 4096^3", "addmm", (1, 4096, 4096, 4096), BF16, _SQUARE_ADDMM),
    ProductCase("mm-guard bf16 4096^3", "mm", (1, 4096, 4096, 4096), BF16, _SQUARE_ADDMM, guard=True),
    ProductCase("mm bf16 8192^3", "mm", (1, 8192, 8192, 8192), BF16, _SQUARE_8K),
    ProductCase("mm-guard bf16 8192x14336x4096 (8192^3 entry)", "mm", (1, 8192, 14336, 4096), BF16, _SQUARE_8K,
                guard=True, entry=(1, 8192, 8192, 8192)),
    ProductCase("mm-guard bf16 8192x4096x14336 (8192^3 entry)", "mm", (1, 8192, 4096, 14336), BF16, _SQUARE_8K,
                guard=True, entry=(1, 8192, 8192, 8192)),
    ProductCase("addmm bf16 8192x14336x4096", "addmm", (1, 8192, 14336, 4096), BF16, _BIG + _BIG_BIAS),
    ProductCase("linear bf16 8192x14336x4096", "linear", (1, 8192, 14336, 4096), BF16, _BIG + _BIG_BIAS),
    ProductCase("mm-guard bf16 8192x14336x4096", "mm", (1, 8192, 14336, 4096), BF16, _BIG + _BIG_BIAS, guard=True),
    ProductCase("mm-f32 fp32 4096^3 (tf32 off)", "mm", (1, 4096, 4096, 4096), FP32, _F32, tf32x3=True),
]

# The current rule (first) gives 14336x4096 448 programs of 80 registers: 3 a SM, 396 at once, so a second
# wave of 52 streams on its own. Candidates fit one wave (64x128 steps: 224 programs; 4 warps: about 6
# programs a SM), or vary the bytes in flight per program (step bytes, pipelined steps, warps), the length of
# the contiguous runs along a row and how far K is split (4096x14336 has 128 row blocks of 32).
GEMV_CANDIDATES = [
    GemvRule(16384, 128, 8, 1, 1), GemvRule(8192, 128, 4, 1, 1), GemvRule(16384, 128, 8, 3, 1),
    GemvRule(32768, 256, 8, 1, 1), GemvRule(32768, 512, 8, 1, 2), GemvRule(32768, 1024, 8, 1, 2),
    GemvRule(32768, 512, 16, 1, 2), GemvRule(16384, 1024, 8, 1, 2), GemvRule(65536, 1024, 16, 1, 1),
    GemvRule(16384, 256, 8, 3, 2), GemvRule(32768, 512, 8, 2, 2), GemvRule(32768, 512, 8, 1, 0.5),
]
# x @ W with W row-major (a column-major matrix to the kernel): its runs are 32 rows of 64 bytes, so K is split
# only below column_programs_per_sm (0.5: the 4096-row products run unsplit). Candidates: the table's rule with
# other thresholds (2 was the rows' rule, the old default), and with 32 KB steps.
_TABLE_GEMV = heuristics.gemv_rule("f16", heuristics.DeviceFacts(hopper=True, num_sms=0))  # the table's rule
GEMV_CANDIDATES += [dataclasses.replace(_TABLE_GEMV, column_programs_per_sm=c) for c in (2, 1, 0.25)]
GEMV_CANDIDATES += [dataclasses.replace(_TABLE_GEMV, step_bytes=32768, column_programs_per_sm=c) for c in (1, 0.5)]
GEMVS = [GemvCase("mv bf16 14336x4096", 14336, 4096, BF16), GemvCase("mv bf16 4096x14336", 4096, 14336, BF16),
         GemvCase("addmv bf16 14336x4096", 14336, 4096, BF16, bias=True),
         GemvCase("xw bf16 1x4096x4096", 4096, 4096, BF16, columns=True),
         GemvCase("xw bf16 1x4096x14336", 14336, 4096, BF16, columns=True),
         GemvCase("xw bf16 1x14336x4096", 4096, 14336, BF16, columns=True),
         GemvCase("xw bf16 1x2048x8192", 8192, 2048, BF16, columns=True)]


def smoke_cases() -> tuple[list[ProductCase], list[GemvCase], list[GemvRule]]:
    """Tiny shapes through the same paths, with small tiles (the interpreter's cost grows with programs)."""
    small = _configs("32x32x32 w4 s2", "16x32x16 w4 s2 tma_store", "32x16x32 w4 s2 warp_specialize",
                     "32x32x16 w4 s2 pointer_kernel", "16x16x16 w4 s2 fuse_tiles", "32x32x16 w4 s2 split_epilogue",
                     "16x32x16 w4 s2 tma_store fuse_tiles split_epilogue", "32x32x16 w4 s2 split_epilogue tile_bias",
                     "16x32x16 w4 s2 fuse_tiles split_epilogue prefetch_bias", "16x16x16 w4 s2 g1 prefetch_bias")
    products = [
        ProductCase("mm-odd bf16 40x72x37", "mm", (1, 40, 72, 37), BF16, small),
        ProductCase("bmm bf16 3x40x24x32", "bmm", (3, 40, 24, 32), BF16, small),
        ProductCase("addmm bf16 48x40x56", "addmm", (1, 48, 40, 56), BF16, small),
        ProductCase("linear bf16 48x40x56", "linear", (1, 48, 40, 56), BF16, small),
        ProductCase("mm-guard bf16 48x40x56", "mm", (1, 48, 40, 56), BF16, small, guard=True),
        ProductCase("mm-guard bf16 40x48x40 (48x40x56 entry)", "mm", (1, 40, 48, 40), BF16, small, guard=True,
                    entry=(1, 48, 40, 56)),
        ProductCase("mm-f32 fp32 32x48x64", "mm", (1, 32, 48, 64), FP32, small, tf32x3=True),
    ]
    gemvs = [GemvCase("mv bf16 200x300", 200, 300, BF16), GemvCase("addmv bf16 100x520", 100, 520, BF16, bias=True),
             GemvCase("xw bf16 1x72x300", 300, 72, BF16, columns=True)]
    rules = [GemvRule(32768, 512, 8, 2, 2), GemvRule(16384, 256, 8, 1, 4), GemvRule(16384, 256, 8, 1, 4, 2)]
    return products, gemvs, rules


# -- timing -----------------------------------------------------------------------------------------------
class Clock:
    """Kernel time in µs: ``do_bench`` on the GPU (median, L2 flushed before each run); one warm call on the
    interpreter, where times mean nothing and only the paths are exercised."""

    def __init__(self, budget_s: float):
        self.deadline = time.monotonic() + budget_s

    def left(self) -> bool:
        return time.monotonic() < self.deadline

    def __call__(self, fn: Callable[[], object]) -> float:
        if device.interpreter:
            fn()
            start = time.perf_counter()
            fn()
            return (time.perf_counter() - start) * 1e6
        return 1e3 * triton.testing.do_bench(fn, warmup=10, rep=60, return_mode="median")


def copy_ceiling_gbs(clock: Clock) -> float:
    """Bytes moved per second (read + write) by a device-to-device copy of 256 MB (2 MB on the interpreter)."""
    src = torch.empty(1 << (20 if device.interpreter else 27), dtype=BF16, device=flag_gems.device)
    dst = torch.empty_like(src)
    return 2 * src.numel() * src.element_size() / clock(lambda: dst.copy_(src)) * 1e-3


def rel_error(res: torch.Tensor, ref: torch.Tensor) -> float:
    res, ref = res.double(), ref.double()
    return ((res - ref).norm() / ref.norm().clamp_min(1e-30)).item()


@contextlib.contextmanager
def compiling_ahead(workers: int):
    """Inside the block, launches compile their kernels in ``workers`` threads instead of running (Triton
    releases the GIL while it compiles), so that every candidate is compiled before the timing starts."""
    if device.interpreter:
        yield
        return
    original = Launcher.__call__

    def compile_only(self, grid, args, spec_key=None):
        self.kernel.warmup(*args, grid=grid, **self.constexprs, **self.options)

    Launcher.__call__ = compile_only
    try:
        with ThreadPoolExecutor(workers) as pool, triton.AsyncCompileMode(pool, ignore_errors=True):
            yield
    finally:
        Launcher.__call__ = original


# -- products ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Row:
    """One timed line: a candidate (``config`` a MatmulConfig or GemvRule, run by ``call``) or the op."""

    label: str
    us: float | None = None
    error: float | None = None
    failure: str | None = None
    info: bool = False
    current: bool = False
    config: object = None
    call: object = None

    @property
    def ok(self) -> bool:
        return self.us is not None and self.failure is None


def compile_calls(run, calls: list) -> None:
    """Run each candidate call and the op once (under ``compiling_ahead``: submit their compilations)."""
    for call in calls:
        if not isinstance(call, Exception):
            with contextlib.suppress(Exception):
                run.run_call(call)
    with contextlib.suppress(Exception), flag_gems.use_gems(families=["blas"]):
        run.aten()


def measure_rows(run, clock: Clock, rows: list[Row], out: torch.Tensor, tolerance: float) -> tuple:
    """(ATen µs, the op through flag_gems, ``rows`` timed): each candidate is checked against ATen's result
    (``run.ref``) before it is timed; then the current choice and the two fastest others are timed again,
    keeping each one's better time, to see through clock drift."""
    aten_us = clock(run.aten)
    op = Row("op through flag_gems")
    try:
        with flag_gems.use_gems(families=["blas"]):
            op.error = rel_error(run.aten(), run.ref)
            op.us = clock(run.aten)
    except Exception as exc:  # reported in the table; the candidates still run
        op.failure = f"{type(exc).__name__}: {str(exc)[:120]}"
    for row in rows:
        if isinstance(row.call, Exception):
            row.failure = f"{type(row.call).__name__}: {str(row.call)[:120]}"
        elif not clock.left():
            row.failure = "skipped: time budget spent"
        else:
            try:
                out.fill_(float("nan"))
                run.run_call(row.call)
                row.error = rel_error(out, run.ref)
                if row.error <= tolerance or row.info:
                    row.us = clock(lambda call=row.call: run.run_call(call))
                else:
                    row.failure = f"wrong result: relative error {row.error:.2e}"
            except Exception as exc:  # a candidate the device cannot run is reported, not fatal
                row.failure = f"{type(exc).__name__}: {str(exc)[:120]}"
    ranked = sorted((r for r in rows if r.ok and not r.info and not r.current), key=lambda r: r.us)
    for row in [r for r in rows if r.ok and r.current] + ranked[:2]:
        if clock.left():
            row.us = min(row.us, clock(lambda call=row.call: run.run_call(call)))
    if clock.left():
        aten_us = min(aten_us, clock(run.aten))
    return aten_us, op, rows


class ProductRun:
    """One product case's operands, ATen function and candidate calls."""

    def __init__(self, case: ProductCase):
        self.case = case
        batch, m, n, k = case.shape
        dev = flag_gems.device
        g = torch.Generator(device=dev).manual_seed(0)
        rand = lambda *s: torch.randn(*s, generator=g, device=dev, dtype=FP32).to(case.dtype)  # noqa: E731
        scale = k ** -0.5
        self.bias = None
        self.sd = None
        if case.op == "bmm":
            self.a, self.b = rand(batch, m, k), rand(batch, k, n) * scale
            self.aten = lambda: torch.bmm(self.a, self.b)
        elif case.op == "linear":
            self.a, w, self.bias = rand(m, k), rand(n, k) * scale, rand(n)
            self.b = w.t()
            self.aten = lambda: F.linear(self.a, w, self.bias)
        else:
            self.a, self.b = rand(m, k), rand(k, n) * scale
            if case.op == "addmm":
                self.bias = rand(n)
                self.aten = lambda: torch.addmm(self.bias, self.a, self.b)
            else:
                self.aten = lambda: torch.mm(self.a, self.b)
        if self.bias is not None:
            self.sd = (0, 0, self.bias.stride(0))
        self.out = torch.empty((batch, m, n) if batch > 1 else (m, n), dtype=case.dtype, device=dev)
        self.so = self.out.stride() if batch > 1 else (0, *self.out.stride())
        self.sa = self.a.stride() if batch > 1 else (0, *self.a.stride())
        self.sb = self.b.stride() if batch > 1 else (0, *self.b.stride())
        self.layout = mm.operand_layout(self.a.get_device(), self.a, self.b, batch, m, n, k, self.sa, self.sb)
        self.key = mm.plan_key(self.layout, self.out, case.dtype, batch, m, n, k, self.bias, self.so, self.sd)
        self.current = mm.default_config(self.key)
        configs = [self.current] + [c for c in case.candidates if c != self.current]
        self.calls = [(c.label(), c, False, self._call(self.layout, self.key, c)) for c in configs]
        if case.tf32x3:
            self.calls.append(self._tf32x3())
        self.ref = self.aten()

    def _call(self, layout, key, config, precision=None, b=None):
        batch, m, n, k = self.case.shape
        try:
            plan = mm.plan_for(key, config, precision)
            call = mm.layout_call(plan, layout, self.out, self.a, self.b, self.bias, batch, m, n, k, self.so, self.sd)
            if b is None:
                return call
            return lambda out, a, _b, bias, alpha, beta: call(out, a, b, bias, alpha, beta)
        except Exception as exc:  # a configuration the planner rejects is a failed candidate
            return exc

    def _tf32x3(self):
        # Three tf32 products per tile (a = hi + lo, hi*hi + hi*lo + lo*hi): near fp32 accuracy on the tensor
        # cores, which take tf32 operands K-major only: B is made K-major once, outside the timing.
        batch, m, n, k = self.case.shape
        b_k = self.b.transpose(-1, -2).contiguous().transpose(-1, -2)
        sb = b_k.stride() if batch > 1 else (0, *b_k.stride())
        layout = dataclasses.replace(self.layout, sb=sb, b_row_major=False)
        key = mm.plan_key(layout, self.out, self.case.dtype, batch, m, n, k, self.bias, self.so, self.sd)
        c = config("128x128x32 w8 s3")
        return "3xTF32 128x128x32 w8 s3, B K-major", c, True, self._call(layout, key, c, "tf32x3", b_k)

    def run_call(self, call) -> None:
        call(self.out, self.a, self.b, self.bias, 1.0, 1.0 if self.bias is not None else 0.0)

    def compile(self) -> None:
        compile_calls(self, [call for *_, call in self.calls])

    def measure(self, clock: Clock) -> tuple[float, Row, list[Row]]:
        """(cuBLAS µs, the op through flag_gems, the candidates)."""
        rows = [Row(label, info=info, current=cfg == self.current and not info, config=cfg, call=call)
                for label, cfg, info, call in self.calls]
        return measure_rows(self, clock, rows, self.out, _TOLERANCE[self.case.dtype])


def _op_text(cublas: float, op: Row) -> str:
    if not op.ok:
        return f"op {op.failure}"
    return f"op {op.us:8.1f} us ({cublas / op.us:5.3f}x, err {op.error:.1e})"


def print_product(case: ProductCase, cublas: float, op: Row, rows: list[Row]) -> None:
    pclass, batch, m, n, k = case.table_key
    print(f"\n== {case.name}   cuBLAS {cublas:8.1f} us   {_op_text(cublas, op)}   table key {pclass} "
          f"{batch}x{m}x{n}x{k}", flush=True)
    for row in rows:
        mark = "*" if row.current else ("i" if row.info else " ")
        if row.ok:
            print(f"  {mark} {row.label:44s} {row.us:9.1f} us  {cublas / row.us:6.3f}x  err {row.error:.1e}")
        else:
            print(f"  {mark} {row.label:44s} {row.failure}")


# -- matrix-vector products -------------------------------------------------------------------------------
class GemvRun:
    """One matrix-vector case's operands, ATen function and a call per candidate rule."""

    def __init__(self, case: GemvCase, rules: list[GemvRule]):
        self.case = case
        dev = flag_gems.device
        g = torch.Generator(device=dev).manual_seed(0)
        rand = lambda *s: torch.randn(*s, generator=g, device=dev, dtype=FP32).to(case.dtype)  # noqa: E731
        self.a = rand(case.k, case.m).t() if case.columns else rand(case.m, case.k)
        self.x = rand(case.k) * case.k ** -0.5
        self.bias = rand(case.m) if case.bias else None
        self.y = torch.empty(case.m, dtype=case.dtype, device=dev)
        if case.columns:
            row, weight = self.x.view(1, case.k), self.a.t()
            self.aten = lambda: torch.mm(row, weight).view(case.m)
        elif case.bias:
            self.aten = lambda: torch.addmv(self.bias, self.a, self.x)
        else:
            self.aten = lambda: torch.mv(self.a, self.x)
        facts = heuristics.device_facts(self.a.get_device())
        self.current = heuristics.gemv_rule(heuristics.precision_class(case.dtype, False), facts)
        self.rules = [self.current] + [r for r in rules if r != self.current]
        self.calls = [mv.gemv_call(self.y, self.a, self.x, self.bias, False, case.m, case.k, self.a.stride(0),
                                   self.a.stride(1), self.x.stride(0), self.y.stride(0), 1 if case.bias else 0,
                                   rule=r) for r in self.rules]
        self.ref = self.aten()
        self.nbytes = (case.m * case.k + case.k + case.m * (2 if case.bias else 1)) * self.a.element_size()

    def run_call(self, call) -> None:
        call(self.y, self.a, self.x, self.bias, 1.0, 1.0 if self.bias is not None else 0.0)

    def compile(self) -> None:
        compile_calls(self, self.calls)

    def measure(self, clock: Clock) -> tuple[float, Row, list[Row]]:
        """(ATen µs, the op through flag_gems, the candidates)."""
        rows = [Row(rule.label(), current=rule == self.current, config=rule, call=call)
                for rule, call in zip(self.rules, self.calls)]
        return measure_rows(self, clock, rows, self.y, _TOLERANCE[self.case.dtype])


def print_gemv(run: GemvRun, cublas: float, op: Row, rows: list[Row], ceiling: float) -> None:
    def rate(us: float) -> str:
        gbs = run.nbytes / us * 1e-3
        return f"{gbs:6.0f} GB/s {100 * gbs / ceiling:4.0f}%"

    op_rate = rate(op.us) if op.ok else ""
    print(f"\n== {run.case.name}   ATen {cublas:7.1f} us {rate(cublas)}   {_op_text(cublas, op)} {op_rate}   "
          f"copy ceiling {ceiling:.0f} GB/s", flush=True)
    for row in rows:
        mark = "*" if row.current else " "
        if row.ok:
            print(f"  {mark} {row.label:30s} {row.us:8.1f} us  {rate(row.us)}  {cublas / row.us:6.3f}x  "
                  f"err {row.error:.1e}")
        else:
            print(f"  {mark} {row.label:30s} {row.failure}")


# -- winners ----------------------------------------------------------------------------------------------
# A candidate replaces the current choice only when it is this much faster (below that, clock noise decides).
_MIN_GAIN = 1.01


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def winner_of(results: list[tuple[float, list[Row]]]) -> tuple[object, float, float] | None:
    """(configuration to keep, its geometric-mean speed, the current choice's) over cases timed alike; a
    configuration counts only where it ran on every case, and replaces the current one only by ``_MIN_GAIN``."""
    speeds: dict[object, list[float]] = {}
    current = None
    for reference_us, rows in results:
        for row in rows:
            if row.ok and not row.info:
                speeds.setdefault(row.config, []).append(reference_us / row.us)
                current = row.config if row.current else current
    complete = {c: geomean(v) for c, v in speeds.items() if len(v) == len(results)}
    if not complete:
        return None
    best = max(complete, key=complete.get)
    current_speed = complete.get(current, float("nan"))
    if current in complete and complete[best] < _MIN_GAIN * current_speed:
        best = current
    return best, complete[best], current_speed


def product_winners(results: list) -> list[tuple[ProductCase, MatmulConfig, float, float]]:
    """(lead case, configuration, its µs, cuBLAS µs) per shape-table entry whose choice should change."""
    groups: dict[tuple, list] = {}
    for result in results:
        groups.setdefault(result[0].case.table_key, []).append(result)
    changes = []
    for members in groups.values():
        names = ", ".join(run.case.name for run, *_ in members)
        found = winner_of([(cublas, rows) for _, cublas, _, rows in members])
        if found is None:
            print(f"  {names}: no candidate ran on every case")
            continue
        winner, speed, current_speed = found
        run, cublas, _, rows = next(m for m in members if not m[0].case.guard)
        row = next(r for r in rows if r.ok and r.config == winner and not r.info)
        keep = "keep" if row.current else "change to"
        print(f"  {names}: {keep} {winner.label()}  {speed:.3f}x (current {current_speed:.3f}x)")
        if not row.current:
            changes.append((run.case, winner, row.us, cublas))
    return changes


def gemv_winner(results: list) -> GemvRule | None:
    """The bf16 matrix-vector rule to write, or None to leave the table as it is."""
    found = winner_of([(aten, rows) for run, aten, _, rows in results if run.case.dtype is BF16])
    if found is None:
        return None
    winner, speed, current_speed = found
    current = next(r.config for _, _, _, rows in results for r in rows if r.current)
    print(f"  gemv f16 rule: {'keep' if winner == current else 'change to'} {winner.label()}  {speed:.3f}x ATen "
          f"(current {current_speed:.3f}x)")
    return None if winner == current else winner


def write_table(path: Path, changes: list[tuple[ProductCase, MatmulConfig, float, float]],
                gemv_rule: GemvRule | None) -> None:
    """Write the changed choices into the shape table at ``path`` (the package's table with the changes, when
    ``path`` is new), in the form ``tune_mm.py`` writes."""
    table = json.loads((path if path.exists() else heuristics.TABLE_PATH).read_text())
    configs = table.setdefault("configs", {})
    for case, winner, us, cublas_us in changes:
        batch, m, n, k = case.shape
        entries = [e for e in configs.get(case.pclass, []) if [e.get("batch", 1), e["m"], e["n"], e["k"]]
                   != [batch, m, n, k]]
        entries.append({"batch": batch, "m": m, "n": n, "k": k, "config": winner.to_json(), "us": round(us, 2),
                        "cublas_us": round(cublas_us, 2)})
        configs[case.pclass] = sorted(entries, key=lambda e: (e.get("batch", 1), e["m"], e["n"], e["k"]))
    if gemv_rule is not None:
        table.setdefault("gemv", {})["f16"] = gemv_rule.to_json()
    table["about"] = ("Matrix-product configurations [BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages, "
                      "split_k, options...] per precision and shape, from tuning/tune_mm.py and tuning/ab_blas.py; "
                      "gemv: the matrix-vector rule per precision (heuristics.GemvRule)")
    if not device.interpreter:
        table.update(tune_mm._environment())
    path.write_text(tune_mm._table_text(table))
    print(f"\nwrote {len(changes)} product entries{' and the gemv rule' if gemv_rule else ''} to {path}")


def save_json(path: Path, results: list, changes: list, gemv_rule: GemvRule | None) -> None:
    """Every measurement, the environment and the changes chosen, as JSON."""
    def row_record(row: Row) -> dict:
        config = row.config.to_json() if row.config is not None else None
        return {"label": row.label, "config": config, "us": row.us, "error": row.error, "failure": row.failure,
                "current": row.current, "info": row.info}

    cases = [{"case": run.case.name, "aten_us": aten, "op": row_record(op), "candidates": [row_record(r) for r in rows]}
             for run, aten, op, rows in results]
    record = {"cases": cases, "changes": [{"case": c.name, "config": w.to_json(), "us": us, "cublas_us": cu}
                                          for c, w, us, cu in changes],
              "gemv_rule": gemv_rule.to_json() if gemv_rule else None}
    if not device.interpreter:
        record.update(tune_mm._environment())
    path.write_text(json.dumps(record, indent=1) + "\n")


def print_summary(results: list) -> None:
    print("\n== summary (speed = cuBLAS or ATen time / ours; the current choice is the table's or the rules')")
    print(f"  {'case':34s} {'ATen us':>9s} {'op':>7s} {'current':>8s} {'best':>7s}  best candidate")
    nan = float("nan")
    for run, aten, op, rows in results:
        timed = [r for r in rows if r.ok and not r.info]
        current = next((r for r in timed if r.current), None)
        best = min(timed, key=lambda r: r.us) if timed else None
        print(f"  {run.case.name:34s} {aten:9.1f} {aten / op.us if op.ok else nan:7.3f} "
              f"{aten / current.us if current else nan:8.3f} {aten / best.us if best else nan:7.3f}  "
              f"{best.label if best else '-'}")


# -- main -------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, small tiles (CPU interpreter)")
    parser.add_argument("--only", default="", help="comma-separated prefixes of case names")
    parser.add_argument("--write", action="store_true", help="write the winners into the shape table")
    parser.add_argument("--table", type=Path, default=heuristics.TABLE_PATH, help="the table --write writes")
    parser.add_argument("--json", type=Path, help="save every measurement to this file")
    parser.add_argument("--budget", type=float, default=170.0, help="seconds for the whole run")
    parser.add_argument("--warp-specialize", action="store_true", help="add the warp-specialised candidates")
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1), help="compile threads")
    args = parser.parse_args(argv)
    start = time.monotonic()
    if args.smoke and args.write and args.table == heuristics.TABLE_PATH:
        print("--smoke --write needs --table: tiny shapes must not reach the package's table", file=sys.stderr)
        return 2
    if not args.smoke and device.interpreter:
        print("ab_blas.py times kernels on a GPU; without one, run --smoke", file=sys.stderr)
        return 2
    if "blas" not in plugins.discover():  # run from a checkout without installing the package
        plugins.add_module("blas", gems_blas.plugin)
    torch.backends.cuda.matmul.allow_tf32 = False
    products, gemvs, rules = smoke_cases() if args.smoke else (PRODUCTS, GEMVS, GEMV_CANDIDATES)
    prefixes = [p for p in args.only.split(",") if p]
    if prefixes:
        chosen = [c for c in products if any(c.name.startswith(p) for p in prefixes)]
        # A chosen product keeps the guards of its table entry, which a written winner would also serve.
        keys = {c.table_key for c in chosen if not c.guard}
        products = [c for c in products if c in chosen or (c.guard and c.table_key in keys)]
        gemvs = [c for c in gemvs if any(c.name.startswith(p) for p in prefixes)]
    if not args.warp_specialize:
        products = [dataclasses.replace(c, candidates=[x for x in c.candidates if not x.warp_specialize])
                    for c in products]
    if device.interpreter:
        # No Hopper kernel is chosen there, and tiny products never copy a misaligned operand: force both,
        # so that --smoke runs the paths the GPU takes.
        mm._ALIGN_COPY_MIN_WORK = 0
    with mm.forced_kernel("tma") if device.interpreter else contextlib.nullcontext():
        product_runs = [ProductRun(c) for c in products]
        gemv_runs = [GemvRun(c, rules) for c in gemvs]
        with compiling_ahead(args.workers):
            for run in [*product_runs, *gemv_runs]:
                run.compile()
        print(f"{len(product_runs)} product and {len(gemv_runs)} matrix-vector cases planned and compiled in "
              f"{time.monotonic() - start:.1f} s on {flag_gems.device}", flush=True)
        clock = Clock(args.budget - (time.monotonic() - start))
        product_results = []
        for run in product_runs:
            product_results.append((run, *run.measure(clock)))
            print_product(run.case, *product_results[-1][1:])
        ceiling = copy_ceiling_gbs(clock) if gemv_runs else 0.0
        gemv_results = []
        for run in gemv_runs:
            gemv_results.append((run, *run.measure(clock)))
            print_gemv(run, *gemv_results[-1][1:], ceiling)
    print_summary([*product_results, *gemv_results])
    print(f"\n== winners (geometric mean over each table entry's cases; a change needs {_MIN_GAIN:.2f}x)")
    changes = product_winners(product_results)
    rule = gemv_winner(gemv_results) if gemv_results else None
    print(f"\nfinished in {time.monotonic() - start:.1f} s")
    if args.json:
        save_json(args.json, [*product_results, *gemv_results], changes, rule)
    if args.write:
        write_table(args.table, changes, rule)
    return 0


if __name__ == "__main__":
    sys.exit(main())
