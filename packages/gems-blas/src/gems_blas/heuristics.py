"""Kernel configurations for matrix products: a small table tuned offline, rules for other shapes.

A configuration is decided once per shape (the launchers cache it), never by timing on a user's call:
``matmul_config`` looks the shape up in ``mm_table.json`` (written by ``tuning/tune_mm.py`` on an H100)
and otherwise derives one from the rules below. ``candidates`` lists the configurations worth timing for
a shape, for the offline tuner and for the optional on-line tuning.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from flag_gems.intmath import cdiv, next_power_of_2
from flag_gems.runtime import device

TABLE_PATH = Path(__file__).with_name("mm_table.json")

# Shared memory a program may use on Hopper (228 KB per SM, less what the epilogue's layout change needs)
# and on Ampere-class GPUs.
_SMEM_HOPPER = 200 * 1024
_SMEM_OTHER = 144 * 1024
# Without a GPU the rules still run, as if on a small device, so that split-K is exercised by tests.
_INTERPRETER_SMS = 8
#: Skinny products (a side of 2 to 64, as a decoding step's batch of a few tokens times a weight) on
#: Hopper: the long side's tile as wide as leaves at least one tile an SM (16 to 128), so that the weight
#: streams through every SM without a split of K (whose partials need a second kernel), and the rule
#: rather than the table's nearest entry decides (an entry tuned for one skinny shape starved others
#: of SMs: 16x2048x8192 took the 16x4096x14336 entry's 64-wide tiles, 32 programs); the shapes the
#: table holds keep their entries (16x4096x14336: 63.0 us with the rule, 55.6 with its entry). H100, bf16
#: nn.Linear kernel time against cuBLAS (tuning/ab_skinny.py): 16x2048x2048 0.86x (split-K rule 0.66x),
#: 4x8192x2048 0.90x (0.45x), 16x4096x4096 0.94x (0.83x), 64x2048x2048 0.82x (0.62x), and one launch a
#: call instead of two; shapes with N of 14336 or 32000 unchanged (0.91-1.03x).
SKINNY_FILL = True
#: Bytes of K a skinny product's program loads per operand row each step; twice that where K is at
#: least four times the long side (H100: 16x2048x8192 25.9 us against 29.8, 0.89x cuBLAS; at 4096x4096
#: and 8192x2048 the longer step tied or lost).
SKINNY_STEP_BYTES = 256


# The on/off options of a matrix-product configuration, as the table names them.
_OPTIONS = ("tma_store", "warp_specialize", "pointer_kernel", "fuse_tiles", "split_epilogue", "tile_bias",
            "prefetch_bias")


@dataclass(frozen=True)
class MatmulConfig:
    """Tile sizes and launch options of one matrix-product kernel launch.

    Seven options concern Hopper only: ``tma_store`` writes every output tile through a tensor descriptor
    (otherwise only where N is not a multiple of 16, which masked stores cannot vectorise),
    ``warp_specialize`` lets Triton give the operand loads and the products their own warps,
    ``pointer_kernel`` runs the pointer kernel instead of the descriptor one (whose operand tiles full fp32
    products must copy from one shared-memory layout to another), and ``fuse_tiles`` lets Triton fuse the
    descriptor kernel's tile loop with its K loop, so that one pipeline runs across a program's tiles and the
    next tile's operands load while this one's epilogue runs (products whose K is split keep two loops), and
    ``split_epilogue`` has the descriptor kernel scale, add the bias to and store each output tile in two
    halves along N, one after the other (half the epilogue's registers and descriptor staging at a time).
    Two more place the load of a bias vector (addmm's, nn.Linear's: one value per column or per row) in the
    descriptor kernel: ``tile_bias`` loads it once per tile and adds it to the whole tile before the
    epilogue's parts are stored (a split epilogue otherwise loads the second half's after storing the first),
    ``prefetch_bias`` loads it when the tile starts, so that the load's latency hides under the products.
    """

    block_m: int
    block_n: int
    block_k: int
    group_m: int = 8
    num_warps: int = 4
    num_stages: int = 3
    split_k: int = 1
    tma_store: bool = False
    warp_specialize: bool = False
    pointer_kernel: bool = False
    fuse_tiles: bool = False
    split_epilogue: bool = False
    tile_bias: bool = False
    prefetch_bias: bool = False

    def to_json(self) -> list:
        """The table's form: seven integers, then the names of the options that are on."""
        values = [self.block_m, self.block_n, self.block_k, self.group_m, self.num_warps, self.num_stages,
                  self.split_k]
        return values + [name for name in _OPTIONS if getattr(self, name)]

    @classmethod
    def from_json(cls, values) -> MatmulConfig:
        options = {name: True for name in values[7:]}
        unknown = set(options) - set(_OPTIONS)
        if unknown:
            raise ValueError(f"unknown matrix-product options {sorted(unknown)}")
        return cls(*(int(v) for v in values[:7]), **options)

    def label(self) -> str:
        """A short readable form: 128x256x64 w8 s3 (split, group and options where not the default)."""
        text = f"{self.block_m}x{self.block_n}x{self.block_k} w{self.num_warps} s{self.num_stages}"
        if self.split_k > 1:
            text += f" split{self.split_k}"
        if self.group_m != 8:
            text += f" g{self.group_m}"
        return " ".join([text] + [name for name in _OPTIONS if getattr(self, name)])

    def smem_bytes(self, elem: int) -> int:
        """Shared memory of the operand pipeline."""
        return (self.block_m + self.block_n) * self.block_k * elem * self.num_stages

    def programs_per_sm(self, elem: int, staging: int = 0) -> int:
        """Persistent programs of the Hopper kernel per SM: two where two fit in shared memory (the operand
        pipeline and ``staging`` bytes of descriptor stores) and in registers (at most 64 fp32 accumulators
        a thread with 8 warps), so that one program's epilogue overlaps the other's products; one with warp
        specialisation, which overlaps them within a program (and adds warps of its own)."""
        if self.warp_specialize:
            return 1
        fits_smem = 2 * (self.smem_bytes(elem) + staging) <= 220 * 1024
        accumulators = self.block_m * self.block_n // (32 * self.num_warps)
        return 2 if fits_smem and (self.num_warps <= 4 or accumulators <= 64) else 1


