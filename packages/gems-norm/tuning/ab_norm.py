"""A/B timing of the norm kernels' variants (``gems_norm.heuristics.Knobs``) against ATen, on the GPU.

    python packages/gems-norm/tuning/ab_norm.py                    # every case (settings past --budget-s skipped)
    python packages/gems-norm/tuning/ab_norm.py --cases ln_fwd,bn_train,rms_fwd --budget-s 90   # the forwards
    python packages/gems-norm/tuning/ab_norm.py --cases ln_fwd,rms_fwd --budget-s 90   # the row forwards' registers
    python packages/gems-norm/tuning/ab_norm.py --cases add_rms_fwd_bwd --budget-s 60  # dh folded into the backward
    python packages/gems-norm/tuning/ab_norm.py --smoke            # tiny shapes; runs anywhere (CPU: interpreter)
    python packages/gems-norm/tuning/ab_norm.py --cases ln_bwd --try row_bwd_warps=4,row_bwd_prefetch_stats=True

For each case (the slow points of benchmark/test_norm_perf.py, kernel mode) it times ATen, then our kernels
under each setting of the knobs: ``triton.testing.do_bench`` (median, L2 flushed before each run), every
plan built anew after a knob changes. Each setting's results are checked against ATen's first; a setting that
fails the check is marked and never picked. Bytes are those of the benchmark (each tensor argument read once,
each output written once); the ceiling is a device-to-device copy measured here (read + write). Then the
kernels of one call under the default and the best setting, from the profiler: their sum against the timed
time shows idle gaps (host time between launches).

A setting that wins where it counts and loses nowhere else becomes the default by writing its values as the
defaults of ``Knobs`` (heuristics.py), with the timing behind them in the knob's comment.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import flag_gems
from gems_norm import heuristics, per_channel

aten = torch.ops.aten
DEVICE = flag_gems.device
ON_GPU = DEVICE == "cuda"
EPS = 1e-5

# Settings of the knobs, by label: at most eight a case, so that the run stays short.
ROW_BACKWARD = {
    "default": {},
    "pf": dict(row_bwd_prefetch_stats=True),
    "8w": dict(row_bwd_warps=8),
    "pf 8w": dict(row_bwd_prefetch_stats=True, row_bwd_warps=8),
    "pf 8w 1/sm": dict(row_bwd_prefetch_stats=True, row_bwd_warps=8, row_bwd_programs_per_sm=1),
    "pf 8w 3/sm": dict(row_bwd_prefetch_stats=True, row_bwd_warps=8, row_bwd_programs_per_sm=3),
    "pf 1/sm": dict(row_bwd_prefetch_stats=True, row_bwd_programs_per_sm=1),
    "pf 2rows 1/sm": dict(row_bwd_prefetch_stats=True, row_bwd_tile=8192, row_bwd_programs_per_sm=1),
}
_REVERSED = dict(sums_interleaved=True, apply_reversed=True)
PER_CHANNEL = {
    "default": {},
    "rev": _REVERSED,
    "rev st2": dict(_REVERSED, sums_stages=2),
    "rev st3": dict(_REVERSED, sums_stages=3),
    "rev shift": dict(_REVERSED, sums_shifted=True),
    "rev 4/sm": dict(_REVERSED, sums_programs_per_sm=4),
    "rev t2k": dict(_REVERSED, sums_tile=2048),
    "rev st3 shift": dict(_REVERSED, sums_stages=3, sums_shifted=True),
}

#: Row forward (layer and RMS norm, rows of 4096). Lost on an H100 (benchmark/results/2026-11-27-h100-3/logs/
#: ab_norm.txt): 4 or 16 warps, two rows a program at 8 warps, and a grid of a few programs an SM looping over
#: the rows (weight and bias loaded once), by 1-10%. Then (benchmark/results/2026-11-27-h100-4/logs/
#: ab_norm_fwd*.txt): a register cap of 32 (8 programs of 8 warps an SM instead of 6; 3 registers spilled) lost
#: 4% on layer norm, streaming cache hints 2%, one-pass moments and 4 warps tied or lost; the weight (and bias)
#: loaded first won 1-2% on both and is the default: "weight last" is the kernel before it.
#: Then fewer registers (ab_norm_fwd3.txt there): weight and bias ("pn") or the row ("xn") held in bf16 until
#: used, the output as one FMA ("fold"): layer norm 50.6-51.3 us against 51.0 by default, RMS norm 50.3-50.5
#: against 49.9; those variants were removed.
_LAST = dict(row_fwd_params_first=False)
LN_FORWARD = {
    "default": {},
    "1pass": dict(row_fwd_one_pass=True),
    "stream": dict(row_fwd_stream=True),
    "16w": dict(row_fwd_warps=16),
    "32r": dict(row_fwd_maxnreg=32),
}
RMS_FORWARD = {
    "default": {},
    "weight last": _LAST,
    "stream": dict(row_fwd_stream=True),
    "16w": dict(row_fwd_warps=16),
}
#: fused_add_rms_norm forward and backward: the gradient of its sum output added in the backward kernel.
ADD_RMS = {
    "default": {},
    "second pass": dict(row_bwd_fold_dh=False),
}
#: Batch norm training: the merge of the statistics folded into the normalising kernel whatever the splits (one
#: launch less), with the sums' variants that won elsewhere (shifted sums, 2 stages, 4 programs an SM) and larger
#: apply tiles. The splits of each case are printed with it: ``merge_in_apply`` takes a bound on them.
_MERGED = dict(merge_in_apply=64)
BN_TRAIN = {
    "default": {},
    "merge": _MERGED,
    "shift": dict(sums_shifted=True),
    "merge shift": dict(_MERGED, sums_shifted=True),
    "merge st2": dict(_MERGED, sums_stages=2),
    "merge 4/sm": dict(_MERGED, sums_programs_per_sm=4),
    "merge t8k": dict(_MERGED, apply_tile=8192),
    "t8k": dict(apply_tile=8192),
}

# ||ours - ATen|| / ||ATen|| a correct result stays under, per dtype.
_REL_ERROR = {torch.bfloat16: 2e-2, torch.float16: 3e-3, torch.float32: 2e-5}


def _randn(shape, dtype, requires_grad=False):
    return torch.randn(shape, device=DEVICE).to(dtype).requires_grad_(requires_grad)


def _uniform(shape, low, high, dtype):
    return (torch.rand(shape, device=DEVICE) * (high - low) + low).to(dtype)


# The calls timed, each with the inputs it takes ---------------------------------------------------------

def ln_forward_inputs(shape, dtype):
    n = shape[-1]
    return _randn(shape, dtype), _randn(n, dtype), _randn(n, dtype)


def layer_norm_forward(x, w, b):
    return F.layer_norm(x, (x.shape[-1],), w, b, EPS)


def rms_forward_inputs(shape, dtype):
    return _randn(shape, dtype), _uniform(shape[-1], 0.5, 1.5, dtype)


def rms_norm_forward(x, w):
    return F.rms_norm(x, (x.shape[-1],), w, 1e-6)


def ln_backward_inputs(shape, dtype):
    n = shape[-1]
    x, w, b = _randn(shape, dtype), _randn(n, dtype), _randn(n, dtype)
    _, mean, rstd = aten.native_layer_norm(x, [n], w, b, EPS)
    return _randn(shape, dtype), x, mean, rstd, w, b


def ln_backward(dy, x, mean, rstd, w, b):
    return aten.native_layer_norm_backward(dy, x, [x.shape[-1]], mean, rstd, w, b, [True, True, True])


def rms_grad_inputs(shape, dtype):
    w = _uniform(shape[-1], 0.5, 1.5, dtype).requires_grad_()
    return _randn(shape, dtype, True), w, _randn(shape, dtype)


def rms_norm_grads(x, w, dy):
    return torch.autograd.grad(F.rms_norm(x, (x.shape[-1],), w, 1e-6), (x, w), dy)


def add_rms_grad_inputs(shape, dtype):
    w = _uniform(shape[-1], 0.5, 1.5, dtype).requires_grad_()
    return _randn(shape, dtype, True), _randn(shape, dtype, True), w, _randn(shape, dtype), _randn(shape, dtype)


def add_rms_norm_grads(x, r, w, dy, dh):
    """ATen's composition of fused_add_rms_norm: the sum is an output too."""
    h = x + r
    return torch.autograd.grad([F.rms_norm(h, (x.shape[-1],), w, 1e-6), h], (x, r, w), [dy, dh])


