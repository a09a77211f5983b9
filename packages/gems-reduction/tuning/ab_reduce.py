"""A/B timing of the reduce skeleton's knobs (``gems_reduction.tiles``) and of nll_loss's, on a GPU.

    python packages/gems-reduction/tuning/ab_reduce.py              # on a CUDA machine: < 150 s
    python packages/gems-reduction/tuning/ab_reduce.py --cases dim0 --budget 60
    python packages/gems-reduction/tuning/ab_reduce.py --cases softmax --budget 100
    python packages/gems-reduction/tuning/ab_reduce.py --all        # also whole-tensor, amin, nansum, nll_loss
    python packages/gems-reduction/tuning/ab_reduce.py --smoke      # tiny shapes, every case, runs on CPU too

For each case (an op, a dtype, a shape) it times ATen, then each candidate setting of the knobs (the
current defaults first), each checked against ATen before it is timed. Kernel time is
``triton.testing.do_bench`` (median, L2 flushed before each run); ATen is timed before and after the
candidates and the lower time kept. Rates count the bytes read and written once, against the copy
ceiling: a device-to-device copy of 1 GiB (read + write) timed the same way at the start of the run
(2967 GB/s on an H100 where no GPU runs it). The kernels of every (case, setting) are
first compiled by a pool of processes (Triton's disk cache then serves the timing process); a time
budget skips what would run past it. ``--smoke`` runs the same code on tiny shapes with the GPU's
tile choices (through Triton's interpreter where there is no GPU): it checks results, its times mean
nothing.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import math
import multiprocessing
import os
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timing import kernel_us

import flag_gems
from gems_reduction import nll_loss, reduce, tiles

#: GB/s of a copy (read + write) on an H100: the ceiling where none is measured (``--smoke`` on a CPU).
COPY_CEILING_GBPS = 2967.0
ON_GPU = flag_gems.device == "cuda"

MB = 2**20

# Candidate settings: knob overrides, as "module.KNOB": value.
SETTINGS = {
    "default": {},
    "stages=2": {"tiles.STAGES": 2},
    "stages=4": {"tiles.STAGES": 4},
    "step=32K": {"tiles.STEP_BYTES": 32768},
    "thread=64B": {"tiles.THREAD_BYTES": 64},
    "cols=128B": {"tiles.COLS_BYTES": 128},
    "cols=256B": {"tiles.COLS_BYTES": 256},
    "cols=512B": {"tiles.COLS_BYTES": 512},
    "per_sm=4": {"tiles.PROGRAMS_PER_SM": 4},
    "per_sm=8": {"tiles.PROGRAMS_PER_SM": 8},
    "arg_step=8K,thread=32": {"tiles.ARG_STEP_ELEMENTS": 8192, "tiles.ARG_THREAD_ELEMENTS": 32},
    "per_sm=16": {"tiles.PROGRAMS_PER_SM": 16},
    "stages=1": {"tiles.STAGES": 1},
    "one_step": {"tiles.HALF_STEPS": False},
    "argcols=512B": {"tiles.ARG_COLS_BYTES": 512},
    "argcols=1024B": {"tiles.ARG_COLS_BYTES": 1024},
    "cols=256B,per_sm=8": {"tiles.COLS_BYTES": 256, "tiles.PROGRAMS_PER_SM": 8},
    "cols=256B,per_sm=8,step=8K": {"tiles.COLS_BYTES": 256, "tiles.PROGRAMS_PER_SM": 8, "tiles.STEP_BYTES": 8192},
    "arg_pairs": {"tiles.ARG_TILE": 0},
    "arg_tile=2": {"tiles.ARG_TILE": 2},
    "arg_tile,thread=64B": {"tiles.THREAD_BYTES": 64},
    "arg_tile_cols": {"tiles.ARG_TILE_COLS": 1},
    "arg_tile_cols,cols=256B,per_sm=8": {"tiles.ARG_TILE_COLS": 1, "tiles.COLS_BYTES": 256,
                                         "tiles.PROGRAMS_PER_SM": 8},
    "split_ceil": {"tiles.SPLIT_FLOOR": False},
    "cols_per_sm=3,floor": {"tiles.COLS_PROGRAMS_PER_SM": 3, "tiles.SPLIT_FLOOR": True},
    "cols_per_sm=4": {"tiles.COLS_PROGRAMS_PER_SM": 4},
    "cols=256B,cols_per_sm=8,floor": {"tiles.COLS_BYTES": 256, "tiles.COLS_PROGRAMS_PER_SM": 8,
                                      "tiles.SPLIT_FLOOR": True},
    "cols=256B,cols_per_sm=8,step=8K,floor": {"tiles.COLS_BYTES": 256, "tiles.COLS_PROGRAMS_PER_SM": 8,
                                              "tiles.STEP_BYTES": 8192, "tiles.SPLIT_FLOOR": True},
    "cols=512B,cols_per_sm=4,floor": {"tiles.COLS_BYTES": 512, "tiles.COLS_PROGRAMS_PER_SM": 4,
                                      "tiles.SPLIT_FLOOR": True},
    "argcols=1024B,floor": {"tiles.ARG_COLS_BYTES": 1024, "tiles.SPLIT_FLOOR": True},
    "arg_pairs_cols": {"tiles.ARG_TILE_COLS": 0},
    "in_thread_per_sm=8": {"tiles.IN_THREAD_PROGRAMS_PER_SM": 8},
    "in_thread_per_sm=3": {"tiles.IN_THREAD_PROGRAMS_PER_SM": 3},
    "arg_tile_cols,warps": {"tiles.ARG_TILE_COLS_IN_THREAD": False},
    "sm_split=2": {"tiles.SOFTMAX_SPLIT_PER_SM": 2},
    "sm_split=4": {"tiles.SOFTMAX_SPLIT_PER_SM": 4},
    "sm_split=8": {"tiles.SOFTMAX_SPLIT_PER_SM": 8},
    "sm_split=4,128B": {"tiles.SOFTMAX_SPLIT_PER_SM": 4, "tiles.SOFTMAX_SPLIT_COLS_BYTES": 128},
    "sm_split=4,512B": {"tiles.SOFTMAX_SPLIT_PER_SM": 4, "tiles.SOFTMAX_SPLIT_COLS_BYTES": 512},
    "bwd_split=2": {"tiles.SOFTMAX_BACKWARD_SPLIT_PER_SM": 2},
    "bwd_split=4": {"tiles.SOFTMAX_BACKWARD_SPLIT_PER_SM": 4},
    "bwd_split=8": {"tiles.SOFTMAX_BACKWARD_SPLIT_PER_SM": 8},
    "bwd_split=4,512B": {"tiles.SOFTMAX_BACKWARD_SPLIT_PER_SM": 4, "tiles.SOFTMAX_BACKWARD_SPLIT_COLS_BYTES": 512},
    "bwd_strips": {"tiles.SOFTMAX_BACKWARD_SPLIT_PER_SM": 0},
    "sm_strips": {"tiles.SOFTMAX_SPLIT_PER_SM": 0},
    "sm_split=8,128B": {"tiles.SOFTMAX_SPLIT_PER_SM": 8, "tiles.SOFTMAX_SPLIT_COLS_BYTES": 128},
    "sm_split=16": {"tiles.SOFTMAX_SPLIT_PER_SM": 16},
    "rows=off": {"tiles.SOFTMAX_ROWS_IN_FLIGHT_BYTES": 0},
    "rows=48MB": {"tiles.SOFTMAX_ROWS_IN_FLIGHT_BYTES": 48 * MB},
    "rows_step=16K": {"tiles.SOFTMAX_ROWS_STEP_BYTES": 16384},
    "bwd_rows=off": {"tiles.SOFTMAX_BACKWARD_ROWS_IN_FLIGHT_BYTES": 0},
    "bwd_rows=48MB": {"tiles.SOFTMAX_BACKWARD_ROWS_IN_FLIGHT_BYTES": 48 * MB},
    "bwd_rows=96MB": {"tiles.SOFTMAX_BACKWARD_ROWS_IN_FLIGHT_BYTES": 96 * MB},
    "bwd_rows_step=32K": {"tiles.SOFTMAX_BACKWARD_ROWS_STEP_BYTES": 32768},
    # The persistent path on the smoke run's small rows, whose default budgets hold them all: budgets that
    # give several rows a program (meaningless on a GPU).
    "rows=96KB (smoke)": {"tiles.SOFTMAX_ROWS_IN_FLIGHT_BYTES": 98304},
    "bwd_rows=192KB (smoke)": {"tiles.SOFTMAX_BACKWARD_ROWS_IN_FLIGHT_BYTES": 196608},
    "few_rows=off": {"tiles.SOFTMAX_SPLIT_FEW_ROWS": False},
    "part=128": {"nll.PART_ROWS": 128},
    "part=512": {"nll.PART_ROWS": 512},
    "part=1024": {"nll.PART_ROWS": 1024},
    "one_program": {"nll.ONE_PROGRAM_ROWS": 16384},
}
_MODULES = {"tiles": tiles, "nll": nll_loss}

# What each kind of case tries besides the defaults. Last dim: loads in flight per SM (stages, bytes a
# thread, one 16 KB step per program instead of two half steps), and a split of few long rows over
# several programs (per_sm=16: (512, 131072) in 4 parts). Dim 0: segment width, and how many programs
# the split of the rows gives (also both: 128 columns a program, the rows split over ~16 programs).
# Dim 0 also: the split's own programs per SM (cols_per_sm) and a grid that never passes its target
# (floor). Arg-reductions: their tile sizes, the steps and the split, and one (value, position) per output
# (arg_tile; over dim 0 also with each thread owning whole
# columns, in_thread). Softmax over dim 0: the split of the reduced dim over ~N programs per SM (sm_split=N;
# 4 was the default before 8). Softmax over long last-dim rows: the persistent grid holding N bytes of rows
# in flight (rows=N, bwd_rows=N; off: a program per row, as before), and its step bytes. Fewer long rows
# than SMs: each row split over several programs, as the dim-0 split (few_rows=off: a program a row). The
# smoke run has its own budgets (small rows).
LAST_DIM = ("stages=1", "stages=4", "thread=64B", "step=32K", "one_step", "per_sm=16")
DIM0 = ("cols=128B", "cols=256B", "per_sm=8", "cols_per_sm=4", "split_ceil", "cols=256B,cols_per_sm=8,floor")
EVERYTHING = ("stages=4", "per_sm=4", "per_sm=8", "step=32K", "thread=64B", "one_step")
ARG = ("stages=4", "arg_step=8K,thread=32", "one_step", "per_sm=16", "arg_pairs", "arg_tile=2", "arg_tile,thread=64B")
ARG_DIM0 = ("arg_pairs_cols", "in_thread_per_sm=8", "in_thread_per_sm=3", "arg_tile_cols,warps", "split_ceil")
SOFTMAX_DIM0 = ("sm_strips", "sm_split=4", "sm_split=16")
SOFTMAX_BWD_DIM0 = ("bwd_strips", "bwd_split=4", "bwd_split=8", "bwd_split=4,512B")
SOFTMAX_LAST = ("rows=off", "rows=48MB", "rows_step=16K")
SOFTMAX_BWD_LAST = ("bwd_rows=off", "bwd_rows=48MB", "bwd_rows=96MB", "bwd_rows_step=32K")
SOFTMAX_FEW_ROWS = ("few_rows=off", "sm_split=16")
SMOKE_SOFTMAX = {SOFTMAX_DIM0: ("sm_strips", "sm_split=4"),
                 SOFTMAX_BWD_DIM0: ("bwd_strips", "bwd_split=4"),
                 SOFTMAX_LAST: ("rows=off", "rows=96KB (smoke)"),
                 SOFTMAX_BWD_LAST: ("bwd_rows=off", "bwd_rows=192KB (smoke)"),
                 SOFTMAX_FEW_ROWS: ("few_rows=off",)}
NLL = ("part=128", "part=512", "part=1024", "one_program")

BF16, FP32 = torch.bfloat16, torch.float32


@dataclass(frozen=True)
class Case:
    op: str
    dtype: torch.dtype
    shape: tuple
    settings: tuple
    fn: object  # the call as a user writes it, on the inputs ``_inputs`` makes
    check: str = "close"  # "close", "equal", or "argmax<dim>" (the selected values must match)
    inputs: int = 1  # tensors of ``shape`` the call takes

    @property
    def name(self) -> str:
        dtype = {BF16: "bf16", FP32: "fp32"}[self.dtype]
        return f"{self.op} {dtype} {'x'.join(map(str, self.shape))}"


def _cases(smoke: bool, every_op: bool) -> list[Case]:
    square, wide = ((64, 256), (16, 2048)) if smoke else ((8192, 8192), (512, 131072))
    nll_shape = (3000, 20) if smoke else (8192, 32000)
    plain = [("sum_last", lambda x: x.sum(-1), LAST_DIM, "close"),
             ("mean_last", lambda x: x.mean(-1), LAST_DIM, "close"),
             ("amax_last", lambda x: x.amax(-1), LAST_DIM, "equal"),
             ("sum_dim0", lambda x: x.sum(0), DIM0, "close"),
             ("mean_dim0", lambda x: x.mean(0), DIM0, "close"),
             ("amax_dim0", lambda x: x.amax(0), DIM0, "equal"),
             ("argmax_last", lambda x: x.argmax(-1), ARG, "argmax1"),
             ("argmax_dim0", lambda x: x.argmax(0), ARG_DIM0, "argmax0")]
    if every_op:
        plain += [("amin_last", lambda x: x.amin(-1), LAST_DIM, "equal"),
                  ("nansum_last", lambda x: x.nansum(-1), LAST_DIM, "close")]
    cases = [Case(op, BF16, shape, settings, fn, check) for shape in (square, wide)
             for op, fn, settings, check in plain]
    cases += _softmax_cases(smoke, square, wide)
    # float32 controls: a default that helps bf16 must not hurt them.
    cases += [Case("sum_last", FP32, square, LAST_DIM, lambda x: x.sum(-1)),
              Case("sum_dim0", FP32, square, DIM0, lambda x: x.sum(0)),
              Case("argmax_last", FP32, square, ARG, lambda x: x.argmax(-1), "argmax1")]
    if every_op:
        cases += [Case("sum_all", BF16, square, EVERYTHING, torch.sum),
                  Case("max_all", BF16, wide, EVERYTHING, torch.max, "equal"),
                  Case("sum_all", BF16, wide, EVERYTHING, torch.sum),
                  Case("max_all", BF16, square, EVERYTHING, torch.max, "equal"),
                  Case("nll_loss", FP32, nll_shape, NLL, F.nll_loss)]
    return cases


def _softmax_cases(smoke: bool, square: tuple, wide: tuple) -> list[Case]:
    """Softmax over dim 0 (the split) and over long last-dim rows (two loops), forward and backward; the
    smoke run's columns and rows long enough for those paths (on the GPU's tiles), with its own budgets."""
    def picked(settings: tuple) -> tuple:
        return SMOKE_SOFTMAX[settings] if smoke else settings

    columns, long_rows = ((4096, 64), (12, 20000)) if smoke else (square, wide)
    softmax = (("softmax", lambda x: torch.softmax(x, 0), lambda x: torch.softmax(x, -1)),
               ("log_softmax", lambda x: torch.log_softmax(x, 0), lambda x: torch.log_softmax(x, -1)))
    cases = [Case(op + "_dim0", BF16, shape, picked(SOFTMAX_DIM0), dim0) for shape in (columns, wide)
             for op, dim0, _ in softmax]
    cases += [Case(op + "_last", BF16, long_rows, picked(SOFTMAX_LAST), last) for op, _, last in softmax]
    # Fewer long rows than SMs (an LLM's logits at small batch): each row split over several programs.
    for i, rows_count in enumerate((1, 8, 64)):
        shape = (i + 1, long_rows[1]) if smoke else (rows_count, 128256)
        cases.append(Case("softmax_few", BF16, shape, picked(SOFTMAX_FEW_ROWS), softmax[0][2]))
    # Rows that take one pass: the persistent knobs must leave them alone.
    cases.append(Case("softmax_last", BF16, square, picked(SOFTMAX_LAST), softmax[0][2]))
    cases.append(Case("softmax_dim0", FP32, columns, picked(SOFTMAX_DIM0), softmax[0][1]))
    # The backward (given the gradient and the output): the split of pass 1's sums, and long rows.
    for op, shape, settings, dim in (("softmax_bwd_dim0", columns, SOFTMAX_BWD_DIM0, 0),
                                     ("softmax_bwd_last", long_rows, SOFTMAX_BWD_LAST, -1)):
        cases.append(Case(op, BF16, shape, picked(settings),
                          lambda g, y, d=dim: torch.ops.aten._softmax_backward_data(g, y, d, g.dtype), inputs=2))
    return cases


def _inputs(case: Case, random: bool = True) -> tuple:
    device = flag_gems.device
    if case.op == "nll_loss":
        rows, classes = case.shape
        if not random:  # compiling only: any values of the right kind
            return torch.empty(case.shape, device=device), torch.zeros(rows, dtype=torch.long, device=device)
        logp = torch.log_softmax(torch.randn(case.shape, device=device), dim=-1)
        return logp, torch.randint(0, classes, (rows,), device=device)
    if not random:
        return tuple(torch.empty(case.shape, dtype=case.dtype, device=device) for _ in range(case.inputs))
    return tuple(torch.randn(case.shape, dtype=case.dtype, device=device) for _ in range(case.inputs))


def _bytes(args: tuple, out: torch.Tensor, case: Case) -> int:
    if case.op == "nll_loss":  # the targets and one log-probability per row
        return args[1].nbytes + args[1].numel() * args[0].element_size() + out.nbytes
    return sum(a.nbytes for a in args) + out.nbytes


@contextlib.contextmanager
def applied(setting: str):
    """The knobs of ``setting`` in force (plans rebuilt), then the previous values back."""
    saved = {}
    for key, value in SETTINGS[setting].items():
        module, knob = key.split(".")
        saved[key] = getattr(_MODULES[module], knob)
        setattr(_MODULES[module], knob, value)
    reduce.forget_plans()
    try:
        yield
    finally:
        for key, value in saved.items():
            module, knob = key.split(".")
            setattr(_MODULES[module], knob, value)
        reduce.forget_plans()


@contextlib.contextmanager
def _gems():
    with flag_gems.use_gems(families=["reduction"]):
        yield


def _mismatch(case: Case, args: tuple, ours, ref) -> str | None:
    """Why ``ours`` is not ATen's result (None when it is)."""
    if ours.shape != ref.shape or ours.dtype != ref.dtype:
        return f"shape/dtype {tuple(ours.shape)} {ours.dtype} vs {tuple(ref.shape)} {ref.dtype}"
    if case.check == "equal":
        return None if torch.equal(ours, ref) else "values differ"
    if case.check.startswith("argmax"):
        dim = int(case.check[-1])
        x = args[0]
        picked = x.gather(dim, ours.unsqueeze(dim))
        return None if torch.equal(picked, x.gather(dim, ref.unsqueeze(dim))) else "positions of other values"
    error = (ours.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30)
    tolerance = 1.6e-2 if case.dtype == BF16 else 1e-5
    return None if error <= tolerance else f"relative error {error:.2e}"


