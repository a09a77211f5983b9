"""Compare two benchmark runs and flag regressions.

    python benchmark/compare.py BEFORE.json AFTER.json [--threshold 0.05]

Cases are matched by id (family, op, dtype, shape, mode). A case regresses when its speedup over ATen
(measured in the same run, so that a slower or faster machine cancels out) falls by more than the
threshold, or when it stops passing its check. Metrics (first-call latency, host time, ...) regress
when a time grows by more than the threshold. Exit status 1 when anything regressed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import records

# Metric values where larger is worse (ATen's own times excepted).
_TIME_SUFFIXES = ("_ms", "_s", "_us", "ratio", "_ms_per_token")
_BROKEN = ("fail", "error", "crash")


def compare_runs(before: dict, after: dict, threshold: float) -> tuple[list[str], list[str], list[str]]:
    """(regressions, improvements, notes) as printable lines."""
    regressions, improvements, notes = [], [], []
    env_a, env_b = before.get("env") or {}, after.get("env") or {}
    for key in ("card", "torch", "triton", "driver"):
        if env_a.get(key) != env_b.get(key):
            notes.append(f"{key} differs: {env_a.get(key)} -> {env_b.get(key)}")
    old = {r["id"]: r for r in before.get("records") or [] if r.get("id")}
    new = {r["id"]: r for r in after.get("records") or [] if r.get("id")}
    for rid in sorted(old.keys() & new.keys()):
        a, b = old[rid], new[rid]
        if a.get("kind") == "metric":
            _compare_metric(rid, a, b, threshold, regressions, improvements)
            continue
        sa, sb = a.get("status"), b.get("status")
        if sa == "ok" and sb in _BROKEN:
            regressions.append(f"{rid}: was ok, now {sb}: {str(b.get('reason'))[:120]}")
        elif sa in _BROKEN and sb == "ok":
            improvements.append(f"{rid}: was {sa}, now ok")
        elif sa == "ok" and sb == "ok" and a.get("speedup") and b.get("speedup"):
            change = b["speedup"] / a["speedup"] - 1
            text = (f"{rid}: speedup {a['speedup']:.2f}x -> {b['speedup']:.2f}x ({100 * change:+.0f}%), gems "
                    f"{records.fmt_us(a.get('gems_us'))} -> {records.fmt_us(b.get('gems_us'))}")
            if change < -threshold:
                regressions.append(text)
            elif change > threshold:
                improvements.append(text)
    only_old = sorted(old.keys() - new.keys())
    if only_old:
        notes.append(f"{len(only_old)} results of the first run are missing from the second "
                     f"(e.g. {', '.join(only_old[:3])})")
    return regressions, improvements, notes


def _compare_metric(rid: str, a: dict, b: dict, threshold: float, regressions: list, improvements: list) -> None:
    if a.get("status") == "ok" and b.get("status") in _BROKEN:
        regressions.append(f"{rid}: was ok, now {b.get('status')}: {str(b.get('reason'))[:120]}")
        return
    va, vb = a.get("values") or {}, b.get("values") or {}
    for key in sorted(va.keys() & vb.keys()):
        x, y = va[key], vb[key]
        if not key.endswith(_TIME_SUFFIXES) or key.startswith("aten") or isinstance(x, bool) \
                or not isinstance(x, (int, float)) or not isinstance(y, (int, float)) or x <= 0:
            continue
        change = y / x - 1
        text = f"{rid} {key}: {x:.4g} -> {y:.4g} ({100 * change:+.0f}%)"
        if change > threshold:
            regressions.append(text)
        elif change < -threshold:
            improvements.append(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--threshold", type=float, default=0.05, help="relative change that counts (default 0.05)")
    parser.add_argument("--all", action="store_true", help="also list improvements")
    args = parser.parse_args(argv)
    regressions, improvements, notes = compare_runs(records.merge([args.before]), records.merge([args.after]),
                                                    args.threshold)
    for text in notes:
        print(f"note: {text}")
    if args.all and improvements:
        print(f"{len(improvements)} improved:")
        for text in improvements:
            print(f"  + {text}")
    print(f"{len(regressions)} regressed (threshold {100 * args.threshold:.0f}%), {len(improvements)} improved")
    for text in regressions:
        print(f"  - {text}")
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
