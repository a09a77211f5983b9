"""How fast a kernel that only reads can go on this GPU: row sums and maxima of bfloat16 (8192, 8192), the same
bytes as float32, bfloat16 pairs read as int32 words, and column sums split over programs, against ATen and
copies. Behind the read ceiling of the benchmark (benchmark/read_probe.py) and the reduction targets.

    python packages/gems-reduction/tuning/ab_read_probe.py      # on a CUDA machine, about a minute
    python packages/gems-reduction/tuning/ab_read_probe.py --smoke   # each kernel checked on tiny shapes
"""

from __future__ import annotations

import argparse
import sys

# isort: split
# Without a GPU, flag_gems sets up Triton's interpreter: it is imported before triton.
import flag_gems

# isort: split
import torch
import triton
import triton.language as tl
from triton.testing import do_bench

ROWS = COLS = 8192


@triton.jit
def row_sum(x, y, N: tl.constexpr, BLOCK: tl.constexpr, MAX: tl.constexpr):
    r = tl.program_id(0)
    acc = tl.full([BLOCK], float("-inf") if MAX else 0.0, tl.float32)
    for c in tl.range(0, N, BLOCK):
        v = tl.load(x + r.to(tl.int64) * N + c + tl.arange(0, BLOCK)).to(tl.float32)
        acc = tl.maximum(acc, v) if MAX else acc + v
    tl.store(y + r, tl.max(acc) if MAX else tl.sum(acc))


@triton.jit
def row_sum_pairs(x, y, N: tl.constexpr, BLOCK: tl.constexpr, MAX: tl.constexpr):
    # x: int32 words holding two bfloat16 each; a bfloat16 is the high half of a float32.
    r = tl.program_id(0)
    acc = tl.full([BLOCK], float("-inf") if MAX else 0.0, tl.float32)
    for c in tl.range(0, N, BLOCK):
        w = tl.load(x + r.to(tl.int64) * N + c + tl.arange(0, BLOCK))
        lo = (w << 16).to(tl.float32, bitcast=True)
        hi = (w & -65536).to(tl.float32, bitcast=True)
        acc = tl.maximum(acc, tl.maximum(lo, hi)) if MAX else acc + lo + hi
    tl.store(y + r, tl.max(acc) if MAX else tl.sum(acc))


@triton.jit
def col_sum(x, y, N: tl.constexpr, BR: tl.constexpr, BN: tl.constexpr, PAIRS: tl.constexpr, CHUNK: tl.constexpr):
    # Columns [pid * BN, +BN) over rows [s * CHUNK, +CHUNK); partial sums stay per split (no combine).
    cols = tl.program_id(0) * BN + tl.arange(0, BN)
    s = tl.program_id(1)
    y += s * 2 * N
    acc = tl.zeros([BR, BN], tl.float32)
    acc_hi = tl.zeros([BR, BN], tl.float32)
    for r0 in tl.range(s * CHUNK, s * CHUNK + CHUNK, BR):
        v = tl.load(x + (r0 + tl.arange(0, BR))[:, None].to(tl.int64) * N + cols[None, :])
        if PAIRS:
            acc += (v << 16).to(tl.float32, bitcast=True)
            acc_hi += (v & -65536).to(tl.float32, bitcast=True)
        else:
            acc += v.to(tl.float32)
    tl.store(y + cols, tl.sum(acc, 0))
    if PAIRS:
        tl.store(y + N + cols, tl.sum(acc_hi, 0))


def _copy_rate(nbytes: int) -> tuple[float, float]:
    src = torch.empty(nbytes, device="cuda", dtype=torch.uint8)
    dst = torch.empty_like(src)
    ms = do_bench(lambda: dst.copy_(src), return_mode="median")
    return 2 * nbytes / ms / 1e6, ms * 1e3