def _kernel_us(fn) -> float:
    return kernel_us(fn, rep=20)


def _host_us(fn, calls: int = 300) -> float:
    """Time per call of ``calls`` back-to-back calls with one synchronize: host time when kernels are short."""
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e6 / calls


def copy_ceiling() -> tuple[float, float]:
    """(GB/s of a 1 GiB device-to-device copy, GB/s of a 128 MiB one), bytes read + written, timed as
    the cases are. The first is the ceiling rates are quoted against; the second shows what a copy of
    the cases' size reaches."""
    if not ON_GPU:
        return COPY_CEILING_GBPS, COPY_CEILING_GBPS

    def rate(size: int) -> float:  # ``size`` bytes read, as many written
        src = torch.ones(size, dtype=torch.uint8, device=flag_gems.device)
        dst = torch.empty_like(src)
        return 2 * size / (_kernel_us(lambda: dst.copy_(src)) * 1e3)

    return rate(2**29), rate(2**27)


# ---------------------------------------------------------------------------------------------------
# Compiling ahead, in parallel: each worker runs one (case, setting) once on inputs of the right shape.

def _compile_one(task: tuple[int, str, bool, bool]) -> str | None:
    index, setting, smoke, every_op = task
    case = _cases(smoke, every_op)[index]
    try:
        args = _inputs(case, random=False)
        with applied(setting), _gems():
            case.fn(*args)
        if ON_GPU:
            torch.cuda.synchronize()
        return None
    except Exception as error:  # reported, and the timing process meets it again
        return f"{case.name} [{setting}]: {type(error).__name__}: {error}"


