"""A/B timing of topk of long rows (``gems_reduction.sort``'s two-stage kernels) against ATen, on a GPU.

    python packages/gems-reduction/tuning/ab_topk.py            # on a CUDA machine: < 60 s
    python packages/gems-reduction/tuning/ab_topk.py --smoke    # tiny rows, runs on CPU too

For each case (dtype, shape, k) it times ATen's ``torch.topk(x, k, dim=-1)``, then each setting of the
knobs (``default`` first: the package's own; ``to ATen`` hands long rows back), each checked against ATen
before it is timed: values equal, indices equal or, where they differ, pointing at the same values (ties). Time is
``triton.testing.do_bench`` (median). The kernels of every (case, setting) are first compiled by a pool of
processes (Triton's disk cache then serves the timing process). ``--smoke`` runs the same code on rows a
few thousand long, the row limit of the register sort lowered so that they take the two stages, through
Triton's interpreter where there is no GPU: it checks results, its times mean nothing.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import time
from dataclasses import dataclass

import torch
from timing import kernel_us, module_settings, report_end, setting_lines

import flag_gems
from gems_reduction import sort

ON_GPU = flag_gems.device == "cuda"

# Candidate settings: overrides of ``gems_reduction.sort`` knobs.
SETTINGS = {
    "default": {},
    "to ATen": {"TOPK_CHUNK": 0},
    "chunk=1024": {"TOPK_CHUNK": 1024},
    "chunk=4096": {"TOPK_CHUNK": 4096},
}
#: The register sort's row limit in ``--smoke``, so that rows of a few thousand take the two stages.
SMOKE_ROW_LIMIT = 256
#: Chunks of the smoke run: the interpreter's sort of 1024-4096 keys a program takes seconds.
SMOKE_CHUNKS = {1024: 64, 2048: 128, 4096: 256}

BF16, FP32 = torch.bfloat16, torch.float32


@dataclass(frozen=True)
class Case:
    dtype: torch.dtype
    shape: tuple
    k: int
    largest: bool = True

    @property
    def name(self) -> str:
        dtype = {BF16: "bf16", FP32: "fp32"}[self.dtype]
        low = "" if self.largest else " smallest"
        return f"topk {dtype} {'x'.join(map(str, self.shape))} k={self.k}{low}"


def _cases(smoke: bool) -> list[Case]:
    if smoke:
        return [Case(BF16, (2, 700), 6), Case(FP32, (1, 700), 6), Case(BF16, (16, 64), 8),
                Case(BF16, (2, 700), 4, largest=False)]
    return [Case(BF16, (64, 128256), 50),  # sampling from an LLM's logits
            Case(FP32, (64, 128256), 50),
            Case(BF16, (16384, 64), 8),  # MoE routing: short rows, the register path (must not regress)
            Case(BF16, (1, 128256), 50),  # one sequence
            Case(BF16, (256, 32000), 40),
            Case(BF16, (256, 32000), 40, largest=False)]


def _knobs(setting: str, smoke: bool) -> dict:
    knobs = dict(SETTINGS[setting])
    if smoke:
        knobs["MAX_ROW"] = knobs["GPU_MAX_ROW"] = SMOKE_ROW_LIMIT
        chunk = knobs.get("TOPK_CHUNK", sort.TOPK_CHUNK)
        if chunk:
            knobs["TOPK_CHUNK"] = SMOKE_CHUNKS.get(chunk, 64)
    return knobs


def applied(setting: str, smoke: bool):
    """The knobs of ``setting`` in force, then the previous values back (plans are keyed by them)."""
    return module_settings(sort, _knobs(setting, smoke))


def _input(case: Case) -> torch.Tensor:
    torch.manual_seed(sum(case.shape) + case.k)
    x = torch.randn(case.shape, device=flag_gems.device).to(case.dtype)
    if case.shape[-1] > 500:
        x[:, 7] = float("nan")  # NaN counts as the largest
        x[:, 11] = float("inf")
        x[:, 13:40:3] = x[:, 12:13]  # a run of ties
    return x


def _call(case: Case, x: torch.Tensor):
    return torch.topk(x, case.k, dim=-1, largest=case.largest)


def _mismatch(x: torch.Tensor, ours, ref) -> str | None:
    """Why ``ours`` is not ATen's result (None when it is)."""
    if ours.values.shape != ref.values.shape or ours.values.dtype != ref.values.dtype:
        return f"shape/dtype {tuple(ours.values.shape)} {ours.values.dtype}"
    same = (ours.values == ref.values) | (ours.values.isnan() & ref.values.isnan())
    if not bool(same.all()):
        return "values differ"
    if torch.equal(ours.indices, ref.indices):
        return None
    picked = x.gather(-1, ours.indices)
    if not bool(((picked == ours.values) | (picked.isnan() & ours.values.isnan())).all()):
        return "indices point at other values"
    if not bool((ours.indices.sort(-1).values.diff(dim=-1) > 0).all()):
        return "an index reported twice"
    return None


def _time_us(fn) -> float:
    return kernel_us(fn, rep=25)


def _compile_one(task: tuple[int, str, bool]) -> str | None:
    index, setting, smoke = task
    case = _cases(smoke)[index]
    try:
        with applied(setting, smoke), flag_gems.use_gems(families=["reduction"]):
            _call(case, torch.zeros(case.shape, dtype=case.dtype, device=flag_gems.device))
        if ON_GPU:
            torch.cuda.synchronize()
        return None
    except Exception as error:  # reported; the timing process meets it again
        return f"{case.name} [{setting}]: {type(error).__name__}: {error}"


def _compile_ahead(cases: list[Case], jobs: int) -> None:
    # Short rows take the register sort whatever the setting: compiled once, while timing. Cases that
    # differ in their number of rows only share their kernels.
    kernels = {(c.dtype, c.shape[-1], c.k, c.largest): i for i, c in reversed(list(enumerate(cases)))
               if c.shape[-1] > sort.GPU_MAX_ROW}
    tasks = [(i, s, False) for i in sorted(kernels.values()) for s in SETTINGS if s != "default"]
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for problem in pool.map(_compile_one, tasks):
            if problem:
                print(f"compile: {problem}")


def _time_case(case: Case, smoke: bool) -> list[str]:
    x = _input(case)
    ref = _call(case, x)
    aten_us = _time_us(lambda: _call(case, x))
    lines = setting_lines(SETTINGS, lambda setting: applied(setting, smoke), lambda: _call(case, x),
                          lambda got: _mismatch(x, got, ref), _time_us, "topk", aten_us, 24)
    aten_us = min(aten_us, _time_us(lambda: _call(case, x)))
    return [f"{case.name:<36} {'ATen':<24} {aten_us:9.1f} {1:7.2f}x"] + lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny rows, runs on CPU through the interpreter")
    parser.add_argument("--jobs", type=int, default=min(16, os.cpu_count() or 1), help="processes compiling")
    options = parser.parse_args()
    start = time.perf_counter()
    cases = _cases(options.smoke)
    if ON_GPU and not options.smoke and options.jobs > 1:
        _compile_ahead(cases, options.jobs)
        print(f"compiled in {time.perf_counter() - start:.0f} s")
    print(f"{'case':<36} {'setting':<24} {'us':>9} {'vs ATen':>8}  served by")
    lines = [line for case in cases for line in _time_case(case, options.smoke)]
    print("\n".join(lines))
    report_end(lines, len(cases), start)


if __name__ == "__main__":
    main()
