"""Where the host time of a tiny gems call goes: cProfile over many calls of a pointwise op.

    python scripts/profile_host.py
"""

from __future__ import annotations

import cProfile
import pstats
import time

import torch
import triton

import flag_gems


@flag_gems.pointwise_dynamic(is_tensor=[True, True, False], promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def add_kernel(x, y, alpha):
    return x + y * alpha


def host_us(fn, calls: int = 3000) -> float:
    for _ in range(100):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    x = torch.randn(1024, device=flag_gems.device, dtype=torch.bfloat16)
    for _ in range(100):
        add_kernel(x, x, 1.0)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(5000):
        add_kernel(x, x, 1.0)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    aten = host_us(lambda: torch.abs(x))
    direct = host_us(lambda: add_kernel(x, x, 1.0))
    with flag_gems.use_gems():
        served = host_us(lambda: torch.abs(x))
    print(f"host us per call: aten abs {aten:.1f}, pointwise_dynamic add {direct:.1f}, abs through gems {served:.1f}")


if __name__ == "__main__":
    main()