def fused_add_rms_norm_grads(x, r, w, dy, dh):
    y, h = flag_gems.fused_add_rms_norm(x, r, (x.shape[-1],), w, 1e-6)
    return torch.autograd.grad([y, h], (x, r, w), [dy, dh])


def ln_grad_inputs(shape, dtype):
    n = shape[-1]
    return _randn(shape, dtype, True), _randn(n, dtype, True), _randn(n, dtype, True), _randn(shape, dtype)


def layer_norm_grads(x, w, b, dy):
    return torch.autograd.grad(F.layer_norm(x, (x.shape[-1],), w, b, EPS), (x, w, b), dy)


def bn_inputs(shape, dtype):
    c = shape[1]
    return (_randn(shape, dtype), _randn(c, dtype), _uniform(c, 0.5, 2.0, dtype), _randn(c, dtype),
            _randn(c, dtype))


def bn_train(x, running_mean, running_var, w, b):
    # Returns the running statistics too: the check compares their update (on fresh copies).
    y = F.batch_norm(x, running_mean, running_var, w, b, training=True, momentum=0.1, eps=EPS)
    return y, running_mean, running_var


def bn_backward_inputs(shape, dtype):
    x, rm, rv, w, b = bn_inputs(shape, dtype)
    _, save_mean, save_invstd = aten.native_batch_norm(x, w, b, rm.clone(), rv.clone(), True, 0.1, EPS)
    return _randn(shape, dtype), x, w, rm, rv, save_mean, save_invstd


