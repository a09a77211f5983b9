"""Where the host time of a tiny op goes: layer by layer for ``add``, and a profile of each tiny op.

    python benchmark/profile_host.py [--calls N] [--profile]

Prints µs per call (many calls, one synchronize) of ATen's add, of gems' add through the dispatcher,
of the family's function called from Python, of the generated op, of an output allocation and of a
launch of the compiled kernel alone; with ``--profile``, cProfile's top entries for each tiny op.
Diagnostics for the direct-launch work, not a benchmark of record.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import torch
import torch.nn.functional as F

import flag_gems


def per_call_us(fn, calls: int) -> float:
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - start) / calls * 1e6)
    return best


def layers_of_add(calls: int) -> None:
    from flag_gems import registry

    x = torch.randn(1024, device="cuda", dtype=torch.bfloat16)
    y = torch.randn(1024, device="cuda", dtype=torch.bfloat16)
    out = torch.empty_like(x)
    rows = [("aten torch.add", lambda: torch.add(x, y)),
            ("torch.empty(1024, bf16)", lambda: torch.empty(1024, dtype=torch.bfloat16, device="cuda"))]
    with flag_gems.use_gems(families=["pointwise"]):
        entry = registry.served()["add.Tensor"]
        family_fn = entry.fn
        rows.append(("gems torch.add (dispatcher)", lambda: torch.add(x, y)))
        rows.append(("family function from Python", lambda: family_fn(x, y)))
        from gems_pointwise import binary

        kernel = binary.add_kernel
        rows.append(("pointwise_dynamic op", lambda: kernel(x, y)))
        rows.append(("pointwise_dynamic op, out0=", lambda: kernel(x, y, out0=out)))
        kernel(x, y, out0=out)
        plan = next(iter(kernel._plans.values()))
        launcher = next(iter(plan.flat_launchers.values()))
        launch, function, head, tail = next(iter(launcher._compiled.values()))
        stream = torch.cuda.current_stream().cuda_stream
        args = [x, y, out, 1024]
        rows.append(("compiled kernel, direct launch", lambda: launch(1, 1, 1, stream, function, *head, *args, *tail)))
        results = []
        for name, fn in rows:
            try:
                results.append((name, per_call_us(fn, calls)))
            except Exception as error:  # a diagnostic row that does not apply to this Triton
                results.append((name, f"failed: {type(error).__name__}: {error}"[:100]))
    print("\nadd, 1024 bf16: µs per call")
    for name, us in results:
        print(f"  {name:36s} {us if isinstance(us, str) else f'{us:8.2f}'}")


def profiles(calls: int) -> None:
    x = torch.randn(1024, device="cuda", dtype=torch.bfloat16)
    y = torch.randn(1024, device="cuda", dtype=torch.bfloat16)
    row = x.view(1, 1024)
    w = torch.randn(1024, device="cuda", dtype=torch.bfloat16)
    a = torch.randn(16, 16, device="cuda", dtype=torch.bfloat16)
    ops = {
        "add": lambda: torch.add(x, y), "mul_scalar": lambda: x * 1.5, "silu": lambda: F.silu(x),
        "sum": lambda: torch.sum(x), "softmax": lambda: torch.softmax(x, -1),
        "rms_norm": lambda: F.rms_norm(row, (1024,), w, 1e-6),
        "layer_norm": lambda: F.layer_norm(row, (1024,), w, w), "mm": lambda: torch.mm(a, a),
    }
    with flag_gems.use_gems():
        for name, fn in ops.items():
            for _ in range(20):
                fn()
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(calls):
                fn()
            profiler.disable()
            torch.cuda.synchronize()
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(10)
            lines = [ln for ln in text.getvalue().splitlines() if ln.strip()][3:16]
            print(f"\n-- {name}: cProfile, {calls} calls\n" + "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--profile", action="store_true")
    opts = parser.parse_args()
    layers_of_add(opts.calls)
    if opts.profile:
        profiles(max(opts.calls // 10, 100))


if __name__ == "__main__":
    main()
