"""Which kernels a call runs, and for how long, with and without gems: torch.profiler's device table.

    python benchmark/profile_ops.py [CASE ...] [--rows N] [--calls N]

Cases are named in ``CASES`` (default: all). For each, ATen's table and then gems', by device time.
Diagnostics for issue work, not a benchmark of record.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

import flag_gems


def _rows(dtype, shape=(8192, 4096)):
    x = torch.randn(shape, device="cuda", dtype=dtype, requires_grad=True)
    w = (torch.rand(shape[-1], device="cuda", dtype=dtype) + 0.5).requires_grad_()
    b = torch.randn(shape[-1], device="cuda", dtype=dtype, requires_grad=True)
    gy = torch.randn(shape, device="cuda", dtype=dtype)
    return x, w, b, gy


def rms_fwd_bwd(dtype):
    x, w, _, gy = _rows(dtype)
    return lambda: torch.autograd.grad(F.rms_norm(x, (x.shape[-1],), w, 1e-6), (x, w), gy)


def layer_norm_fwd_bwd(dtype):
    x, w, b, gy = _rows(dtype)
    return lambda: torch.autograd.grad(F.layer_norm(x, (x.shape[-1],), w, b, 1e-5), (x, w, b), gy)


CASES = {
    "rms_fwd_bwd_bf16": lambda: rms_fwd_bwd(torch.bfloat16),
    "rms_fwd_bwd_fp32": lambda: rms_fwd_bwd(torch.float32),
    "layer_norm_fwd_bwd_bf16": lambda: layer_norm_fwd_bwd(torch.bfloat16),
}


def table(fn, calls: int, rows: int, label: str) -> None:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    print(f"\n===== {label}: {calls} calls, by device time")
    print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=rows, max_name_column_width=70))


def timings(fn, label: str) -> None:
    """do_bench's median with and without its L2 flush, and a host-only clock per call; then one call
    with CUDA's sync debug mode on, which warns at any synchronizing call."""
    import time

    import triton

    flushed = triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median") * 1e3
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(20):
        fn()
    host = (time.perf_counter() - start) / 20 * 1e6
    torch.cuda.synchronize()
    print(f"{label}: do_bench {flushed:.1f} us, host per call (enqueue) {host:.1f} us")
    torch.cuda.set_sync_debug_mode("warn")
    fn()
    torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(20):
        fn()
    profiler.disable()
    torch.cuda.synchronize()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(12)
    print(text.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", default=list(CASES))
    parser.add_argument("--rows", type=int, default=14)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--time", action="store_true", help="timings and a sync check instead of tables")
    opts = parser.parse_args()

    def show(f, label):
        return timings(f, label) if opts.time else table(f, opts.calls, opts.rows, label)

    for name in opts.cases:
        fn = CASES[name]()
        show(fn, f"{name} ATen")
        with flag_gems.use_gems():
            show(fn, f"{name} gems")


if __name__ == "__main__":
    main()
