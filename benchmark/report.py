"""Merge benchmark records into one results file, write a markdown summary, print a compact one.

    python benchmark/report.py RESULTS... [-o results.json] [--markdown summary.md]

RESULTS are the JSON-lines files the suite writes (``--bench-record``), merged results files or
pytest-benchmark JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import records

FAMILIES = ("pointwise", "reduction", "blas", "norm")


def _num(value, fmt: str = "{:.3g}") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return fmt.format(value)
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out + [""]


def _env_lines(env: dict) -> list[str]:
    ceiling = env.get("copy_ceiling_gbps")
    peak = env.get("matmul_peak_tflops")
    families = env.get("families") or {}
    fams = ", ".join(f"{name} {info.get('version', '')}" + (" (load error)" if info.get("error") else "")
                     for name, info in sorted(families.items()) if isinstance(info, dict))
    return [
        f"- card: {env.get('card', '?')} (driver {env.get('driver', '?')}, CUDA {env.get('cuda', '?')})",
        f"- torch {env.get('torch', '?')}, triton {env.get('triton', '?')}, Python {env.get('python', '?')}, "
        f"flag_gems {env.get('flag_gems', '?')}; families: {fams or '?'}",
        f"- date: {env.get('date', '?')}",
        "- measured ceilings: " + (f"copy {ceiling:.0f} GB/s (read + write)" if ceiling else "copy -")
        + (f", cuBLAS bf16 8192^3 {peak:.0f} TFLOP/s" if peak else ""),
        "",
    ]


def _rate(r: dict) -> str:
    if r.get("gems_tflops") is not None:
        return f"{r['gems_tflops']:.0f} TFLOP/s ({100 * r['cublas_frac']:.0f}% of cuBLAS)"
    if r.get("gems_gbps") is not None:
        frac = f" ({100 * r['ceiling_frac']:.0f}% of copy; ATen {100 * r['aten_ceiling_frac']:.0f}%)" \
            if r.get("ceiling_frac") is not None else ""
        if r.get("read_ceiling_frac") is not None:
            frac += (f" ({100 * r['read_ceiling_frac']:.0f}% of a read of its size; "
                     f"ATen {100 * r['aten_read_ceiling_frac']:.0f}%)")
        return f"{r['gems_gbps']:.0f} GB/s{frac}"
    return "-"


def _case_rows(rows: Sequence[dict]) -> list[list[str]]:
    out = []
    for r in sorted(rows, key=lambda r: (r.get("op", ""), r.get("dtype", ""), r.get("shape_str", ""))):
        if r.get("status") == "ok":
            out.append([r["op"], r.get("dtype", ""), r.get("shape_str", ""), records.fmt_us(r.get("aten_us")),
                        records.fmt_us(r.get("gems_us")), f"{r['speedup']:.2f}x", _rate(r)])
        else:
            out.append([r.get("op", ""), r.get("dtype", ""), r.get("shape_str", ""), "-", "-",
                        r.get("status", "?"), str(r.get("reason", ""))[:120].replace("|", "/")])
    return out


def markdown(results: dict) -> str:
    """The summary of a run as markdown: environment, per-family tables, host overhead and metrics."""
    env, recs = results.get("env") or {}, results.get("records") or []
    cases = [r for r in recs if r.get("kind") == "case"]
    metrics = [r for r in recs if r.get("kind") == "metric"]
    out = ["# flag_gems benchmark results", ""] + _env_lines(env)
    out += ["Speedup is ATen's time over gems' time (above 1: gems is faster). Kernel mode: device time, "
            "median of `triton.testing.do_bench` with the L2 flushed. Operator mode: time per call over many "
            "calls with one synchronize (host time included).", ""]
    out += ["## Overview", ""]
    overview = []
    for mode in ("kernel", "operator"):
        for family in FAMILIES:
            rows = [r for r in cases if r.get("family") == family and r.get("mode") == mode]
            if not rows:
                continue
            ok = [r for r in rows if r.get("status") == "ok" and r.get("speedup")]
            g = records.geomean([r["speedup"] for r in ok])
            overview.append([family, mode, str(len(ok)), _num(g, "{:.2f}x"),
                             str(sum(1 for r in ok if r["speedup"] < 0.95)),
                             str(sum(1 for r in rows if r.get("status") in ("fail", "error", "crash"))),
                             str(sum(1 for r in rows if r.get("status") in ("skip", "fallback")))])
    out += _table(["family", "mode", "timed", "geomean speedup", "below 0.95x", "failed", "skipped"], overview)
    host = [r for r in cases if r.get("family") == "overhead"]
    if host:
        out += ["## Host time per call on tiny tensors (1024 elements bf16, 16x16 mm)", ""]
        rows = [[r["op"], records.fmt_us(r.get("aten_us")), records.fmt_us(r.get("gems_us")),
                 _num(r.get("host_ratio"), "{:.2f}"), "meets" if r.get("meets_target") else
                 ("MISSES" if r.get("status") == "ok" else r.get("status", ""))] for r in host]
        out += _table(["op", "ATen", "gems", "gems/ATen", "target <= 1.5"], rows)
    groups: dict[str, list[dict]] = {}
    for m in metrics:
        groups.setdefault(m.get("group", ""), []).append(m)
    for group, items in groups.items():
        out += [f"## {group}", ""]
        keys = list(dict.fromkeys(k for m in items for k in (m.get("values") or {})))
        rows = []
        for m in items:
            verdicts = ", ".join(f"{k}: {v}" for k, v in (m.get("verdicts") or {}).items())
            status = m.get("status", "ok") if m.get("status") != "ok" else (verdicts or "ok")
            rows.append([m.get("name", "")] + [_num((m.get("values") or {}).get(k)) for k in keys]
                        + [status + (f" ({m['reason']})" if m.get("reason") else "")])
        out += _table(["name"] + keys + ["verdict"], rows)
    for mode in ("kernel", "operator", "quick"):
        for family in FAMILIES:
            rows = [r for r in cases if r.get("family") == family and r.get("mode") == mode]
            if rows:
                out += [f"## {family}, {mode} mode", ""]
                out += _table(["op", "dtype", "shape", "ATen", "gems", "speedup", "rate"], _case_rows(rows))
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="record files (JSON lines), results JSON or pytest-benchmark JSON")
    parser.add_argument("-o", "--output", help="write the merged results JSON here")
    parser.add_argument("--markdown", help="write the markdown summary here")
    args = parser.parse_args(argv)
    results = records.merge(args.inputs)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=1, default=str)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(results) + "\n")
    env = results.get("env") or {}
    print(f"flag_gems benchmark on {env.get('card', '?')}, torch {env.get('torch', '?')}, "
          f"triton {env.get('triton', '?')}, {env.get('date', '?')}")
    for text in records.summary_lines(results["records"]):
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