@dataclass(frozen=True)
class DeviceFacts:
    """What the heuristics need to know about the device."""

    hopper: bool
    num_sms: int


@functools.cache
def device_facts(index: int) -> DeviceFacts:
    """Facts about CUDA device ``index`` (or a small pretend device on the interpreter)."""
    if device.interpreter:
        return DeviceFacts(hopper=False, num_sms=_INTERPRETER_SMS)
    props = torch.cuda.get_device_properties(index)
    return DeviceFacts(hopper=props.major >= 9, num_sms=props.multi_processor_count)


def precision_class(dtype: torch.dtype, tf32: bool) -> str:
    """The table's name for how a product computes: "f16" (fp16/bf16), "tf32" or "f32"."""
    if dtype in (torch.float16, torch.bfloat16):
        return "f16"
    return "tf32" if tf32 else "f32"


def _elem(pclass: str) -> int:
    return 2 if pclass == "f16" else 4


def _pow2_clamp(x: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, next_power_of_2(max(x, 1))))


# -- the table -------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _table_data() -> dict:
    try:
        return json.loads(TABLE_PATH.read_text())
    except (OSError, ValueError):
        return {}


@functools.lru_cache(maxsize=1)
def _table() -> dict[str, list[tuple[bool, float, float, float, MatmulConfig]]]:
    table = {}
    for pclass, entries in _table_data().get("configs", {}).items():
        table[pclass] = [(e.get("batch", 1) > 1, math.log2(e["m"]), math.log2(e["n"]), math.log2(e["k"]),
                          MatmulConfig.from_json(e["config"])) for e in entries]
    return table


def table_config(batch: int, m: int, n: int, k: int, pclass: str, reach: float = 1.0):
    """The tuned configuration of the nearest table shape (each of M, N, K within a factor of 2**reach), or
    None."""
    lm, ln, lk = math.log2(m), math.log2(n), math.log2(k)
    best, best_distance = None, math.inf
    for batched, em, en, ek, config in _table().get(pclass, ()):
        if batched != (batch > 1):
            continue
        d = (abs(lm - em), abs(ln - en), abs(lk - ek))
        if max(d) <= reach and sum(d) < best_distance:
            best, best_distance = config, sum(d)
    return best


