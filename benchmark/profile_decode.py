"""Where a decoding step of the small Llama spends its time, with and without gems.

    python benchmark/profile_decode.py [--steps N] [--rows N]

Prints torch.profiler's tables for a few greedy decoding steps: device time per kernel and host time
per ATen op, ATen first, then gems. Diagnostics for issue work, not a benchmark of record.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rows", type=int, default=18)
    opts = parser.parse_args()
    model = decoder.Decoder(decoder.LLAMA_1B, "cuda", torch.bfloat16)
    token = torch.zeros(1, 1, dtype=torch.int64, device="cuda")
    table(model, token, opts.steps, opts.rows, "ATen")
    with flag_gems.use_gems():
        table(model, token, opts.steps, opts.rows, "gems")
        python_profile(model, token, opts.steps, opts.rows + 12)


if __name__ == "__main__":
    main()
