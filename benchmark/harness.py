"""The benchmark harness: cases, random inputs, the check against ATen, timing and result records.

A perf file holds a table of :class:`Case` objects and one test that hands each point (a case at one
shape and dtype) to :meth:`Runner.run`. For each point the runner

1. skips it when no installed family serves the op (``flag_gems.registered_ops()``) or the time budget
   is spent;
2. computes ATen's result and ours on the same random inputs, and fails loudly when they differ;
3. times ATen (gems off) and gems (inside ``flag_gems.use_gems()``) interleaved, in the same process:
   ``kernel`` mode with ``triton.testing.do_bench`` (device events, median, L2 flushed before each
   run), ``operator`` mode as many calls with one synchronize (host time included), rotating input
   sets that fit in L2 so that repeated calls do not read from the cache;
4. prints one line and writes one JSON record (speedup, GB/s and fraction of the measured copy
   ceiling for memory-bound ops, TFLOP/s and fraction of cuBLAS for matmuls).

``quick`` mode (CI, or any machine without a GPU) runs each case once on a tiny shape through Triton's
interpreter: the check and the timing code run, no number means anything.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import threading
import time
import traceback
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import torch

import flag_gems
from benchmark.records import line, metric_line

_HERE = os.path.dirname(os.path.abspath(__file__))
DEVICE: str = flag_gems.device
ON_GPU: bool = DEVICE == "cuda"

BF16, FP16, FP32 = torch.bfloat16, torch.float16, torch.float32
FLOATS = (BF16, FP16, FP32)
DTYPE_NAMES = {
    torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32", torch.float64: "fp64",
    torch.int8: "i8", torch.int16: "i16", torch.int32: "i32", torch.int64: "i64", torch.uint8: "u8",
    torch.bool: "bool",
}
DTYPES_BY_NAME = {name: dtype for dtype, name in DTYPE_NAMES.items()}

# Relative tolerance of the check per output dtype: a few units in the last place.
_RTOL = {torch.float16: 2e-3, torch.bfloat16: 3.2e-2, torch.float32: 5e-6, torch.float64: 1e-9}
# Bound on ||ours - ATen|| / ||ATen|| per output dtype: rounding noise sits an order of magnitude below.
_REL_NORM = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float32: 1e-5, torch.float64: 1e-9}
_L2_FALLBACK = 50 * 2**20
# Operator-mode input rotation: enough sets to cover twice the L2 cache, at most this many.
_MAX_ROTATION = 8


# ---------------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One benchmarked operation, declared in a perf file's table.

    ``fn(*args)`` is the call as a user writes it (``torch.add(x, y)``); ATen runs it with gems off,
    gems runs the same call inside ``use_gems()``. A case of a public fused function names it in
    ``gems`` (``"silu_and_mul"`` for ``flag_gems.silu_and_mul``) or gives a callable; then ``fn`` is
    the ATen composition it replaces.

    ``make(shape, dtype)`` builds the arguments on the benchmark device. ``shapes`` are realistic
    (LLM, vision) sizes, ``small`` sizes where the host time per call dominates, ``quick`` a tiny size
    for the interpreter. The first shape runs for every dtype, the others for ``dtypes[0]`` only.

    ``aten`` names the overloads (or base names) whose service makes the case meaningful; a case none
    of whose names is served by an installed family is skipped. ``bytes`` and ``flops`` map
    ``(args, out)`` to the fewest bytes moved and the arithmetic done; by default bytes are every
    tensor argument read once plus every output written once. Cases with ``flops`` are reported
    against cuBLAS in TFLOP/s. ``inplace`` cases get fresh copies of their arguments for the check;
    ``note`` travels into the record.
    """

    name: str
    fn: Callable
    make: Callable
    shapes: Sequence[tuple] = ()
    small: Sequence[tuple] = ()
    quick: tuple | None = None
    dtypes: Sequence[torch.dtype] = FLOATS
    aten: Sequence[str] = ()
    gems: Any | None = None
    bytes: Callable | None = None
    flops: Callable | None = None
    reduce_dim: Any = 1
    atol: float = 1e-4
    check: Callable | None = None
    gems_output: Callable | None = None
    reference: Callable | None = None
    inplace: bool = False
    note: str = ""


@dataclass(frozen=True)
class Point:
    """A case at one shape and dtype: one test, one line, one record."""

    family: str
    case: Case
    shape: tuple
    dtype: torch.dtype
    tier: str  # "large", "small", "quick", or "tiny" (host-overhead points)
    order: int = 0

    @property
    def shape_str(self) -> str:
        return "x".join(str(s) for s in self.shape) if self.shape else "scalar"

    @property
    def dtype_str(self) -> str:
        return DTYPE_NAMES.get(self.dtype, str(self.dtype).replace("torch.", ""))

    @property
    def id(self) -> str:
        return f"{self.case.name}-{self.dtype_str}-{self.shape_str}"


