"""Offline tuning of matrix-product configurations, run on the GPU the table is for (an H100).

    python packages/gems-blas/tuning/tune_mm.py                      # sweep the default shapes
    python packages/gems-blas/tuning/tune_mm.py --shapes 1x4096x4096x4096 --precisions f16 --budget 120
    python packages/gems-blas/tuning/tune_mm.py --check              # correctness and speed through torch

A sweep times every candidate configuration of ``heuristics.candidates(..., full=True)`` for each
(shape, precision) with ``triton.testing.do_bench``, after checking the candidate's result against torch,
and records cuBLAS's time for the same product. All timings go to ``results_<card>.json`` beside this file
(``results_h100.json`` on an H100); the fastest configuration of each shape goes to the package's
``mm_table.json``, which the heuristic reads.
Shapes are BATCHxMxNxK; precisions are f16 (timed in bf16, used for fp16 too), tf32 and f32.

``--check`` runs the products of the issue through ``flag_gems`` (mm, addmm, bmm, mv, dot, fp32 with tf32
off and on), checks them against torch and prints their speed relative to torch's, and the time of the
first call of a never-seen shape in a warm process.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import torch
import triton

import flag_gems
import gems_blas.plugin
from flag_gems import plugins
from flag_gems.recording import CallCounter
from gems_blas import heuristics, mm

HERE = Path(__file__).resolve().parent

SHAPES = {
    "f16": ["1x4096x4096x4096", "1x8192x8192x8192", "1x2048x2048x2048", "1x1000x3000x777",
            "1x16x4096x14336", "1x4096x16x14336", "1x32x4096x4096", "1x128x4096x4096", "1x512x4096x4096",
            "1x2048x14336x4096", "1x2048x4096x14336", "1x128x14336x4096", "32x1024x1024x1024",
            "128x512x512x64", "128x512x64x512"],
    "tf32": ["1x4096x4096x4096", "1x1000x3000x777", "1x16x4096x14336", "32x1024x1024x1024"],
    "f32": ["1x4096x4096x4096", "1x1000x3000x777", "1x16x4096x14336", "32x1024x1024x1024"],
}
_DTYPES = {"f16": torch.bfloat16, "tf32": torch.float32, "f32": torch.float32}
# Relative error (Frobenius norm) a correct result stays under, against an fp64 reference.
_TOLERANCE = {"f16": 2e-2, "tf32": 5e-3, "f32": 1e-5}


def _parse(shape: str) -> tuple[int, int, int, int]:
    batch, m, n, k = (int(v) for v in shape.split("x"))
    return batch, m, n, k


def _operands(batch: int, m: int, n: int, k: int, dtype: torch.dtype):
    a = torch.randn(batch, m, k, device="cuda", dtype=dtype)
    b = torch.randn(batch, k, n, device="cuda", dtype=dtype) / k**0.5
    return a, b


def _rel_error(res: torch.Tensor, ref: torch.Tensor) -> float:
    return ((res.double() - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def _set_tf32(on: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = on


def tune_shape(shape: str, pclass: str, budget: float) -> dict:
    """Time the candidates of one (shape, precision); return the record written to the results file."""
    batch, m, n, k = _parse(shape)
    dtype = _DTYPES[pclass]
    _set_tf32(pclass == "tf32")
    a, b = _operands(batch, m, n, k, dtype)
    ref = torch.bmm(a.double(), b.double())
    out = torch.empty(batch, m, n, device="cuda", dtype=dtype)
    cublas_ms = triton.testing.do_bench(lambda: torch.bmm(a, b, out=out))
    dev = torch.cuda.current_device()
    facts = heuristics.device_facts(dev)
    so = out.stride()
    layout = mm.operand_layout(dev, a, b, batch, m, n, k, a.stride(), b.stride())
    key = mm.plan_key(layout, out, dtype, batch, m, n, k, None, so, None)
    # Operand copies (aligned rows, K-major tf32 operands) are made once: the sweep times the kernel alone.
    a, b = layout.operands(a, b)
    record = {"shape": [batch, m, n, k], "precision": pclass, "kernel": layout.kind, "cublas_ms": cublas_ms,
              "results": []}
    deadline = time.monotonic() + budget
    for config in heuristics.candidates(batch, m, n, k, pclass, facts, full=True):
        if time.monotonic() > deadline:
            record["stopped_by_budget"] = True
            break
        entry = {"config": config.to_json()}
        try:
            call = mm.planned_call(mm.plan_for(key, config), out, a, b, None, batch, m, n, k, layout.sa, layout.sb,
                                   so, None)

            def run():
                call(out, a, b, None, 1.0, 0.0)

            out.fill_(float("nan"))
            run()
            error = _rel_error(out, ref)
            if not error <= _TOLERANCE[pclass]:
                entry["error"] = f"wrong result: relative error {error:.3g}"
            else:
                entry["ms"] = triton.testing.do_bench(run)
        except Exception as exc:  # configurations the device cannot run are recorded and skipped
            entry["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        record["results"].append(entry)
    timed = [r for r in record["results"] if "ms" in r]
    if timed:
        best = min(timed, key=lambda r: r["ms"])
        record["best"] = best
        flops = 2.0 * batch * m * n * k
        print(f"{pclass:5s} {shape:20s} best {best['config']} {best['ms'] * 1e3:9.1f} us "
              f"({flops / best['ms'] * 1e-9:7.1f} TFLOP/s)  cuBLAS {cublas_ms * 1e3:9.1f} us  "
              f"ratio {cublas_ms / best['ms']:.3f}  [{len(timed)} timed]", flush=True)
    return record


def _environment() -> dict:
    return {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "date": datetime.date.today().isoformat()}


def results_path() -> Path:
    """``results_<card>.json`` beside this script: "NVIDIA H100 80GB HBM3" -> results_h100.json."""
    words = torch.cuda.get_device_name().split()
    card = words[1] if len(words) > 1 and words[0] == "NVIDIA" else words[0]
    return HERE / f"results_{card.lower()}.json"


def write_results(records: list[dict]) -> None:
    """Merge ``records`` into the results file and the best configurations into the table."""
    env = _environment()
    path = results_path()
    results = json.loads(path.read_text()) if path.exists() else {"runs": []}
    done = {(tuple(r["shape"]), r["precision"]) for r in records}
    results["runs"] = [r for r in results.get("runs", []) if (tuple(r["shape"]), r["precision"]) not in done]
    results["runs"] += [{**r, **env} for r in records]
    path.write_text(json.dumps(results, indent=1) + "\n")

    table = json.loads(heuristics.TABLE_PATH.read_text()) if heuristics.TABLE_PATH.exists() else {}
    configs = table.setdefault("configs", {})
    for r in records:
        if "best" not in r:
            continue
        batch, m, n, k = r["shape"]
        entries = [e for e in configs.get(r["precision"], []) if [e.get("batch", 1), e["m"], e["n"], e["k"]]
                   != [batch, m, n, k]]
        entries.append({"batch": batch, "m": m, "n": n, "k": k, "config": r["best"]["config"],
                        "us": round(r["best"]["ms"] * 1e3, 2), "cublas_us": round(r["cublas_ms"] * 1e3, 2)})
        configs[r["precision"]] = sorted(entries, key=lambda e: (e.get("batch", 1), e["m"], e["n"], e["k"]))
    table["about"] = ("Matrix-product configurations [BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, "
                      "num_stages, split_k] per precision and shape, from tuning/tune_mm.py")
    table.update(env)
    heuristics.TABLE_PATH.write_text(_table_text(table))


def _table_text(table: dict) -> str:
    """The table as JSON with one line per shape, so that diffs of a re-tuning read shape by shape."""
    head = {key: value for key, value in table.items() if key != "configs"}
    lines = ["{"] + [f" {json.dumps(key)}: {json.dumps(value)}," for key, value in head.items()]
    lines.append(' "configs": {')
    groups = list(table["configs"].items())
    for i, (pclass, entries) in enumerate(groups):
        lines.append(f"  {json.dumps(pclass)}: [")
        lines += [f"   {json.dumps(e)}{',' if j < len(entries) - 1 else ''}" for j, e in enumerate(entries)]
        lines.append("  ]" + ("," if i < len(groups) - 1 else ""))
    lines += [" }", "}"]
    return "\n".join(lines) + "\n"


# -- check ------------------------------------------------------------------------------------------------
def _compare(name: str, fn, flops: float, nbytes: float, tolerance: float) -> None:
    ref = fn()
    flag_gems.enable(families=["blas"], record=True)
    try:
        with CallCounter() as counter:
            res = fn()
        flag_gems.enable(families=["blas"])
        ours = triton.testing.do_bench(fn)
    finally:
        flag_gems.disable()
    theirs = triton.testing.do_bench(fn)
    error = _rel_error(res, ref.double())
    rate = f"{flops / ours * 1e-9:7.1f} TFLOP/s" if flops else f"{nbytes / ours * 1e-6:7.1f} GB/s"
    status = "ok " if error <= tolerance and counter.served else "BAD"
    print(f"{status} {name:34s} err {error:8.2e}  gems {ours * 1e3:9.1f} us  torch {theirs * 1e3:9.1f} us  "
          f"x{theirs / ours:5.3f}  {rate}  {dict(counter.served)}", flush=True)


def check() -> None:
    """Correctness and speed of the issue's products through flag_gems, against torch."""
    r = lambda *s, dt=torch.bfloat16: torch.randn(*s, device="cuda", dtype=dt)  # noqa: E731
    cases = []
    for dt in (torch.bfloat16, torch.float16):
        tag = str(dt).split(".")[-1]
        for s in (4096, 8192):
            a, b = r(s, s, dt=dt), r(s, s, dt=dt) / s**0.5
            cases.append((f"mm {tag} {s}^3", lambda a=a, b=b: torch.mm(a, b), 2 * s**3, 0, 2e-2))
        a, b = r(1000, 777, dt=dt), r(777, 3000, dt=dt)
        cases.append((f"mm {tag} 1000x3000x777", lambda a=a, b=b: torch.mm(a, b), 2 * 1000 * 3000 * 777, 0, 2e-2))
        a, b = r(16, 14336, dt=dt), r(14336, 4096, dt=dt)
        cases.append((f"mm {tag} 16x4096x14336", lambda a=a, b=b: torch.mm(a, b), 2 * 16 * 4096 * 14336, 0, 2e-2))
        w = r(4096, 14336, dt=dt)
        cases.append((f"mm {tag} 4096x16x14336 (w @ x.T)", lambda w=w, a=a: torch.mm(w, a.t()),
                      2 * 16 * 4096 * 14336, 0, 2e-2))
        a, b, c = r(4096, 4096, dt=dt), r(4096, 4096, dt=dt) / 64, r(4096, dt=dt)
        cases.append((f"addmm {tag} 4096^3 bias", lambda a=a, b=b, c=c: torch.addmm(c, a, b), 2 * 4096**3, 0, 2e-2))
        cases.append((f"linear {tag} 4096^3 (b.T)", lambda a=a, b=b, c=c: torch.nn.functional.linear(a, b, c),
                      2 * 4096**3, 0, 2e-2))
        a, b = r(32, 1024, 1024, dt=dt), r(32, 1024, 1024, dt=dt) / 32
        cases.append((f"bmm {tag} 32x1024^3", lambda a=a, b=b: torch.bmm(a, b), 2 * 32 * 1024**3, 0, 2e-2))
        m, x = r(8192, 8192, dt=dt), r(8192, dt=dt)
        cases.append((f"mv {tag} 8192^2", lambda m=m, x=x: torch.mv(m, x), 0, 8192 * 8192 * 2, 2e-2))
        cases.append((f"mv {tag} 8192^2 (m.T)", lambda m=m, x=x: torch.mv(m.t(), x), 0, 8192 * 8192 * 2, 2e-2))
        x, y = r(1 << 24, dt=dt), r(1 << 24, dt=dt)
        cases.append((f"dot {tag} 16M", lambda x=x, y=y: torch.dot(x, y), 0, 2 * (1 << 24) * 2, 2e-2))
    for name, fn, flops, nbytes, tol in cases:
        try:
            _compare(name, fn, flops, nbytes, tol)
        except Exception as exc:
            print(f"ERR {name}: {type(exc).__name__}: {str(exc)[:500]}", flush=True)
    a, b = r(4096, 4096, dt=torch.float32), r(4096, 4096, dt=torch.float32)
    for tf32 in (False, True):
        _set_tf32(tf32)
        # B as stored (N contiguous) and as nn.Linear's weight gives it (K contiguous).
        for layout, b_op in (("a @ b", b), ("a @ w.T", b.t().contiguous().t())):
            try:
                _compare(f"mm fp32 4096^3 {layout} tf32={tf32}", lambda b_op=b_op: torch.mm(a, b_op), 2 * 4096**3,
                         0, 5e-3 if tf32 else 1e-5)
            except Exception as exc:
                print(f"ERR mm fp32 tf32={tf32}: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
    _set_tf32(False)
    # First call of never-seen shapes in a warm process: no sweep, compiled kernels reused.
    flag_gems.enable(families=["blas"])
    try:
        for s in ((1000, 3001, 777), (123, 4567, 891), (16, 4100, 14000)):
            a, b = r(s[0], s[2]), r(s[2], s[1])
            torch.cuda.synchronize()
            t = time.perf_counter()
            torch.mm(a, b)
            torch.cuda.synchronize()
            print(f"first call mm {s}: {(time.perf_counter() - t) * 1e3:.1f} ms", flush=True)
    finally:
        flag_gems.disable()
    for key, plan in mm._plans.items():
        print("plan", key[:8], plan.grid, plan.splits, plan.launcher.constexprs, plan.launcher.options)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="check and time the issue's products, no sweep")
    parser.add_argument("--shapes", nargs="*", help="BATCHxMxNxK shapes (default: the built-in list)")
    parser.add_argument("--precisions", nargs="*", default=["f16", "tf32", "f32"], choices=list(SHAPES))
    parser.add_argument("--budget", type=float, default=90.0, help="seconds of sweeping per shape")
    parser.add_argument("--dry-run", action="store_true", help="print results, write nothing")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("tune_mm.py needs a CUDA GPU", file=sys.stderr)
        return 2
    if "blas" not in plugins.discover():  # run from a checkout without installing the package
        plugins.add_module("blas", gems_blas.plugin)
    torch.manual_seed(0)
    if args.check:
        check()
        return 0
    records = []
    for pclass in args.precisions:
        for shape in args.shapes or SHAPES[pclass]:
            records.append(tune_shape(shape, pclass, args.budget))
            if not args.dry_run:
                write_results(records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