def bn_backward(dy, x, w, rm, rv, save_mean, save_invstd):
    return aten.native_batch_norm_backward(dy, x, w, rm, rv, save_mean, save_invstd, True, EPS, [True, True, True])


@dataclass(frozen=True)
class Case:
    label: str
    fn: Callable
    make: Callable
    shape: tuple
    smoke_shape: tuple
    dtype: torch.dtype
    settings: dict
    layout: Callable | None = None  # the inputs -> how the default kernels split the work
    ours: Callable | None = None  # what the settings time, where not ``fn`` under use_gems (a public function)


def sums_layout(x, *_) -> str:
    """How batch norm training's statistics pass splits ``x``: its tile and the splits a channel."""
    view = per_channel.channel_view(x)
    block_c, block_k = heuristics.strip_tile(view.c, view.k, view.s_k == 1, heuristics.KNOBS.sums_tile)
    _, splits, per_split = per_channel.channel_sums_launch(view, (x.dtype,) * 3 + (torch.float32,), True, False)
    return f"sums: tiles of {block_c}x{block_k}, {splits} split(s) of {per_split} tiles a channel block"


ROWS, SMOKE_ROWS = (8192, 4096), (48, 256)
CASES = [
    Case("ln_fwd", layer_norm_forward, ln_forward_inputs, ROWS, SMOKE_ROWS, torch.bfloat16, LN_FORWARD),
    Case("rms_fwd", rms_norm_forward, rms_forward_inputs, ROWS, SMOKE_ROWS, torch.bfloat16, RMS_FORWARD),
    Case("ln_bwd", ln_backward, ln_backward_inputs, ROWS, SMOKE_ROWS, torch.bfloat16, ROW_BACKWARD),
    Case("ln_bwd", ln_backward, ln_backward_inputs, ROWS, SMOKE_ROWS, torch.float32, ROW_BACKWARD),
    Case("rms_fwd_bwd", rms_norm_grads, rms_grad_inputs, ROWS, SMOKE_ROWS, torch.bfloat16, ROW_BACKWARD),
    Case("ln_fwd_bwd", layer_norm_grads, ln_grad_inputs, ROWS, SMOKE_ROWS, torch.bfloat16, ROW_BACKWARD),
    Case("add_rms_fwd_bwd", add_rms_norm_grads, add_rms_grad_inputs, ROWS, SMOKE_ROWS, torch.bfloat16, ADD_RMS,
         ours=fused_add_rms_norm_grads),
    Case("bn_train", bn_train, bn_inputs, (8, 512, 64, 64), (2, 8, 6, 6), torch.float32, BN_TRAIN, sums_layout),
    Case("bn_train", bn_train, bn_inputs, (32, 256, 56, 56), (3, 4, 5, 7), torch.float32, BN_TRAIN, sums_layout),
    Case("bn_bwd", bn_backward, bn_backward_inputs, (32, 256, 56, 56), (3, 4, 5, 7), torch.float32, PER_CHANNEL),
]