def main() -> None:
    torch.manual_seed(0)
    ceiling, _ = _copy_rate(1 << 29)
    print(f"copy 512MiB: {ceiling:.0f} GB/s")
    rate, us = _copy_rate(64 << 20)
    print(f"copy 64MiB->64MiB: {rate:.0f} GB/s {us:.1f}us")
    xs = torch.randn(ROWS, COLS, device="cuda", dtype=torch.bfloat16)
    xi = xs.view(torch.int32)
    xf = torch.randn(ROWS, COLS // 2, device="cuda")
    nbytes = xs.numel() * 2
    y = torch.empty(ROWS, device="cuda", dtype=torch.float32)
    partial = torch.empty(2 * COLS * 64, device="cuda")

    def rep(name, fn):
        ms = do_bench(fn, return_mode="median")
        gbps = nbytes / ms / 1e6
        print(f"{name:40s} {ms * 1e3:7.1f}us {gbps:6.0f} GB/s {gbps / ceiling * 100:5.1f}%")

    rep("aten sum last", lambda: xs.sum(1))
    rep("aten amax last", lambda: xs.amax(1))
    rep("aten sum dim0", lambda: xs.sum(0))
    for block in (1024, 2048, 4096, 8192):
        for w in (4, 8, 16):
            rep(f"bf16 row_sum B={block} w={w}", lambda: row_sum[(ROWS,)](xs, y, COLS, block, False, num_warps=w))
            rep(f"bf16 row_max B={block} w={w}", lambda: row_sum[(ROWS,)](xs, y, COLS, block, True, num_warps=w))
    for block in (1024, 2048, 4096):
        for w in (4, 8, 16):
            rep(f"pairs row_sum B={block} w={w}",
                lambda: row_sum_pairs[(ROWS,)](xi, y, COLS // 2, block, False, num_warps=w))
            rep(f"pairs row_max B={block} w={w}",
                lambda: row_sum_pairs[(ROWS,)](xi, y, COLS // 2, block, True, num_warps=w))
        for w in (4, 8):
            rep(f"fp32 row_sum B={block} w={w}", lambda: row_sum[(ROWS,)](xf, y, COLS // 2, block, False, num_warps=w))
    for bn in (128, 256, 512):
        for br in (16, 32):
            for split in (8, 16, 32):
                chunk = ROWS // split
                rep(f"bf16 col_sum BN={bn} BR={br} S={split}",
                    lambda: col_sum[(COLS // bn, split)](xs, partial, COLS, br, bn, False, chunk, num_warps=4))
                rep(f"pairs col_sum BN={bn // 2} BR={br} S={split}",
                    lambda: col_sum[(COLS // bn, split)](xi, partial, COLS // 2, br, bn // 2, True, chunk, num_warps=4))


def smoke() -> int:
    """Each kernel once on tiny shapes (through the interpreter without a GPU), checked against torch."""
    x = torch.randn(4, 64, device=flag_gems.device, dtype=torch.bfloat16)
    words = x.view(torch.int32)
    y = torch.empty(4, device=x.device)
    partial = torch.empty(2 * 2 * 32, device=x.device)
    wrong = []
    row_sum[(4,)](x, y, 64, 16, False)
    if not torch.allclose(y, x.float().sum(1), atol=1e-3):
        wrong.append("row_sum")
    row_sum_pairs[(4,)](words, y, 32, 16, True)
    if not torch.equal(y, x.float().amax(1)):
        wrong.append("row_sum_pairs max")
    col_sum[(1, 2)](words, partial, 32, 2, 32, True, 2)
    pairs = torch.stack([partial[:32], partial[32:64]], 1).flatten()
    if not torch.allclose(pairs, x.float()[:2].sum(0), atol=1e-3):
        wrong.append("col_sum pairs")
    print("wrong: " + ", ".join(wrong) if wrong else "every kernel matches torch")
    return 1 if wrong else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, results only; runs on CPU too")
    if parser.parse_args().smoke:
        sys.exit(smoke())
    main()
