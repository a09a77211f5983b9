"""A/B timing of kthvalue and median of long rows (``gems_reduction.sort``'s radix select) against ATen, on a GPU.

    python packages/gems-reduction/tuning/ab_select.py            # on a CUDA machine: < 60 s
    python packages/gems-reduction/tuning/ab_select.py --smoke    # short rows, runs on CPU too

For each case (op, dtype, shape, dim) it times ATen, then each setting of the knobs (``default`` first: the
package's own, which hands these rows to ATen), each checked against ATen before it is timed: values equal,
indices pointing at elements equal to the value (ATen's CUDA kernel may report another of tied elements).
Time is ``triton.testing.do_bench`` (median). ``--smoke`` runs the same code on rows a few hundred long, the
register sort's row limit lowered so that they take the radix select, through Triton's interpreter where
there is no GPU: it checks results, its times mean nothing.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch
from timing import kernel_us, module_settings, report_end, setting_lines

import flag_gems
from gems_reduction import sort

# Candidate settings: overrides of ``gems_reduction.sort`` knobs.
SETTINGS = {
    "default": {},
    "off": {"RADIX_SELECT": False},
    "radix": {"RADIX_SELECT": True, "RADIX_MAX_ITEMSIZE": 8},
    "radix 8/thread": {"RADIX_SELECT": True, "RADIX_MAX_ITEMSIZE": 8, "RADIX_KEYS_PER_THREAD": 8},
}
#: The register sort's row limit in ``--smoke``, so that rows of a few hundred take the radix select.
SMOKE_ROW_LIMIT = 128

BF16, FP32 = torch.bfloat16, torch.float32


@dataclass(frozen=True)
class Case:
    op: str  # "kthvalue" or "median"
    dtype: torch.dtype
    shape: tuple
    dim: int = -1

    @property
    def name(self) -> str:
        dtype = {BF16: "bf16", FP32: "fp32"}[self.dtype]
        return f"{self.op} {dtype} {'x'.join(map(str, self.shape))} dim={self.dim}"


def _cases(smoke: bool) -> list[Case]:
    shapes = [(4, 300), (2, 700)] if smoke else [(4096, 4096), (1024, 16384)]
    cases = [Case(op, dtype, shape) for shape in shapes for dtype in (BF16, FP32) for op in ("kthvalue", "median")]
    return cases + [Case("median", BF16, (300, 4) if smoke else (4096, 4096), dim=0)]


def applied(setting: str, smoke: bool):
    """The knobs of ``setting`` in force, then the previous values back (plans are keyed by them)."""
    knobs = dict(SETTINGS[setting])
    if smoke:
        knobs["MAX_ROW"] = knobs["GPU_MAX_ROW"] = SMOKE_ROW_LIMIT
    return module_settings(sort, knobs)


def _input(case: Case) -> torch.Tensor:
    torch.manual_seed(sum(case.shape))
    x = torch.randn(case.shape, device=flag_gems.device).to(case.dtype)
    rows = x.movedim(case.dim, -1)
    rows[:, 13:40:3] = rows[:, 12:13]  # a run of ties
    rows[::7, 5] = float("nan")  # median is NaN there; NaN is the largest for kthvalue
    rows[1::5, 9] = float("-inf")
    return x


def _call(case: Case, x: torch.Tensor):
    if case.op == "kthvalue":
        return torch.kthvalue(x, x.shape[case.dim] // 2, case.dim)
    return torch.median(x, case.dim)


def _mismatch(case: Case, x: torch.Tensor, ours, ref) -> str | None:
    """Why ``ours`` is not ATen's result (None when it is)."""
    if ours.values.shape != ref.values.shape or ours.values.dtype != ref.values.dtype:
        return f"shape/dtype {tuple(ours.values.shape)} {ours.values.dtype}"
    same = (ours.values == ref.values) | (ours.values.isnan() & ref.values.isnan())
    if not bool(same.all()):
        return "values differ"
    picked = x.gather(case.dim, ours.indices.unsqueeze(case.dim)).squeeze(case.dim)
    if not bool(((picked == ours.values) | (picked.isnan() & ours.values.isnan())).all()):
        return "indices point at other values"
    return None


def _time_case(case: Case, smoke: bool) -> list[str]:
    x = _input(case)
    ref = _call(case, x)
    aten_us = kernel_us(lambda: _call(case, x), rep=25)
    lines = setting_lines(SETTINGS, lambda setting: applied(setting, smoke), lambda: _call(case, x),
                          lambda got: _mismatch(case, x, got, ref), lambda fn: kernel_us(fn, rep=25), case.op,
                          aten_us, 16)
    return [f"{case.name:<36} {'ATen':<16} {aten_us:9.1f} {1:7.2f}x"] + lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="short rows, runs on CPU through the interpreter")
    options = parser.parse_args()
    start = time.perf_counter()
    cases = _cases(options.smoke)
    print(f"{'case':<36} {'setting':<16} {'us':>9} {'vs ATen':>8}  served by")
    lines = []
    for case in cases:
        lines += _time_case(case, options.smoke)
        print("\n".join(lines[-len(SETTINGS) - 1:]), flush=True)
    report_end(lines, len(cases), start)


if __name__ == "__main__":
    main()
