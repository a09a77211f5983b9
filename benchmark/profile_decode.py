"""Where a decoding step of the small Llama spends its time, with and without gems.

    python benchmark/profile_decode.py [--steps N] [--rows N]
    python benchmark/profile_decode.py --time [--steps N]

Prints torch.profiler's tables for a few greedy decoding steps: device time per kernel and host time
per ATen op, ATen first, then gems; with ``--time``, milliseconds a token instead (no profiler), five
rounds of ATen and gems in turn. Diagnostics for issue work, not a benchmark of record.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import flag_gems

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository's benchmark package
from benchmark import decoder  # noqa: E402


def table(model, token, steps: int, rows: int, label: str) -> None:
    model.decode(token, 8, 3)  # warm: compiles and caches
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        model.decode(token, 16, steps)
        torch.cuda.synchronize()
    averages = prof.key_averages()
    print(f"\n===== {label}: {steps} steps, by device time")
    print(averages.table(sort_by="self_device_time_total", row_limit=rows, max_name_column_width=60))
    print(f"\n===== {label}: by host time (self)")
    print(averages.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=60))


def python_profile(model, token, steps: int, rows: int) -> None:
    """cProfile of gems' decoding steps: which Python functions the host time goes to."""
    import cProfile
    import io
    import pstats

    model.decode(token, 8, 3)
    torch.cuda.synchronize()
    profiler = cProfile.Profile()
    profiler.enable()
    model.decode(token, 16, steps)
    torch.cuda.synchronize()
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(rows)
    print(f"\n===== gems: {steps} steps, cProfile by own time\n{text.getvalue()}")


def per_token(model, token, steps: int) -> None:
    """Milliseconds a token, ATen and gems in turn (the benchmark's decode row, without its harness)."""
    import statistics
    import time

    def ms() -> float:
        torch.cuda.synchronize()
        start = time.perf_counter()
        model.decode(token, 256, steps)
        torch.cuda.synchronize()
        return (time.perf_counter() - start) / steps * 1e3

    ms()
    with flag_gems.use_gems():
        ms()
    aten, gems = [], []
    for _ in range(5):
        aten.append(ms())
        with flag_gems.use_gems():
            gems.append(ms())
    a, g = statistics.median(aten), statistics.median(gems)
    print(f"decoding step, {steps} tokens a round: ATen {a:.2f} ms a token, gems {g:.2f} ({g / a:.2f}x); "
          f"rounds ATen {[round(v, 2) for v in aten]}, gems {[round(v, 2) for v in gems]}")
    from flag_gems import native

    print("replayed launches (op: calls replayed, signatures planned, signatures given up, why not):")
    for op, (hits, plans, gave_up, why) in sorted(native.stats().items()):
        if hits or plans or gave_up or why:
            print(f"  {op:32s} {hits:8d} {plans:4d} {gave_up:4d} {why}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rows", type=int, default=18)
    parser.add_argument("--time", action="store_true", help="milliseconds a token, no profiler")
    opts = parser.parse_args()
    model = decoder.Decoder(decoder.LLAMA_1B, "cuda", torch.bfloat16)
    token = torch.zeros(1, 1, dtype=torch.int64, device="cuda")
    if opts.time:
        per_token(model, token, max(opts.steps, 32))
        return
    table(model, token, opts.steps, opts.rows, "ATen")
    with flag_gems.use_gems():
        table(model, token, opts.steps, opts.rows, "gems")
        python_profile(model, token, opts.steps, opts.rows + 12)


if __name__ == "__main__":
    main()
