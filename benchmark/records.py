"""Benchmark records: reading and merging result files, and formatting records as lines.

A record is a dict. ``kind`` says what it is: ``env`` (card, driver, versions, date, measured
ceilings), ``case`` (one op at one shape and dtype: ATen's time and ours), ``metric`` (a named
measurement such as first-call latency), ``start`` (a measurement began; used to resume after a
crash). Files are JSON lines as the suite writes them, a merged results JSON (``report.py``), or
pytest-benchmark's JSON, whose ``extra_info`` holds the same records. Only the standard library is
used here, so results can be read, charted and compared on a machine without torch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

FORMAT = "flag_gems-benchmark/1"


def load(path: str) -> tuple[list[dict], list[dict]]:
    """(environments, records) from a JSON-lines file, a merged results file or pytest-benchmark JSON."""
    with open(path) as f:
        text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None  # JSON lines
    if isinstance(data, dict) and data.get("kind") is None:
        if "records" in data:
            return list(data.get("envs") or [data.get("env") or {}]), list(data["records"])
        if "benchmarks" in data:
            records = [b.get("extra_info") or {} for b in data["benchmarks"]]
            machine = data.get("machine_info") or {}
            env = {"kind": "env", "date": data.get("datetime"), "machine": machine, **(machine.get("flag_gems") or {})}
            return [env], [r for r in records if r.get("kind")]
    items = []
    for raw in text.splitlines():
        try:
            items.append(json.loads(raw))
        except json.JSONDecodeError:
            continue  # a line cut short by a killed process
    envs = [i for i in items if i.get("kind") == "env"]
    records = [i for i in items if i.get("kind") in ("case", "metric")]
    return envs, records + crashes(items)


def crashes(items: Sequence[dict]) -> list[dict]:
    """A crash record for each measurement that started but never recorded a result: the process
    died (a segfault, an illegal address that killed it) or was killed at its time limit."""
    done = {i.get("id") for i in items if i.get("kind") in ("case", "metric")}
    out = []
    for record_id in dict.fromkeys(i.get("id") for i in items if i.get("kind") == "start"):
        if record_id and record_id not in done:
            family, _, rest = record_id.partition("/")
            name, _, mode = rest.rpartition("/")
            out.append({"kind": "case", "id": record_id, "family": family, "op": name, "mode": mode,
                        "status": "crash", "reason": "the process died or was killed while this ran"})
    return out


def latest(records: Sequence[dict]) -> list[dict]:
    """One record per id, the last written (a resumed run may record a point again)."""
    by_id: dict = {}
    for r in records:
        by_id[r.get("id") or id(r)] = r
    return list(by_id.values())


def merge(paths: Sequence[str]) -> dict:
    """One results object from several files: the first environment with measured ceilings leads."""
    envs, records = [], []
    for path in paths:
        e, r = load(path)
        envs.extend(e)
        records.extend(r)
    lead = next((e for e in envs if e.get("copy_ceiling_gbps")), envs[0] if envs else {})
    return {"format": FORMAT, "env": lead, "envs": envs, "records": latest(records)}


def fmt_us(us: float | None) -> str:
    if us is None:
        return "-"
    if us >= 1e4:
        return f"{us / 1e3:.1f}ms"
    if us >= 100:
        return f"{us:.0f}us"
    return f"{us:.1f}us"


def line(record: dict) -> str:
    """One line for a case record."""
    head = (f"{record.get('mode', ''):8} {record.get('family', ''):9} {record.get('op', ''):24} "
            f"{record.get('dtype', ''):4} {record.get('shape_str', ''):18}")
    status = record.get("status")
    if status != "ok":
        return f"{head} {status.upper():8} {record.get('reason', '')}"
    if record.get("mode") == "quick":
        return f"{head} ok       checked against ATen (one call, not a timing)"
    text = (f"{head} aten {fmt_us(record.get('aten_us')):>8}  gems {fmt_us(record.get('gems_us')):>8}  "
            f"{record.get('speedup') or 0:5.2f}x")
    if record.get("tier") == "small":
        pass  # bytes per second of a tiny tensor say nothing; the time per call is the number
    elif record.get("gems_tflops") is not None:
        text += f"  {record['gems_tflops']:6.1f} TFLOP/s  {100 * record['cublas_frac']:4.0f}% of cuBLAS"
    elif record.get("gems_gbps") is not None:
        text += f"  {record['gems_gbps']:6.0f} GB/s"
        if record.get("ceiling_frac") is not None:
            text += f"  {100 * record['ceiling_frac']:4.0f}% of copy (ATen {100 * record['aten_ceiling_frac']:.0f}%)"
        if record.get("read_ceiling_frac") is not None:
            read, aten_read = record["read_ceiling_frac"], record["aten_read_ceiling_frac"]
            text += f"  {100 * read:4.0f}% of a same-size read (ATen {100 * aten_read:.0f}%)"
    if record.get("check"):
        text += "  (checked against float64: ATen rounds differently)"
    if record.get("host_ratio") is not None:
        met = "meets" if record["meets_target"] else "MISSES"
        text += f"  gems/ATen {record['host_ratio']:.2f} ({met} <= {record['target_ratio']})"
    return text


def metric_line(record: dict) -> str:
    """One line for a metric record (first call, import time, decoding step, graphs)."""
    values = "  ".join(f"{k} {_fmt_value(v)}" for k, v in (record.get("values") or {}).items())
    head = f"{record.get('group', ''):10} {record.get('name', ''):28}"
    status = record.get("status", "ok")
    if status != "ok":
        return f"{head} {status.upper():8} {record.get('reason', '')}  {values}".rstrip()
    verdicts = record.get("verdicts") or {}
    tail = "  ".join(f"[{k}: {v}]" for k, v in verdicts.items())
    return f"{head} {values}  {tail}".rstrip()


def _fmt_value(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)




def geomean(values: Sequence[float]) -> float | None:
    values = [v for v in values if v and v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def summary_lines(records: Sequence[dict], worst: int = 5) -> list[str]:
    """A compact recap of a run: outcomes, per-family geometric-mean speedup, the slowest cases, host
    time per call against its target, what failed, and the metrics."""
    cases = [r for r in records if r.get("kind") == "case"]
    metrics = [r for r in records if r.get("kind") == "metric"]
    host = [r for r in cases if r.get("target_ratio")]
    out = []
    if cases:
        counts: dict[str, int] = {}
        for r in cases:
            counts[r.get("status", "?")] = counts.get(r.get("status", "?"), 0) + 1
        out.append("cases: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        ok = [r for r in cases if r.get("status") == "ok" and r.get("speedup") and r.get("mode") != "quick"
              and not r.get("target_ratio")]
        for family, mode in sorted({(r.get("family", ""), r.get("mode", "")) for r in ok}):
            rows = [r for r in ok if r.get("family") == family and r.get("mode") == mode]
            g = geomean([r["speedup"] for r in rows])
            slow = sum(1 for r in rows if r["speedup"] < 0.95)
            fracs = sorted(r["ceiling_frac"] for r in rows if r.get("ceiling_frac") is not None and not r.get("flops"))
            frac = f", median {100 * fracs[len(fracs) // 2]:.0f}% of copy" if fracs else ""
            out.append(f"  {family:10} {mode:8} {len(rows):4} timed  geomean {g:.2f}x  {slow} below 0.95x{frac}")
        if ok and worst:
            out.append("slowest against ATen:")
            out += ["  " + line(r) for r in sorted(ok, key=lambda r: r["speedup"])[:worst]]
        timed_host = [r for r in host if r.get("status") == "ok" and r.get("mode") != "quick"]
        if timed_host:
            out.append("host time per call on tiny tensors:")
            out += ["  " + line(r) for r in timed_host]
        bad = [r for r in cases if r.get("status") in ("fail", "error", "crash")]
        if bad:
            out.append("failed:")
            out += [f"  {r.get('id')}: {str(r.get('reason'))[:160]}" for r in bad[:15]]
            if len(bad) > 15:
                out.append(f"  ... and {len(bad) - 15} more")
    out += [metric_line(r) for r in metrics]
    return out
