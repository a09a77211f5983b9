"""A/B timing of skinny products (a decoding step's few tokens times a weight) against cuBLAS, on a GPU.

    python packages/gems-blas/tuning/ab_skinny.py            # on a CUDA machine: < 90 s
    python packages/gems-blas/tuning/ab_skinny.py --smoke    # tiny shapes; runs on CPU too (interpreter)

For each shape (M tokens, N outputs, K inputs; ``F.linear`` of an (M, K) input and an (N, K) weight) it
times ATen, then each setting of ``gems_blas.heuristics``' skinny-product knobs ("default" first: the
package's own), each checked against ATen first. Two times: the kernel's (ab_blas's ``Clock``: the median of
``triton.testing.do_bench``) and the host's per call (many calls, one synchronize): a split of K adds a second
launch. (The run in benchmark/results/2026-11-28-h100-2/logs/ab_skinny.txt predates SKINNY_FILL's default:
its "default" and "table+rule" rows are this "split-K rule", its "fill" rows this "default".)
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from ab_blas import Clock

import flag_gems
from flag_gems.testing import CallCounter
from gems_blas import heuristics, mm

# "default" is the package's own (the skinny rule); "split-K rule" the rule and table it replaced.
SETTINGS = {
    "default": {},
    "split-K rule": {"SKINNY_FILL": False},
    "512 B steps": {"SKINNY_STEP_BYTES": 512},
}

SHAPES = [(m, n, k) for m in (4, 16, 64) for n, k in ((2048, 2048), (8192, 2048), (2048, 8192), (4096, 4096),
                                                      (14336, 4096), (4096, 14336), (32000, 2048))]
SMOKE_SHAPES = [(4, 96, 64), (16, 40, 130)]


def call_us(fn, calls: int) -> float:
    for _ in range(10):
        fn()
    if flag_gems.device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    if flag_gems.device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls * 1e6


def settings_applied(settings: dict):
    saved = {name: getattr(heuristics, name) for name in settings}
    for name, value in settings.items():
        setattr(heuristics, name, value)
    mm.clear_caches()
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    opts = parser.parse_args()
    shapes = SMOKE_SHAPES if opts.smoke else SHAPES
    calls = 20 if opts.smoke else 1000
    torch.manual_seed(0)
    start, wrong = time.time(), 0
    kernel_us = Clock(float("inf"))  # ab_blas's kernel timing (do_bench's median on a GPU)
    print(f"{'shape (M x N x K)':22} {'setting':12} {'kernel us':>10} {'vs ATen':>8} {'call us':>8} {'vs ATen':>8}")
    for m, n, k in shapes:
        x = torch.randn(m, k, dtype=torch.bfloat16, device=flag_gems.device)
        w = torch.randn(n, k, dtype=torch.bfloat16, device=flag_gems.device) / k**0.5
        run = lambda: F.linear(x, w)  # noqa: E731
        ref = run()
        aten_k, aten_c = kernel_us(run), call_us(run, calls)
        print(f"{f'{m}x{n}x{k}':22} {'ATen':12} {aten_k:10.1f} {'1.00x':>8} {aten_c:8.1f} {'1.00x':>8}")
        for label, settings in SETTINGS.items():
            saved = settings_applied(settings)
            try:
                with CallCounter() as counter, flag_gems.use_gems(families=["blas"], record=True):
                    out = run()
                    error = float((out.float() - ref.float()).abs().max())
                    if error > 0.05 or not counter.ran_on_gems("mm"):
                        wrong += 1
                        print(f"{'':22} {label:12} WRONG: max error {error:.3g}, ours {counter.ran_on_gems('mm')}")
                        continue
                    ours_k, ours_c = kernel_us(run), call_us(run, calls)
            finally:
                settings_applied(saved)
            print(f"{'':22} {label:12} {ours_k:10.1f} {aten_k / ours_k:7.2f}x {ours_c:8.1f} {aten_c / ours_c:7.2f}x",
                  flush=True)
    print(f"{len(shapes)} shapes, {wrong} wrong, {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
