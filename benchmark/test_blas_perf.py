"""Matrix products (gems-blas) against cuBLAS through ATen.

Shapes are written (M, N, K) for A (M, K) @ B (K, N), with a leading batch for bmm-like ops. Square
4096^3 and 8192^3, an odd 1000x3000x777, LLM projections (prefill with 8192 tokens, decode with 16)
and the skinny 16x4096x14336 pair; bf16 and fp16 with fp32 accumulation, fp32 as ATen computes it
(tf32 only when torch allows it). Products report TFLOP/s and the fraction of cuBLAS (ATen's time
over ours); mv, dot and outer products are memory-bound and report GB/s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmark.harness import BF16, FP16, FP32, Case, randn

FAMILY = "blas"

QUICK_MNK = (16, 24, 40)
aten = torch.ops.aten


def mm_args(shape, dtype):
    m, n, k = shape
    return randn(m, k, dtype=dtype, scale=0.1), randn(k, n, dtype=dtype, scale=0.1)


def mm_transposed_args(shape, dtype):
    """B stored as (N, K), as nn.Linear keeps its weight."""
    m, n, k = shape
    return randn(m, k, dtype=dtype, scale=0.1), randn(n, k, dtype=dtype, scale=0.1).t()


def addmm_args(shape, dtype):
    m, n, k = shape
    return (randn(n, dtype=dtype),) + mm_args(shape, dtype)


def linear_args(shape, dtype):
    """A batch of tokens through an nn.Linear with bias: x (M, K), weight (N, K), bias (N)."""
    m, n, k = shape
    return randn(m, k, dtype=dtype, scale=0.1), randn(n, k, dtype=dtype, scale=0.1), randn(n, dtype=dtype)


def bmm_args(shape, dtype):
    b, m, n, k = shape
    return randn(b, m, k, dtype=dtype, scale=0.1), randn(b, k, n, dtype=dtype, scale=0.1)


def baddbmm_args(shape, dtype):
    b, m, n, _ = shape
    return (randn(b, m, n, dtype=dtype),) + bmm_args(shape, dtype)


def addbmm_args(shape, dtype):
    _, m, n, _ = shape
    return (randn(m, n, dtype=dtype),) + bmm_args(shape, dtype)


def mv_args(shape, dtype):
    m, k = shape
    return randn(m, k, dtype=dtype, scale=0.1), randn(k, dtype=dtype, scale=0.1)


def addmv_args(shape, dtype):
    return (randn(shape[0], dtype=dtype),) + mv_args(shape, dtype)


def vectors(shape, dtype):
    return randn(shape[0], dtype=dtype, scale=0.1), randn(shape[-1], dtype=dtype, scale=0.1)


def addr_args(shape, dtype):
    m, n = shape
    return randn(m, n, dtype=dtype), randn(m, dtype=dtype), randn(n, dtype=dtype)


def mm_tf32(a, b):
    """torch.mm with tf32 allowed, as `torch.backends.cuda.matmul.allow_tf32 = True` (or
    `torch.set_float32_matmul_precision("high")`) makes every fp32 product of a model."""
    allowed = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        return torch.mm(a, b)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allowed


def tf32_close(args, res, ref) -> str | None:
    """tf32 rounds each operand to 10 mantissa bits: results agree to about 1e-3 of their norm."""
    error = float((res.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30))
    return None if error <= 5e-3 else f"relative error {error:.3g} above tf32's 5e-3"


def mm_flops(args, out):
    a, b = args[-2], args[-1]
    batch = a.shape[0] if a.dim() == 3 else 1
    return 2 * batch * a.shape[-2] * a.shape[-1] * b.shape[-1]


def linear_flops(args, out):
    x, w = args[0], args[1]
    return 2 * x.shape[0] * x.shape[1] * w.shape[0]


def _k(shape):
    return shape[-1]


def _mm_case(name, fn, make, aten_names, shapes, dtypes=(BF16, FP16, FP32), small=(), quick=QUICK_MNK,
             flops=mm_flops, **kw) -> Case:
    return Case(name, fn, make, shapes=shapes, small=small, quick=quick, dtypes=dtypes, aten=aten_names,
                flops=flops, reduce_dim=_k, **kw)


SQUARE = ((4096, 4096, 4096), (8192, 8192, 8192))
LLM = ((8192, 14336, 4096), (8192, 4096, 14336), (1000, 3000, 777), (16, 14336, 4096), (16, 4096, 14336))
DECODE = ((1, 4096, 4096), (16, 4096, 4096))

CASES = [
    _mm_case("mm", torch.mm, mm_args, ["mm"], SQUARE + LLM, small=DECODE),
    _mm_case("mm_fp16_8192", torch.mm, mm_args, ["mm"], SQUARE[1:], dtypes=(FP16,)),
    # B stored (N, K), the order Hopper's tf32 instructions take (the other order goes to ATen).
    _mm_case("mm_tf32", mm_tf32, mm_transposed_args, ["mm"], SQUARE[:1], dtypes=(FP32,), check=tf32_close),
    _mm_case("mm_b_transposed", torch.mm, mm_transposed_args, ["mm"], ((4096, 4096, 4096), (16, 14336, 4096)),
             dtypes=(BF16,)),
    _mm_case("addmm", torch.addmm, addmm_args, ["addmm"], ((4096, 4096, 4096), (8192, 14336, 4096)),
             dtypes=(BF16, FP16), small=DECODE[:1], quick=QUICK_MNK),
    _mm_case("linear", F.linear, linear_args, ["addmm", "mm"], ((8192, 4096, 4096), (8192, 14336, 4096)),
             dtypes=(BF16,), small=DECODE[:1], flops=linear_flops),
    _mm_case("bmm", torch.bmm, bmm_args, ["bmm"], ((32, 1024, 1024, 1024), (64, 512, 512, 128)),
             dtypes=(BF16, FP16), small=((8, 64, 64, 64),), quick=(2, 16, 24, 40)),
    _mm_case("baddbmm", lambda c, a, b: torch.baddbmm(c, a, b, alpha=0.5, beta=0.5), baddbmm_args, ["baddbmm"],
             ((32, 1024, 1024, 1024),), dtypes=(BF16,), quick=(2, 16, 24, 40)),
    _mm_case("addbmm", torch.addbmm, addbmm_args, ["addbmm"], ((32, 1024, 1024, 1024),), dtypes=(BF16,),
             quick=(2, 16, 24, 40)),
    # Memory-bound products: GB/s against the copy ceiling.
    Case("mv", torch.mv, mv_args, shapes=((14336, 4096), (4096, 14336)), small=((4096, 4096),), quick=(24, 40),
         dtypes=(BF16, FP32), aten=["mv"], reduce_dim=_k),
    Case("addmv", torch.addmv, addmv_args, shapes=((14336, 4096),), quick=(24, 40), dtypes=(BF16,),
         aten=["addmv"], reduce_dim=_k),
    Case("dot", torch.dot, vectors, shapes=((2**26,),), small=((4096,),), quick=(1000,), dtypes=(FP32, BF16),
         aten=["dot"], reduce_dim=_k),
    Case("vdot", torch.vdot, vectors, shapes=((2**26,),), quick=(1000,), dtypes=(FP32,), aten=["vdot"],
         reduce_dim=_k),
    Case("outer", torch.outer, vectors, shapes=((8192, 8192),), quick=(24, 40), dtypes=(BF16,),
         aten=["addr", "mul.Tensor"]),
    Case("addr", torch.addr, addr_args, shapes=((8192, 8192),), quick=(24, 40), dtypes=(BF16,), aten=["addr"]),
]


def test_blas_perf(point, bench):
    bench.run(point)