def _compile_ahead(cases: list[Case], smoke: bool, every_op: bool, jobs: int, indices: list[int],
                   seconds: float) -> None:
    """Compile every (case, setting) of ``indices`` in ``jobs`` processes, waiting at most ``seconds``
    (what is left compiles while timing)."""
    tasks = [(i, s, smoke, every_op) for i in indices for s in ("default",) + cases[i].settings]
    pool = concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))
    futures = [pool.submit(_compile_one, task) for task in tasks]
    done, pending = concurrent.futures.wait(futures, timeout=max(seconds, 1.0))
    pool.shutdown(wait=not pending, cancel_futures=True)
    for future in done:
        if future.result():
            print(f"compile: {future.result()}")
    if pending:
        print(f"compile: {len(pending)} of {len(tasks)} left to the timing process (time budget)")


# ---------------------------------------------------------------------------------------------------

@dataclass
class Row:
    case: Case
    setting: str
    us: float | None
    rate: float | None  # fraction of the copy ceiling
    speedup: float | None
    note: str = ""


def _time_case(case: Case, deadline: float, ceiling: float) -> list[Row]:
    args = _inputs(case)
    ref = case.fn(*args)

    def call():  # as a user writes it: ATen's kernels, or ours inside _gems()
        case.fn(*args)

    aten_us = _kernel_us(call)
    moved = _bytes(args, ref, case)
    rows = []
    for setting in ("default",) + case.settings:
        if setting != "default" and time.monotonic() > deadline:
            rows.append(Row(case, setting, None, None, None, "skipped: time budget"))
            continue
        try:
            with applied(setting), _gems():
                problem = _mismatch(case, args, case.fn(*args), ref)
                if problem is None:
                    us = _kernel_us(call)
        except Exception as error:
            problem = f"{type(error).__name__}: {str(error)[:80]}"
        if problem:
            rows.append(Row(case, setting, None, None, None, f"WRONG: {problem}"))
            continue
        rows.append(Row(case, setting, us, moved / (us * 1e3) / ceiling, None))
    aten_us = min(aten_us, _kernel_us(call))
    for row in rows:
        if row.us is not None:
            row.speedup = aten_us / row.us
    head = Row(case, "ATen", aten_us, moved / (aten_us * 1e3) / ceiling, 1.0)
    if case.op == "nll_loss" and ON_GPU:
        host = _host_us(call)
        with _gems():
            head.note = f"host time: {host:.1f} us/call, ours (default) {_host_us(call):.1f}"
    return [head] + rows


