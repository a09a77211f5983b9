"""Draw the speedup of each op over ATen, grouped by family, from a results file.

    python benchmark/chart.py results.json -o chart.png [--mode kernel] [--title TEXT]

One panel per family; each bar is an op's geometric-mean speedup over its timed shapes and dtypes
(ATen's time over gems'), on a log scale, with the 1.0 line (as fast as ATen) and the family's
geometric mean. Bars of ops slower than ATen are drawn in a second colour.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import records

FAMILIES = ("pointwise", "reduction", "blas", "norm")
FASTER, SLOWER, MEAN = "#2e7d32", "#c62828", "#1565c0"


def op_speedups(recs: Sequence[dict], mode: str) -> dict[str, list[tuple[str, float, int]]]:
    """family -> [(op, geometric-mean speedup, points)], fastest first."""
    grouped: dict[str, dict[str, list[float]]] = {}
    for r in recs:
        if (r.get("kind") == "case" and r.get("status") == "ok" and r.get("mode") == mode and r.get("speedup")
                and r.get("family") in FAMILIES):
            grouped.setdefault(r["family"], {}).setdefault(r["op"], []).append(r["speedup"])
    out = {}
    for family in FAMILIES:
        ops = grouped.get(family)
        if ops:
            rows = [(op, records.geomean(values), len(values)) for op, values in ops.items()]
            out[family] = sorted(rows, key=lambda row: -row[1])
    return out


def pick_mode(recs: Sequence[dict]) -> str:
    modes = [r.get("mode") for r in recs if r.get("kind") == "case" and r.get("status") == "ok"]
    for mode in ("kernel", "operator", "quick"):
        if mode in modes:
            return mode
    return "kernel"


def draw(results: dict, output: str, mode: str | None = None, title: str | None = None) -> bool:
    """Write the chart to ``output``; False when there is nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    recs = results.get("records") or []
    mode = mode or pick_mode(recs)
    data = op_speedups(recs, mode)
    if not data:
        return False
    env = results.get("env") or {}
    widest = max(len(rows) for rows in data.values())
    fig, axes = plt.subplots(len(data), 1, figsize=(max(8.0, 0.22 * widest + 2), 3.2 * len(data)), squeeze=False)
    for ax, (family, rows) in zip(axes[:, 0], data.items()):
        names = [op for op, _, _ in rows]
        values = [v for _, v, _ in rows]
        g = records.geomean(values)
        ax.bar(range(len(values)), values, color=[FASTER if v >= 1.0 else SLOWER for v in values], width=0.75)
        ax.axhline(1.0, color="black", linewidth=1.0)
        ax.axhline(g, color=MEAN, linewidth=1.2, linestyle="--", label=f"geomean {g:.2f}x")
        ax.set_yscale("log")
        low, high = min(values + [g, 1.0]), max(values + [g, 1.0])
        ax.set_ylim(low / 1.25, high * 1.25)
        ax.yaxis.set_major_locator(LogLocator(base=2))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=90, fontsize=7)
        ax.set_xlim(-0.6, widest - 0.4)
        ax.set_ylabel("speedup over ATen")
        ax.set_title(f"{family}: {len(rows)} ops, geomean {g:.2f}x", fontsize=10, loc="left")
        ax.legend(loc="upper right", fontsize=8)
        ax.grid(axis="y", which="major", alpha=0.3)
    heading = title or (f"flag_gems speedup over PyTorch eager ({mode} time) on {env.get('card', '?')}, "
                        f"torch {env.get('torch', '?')}, triton {env.get('triton', '?')}, "
                        f"{str(env.get('date', ''))[:10]}")
    fig.suptitle(heading, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="results JSON, record files (JSON lines) or pytest-benchmark JSON")
    parser.add_argument("-o", "--output", default="chart.png")
    parser.add_argument("--mode", choices=("kernel", "operator", "quick"), help="default: kernel if present")
    parser.add_argument("--title")
    args = parser.parse_args(argv)
    if not draw(records.merge(args.inputs), args.output, args.mode, args.title):
        print("nothing to draw: no timed case in the inputs", file=sys.stderr)
        return 1
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