def points(family: str, cases: Sequence[Case], settings: Settings) -> list[Point]:
    """The points of a table under ``settings``: each case's first shape and dtype first, so that a
    time budget that runs out still leaves one number per op."""
    found = []
    wanted_ops = settings.ops
    for index, case in enumerate(cases):
        if wanted_ops and case.name not in wanted_ops and case.name.split("_")[0] not in wanted_ops:
            continue
        if settings.quick:
            dtype = FP32 if FP32 in case.dtypes else case.dtypes[0]
            shape = case.quick if case.quick is not None else (case.small or case.shapes)[0]
            found.append(Point(family, case, tuple(shape), dtype, "quick", index))
            continue
        dtypes = [d for d in case.dtypes if not settings.dtypes or d in settings.dtypes]
        if not dtypes:
            continue
        if settings.shapes in ("all", "large"):
            for si, shape in enumerate(case.shapes):
                for di, dtype in enumerate(dtypes if si == 0 else dtypes[:1]):
                    level = si + di
                    found.append(Point(family, case, tuple(shape), dtype, "large", level * 10000 + index))
        if settings.shapes in ("all", "small"):
            for si, shape in enumerate(case.small):
                found.append(Point(family, case, tuple(shape), dtypes[0], "small", (5 + si) * 10000 + index))
    found.sort(key=lambda p: p.order)
    seen, unique = set(), []
    for p in found:
        if p.id not in seen:
            seen.add(p.id)
            unique.append(p)
    return unique


# ---------------------------------------------------------------------------------------------------
# Random inputs (never zeros) and byte counts
# ---------------------------------------------------------------------------------------------------

def randn(*shape, dtype=FP32, scale: float = 1.0, requires_grad: bool = False) -> torch.Tensor:
    """Standard normal values (times ``scale``) on the benchmark device."""
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    t = torch.randn(tuple(shape), device=DEVICE, dtype=FP32)
    if scale != 1.0:
        t.mul_(scale)
    return t.to(dtype).requires_grad_(requires_grad)


def uniform(*shape, low: float, high: float, dtype=FP32) -> torch.Tensor:
    """Uniform values in [low, high) on the benchmark device."""
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    t = torch.rand(tuple(shape), device=DEVICE, dtype=FP32)
    return (t * (high - low) + low).to(dtype)


def away_from_zero(*shape, dtype=FP32) -> torch.Tensor:
    """Random signs, magnitudes in [0.5, 2): safe denominators."""
    t = uniform(*shape, low=0.5, high=2.0)
    sign = torch.where(torch.rand_like(t) < 0.5, -1.0, 1.0)
    return (t * sign).to(dtype)


def randint(*shape, low: int, high: int, dtype=torch.int64) -> torch.Tensor:
    """Random integers in [low, high) on the benchmark device."""
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return torch.randint(low, high, tuple(shape), device=DEVICE, dtype=dtype)


def mask(*shape, p: float = 0.5) -> torch.Tensor:
    """A random boolean mask, true with probability ``p``."""
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return torch.rand(tuple(shape), device=DEVICE) < p


def normal_inputs(count: int = 1, scale: float = 1.0, requires_grad: bool = False):
    """``make`` for ``count`` standard normal tensors of the point's shape and dtype."""

    def make(shape, dtype):
        return tuple(randn(shape, dtype=dtype, scale=scale, requires_grad=requires_grad) for _ in range(count))

    return make


def addressed_bytes(value) -> int:
    """Bytes of the distinct elements a tensor (or nested tuple of tensors) addresses: broadcast
    (stride 0) dimensions count once."""
    if isinstance(value, torch.Tensor):
        n = 1
        for size, stride in zip(value.shape, value.stride()):
            if stride != 0:
                n *= size
        return n * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(addressed_bytes(v) for v in value)
    return 0


def default_bytes(args, out) -> int:
    """Every tensor argument read once, every output written once."""
    return addressed_bytes(list(args)) + addressed_bytes(out)


def _clone_args(args):
    return tuple(a.detach().clone().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a
                 for a in args)


# ---------------------------------------------------------------------------------------------------
# The check against ATen
# ---------------------------------------------------------------------------------------------------

def _flatten(value) -> list:
    if isinstance(value, (tuple, list)):
        out = []
        for v in value:
            out.extend(_flatten(v))
        return out
    return [value]


def compare(res, ref, reduce_dim: int = 1, atol: float = 1e-4) -> str | None:
    """Why ``res`` (ours) is not ATen's ``ref``, or None. Same structure, shapes and dtypes; floating
    values within a few units in the last place elementwise (``atol`` grows with the square root of
    the reduction length) and in relative norm; NaN and infinities in the same places; other dtypes
    exactly."""
    res_list, ref_list = _flatten(res), _flatten(ref)
    if len(res_list) != len(ref_list):
        return f"gems returned {len(res_list)} outputs, ATen {len(ref_list)}"
    for i, (r, e) in enumerate(zip(res_list, ref_list)):
        where = f"output {i}: " if len(ref_list) > 1 else ""
        if not isinstance(e, torch.Tensor):
            if isinstance(r, torch.Tensor):
                return f"{where}gems returned a tensor where ATen returned {type(e).__name__}"
            if isinstance(e, float) and not math.isclose(r, e, rel_tol=1e-5, abs_tol=atol):
                return f"{where}{r} != {e}"
            if not isinstance(e, float) and r != e:
                return f"{where}{r!r} != {e!r}"
            continue
        if not isinstance(r, torch.Tensor):
            return f"{where}gems returned {type(r).__name__}, ATen a tensor"
        if r.shape != e.shape:
            return f"{where}shape {tuple(r.shape)} != ATen's {tuple(e.shape)}"
        if r.dtype != e.dtype:
            return f"{where}dtype {r.dtype} != ATen's {e.dtype}"
        problem = _compare_tensor(r.detach(), e.detach(), reduce_dim, atol)
        if problem:
            return where + problem
    return None