def _print(rows: list[Row]) -> None:
    print(f"{'case':<28} {'setting':<44} {'us':>8} {'%copy':>6} {'vs ATen':>8}")
    last = None
    for row in rows:
        name = row.case.name if row.case is not last else ""
        last = row.case
        numbers = (f"{row.us:8.1f} {100 * row.rate:5.0f}% {row.speedup:7.2f}x" if row.us is not None
                   else f"{'-':>8} {'-':>6} {'-':>8}")
        print(f"{name:<28} {row.setting:<44} {numbers}  {row.note}".rstrip())


#: The targets of a memory-bound reduction: this share of the copy ceiling, and never slower than ATen.
TARGET_RATE, TARGET_SPEEDUP = 0.85, 1.0


def _knobs(setting: str) -> str:
    """How to make ``setting`` the default: the knob assignments it stands for."""
    knobs = SETTINGS[setting]
    if not knobs:
        return "(the defaults)"
    names = {"tiles": "gems_reduction/tiles.py", "nll": "gems_reduction/nll_loss.py"}
    return ", ".join(f"{names[k.split('.')[0]]}: {k.split('.')[1]} = {v!r}" for k, v in knobs.items())


def _group(case: Case) -> str:
    """The cases one default serves together: a winner is picked per group."""
    if case.dtype != BF16:
        return "float32 controls"
    if case.op.startswith("argmax"):
        return "bf16 argmax"
    if case.op == "softmax_few":
        return "bf16 softmax few rows"
    if "softmax" in case.op:
        where = "last dim" if case.op.endswith("_last") else "dim 0"
        return f"bf16 softmax {'backward ' if '_bwd' in case.op else ''}{where}"
    if case.op.endswith("_last"):
        return "bf16 last dim"
    if case.op.endswith("_dim0"):
        return "bf16 dim 0"
    return "bf16 " + case.op