# -- rules -----------------------------------------------------------------------------------------------
def _stages(block_m: int, block_n: int, block_k: int, elem: int, smem: int, most: int) -> int:
    per_stage = (block_m + block_n) * block_k * elem
    return max(2, min(most, smem // per_stage))


def split_for(batch: int, m: int, n: int, k: int, block_m: int, block_n: int, block_k: int, num_sms: int) -> int:
    """How many slices of K to compute in parallel: more than one only when the output tiles leave most
    of the device idle and K is long enough for each slice to pipeline (at least 4 K-tiles)."""
    if batch != 1:
        return 1
    tiles = cdiv(m, block_m) * cdiv(n, block_n)
    k_tiles = cdiv(k, block_k)
    if 2 * tiles > num_sms or k_tiles < 8:
        return 1
    return max(1, min(num_sms // tiles, k_tiles // 4, 16))


def rule_config(batch: int, m: int, n: int, k: int, pclass: str, facts: DeviceFacts) -> MatmulConfig:
    """A configuration derived from the shape alone."""
    elem = _elem(pclass)
    if device.interpreter:
        # Each interpreted program costs milliseconds whatever its size: few, large tiles.
        bm, bn, bk = _pow2_clamp(m, 16, 64), _pow2_clamp(n, 16, 64), _pow2_clamp(k, 16, 64)
        return MatmulConfig(bm, bn, bk, 4, 4, 1, split_for(batch, m, n, k, bm, bn, bk, facts.num_sms))
    smem = _SMEM_HOPPER if facts.hopper else _SMEM_OTHER
    if pclass == "f32":
        # Full fp32 runs on the FMA units: square 128x128 tiles, short K steps.
        bm, bn, bk = _pow2_clamp(m, 16, 128), _pow2_clamp(n, 16, 128), 32
        warps = 8 if bm * bn >= 128 * 128 else 4
        stages = _stages(bm, bn, bk, elem, smem, 3)
    elif min(m, n) <= 64:
        # Few rows (or columns): the product streams the other operand from memory. A narrow tile on the
        # short side, long K steps, a deep pipeline.
        narrow = _pow2_clamp(min(m, n), 16, 64)
        wide = _fill_width(max(m, n), facts.num_sms) if _fills(batch, m, n, pclass, facts) else None
        bm, bn = ((narrow, wide or _pow2_clamp(n, 16, 128)) if m <= n
                  else (wide or _pow2_clamp(m, 16, 128), narrow))
        long_k = wide is not None and k >= 4 * max(m, n)
        bk = SKINNY_STEP_BYTES * (2 if long_k else 1) // elem
        warps = 4
        stages = _stages(bm, bn, bk, elem, smem, 5)
    else:
        bm = 128
        # 128 x 256 tiles (two warp groups) for large 16-bit and tf32 products (tf32 4096^3 on an H100: 378 us
        # against 405 with 128 x 128; its operands take twice the bytes, so half the K step).
        big = facts.hopper and m >= 2048 and n >= 2048 and pclass in ("f16", "tf32")
        bn = 256 if big else _pow2_clamp(n, 16, 128)
        bk = 128 // elem
        warps = 8 if bm * bn >= 128 * 256 else 4
        stages = _stages(bm, bn, bk, elem, smem, 4 if facts.hopper else 3)
    return MatmulConfig(bm, bn, bk, 8, warps, stages, split_for(batch, m, n, k, bm, bn, bk, facts.num_sms))


def _fills(batch: int, m: int, n: int, pclass: str, facts: DeviceFacts) -> bool:
    """Whether SKINNY_FILL shapes this product (see there; timed for 16-bit operands only)."""
    return SKINNY_FILL and facts.hopper and pclass == "f16" and batch == 1 and min(m, n) <= 64


def _fill_width(long_side: int, num_sms: int) -> int:
    """The widest power of two in [16, 128] that cuts ``long_side`` into at least ``num_sms`` tiles."""
    width = 16
    while width < 128 and cdiv(long_side, 2 * width) >= num_sms:
        width *= 2
    return width


def matmul_config(batch: int, m: int, n: int, k: int, pclass: str, facts: DeviceFacts) -> MatmulConfig:
    """The configuration for a product of ``batch`` (M x K) @ (K x N) matrices (M, N, K >= 1)."""
    config = None
    if facts.hopper:
        # A skinny shape the table holds keeps its tuned entry; its neighbours take the rule (SKINNY_FILL).
        config = table_config(batch, m, n, k, pclass, 0.0 if _fills(batch, m, n, pclass, facts) else 1.0)
    if config is None:
        return rule_config(batch, m, n, k, pclass, facts)
    if config.split_k > 1:
        # A tuned split stays within what this K allows.
        k_tiles = cdiv(k, config.block_k)
        split = 1 if batch > 1 else max(1, min(config.split_k, k_tiles // 2))
        if split != config.split_k:
            config = dataclasses.replace(config, split_k=split)
    return config


def candidates(batch: int, m: int, n: int, k: int, pclass: str, facts: DeviceFacts,
               full: bool = False) -> list[MatmulConfig]:
    """Configurations worth timing for a shape, the rule's choice first; ``full`` widens the sweep.

    The lists follow what pays on Hopper: for large products 128- and 256-wide tiles with one or two warp
    groups and 3 to 5 stages; for skinny ones (a side of at most 64) a narrow tile on that side, long K
    steps, deep pipelines and a few K splits around the rule's; the full sweep adds fused tile loops.
    """
    elem = _elem(pclass)
    smem = _SMEM_HOPPER if facts.hopper else _SMEM_OTHER
    first = matmul_config(batch, m, n, k, pclass, facts)
    found = [first]

    def add(bm: int, bn: int, bk: int, warps: int, stages: int, split: int = 1, **options) -> None:
        bm, bn = min(bm, _pow2_clamp(m, 16, 256)), min(bn, _pow2_clamp(n, 16, 256))
        bk = min(bk, _pow2_clamp(k, 16, 256))
        config = MatmulConfig(bm, bn, bk, 8, warps, stages, split if batch == 1 else 1, **options)
        if config.smem_bytes(elem) <= smem and config not in found:
            found.append(config)

    def splits(bm: int, bn: int, bk: int) -> list[int]:
        rule = split_for(batch, m, n, k, bm, bn, bk, facts.num_sms)
        choices = {1, rule}
        if full and rule > 1:
            choices.update((rule * 2, max(1, rule // 2)))
        return sorted(s for s in choices if s * 4 <= cdiv(k, bk) or s == 1)

    if min(m, n) <= 64:
        narrow = _pow2_clamp(min(m, n), 16, 64)
        for wide in (64, 128, 256) if full else (64, 128):
            bm, bn = (narrow, wide) if m <= n else (wide, narrow)
            for bk in (256 // elem, 512 // elem):
                for stages in (3, 4, 6) if full else (4,):
                    for split in splits(bm, bn, bk):
                        add(bm, bn, bk, 4, stages, split)
    else:
        bk = 128 // elem
        tiles = [(128, 256, 8, (3, 4)), (256, 128, 8, (3, 4)), (128, 128, 8, (3, 4, 5)), (128, 128, 4, (3, 4, 5)),
                 (64, 256, 4, (3, 4)), (128, 64, 4, (4, 5)), (64, 128, 4, (4, 5)), (64, 64, 4, (4, 6))]
        if pclass == "f32":
            tiles = [(bm, bn, w, st) for bm, bn, w, st in tiles if bm * bn <= 128 * 128]
        for bm, bn, warps, stage_choices in tiles if full else tiles[:4]:
            for stages in stage_choices:
                for split in splits(bm, bn, bk):
                    add(bm, bn, bk, warps, stages, split)
        if full:
            for bm, bn, warps in ((128, 128, 8), (128, 128, 4), (64, 128, 4)):
                add(bm, bn, 2 * bk, warps, 3)
        if full and pclass == "f32":
            # Full fp32 runs on the FMA units, where register tiles and shared-memory traffic decide: wider
            # tiles, shorter K steps, and the pointer kernel (no shared-memory layout conversion).
            for bm, bn, warps in ((128, 128, 8), (128, 256, 8), (256, 128, 8), (128, 256, 16), (128, 64, 4)):
                for f32_bk in (16, 32):
                    for stages in (3, 4):
                        for pointer in (False, True):
                            add(bm, bn, f32_bk, warps, stages, pointer_kernel=pointer)
    if full and facts.hopper:
        # The leading whole-K candidates again with the tile loop fused into the K loop's pipeline.
        for config in [c for c in found if c.split_k == 1 and not c.pointer_kernel][:4]:
            fused = dataclasses.replace(config, fuse_tiles=True, warp_specialize=False)
            if fused not in found:
                found.append(fused)
        if pclass == "f16" and min(m, n) > 64:
            # Around the two leading fused candidates: the epilogue's options and the tile order's grouping.
            for config in [c for c in found if c.fuse_tiles][:2]:
                for variant in (dict(split_epilogue=True), dict(tma_store=True), dict(group_m=4), dict(group_m=16),
                                dict(fuse_tiles=False, warp_specialize=True)):
                    other = dataclasses.replace(config, **variant)
                    if other not in found:
                        found.append(other)
    return found


# -- matrix-vector and vector-vector products ---------------------------------------------------------
@dataclass(frozen=True)
class GemvConfig:
    """Tiles of the matrix-vector kernel: BLOCK_M rows by BLOCK_K columns per step, K split ``split`` ways,
    ``num_stages`` steps in flight (1: each step's loads, then its sums)."""

    block_m: int
    block_k: int
    num_warps: int
    split_k: int
    num_stages: int = 1


@dataclass(frozen=True)
class GemvRule:
    """How ``gemv_config`` shapes the matrix-vector kernel for one precision class.

    A matrix-vector product is a stream of the matrix: what counts is how many bytes each SM keeps in
    flight (``step_bytes`` per program and step, ``num_stages`` steps, programs per SM) and how long the
    contiguous runs are (``max_block_k``: the widest step along a contiguous row). A matrix whose columns
    are contiguous (``x @ W`` reads a row-major W so) splits K only below ``column_programs_per_sm``: its
    runs are 32 rows, and the split's partial sums and finish kernel cost more than the programs they add.
    """

    step_bytes: int
    max_block_k: int = 256
    num_warps: int = 8
    num_stages: int = 1
    programs_per_sm: float = 2
    column_programs_per_sm: float = 0.5

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def label(self) -> str:
        columns = f" cols {self.column_programs_per_sm:g}/SM" if self.column_programs_per_sm != 0.5 else ""
        return (f"{self.step_bytes // 1024}KB k<={self.max_block_k} w{self.num_warps} s{self.num_stages} "
                f"{self.programs_per_sm:g}/SM{columns}")


# 8K elements per step with 8 warps (16 KB of fp16, 32 KB of fp32), split until 2 programs per SM; the
# table's "gemv" entries, tuned on an H100, take precedence.
GEMV_RULES = {"f16": GemvRule(step_bytes=16384), "f32": GemvRule(step_bytes=32768)}


def gemv_rule(pclass: str, facts: DeviceFacts) -> GemvRule:
    """The rule for matrix-vector products in ``pclass`` ("f16" or "f32"): the table's on Hopper, else the
    default."""
    entry = _table_data().get("gemv", {}).get(pclass) if facts.hopper else None
    return GemvRule(**entry) if entry else GEMV_RULES[pclass]


def gemv_config(m: int, k: int, rows_contiguous: bool, elem: int, facts: DeviceFacts,
                rule: GemvRule | None = None) -> GemvConfig:
    """Tiles for y = A @ x with A (M x K) of ``elem``-byte elements. ``rows_contiguous``: A's rows are
    contiguous (stride 1 along K). ``rule`` defaults to ``gemv_rule`` for the element size.

    Each program streams BLOCK_M rows in steps of ``rule.step_bytes``; K is split when the row blocks
    alone would leave fewer than ``rule.programs_per_sm`` programs per SM.
    """
    if rule is None:
        rule = gemv_rule("f16" if elem == 2 else "f32", facts)
    step = rule.step_bytes // elem
    if device.interpreter:
        bm, bk = _pow2_clamp(m, 16, 64), _pow2_clamp(k, 16, 256)
    elif rows_contiguous:
        bk = _pow2_clamp(k, 16, rule.max_block_k)
        bm = max(4, min(step // bk, next_power_of_2(m)))
    else:
        bm = _pow2_clamp(m, 16, 32)
        if cdiv(m, bm) < facts.num_sms:
            # Fewer programs than SMs: each keeps twice the bytes in flight (x @ W, W 4096 x 4096 bf16: 23.2 us
            # against 28.3 on an H100; with 8192 or more columns the single step is faster).
            step *= 2
        bk = max(16, min(step // bm, next_power_of_2(k)))
    row_blocks = cdiv(m, bm)
    per_sm = rule.programs_per_sm if rows_contiguous else rule.column_programs_per_sm
    target = max(1, int(per_sm * facts.num_sms))
    split = 1
    if row_blocks < target:
        split = max(1, min(cdiv(target, row_blocks), k // (4 * bk), 64))
    return GemvConfig(bm, bk, 4 if device.interpreter else rule.num_warps, split, rule.num_stages)


#: Dots up to this length run in one program of one step.
_DOT_ONE_PROGRAM = 8192


def dot_config(n: int, facts: DeviceFacts) -> tuple[int, int]:
    """(BLOCK, programs) for a dot product of length ``n``: 16 programs per SM keep enough loads in flight
    to stream near the copy ceiling (3.5 TB/s of 3.9 measured on an H200, against 2.8 with 4 per SM)."""
    if n <= _DOT_ONE_PROGRAM:
        # One program, one step, one launch: a short dot's time is the host's (a second launch and its
        # partials' allocation cost more than the sum).
        return max(16, next_power_of_2(n)), 1
    block = 4096 if device.interpreter else 1024
    programs = max(1, min(cdiv(n, block), 16 * facts.num_sms))
    return block, programs