def _tolerance(exact: torch.Tensor, rtol: float, reduce_dim: int, atol: float) -> torch.Tensor:
    """Per element: ``atol`` grown with the square root of the reduction length, plus ``rtol`` of the
    element's magnitude and of the output's RMS. The RMS term forgives a result that cancels to near
    zero (a bias or residual add) differing by a fraction of a unit in the last place of its terms."""
    rms = float(exact.square().mean().sqrt()) if exact.numel() else 0.0
    return atol * math.sqrt(max(reduce_dim, 1)) + rtol * (exact.abs() + rms)


def _compare_tensor(r: torch.Tensor, e: torch.Tensor, reduce_dim: int, atol: float) -> str | None:
    if not (e.is_floating_point() or e.is_complex()):
        bad = (r != e).sum().item()
        return f"{bad} of {e.numel()} elements differ" if bad else None
    if e.is_complex():
        r, e = torch.view_as_real(r), torch.view_as_real(e)
    rtol, bound = _RTOL.get(e.dtype, 1e-5), _REL_NORM.get(e.dtype, 1e-5)
    r64, e64 = r.double(), e.double()
    nan_r, nan_e = torch.isnan(r64), torch.isnan(e64)
    if not torch.equal(nan_r, nan_e):
        return f"NaN in {int(nan_r.sum())} places, ATen in {int(nan_e.sum())}"
    inf_e = torch.isinf(e64)
    if not torch.equal(torch.isinf(r64), inf_e) or not torch.equal(r64[inf_e], e64[inf_e]):
        return "infinities differ from ATen's"
    finite = torch.isfinite(e64)
    r64, e64 = r64[finite], e64[finite]
    if e64.numel() == 0:
        return None
    diff = (r64 - e64).abs()
    tol = _tolerance(e64, rtol, reduce_dim, atol)
    bad = int((diff > tol).sum())
    rel = float(diff.norm() / e64.norm().clamp_min(1e-30))
    if bad or rel > bound:
        worst = int(torch.argmax(diff - tol))
        return (f"{bad} of {e64.numel()} elements outside tolerance (worst: {float(r64[worst]):.6g} vs ATen "
                f"{float(e64[worst]):.6g}), relative norm error {rel:.3g} (bound {bound:g})")
    return None


def _upcast(args: tuple) -> tuple:
    return tuple(a.detach().to(torch.complex128 if a.is_complex() else torch.float64).requires_grad_(a.requires_grad)
                 if isinstance(a, torch.Tensor) and (a.is_floating_point() or a.is_complex()) else a
                 for a in args)


def no_farther_than_aten(res, ref, exact, reduce_dim: int = 1, atol: float = 1e-4) -> str | None:
    """Why ``res`` is farther from the float64 result ``exact`` than ATen's ``ref`` is (by more than a
    unit in the last place), or None. The check's second chance where ATen itself rounds between steps."""
    res_list, ref_list, exact_list = _flatten(res), _flatten(ref), _flatten(exact)
    if not len(res_list) == len(ref_list) == len(exact_list):
        return "output counts differ"
    for r, e, x in zip(res_list, ref_list, exact_list):
        if not all(isinstance(t, torch.Tensor) for t in (r, e, x)) or not e.is_floating_point():
            if compare(r, e, reduce_dim, atol):
                return "non-floating outputs differ"
            continue
        if r.shape != x.shape:
            return "shapes differ from the float64 result's"
        r64, e64, x64 = r.detach().double(), e.detach().double(), x.detach().double()
        finite = torch.isfinite(x64) & torch.isfinite(e64)
        if not torch.equal(torch.isfinite(r64), torch.isfinite(e64)):
            return "NaN or infinities differ from ATen's"
        r64, e64, x64 = r64[finite], e64[finite], x64[finite]
        err_gems, err_aten = (r64 - x64).abs(), (e64 - x64).abs()
        slack = _tolerance(x64, _RTOL.get(e.dtype, 1e-5), reduce_dim, atol)
        bad = int((err_gems > err_aten + slack).sum())
        if bad:
            return f"{bad} elements farther from the float64 result than ATen's by more than the tolerance"
    return None


def same_selected_values(dim: int = -1, values: bool = True):
    """A check for ops returning indices (argmax, topk, sort, max.dim, ...): ties may pick different
    positions, so the indices are checked through the input values they select. ``values`` says
    whether the op returns (values, indices) or indices alone."""

    def check(args, res, ref) -> str | None:
        x = args[0]
        if values:
            (rv, ri), (ev, ei) = res, ref
            problem = compare(rv, ev)
            if problem:
                return "values: " + problem
        else:
            ri, ei = res, ref
        if ri.shape != ei.shape or ri.dtype != ei.dtype:
            return f"indices: {tuple(ri.shape)} {ri.dtype} != ATen's {tuple(ei.shape)} {ei.dtype}"
        keep = ri.dim() == x.dim()
        d = dim % x.dim()
        pick_r = x.gather(d, ri if keep else ri.unsqueeze(d))
        pick_e = x.gather(d, ei if keep else ei.unsqueeze(d))
        bad = int((pick_r != pick_e).sum())
        return f"indices: {bad} select different values than ATen's" if bad else None

    return check


# ---------------------------------------------------------------------------------------------------
# Settings, the environment, and the session
# ---------------------------------------------------------------------------------------------------