def _geomean(values: list[float]) -> float:
    return math.exp(sum(map(math.log, values)) / len(values))


def _summary(rows: list[Row]) -> None:
    """The best setting of each case, then each group's winner: the setting whose geometric-mean
    speedup over the default is highest among those that gave right results on every case of the
    group (the float32 controls say whether it hurts float32)."""
    print(f"\nbest setting per case (target: {100 * TARGET_RATE:.0f}% of copy and {TARGET_SPEEDUP:.2f}x ATen):")
    by_case: dict[Case, list[Row]] = {}
    for row in rows:
        if row.setting != "ATen" and row.us is not None:
            by_case.setdefault(row.case, []).append(row)
    ratios: dict[str, list[float]] = {}
    groups: dict[str, dict[str, list[float]]] = {}
    group_size: dict[str, int] = {}
    for case, found in by_case.items():
        best = min(found, key=lambda r: r.us)
        default = next((r for r in found if r.setting == "default"), None)
        met = "meets target" if best.rate >= TARGET_RATE and best.speedup >= TARGET_SPEEDUP else "below target"
        base = f"default {default.us:.1f} us {100 * default.rate:.0f}%" if default else "default failed"
        print(f"  {case.name:<28} {best.setting:<44} {best.us:7.1f} us {100 * best.rate:4.0f}% "
              f"{best.speedup:5.2f}x  [{base}]  {met}")
        if default is None:
            continue
        group = _group(case)
        group_size[group] = group_size.get(group, 0) + 1
        for r in found:
            ratios.setdefault(r.setting, []).append(default.us / r.us)
            groups.setdefault(group, {}).setdefault(r.setting, []).append(default.us / r.us)
    print("\nspeedup of each setting over the default (geometric mean over the cases that ran it):")
    for setting, values in ratios.items():
        if setting != "default":
            print(f"  {setting:<44} {_geomean(values):5.3f}x over {len(values)} cases")
    print("\nwinner per group (right on every case of the group; to apply, set the knobs named):")
    width = max(map(len, groups), default=0)
    for group, settings in groups.items():
        complete = {s: v for s, v in settings.items() if len(v) == group_size[group]}
        winner = max(complete, key=lambda s: _geomean(complete[s]))
        mean = _geomean(complete[winner])
        print(f"  {group:<{width}} {winner:<44} {mean:5.3f}x over the default, {len(complete[winner])} cases: "
              f"{_knobs(winner)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes; checks results, times mean nothing")
    parser.add_argument("--all", action="store_true",
                        help="also amin, nansum, whole-tensor reductions and nll_loss")
    parser.add_argument("--cases", nargs="*", default=(), help="only cases whose name contains one of these")
    parser.add_argument("--budget", type=float, default=120.0, help="seconds after which candidates are skipped")
    parser.add_argument("--jobs", type=int, default=min(16, os.cpu_count() or 1),
                        help="processes compiling ahead (0: compile while timing)")
    options = parser.parse_args()
    started = time.monotonic()
    every_op = options.all or options.smoke  # the smoke run checks every case
    cases = _cases(options.smoke, every_op)
    indices = [i for i, c in enumerate(cases) if not options.cases or any(s in c.name for s in options.cases)]
    if options.smoke:
        tiles.INTERPRETER_TILES = False  # the GPU's tiles, where the knobs act
    if ON_GPU and options.jobs > 0:
        _compile_ahead(cases, options.smoke, every_op, options.jobs, indices, 0.6 * options.budget)
        print(f"compiled ahead in {time.monotonic() - started:.0f} s")
    ceiling, same_size = copy_ceiling()
    print(f"copy ceiling (1 GiB copy, read + write): {ceiling:.0f} GB/s; a 128 MiB copy: {same_size:.0f} GB/s "
          f"({100 * same_size / ceiling:.0f}%)")
    rows: list[Row] = []
    for i in indices:
        rows += _time_case(cases[i], started + options.budget, ceiling)
    _print(rows)
    _summary(rows)
    wrong = [r for r in rows if r.note.startswith("WRONG")]
    print(f"\n{len(indices)} cases, {len(wrong)} wrong results, {time.monotonic() - started:.0f} s "
          f"({torch.cuda.get_device_name() if ON_GPU else 'interpreter, times mean nothing'})")
    if wrong:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