# Measuring ---------------------------------------------------------------------------------------------

def time_us(fn: Callable, rep_ms: float) -> float:
    """Median time of ``fn`` in us: device events with L2 flushed on the GPU, the wall clock elsewhere."""
    if ON_GPU:
        import triton.testing

        return 1e3 * triton.testing.do_bench(fn, warmup=max(5.0, rep_ms / 4), rep=rep_ms, return_mode="median")
    times = []
    for _ in range(3):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e6 * statistics.median(times)


def copy_ceiling_gbps(smoke: bool) -> float:
    """Device-to-device copy rate, bytes read plus written."""
    src = torch.randn(2**20 if smoke else 2**28, device=DEVICE, dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    return 2 * src.nbytes / time_us(lambda: dst.copy_(src), 50) / 1e3


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def bytes_moved(args: tuple, out) -> int:
    """The benchmark's count: each tensor argument read once, each output written once."""
    return sum(t.numel() * t.element_size() for t in _tensors(args) + _tensors(out))


def fresh(args: tuple) -> tuple:
    """Copies of ``args``: calls that update their inputs (running statistics) start from the same values."""
    return tuple(a.detach().clone().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a
                 for a in args)


def worst_error(res, ref) -> float:
    """The largest ||res - ref|| / ||ref|| over the outputs (inf where shapes or dtypes differ)."""
    worst = 0.0
    for r, a in zip(_tensors(res), _tensors(ref), strict=True):
        if r.shape != a.shape or r.dtype != a.dtype:
            return float("inf")
        diff = (r.detach().double() - a.detach().double()).norm().item()
        worst = max(worst, diff / max(a.detach().double().norm().item(), 1e-30))
    return worst


def parse_setting(text: str) -> dict:
    """``"row_bwd_warps=8,row_bwd_prefetch_stats=True"`` as a dict of knob values (checked by ``Knobs``)."""
    knobs = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        knobs[name.strip()] = ast.literal_eval(value.strip())
    heuristics.Knobs(**knobs)
    return knobs


def use_knobs(knobs: dict) -> None:
    """Every knob at its default but those of ``knobs``, and every plan built anew."""
    chosen = heuristics.Knobs(**knobs)
    for field in dataclasses.fields(chosen):
        setattr(heuristics.KNOBS, field.name, getattr(chosen, field.name))
    heuristics.clear_plans()


def kernel_breakdown(fn: Callable, calls: int = 3) -> str:
    """Device time of one call by kernel (profiler): 'sum us: name us, ...'; empty off the GPU."""
    if not ON_GPU:
        return ""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(calls):
                fn()
            torch.cuda.synchronize()
    except Exception as exc:  # no profiler on this machine: the timings stand without it
        return f"no kernel breakdown ({type(exc).__name__})"
    per_kernel: dict[str, float] = {}
    for event in prof.events():
        if event.device_type == DeviceType.CUDA:  # kernels, memsets and copies
            name = event.name if len(event.name) <= 40 else event.name[:37] + "..."
            per_kernel[name] = per_kernel.get(name, 0.0) + event.time_range.elapsed_us() / calls
    top = sorted(per_kernel.items(), key=lambda kv: -kv[1])
    return f"kernels {sum(per_kernel.values()):.1f} us: " + ", ".join(f"{n} {us:.1f}" for n, us in top[:5])


def run_case(case: Case, smoke: bool, ceiling: float, rep_ms: float, deadline: float) -> tuple[str, str]:
    """Times ATen and every setting of ``case``; prints a row each; returns (best label, its summary)."""
    shape = case.smoke_shape if smoke else case.shape
    dtype_name = str(case.dtype).replace("torch.", "")
    name = f"{case.label} {dtype_name} {tuple(shape)}"
    torch.manual_seed(0)
    args = case.make(shape, case.dtype)
    pristine = fresh(args)
    ref = case.fn(*fresh(pristine))  # ATen's
    aten_us = time_us(lambda: case.fn(*args), rep_ms)
    moved = bytes_moved(args, ref)

    def row(setting: str, us: float, note: str = "") -> None:
        gbps = moved / us / 1e3
        print(f"{name:34} {setting:14} {us:9.1f} {100 * gbps / ceiling:6.1f}% {aten_us / us:6.2f}x  {note}", flush=True)

    row("ATen", aten_us)
    if case.layout is not None:
        print(f"{'':34} {case.layout(*args)}", flush=True)
    timed: dict[str, float] = {}
    ours = case.ours or case.fn
    for label, knobs in case.settings.items():
        if time.monotonic() > deadline:
            print(f"{name:34} {label:14}  skipped: the time budget is spent", flush=True)
            continue
        use_knobs(knobs)
        try:
            with flag_gems.use_gems(families=["norm"]):
                error = worst_error(ours(*fresh(pristine)), ref)
                us = time_us(lambda: ours(*args), rep_ms)
        except Exception as exc:  # a variant that does not compile (resources) loses, the others go on
            print(f"{name:34} {label:14}  FAILED: {type(exc).__name__}: {str(exc)[:120]}", flush=True)
            continue
        ok = error <= _REL_ERROR[case.dtype]
        if ok:
            timed[label] = us
        row(label, us, "" if ok else f"MISMATCH (relative error {error:.1e})")
    best = min(timed, key=timed.get) if timed else "none"
    summary = f"{name:34} best {best!r}: {timed.get(best, float('nan')):.1f} us, " \
              f"{aten_us / timed[best] if timed else float('nan'):.2f}x ATen"
    for label in dict.fromkeys(["default", best]):
        if label in timed and time.monotonic() < deadline:
            use_knobs(case.settings[label])
            with flag_gems.use_gems(families=["norm"]):
                breakdown = kernel_breakdown(lambda: ours(*args))
            if breakdown:
                print(f"{'':34} {label:14} {breakdown} (timed {timed[label]:.1f})", flush=True)
    if ON_GPU and time.monotonic() < deadline:
        print(f"{'':34} {'ATen':14} {kernel_breakdown(lambda: case.fn(*args))} (timed {aten_us:.1f})", flush=True)
    use_knobs({})
    return best, summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes: check the script, time nothing real")
    parser.add_argument("--cases", default="", help="comma-separated labels, timed in that order (ln_fwd, rms_fwd, "
                        "ln_bwd, rms_fwd_bwd, ln_fwd_bwd, add_rms_fwd_bwd, bn_train, bn_bwd); default all")
    parser.add_argument("--rep-ms", type=float, default=40.0, help="do_bench's measuring time per timing")
    parser.add_argument("--budget-s", type=float, default=110.0, help="settings left when it is spent are skipped")
    parser.add_argument("--try", dest="extra", action="append", default=[], metavar="KNOB=VALUE,...",
                        help="one more setting for the cases whose knobs it names (repeatable)")
    opts = parser.parse_args(argv)
    if not ON_GPU and not opts.smoke:
        print("no GPU: only --smoke runs here", file=sys.stderr)
        return 2
    start = time.monotonic()
    wanted = [label for label in opts.cases.split(",") if label]
    cases = [c for label in wanted for c in CASES if c.label == label] if wanted else CASES  # in the order asked
    for text in opts.extra:
        knobs = parse_setting(text)
        by_prefix = (("row_bwd_fold", [ADD_RMS]), ("row_bwd_", [ROW_BACKWARD]), ("row_fwd_", [LN_FORWARD, RMS_FORWARD]),
                     ("", [PER_CHANNEL, BN_TRAIN]))
        for prefix, groups in by_prefix:
            if all(k.startswith(prefix) for k in knobs):
                for group in groups:
                    group[text] = knobs
                break
    ceiling = copy_ceiling_gbps(opts.smoke)
    card = torch.cuda.get_device_name() if ON_GPU else "CPU (Triton interpreter)"
    import triton

    print(f"{card}; torch {torch.__version__}, triton {triton.__version__}; copy ceiling {ceiling:.0f} GB/s")
    for group in (LN_FORWARD, RMS_FORWARD, ROW_BACKWARD, ADD_RMS, PER_CHANNEL, BN_TRAIN):
        for label, knobs in group.items():
            print(f"  {label:14} {knobs or 'the shipped kernels'}")
    print(f"{'case':34} {'setting':14} {'us':>9} {'copy%':>7} {'vs ATen':>7}")
    summaries = [run_case(case, opts.smoke, ceiling, opts.rep_ms, start + opts.budget_s)[1] for case in cases]
    print("\nbest setting per case:")
    for line in summaries:
        print(line)
    print(f"({time.monotonic() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