@dataclass
class Settings:
    """What a benchmark run does; built from the pytest options by conftest.py."""

    mode: str = "kernel"          # "kernel", "operator" or "quick"
    shapes: str = "all"           # "all", "large" or "small"
    dtypes: tuple = ()            # empty: each case's own
    ops: tuple = ()               # empty: every case
    record: str = ""              # a JSON-lines file to append records to
    budget_s: float = 0.0         # 0: no limit
    point_limit_s: float = 0.0    # a point still running after this long is stopped (0: no limit)
    warmup_ms: float = 25.0
    rep_ms: float = 100.0
    rounds: int = 2               # interleaved ATen/gems rounds (kernel mode; operator mode uses 5)

    @property
    def quick(self) -> bool:
        return self.mode == "quick"


def synchronize() -> None:
    if ON_GPU:
        torch.cuda.synchronize()


def synchronized_clock() -> float:
    """A host clock read after the device has finished: timing a loop of calls between two reads
    gives the time per call that a user pays. pytest-benchmark uses it as its timer."""
    synchronize()
    return time.perf_counter()


def _driver_version() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open("/proc/driver/nvidia/version") as f:
            return f.readline().strip()
    except OSError:
        return ""


def card_slug(name: str) -> str:
    """A file-name friendly card name: "NVIDIA H100 80GB HBM3" -> "h100-80gb-hbm3"."""
    words = [w for w in name.lower().replace("nvidia", "").replace("_", " ").split() if w]
    return "-".join("".join(c for c in w if c.isalnum()) for w in words) or "cpu"


def environment() -> dict:
    """The card, driver and versions a number was measured with, and the date."""
    import triton

    env = {
        "kind": "env",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": DEVICE,
        "interpreter": bool(flag_gems.runtime.device.interpreter),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "flag_gems": getattr(flag_gems, "__version__", ""),
        "host": platform.node(),
    }
    try:
        env["families"] = {f["name"]: {"version": f.get("version", ""), "ops": len(f.get("ops", ())),
                                       "error": f.get("error")} for f in flag_gems.families()}
    except Exception as exc:  # a broken plugin set must not stop the benchmark from saying so
        env["families"] = {"error": f"{type(exc).__name__}: {exc}"}
    if ON_GPU:
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        env.update(card=props.name, card_slug=card_slug(props.name), sm_count=props.multi_processor_count,
                   memory_gib=round(props.total_memory / 2**30, 1), l2_bytes=_l2_bytes(),
                   cuda=torch.version.cuda, driver=_driver_version(),
                   allow_tf32=bool(torch.backends.cuda.matmul.allow_tf32))
    else:
        env.update(card=f"cpu ({platform.processor() or platform.machine()})", card_slug="cpu")
    return env


def _l2_bytes() -> int:
    if not ON_GPU:
        return _L2_FALLBACK
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return int(getattr(props, "L2_cache_size", 0) or _L2_FALLBACK)


def measure_copy_ceiling(warmup_ms: float = 10, rep_ms: float = 50) -> float | None:
    """Device-to-device copy rate in GB/s, counting bytes read plus bytes written: the ceiling of a
    memory-bound op. None off the GPU."""
    if not ON_GPU:
        return None
    import triton.testing

    n = 2**28  # 512 MiB of bf16 each way, ten times the L2
    src = torch.randn(n, device=DEVICE, dtype=BF16)
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=warmup_ms, rep=rep_ms, return_mode="median")
    return 2 * src.nbytes / (ms * 1e-3) / 1e9


