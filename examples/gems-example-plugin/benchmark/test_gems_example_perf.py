"""Benchmarks of the example family against ATen: ``pytest examples/gems-example-plugin/benchmark -s``.

Each case times ATen and gems on the same inputs, after checking that they agree. Sizes are
realistic on a GPU and tiny on Triton's interpreter, where timings say nothing about speed.
"""

import contextlib

import pytest
import torch

import flag_gems
from flag_gems.testing import assert_close
from gems_example_plugin.rope import rope, rope_reference

DEVICE = flag_gems.device
INTERPRETER = flag_gems.runtime.device.interpreter
ERFCX_SIZES = [(64, 64)] if INTERPRETER else [(1024, 1024), (4096, 4096), (16384, 8192)]
# (batch, heads, seq, head_dim): a decoding-sized and a training-sized query.
ROPE_SHAPES = [(1, 2, 16, 32)] if INTERPRETER else [(1, 32, 1, 128), (4, 32, 2048, 128)]


def _timed(benchmark, fn):
    def run():
        fn()
        if DEVICE == "cuda":
            torch.cuda.synchronize()

    if INTERPRETER:
        benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    else:
        benchmark(run)


@pytest.mark.parametrize("impl", ["aten", "gems"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", ERFCX_SIZES)
def test_erfcx_perf(benchmark, shape, dtype, impl):
    x = torch.randn(shape, dtype=dtype, device=DEVICE)
    benchmark.group = f"special_erfcx {shape} {dtype}"
    ref = torch.special.erfcx(x.double())
    with flag_gems.use_gems(families=["example"]) if impl == "gems" else contextlib.nullcontext():
        assert_close(torch.special.erfcx(x), ref, dtype)
        _timed(benchmark, lambda: torch.special.erfcx(x))


@pytest.mark.parametrize("impl", ["aten", "gems"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", ROPE_SHAPES)
def test_rope_perf(benchmark, shape, dtype, impl):
    batch, heads, seq, head_dim = shape
    # A query as attention layers make it: (batch, seq, heads, head_dim) viewed as (batch, heads, seq, head_dim).
    q = torch.randn(batch, seq, heads, head_dim, dtype=dtype, device=DEVICE).transpose(1, 2)
    angles = torch.randn(seq, head_dim // 2, device=DEVICE)
    cos, sin = angles.cos().to(dtype), angles.sin().to(dtype)
    fn = rope if impl == "gems" else rope_reference
    benchmark.group = f"rope {shape} {dtype}"
    if impl == "gems":
        assert_close(fn(q, cos, sin), rope_reference(q.double(), cos.double(), sin.double()), dtype)
    _timed(benchmark, lambda: fn(q, cos, sin))