def measure_read_ceiling(nbytes: int, warmup_ms: float = 10, rep_ms: float = 50) -> float | None:
    """Rate in GB/s of a minimal kernel that only reads ``nbytes`` (each program sums 16 KiB to one float),
    timed as the cases are: the ceiling of an op that reads much and writes little at that size. Under
    do_bench's cache flush, which leaves the L2 full of dirty lines that the timed reads must write back,
    a 128 MiB read reaches about 80% of the copy ceiling on an H100 (512 MiB: ~99%). None off the GPU."""
    if not ON_GPU:
        return None
    import triton.testing

    from benchmark.read_probe import BLOCK, read_everything

    src = torch.randn(max(1, nbytes // (2 * BLOCK)) * BLOCK, device=DEVICE, dtype=BF16)
    ms = triton.testing.do_bench(lambda: read_everything(src), warmup=warmup_ms, rep=rep_ms,
                                 return_mode="median")
    return src.nbytes / (ms * 1e-3) / 1e9


def measure_matmul_peak(warmup_ms: float = 10, rep_ms: float = 50) -> float | None:
    """cuBLAS bf16 8192^3 through torch.mm in TFLOP/s: the ceiling of the matmul family."""
    if not ON_GPU:
        return None
    import triton.testing

    a = randn(8192, 8192, dtype=BF16)
    b = randn(8192, 8192, dtype=BF16)
    ms = triton.testing.do_bench(lambda: torch.mm(a, b), warmup=warmup_ms, rep=rep_ms, return_mode="median")
    return 2 * 8192**3 / (ms * 1e-3) / 1e12


class Session:
    """Per process: settings, what is served, the measured ceilings, the budget and the record file."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started = time.monotonic()
        self.context_lost: str | None = None
        self._env: dict | None = None
        self._env_written = False
        self._served: dict | None = None
        self._ceiling: float | None = None
        self._ceiling_done = False
        self._matmul_peak: float | None = None
        self._matmul_done = False
        self._read_ceilings: dict[int, float | None] = {}

    # what is served ---------------------------------------------------------------------------
    def served(self) -> dict:
        """ATen overloads served by the installed families (name -> family)."""
        if self._served is None:
            try:
                flag_gems.enable()
                self._served = dict(flag_gems.registered_ops())
            finally:
                flag_gems.disable()
        return self._served

    def serves(self, names: Sequence[str]) -> bool:
        from flag_gems import aten_names

        served = self.served()
        return any(aten_names.matches(op, list(names)) for op in served)

    # ceilings ---------------------------------------------------------------------------------
    def copy_ceiling(self) -> float | None:
        if not self._ceiling_done and not self.settings.quick:
            self._ceiling_done = True
            self._ceiling = measure_copy_ceiling()
            if self._ceiling:
                emit(f"copy ceiling: {self._ceiling:.0f} GB/s (device-to-device copy, read + write)")
                self.write({"kind": "env"})
        return self._ceiling

    def read_ceiling(self, nbytes: int) -> float | None:
        """The read ceiling at ``nbytes`` (measured once per size)."""
        if self.settings.quick:
            return None
        if nbytes not in self._read_ceilings:
            rate = self._read_ceilings[nbytes] = measure_read_ceiling(nbytes)
            if rate:
                emit(f"read ceiling at {nbytes / 2**20:.0f} MiB: {rate:.0f} GB/s (a kernel that only reads)")
        return self._read_ceilings[nbytes]

    def matmul_peak(self) -> float | None:
        if not self._matmul_done and not self.settings.quick:
            self._matmul_done = True
            self._matmul_peak = measure_matmul_peak()
            if self._matmul_peak:
                emit(f"cuBLAS bf16 8192^3: {self._matmul_peak:.0f} TFLOP/s")
                self.write({"kind": "env"})
        return self._matmul_peak

    def env(self) -> dict:
        if self._env is None:
            self._env = environment()
            self._env.update(mode=self.settings.mode, shapes=self.settings.shapes,
                             warmup_ms=self.settings.warmup_ms, rep_ms=self.settings.rep_ms)
        self._env["copy_ceiling_gbps"] = self._ceiling
        self._env["matmul_peak_tflops"] = self._matmul_peak
        self._env["read_ceilings_gbps"] = {str(k): v for k, v in self._read_ceilings.items()}
        return self._env

    # budget -----------------------------------------------------------------------------------
    def budget_spent(self) -> bool:
        b = self.settings.budget_s
        return bool(b) and time.monotonic() - self.started > b

    # records ----------------------------------------------------------------------------------
    def write(self, record: dict) -> None:
        """Append ``record`` (and, before the first, the environment) to the record file."""
        path = self.settings.record
        if not path:
            return
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "a") as f:
            if not self._env_written or record.get("kind") == "env":
                env = self.env()
                f.write(json.dumps(env, default=str) + "\n")
                self._env_written = True
            if record.get("kind") != "env":
                f.write(json.dumps(record, default=str) + "\n")


def emit(line: str) -> None:
    """Print a harness line (shown with ``pytest -s``; run_gpu.sh keeps these in its console output)."""
    print(f"[bench] {line}", flush=True)


def device_alive() -> bool:
    """Whether the CUDA context still works after an error (an illegal address kills it)."""
    if not ON_GPU:
        return True
    try:
        torch.cuda.synchronize()
        t = torch.ones(4, device=DEVICE)
        ok = float((t + t).sum()) == 8.0
        torch.cuda.synchronize()
        return ok
    except Exception:
        return False


# ---------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------

def kernel_time_us(fn: Callable[[], Any], warmup_ms: float, rep_ms: float) -> float:
    """Median device time of ``fn`` in µs, with events, the L2 cache flushed before each run."""
    import triton.testing

    return 1e3 * triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median")


def loop_time_us(fn: Callable, arg_sets: Sequence[tuple], calls: int) -> float:
    """µs per call of ``calls`` calls of ``fn`` over the rotating ``arg_sets``, one synchronize at the end."""
    k = len(arg_sets)
    synchronize()
    start = time.perf_counter()
    if k == 1:
        args = arg_sets[0]
        for _ in range(calls):
            fn(*args)
    else:
        for i in range(calls):
            fn(*arg_sets[i % k])
    synchronize()
    return (time.perf_counter() - start) / calls * 1e6


def calls_for(per_call_us: float, target_ms: float, low: int = 3, high: int = 20000) -> int:
    """How many calls fill ``target_ms``."""
    if per_call_us <= 0:
        return high
    return int(min(high, max(low, target_ms * 1e3 / per_call_us)))


@contextlib.contextmanager
def gems_on():
    """Gems serving every installed family's ops, as after ``flag_gems.enable()``."""
    with flag_gems.use_gems():
        yield


class Measurement:
    """Interleaved ATen and gems timings of one point, in µs per call."""

    def __init__(self) -> None:
        self.aten: list[float] = []
        self.gems: list[float] = []
        self.calls = 0

    def best(self, samples: list[float], mode: str) -> float:
        # Kernel mode: each sample is already a median over many runs; the lower is the less disturbed.
        # Operator mode: host time is noisy both ways; the median of the rounds.
        return min(samples) if mode == "kernel" else statistics.median(samples)


def measure(aten_fn: Callable, gems_fn: Callable, arg_sets: Sequence[tuple], settings: Settings) -> Measurement:
    """Time ATen (gems off) and gems (gems on) interleaved on the same inputs."""
    m = Measurement()
    if settings.quick:
        # One call each: exercise the code path, time nothing meaningful.
        m.aten.append(loop_time_us(aten_fn, arg_sets, 1))
        with gems_on():
            m.gems.append(loop_time_us(gems_fn, arg_sets, 1))
        m.calls = 1
        return m
    if settings.mode == "kernel":
        rounds = max(1, settings.rounds)
        warm, rep = settings.warmup_ms / rounds, settings.rep_ms / rounds
        args = arg_sets[0]
        for _ in range(rounds):
            m.aten.append(kernel_time_us(lambda: aten_fn(*args), warm, rep))
            with gems_on():
                m.gems.append(kernel_time_us(lambda: gems_fn(*args), warm, rep))
        return m
    # Operator mode: calibrate the number of calls per sample on each side, then five rounds.
    rounds = 5
    per_sample_ms = max(settings.rep_ms / rounds, 2.0)
    aten_calls = calls_for(loop_time_us(aten_fn, arg_sets, 3), settings.warmup_ms)
    loop_time_us(aten_fn, arg_sets, aten_calls)  # warm-up
    with gems_on():
        gems_calls = calls_for(loop_time_us(gems_fn, arg_sets, 3), settings.warmup_ms)
        gems_per_call = loop_time_us(gems_fn, arg_sets, gems_calls)
    aten_per_call = loop_time_us(aten_fn, arg_sets, aten_calls)
    calls = calls_for(min(aten_per_call, gems_per_call), per_sample_ms)
    m.calls = calls
    for _ in range(rounds):
        m.aten.append(loop_time_us(aten_fn, arg_sets, calls))
        with gems_on():
            m.gems.append(loop_time_us(gems_fn, arg_sets, calls))
    return m


# ---------------------------------------------------------------------------------------------------
# Running a point
# ---------------------------------------------------------------------------------------------------

class PointSkipped(Exception):
    """A point that is not run (not served, budget spent, ...), with the reason."""


class PointTimeout(BaseException):
    """A point ran past its time limit (a BaseException, so that no handler of the point absorbs it)."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise PointTimeout in the block after ``seconds`` (main thread, POSIX; no limit otherwise).
    A kernel that never returns is not interrupted: run_gpu.sh's process limit covers that."""
    usable = seconds > 0 and hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def expire(signum, frame):
        raise PointTimeout()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def fused_call(name: str, call: Callable) -> Callable:
    """A gems side that calls the public fused function ``flag_gems.<name>`` as ``call(fused, *args)``,
    for a fused function whose arguments differ from the ATen composition's."""

    def run(*args):
        return call(getattr(flag_gems, name), *args)

    run.fused_name = name
    return run


def _fused_name(case: Case) -> str | None:
    return case.gems if isinstance(case.gems, str) else getattr(case.gems, "fused_name", None)


def _gems_callable(case: Case) -> Callable | None:
    """What runs on the gems side, or None when the fused function it needs is not installed."""
    if case.gems is None:
        return case.fn
    name = _fused_name(case)
    try:
        fused = getattr(flag_gems, name) if name else None
    except AttributeError:
        return None
    return case.gems if callable(case.gems) else fused


def _counting():
    """A counter of the calls gems served, when core offers one."""
    try:
        from flag_gems.recording import CallCounter

        return CallCounter()
    except Exception:
        return None


def _served_call(gems_fn: Callable, args: tuple):
    """Run ``gems_fn`` once under gems; also return which overloads gems served and handed back
    (None when core cannot tell)."""
    counter = _counting()
    try:
        recording = flag_gems.use_gems(record=True) if counter is not None else None
    except TypeError:
        recording = None
    if recording is None:
        with gems_on():
            out = gems_fn(*args)
            synchronize()
        return out, None, None
    with counter, recording:
        out = gems_fn(*args)
        synchronize()
    return out, dict(counter.served), dict(counter.fallbacks)


def _ran_on_gems(served: dict, fallbacks: dict, names: Sequence[str]) -> bool:
    """Whether the case ran on gems: one of its named ops ran on a gems kernel, or (when gems served
    none of them, e.g. a family serves the composite op above them) any op did and none of the named
    ops was handed back to ATen."""
    from flag_gems import aten_names

    def named(op: str) -> bool:
        return bool(names) and aten_names.matches(op, list(names))

    ran = {op for op, n in served.items() if n > fallbacks.get(op, 0)}
    if any(named(op) for op in ran):
        return True
    handed_back_named = any(named(op) for op in fallbacks)
    return bool(ran) and not handed_back_named


def _rotation(case: Case, point: Point, args: tuple, bytes_moved: int, settings: Settings) -> list[tuple]:
    """Input sets for operator mode: as many as cover twice the L2 cache, so repeated calls miss it."""
    sets = [args]
    if settings.mode != "operator" or not bytes_moved:
        return sets
    want = min(_MAX_ROTATION, math.ceil(2 * _l2_bytes() / max(bytes_moved, 1)))
    for _ in range(want - 1):
        sets.append(case.make(point.shape, point.dtype))
    return sets


def _mostly_read(args, out, nbytes: int) -> bool:
    """Whether an op's bytes are nearly all reads (a reduction to a row or less): then its rate is
    also set against the read ceiling."""
    return 0 < 32 * addressed_bytes(out) <= nbytes


def _metrics(record: dict, case: Case, args: tuple, out, aten_us: float, gems_us: float,
             session: Session) -> None:
    nbytes = (case.bytes or default_bytes)(args, out)
    record["bytes"] = int(nbytes)
    if nbytes and gems_us > 0:
        record["gems_gbps"] = nbytes / (gems_us * 1e-6) / 1e9
        record["aten_gbps"] = nbytes / (aten_us * 1e-6) / 1e9
        ceiling = session.copy_ceiling()
        if ceiling:
            record["ceiling_gbps"] = ceiling
            record["ceiling_frac"] = record["gems_gbps"] / ceiling
            record["aten_ceiling_frac"] = record["aten_gbps"] / ceiling
        read_ceiling = session.read_ceiling(nbytes) if _mostly_read(args, out, nbytes) else None
        if read_ceiling:
            record["read_ceiling_gbps"] = read_ceiling
            record["read_ceiling_frac"] = record["gems_gbps"] / read_ceiling
            record["aten_read_ceiling_frac"] = record["aten_gbps"] / read_ceiling
    if case.flops is not None and gems_us > 0:
        flops = case.flops(args, out)
        record["flops"] = int(flops)
        record["gems_tflops"] = flops / (gems_us * 1e-6) / 1e12
        record["aten_tflops"] = flops / (aten_us * 1e-6) / 1e12
        record["cublas_frac"] = aten_us / gems_us
        peak = session.matmul_peak()
        if peak:
            record["matmul_peak_tflops"] = peak


def base_record(point: Point, settings: Settings) -> dict:
    return {
        "kind": "case", "id": f"{point.family}/{point.id}/{settings.mode}", "family": point.family,
        "op": point.case.name, "dtype": point.dtype_str, "shape": list(point.shape),
        "shape_str": point.shape_str, "mode": settings.mode, "tier": point.tier, "status": "ok",
        "note": point.case.note or None,
    }


def run_point(point: Point, session: Session, benchmark: Callable | None = None,
              settings: Settings | None = None) -> dict:
    """Check and time one point and return its record: status ok, fail (differs from ATen), error
    (raised), fallback (gems handed every call to ATen). Raises PointSkipped when it does not run.
    ``benchmark`` returns the pytest-benchmark fixture (or None) when asked; ``settings`` replaces
    the session's for this point."""
    settings = settings or session.settings
    case = point.case
    record = base_record(point, settings)
    if session.context_lost:
        raise PointSkipped(f"CUDA context lost {session.context_lost}; rerun with --bench-resume")
    if session.budget_spent():
        raise PointSkipped(f"time budget of {settings.budget_s:.0f} s spent")
    gems_fn = _gems_callable(case)
    if gems_fn is None:
        raise PointSkipped(f"flag_gems.{_fused_name(case)} is not provided by any installed family")
    if case.gems is None and case.aten and not session.serves(case.aten):
        raise PointSkipped(f"not served by any installed family ({', '.join(case.aten)})")

    phase = "building inputs"
    try:
        torch.manual_seed(zlib.crc32(point.id.encode()))
        args = case.make(point.shape, point.dtype)
        args = args if isinstance(args, tuple) else (args,)
        phase = "ATen's call"
        try:
            ref = (case.reference or case.fn)(*(_clone_args(args) if case.inplace else args))
            synchronize()
        except Exception as exc:
            # Nothing to compare with (ATen refuses this dtype here): not a result about gems.
            raise PointSkipped(f"ATen raised {type(exc).__name__}: {exc}"[:300]) from None
        phase = "the first gems call"
        res, served, fallbacks = _served_call(gems_fn, _clone_args(args) if case.inplace else args)
        if served is not None:
            record["served_ops"] = sorted(served)
            if case.gems is None and not _ran_on_gems(served, fallbacks, case.aten):
                record.update(status="fallback", reason="gems handed the case's ops back to ATen "
                              f"(handed back: {', '.join(sorted(fallbacks)) or 'none'}; "
                              f"served: {', '.join(sorted(served)) or 'none'})")
                return record
        phase = "the check"
        if case.gems_output is not None:
            res = case.gems_output(res)
        reduce_dim = case.reduce_dim(point.shape) if callable(case.reduce_dim) else case.reduce_dim
        problem = case.check(args, res, ref) if case.check else compare(res, ref, reduce_dim, case.atol)
        if problem and case.check is None:
            # ATen rounds too: accept a result no farther than ATen's from the float64 one.
            phase = "the float64 reference"
            exact = (case.reference or case.fn)(*_upcast(args))
            if no_farther_than_aten(res, ref, exact, reduce_dim, case.atol) is None:
                record["check"] = f"differs from ATen ({problem[:200]}) but is no farther from float64"
                problem = None
            del exact
        if problem:
            record.update(status="fail", reason=f"result differs from ATen: {problem}"[:800])
            return record
        out = ref
        del res

        phase = "timing"
        sets = _rotation(case, point, args, default_bytes(args, out), settings)
        m = measure(case.fn, gems_fn, sets, settings)
        aten_us, gems_us = m.best(m.aten, settings.mode), m.best(m.gems, settings.mode)
        record.update(aten_us=aten_us, gems_us=gems_us, speedup=aten_us / gems_us if gems_us > 0 else None,
                      aten_rounds_us=m.aten, gems_rounds_us=m.gems, rotation=len(sets))
        if m.calls:
            record["calls_per_sample"] = m.calls
        if not settings.quick and point.tier != "tiny":
            phase = "the ceilings"
            _metrics(record, case, args, out, aten_us, gems_us, session)
            fixture = benchmark() if benchmark is not None else None
            if fixture is not None:
                try:
                    _feed_pytest_benchmark(fixture, gems_fn, sets, gems_us, record)
                except Exception as exc:  # our own numbers stand without pytest-benchmark's
                    record["pytest_benchmark_error"] = f"{type(exc).__name__}: {exc}"[:300]
    except PointSkipped:
        raise
    except Exception as exc:
        oom = ON_GPU and isinstance(exc, torch.cuda.OutOfMemoryError)
        text = "out of memory" if oom else f"{type(exc).__name__} at {raised_at(exc)}: {exc}"
        record.update(status="error", reason=f"{phase} raised {text}"[:800])
    return record


def raised_at(exc: BaseException, frames: int = 2) -> str:
    """Where ``exc`` was raised: the innermost frames outside this harness, as file:line."""
    stack = [f for f in traceback.extract_tb(exc.__traceback__) if os.path.dirname(f.filename) != _HERE]
    return " < ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in reversed(stack[-frames:]))


def _feed_pytest_benchmark(benchmark, gems_fn: Callable, sets: Sequence[tuple], gems_us: float, record: dict) -> None:
    """Hand pytest-benchmark the gems operator time (its timer synchronizes) and our numbers as extra_info."""
    benchmark.extra_info.update({k: v for k, v in record.items() if k not in ("aten_rounds_us", "gems_rounds_us")})
    calls = calls_for(gems_us, 10.0, low=1, high=5000)
    k = len(sets)
    state = {"i": 0}

    def one_call():
        state["i"] += 1
        return gems_fn(*sets[state["i"] % k])

    with gems_on():
        benchmark.pedantic(one_call, rounds=3, iterations=calls, warmup_rounds=1)


# ---------------------------------------------------------------------------------------------------
# The runner a test receives
# ---------------------------------------------------------------------------------------------------

class Runner:
    """The ``bench`` fixture: runs points and records metrics, then passes the outcome to pytest
    (skip for skipped points, a failure without traceback for a wrong result or an error)."""

    def __init__(self, session: Session, node, benchmark: Callable | None = None) -> None:
        self.session = session
        self.node = node
        self._benchmark = benchmark

    @property
    def settings(self) -> Settings:
        return self.session.settings

    @property
    def quick(self) -> bool:
        return self.session.settings.quick

    def started(self, record_id: str) -> None:
        """Note that a measurement starts, so that a resumed run can tell which one killed the process."""
        if self.settings.record and not self.quick:
            self.session.write({"kind": "start", "id": record_id})

    def check_budget(self) -> None:
        """Skip the calling test when the run's time budget or the CUDA context is gone."""
        if self.session.context_lost:
            pytest.skip(f"CUDA context lost {self.session.context_lost}")
        if self.session.budget_spent():
            pytest.skip(f"time budget of {self.settings.budget_s:.0f} s spent")

    def run(self, point: Point, settings: Settings | None = None, **extra) -> dict:
        """Check and time ``point`` (under ``settings`` if given); print its line, record it with
        ``extra`` fields, and report its outcome to pytest."""
        settings = settings or self.settings
        self.started(f"{point.family}/{point.id}/{settings.mode}")
        try:
            with time_limit(settings.point_limit_s):
                record = run_point(point, self.session, self._benchmark, settings)
        except PointSkipped as skip:
            record = base_record(point, settings)
            record.update(status="skip", reason=str(skip))
        except PointTimeout:
            record = base_record(point, settings)
            record.update(status="error", reason=f"still running after {settings.point_limit_s:.0f} s: stopped")
        record.update(extra)
        if record.get("target_ratio") and record.get("aten_us") and record.get("gems_us") and not settings.quick:
            record["host_ratio"] = record["gems_us"] / record["aten_us"]
            record["meets_target"] = record["host_ratio"] <= record["target_ratio"]
        if record["status"] != "ok" and not self.session.context_lost and not device_alive():
            self.session.context_lost = f"after {point.id}"
            record["reason"] += " (the CUDA context is lost: later cases in this process are skipped)"
        if ON_GPU and not self.quick:
            torch.cuda.empty_cache()
        return self.finish(record, line(record))

    def metric(self, group: str, name: str, values: dict, status: str = "ok", reason: str | None = None,
               targets: dict | None = None, verdicts: dict | None = None, fail: bool = True) -> dict:
        """Record a named measurement (first-call latency, import time, a decoding step, ...)."""
        record = {"kind": "metric", "id": f"{group}/{name}/{self.settings.mode}", "group": group,
                  "name": name, "mode": self.settings.mode, "status": status, "reason": reason,
                  "values": values, "targets": targets or {}, "verdicts": verdicts or {}}
        return self.finish(record, metric_line(record), fail=fail)

    @contextlib.contextmanager
    def reporting(self, group: str, name: str):
        """Run a measurement block; an exception in it becomes an error record and a failed test."""
        try:
            yield
        except Exception as exc:
            if ON_GPU and not device_alive():
                self.session.context_lost = f"after {group}/{name}"
            self.metric(group, name, {}, status="error",
                        reason=f"{type(exc).__name__} at {raised_at(exc)}: {exc}"[:800])

    def finish(self, record: dict, text: str, fail: bool = True) -> dict:
        self.session.write(record)
        emit(text)
        self.node.user_properties.append(("bench", record))
        status, reason = record.get("status"), record.get("reason") or ""
        if status in ("skip", "fallback"):
            pytest.skip(reason)
        if status in ("fail", "error") and fail:
            pytest.fail(f"{record.get('id')}: {reason}", pytrace=False)
        return record


def verdict(value: float, target: float) -> str:
    """"meets" when ``value`` is at most ``target``, else "MISSES"."""
    return "meets" if value <= target else "MISSES"
