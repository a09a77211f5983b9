"""A/B timing of the compute-heavy elementwise kernels (sinh, atan, atan2, gelu, silu, sigmoid, ...) against ATen.

    python packages/gems-pointwise/tuning/ab_pointwise.py                # every case, < 120 s on an H100
    python packages/gems-pointwise/tuning/ab_pointwise.py --cases gelu   # cases whose name contains "gelu"
    python packages/gems-pointwise/tuning/ab_pointwise.py --cases silu sigmoid   # the division knob, ~30 s
    python packages/gems-pointwise/tuning/ab_pointwise.py --cases softplus erfc pow   # the half_fast_* knobs
    python packages/gems-pointwise/tuning/ab_pointwise.py --cases gamma floor   # lgamma, digamma, floor_divide
    python packages/gems-pointwise/tuning/ab_pointwise.py \\
        --cases asinh acosh atanh logit ^elu ^celu log_s lgamma   # the log and expm1 formulas, lgamma's fits
    python packages/gems-pointwise/tuning/ab_pointwise.py --cases gcd lcm   # gcd/lcm knobs and int64, < 90 s
    python packages/gems-pointwise/tuning/ab_pointwise.py --smoke        # tiny shapes; runs anywhere (CPU: interpreter)

For each case (an op, a dtype, a shape of the pointwise benchmark) it times ATen, then each variant of our
kernel: "default" is what the library runs; "float32" is the float32-accurate kernel, which half types took
before they had formulas of their own (sinh, atan and gelu's previous formulas); "libdevice" is atan2 through
libdevice's atan2f, the previous kernel; "ieee div" is silu, sigmoid and silu_backward with
``KNOBS.half_approx_division`` off (the IEEE division for half-type results, which the default replaces by
Triton's approximate ``/``); "float32 math" is softplus, erfc and pow (Tensor ** Tensor, x ** 2.5, 2 ** x) with
``KNOBS.half_fast_softplus``, ``half_fast_erfc`` or ``half_fast_pow`` off (the kernels their half-type formulas
replaced; Tensor ** Tensor has none of its own); "knob off" is digamma, lgamma and floor_divide with
``KNOBS.half_fast_digamma``, ``half_fast_lgamma`` (bfloat16 results only) or ``half_exact_floor_div`` off,
and asinh, acosh, atanh, logit (with and without eps), elu, celu and log_sigmoid with ``KNOBS.half_short_asinh``,
``half_fast_acosh``, ``half_fast_atanh``, ``half_fast_logit``, ``half_fast_elu`` or ``half_fast_log_sigmoid``
off: the kernels their half-type formulas replaced; "long fits" is lgamma with ``KNOBS.half_short_lgamma`` off
(bfloat16 results only). gcd and lcm (int32, int64; int64 also over its whole
range, "full", where no block narrows) time the binary GCD's knobs: "old" is every gcd and lcm knob at its
previous setting (2 steps a check, no bfind, no lean steps, lcm's division, int64 in the 64-bit loop
throughout); "64-bit" (int64 only) the default with ``KNOBS.gcd64_narrow_blocks`` off: every block in the
64-bit loop with the ``gcd64_*`` and ``lcm64_*`` settings, where the default narrows blocks below 2**31.

Inputs are standard normal (but gcd's integers, uniform on [1, 10000), lcm's on [1, 1000) ("full": on the
whole int64 range), pow's base, uniform
on [0.5, 2], x ** 2.5's x, uniform on [0.1, 4], acosh's on [1.1, 10], atanh's on [-0.9, 0.9], logit's on
[0.05, 0.95] (with eps on [0, 1]), as in the pointwise benchmark), or (the division cases) subnormal, zeros,
or "decayed": a normal tensor after 130 of ATen's in-place silu_, which halve small values, so that most are
subnormal. In-place cases (``silu_``) time the op applied again and again to one tensor, as the pointwise
benchmark does: its values keep decaying while timed (to zeros within ~150 calls); each timing starts from the
same values.

Kernel time is ``triton.testing.do_bench`` (median, L2 flushed before each run); ATen is timed before and
after the variants and the lower time kept. Every variant's result is checked against ATen's before it is
timed: within 1 ulp of the half type (float32: ATen's tolerance, 4 ulp; integers: equal), with an absolute
slack of 1e-6 for results rounded from float32 sums that cancel (gelu's tail); a variant outside it is
reported as a mismatch. The ceiling is a device-to-device copy of the case's bytes (read + written), measured
here beside each case. ``--smoke`` checks results on tiny shapes; its times mean nothing.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

# isort: split
# Without a GPU flag_gems switches Triton's interpreter on, which must come before Triton decorates any
# kernel (its own library's included, such as tl.zeros_like): flag_gems is imported before triton.
import flag_gems

# isort: split
import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from flag_gems import pointwise_dynamic
from gems_pointwise import activation, activation_backward, binary, unary
from gems_pointwise.knobs import KNOBS

ON_GPU = flag_gems.device == "cuda"
DEVICE = flag_gems.device
F16, BF16, F32 = torch.float16, torch.bfloat16, torch.float32
BIG, ACTIVATION = (16384, 4096), (32, 256, 56, 56)


@pointwise_dynamic(promotion_methods=[(0, 1, "INT_TO_FLOAT")])
@triton.jit
def atan2_libdevice_kernel(y, x):
    if y.dtype == tl.float64 or x.dtype == tl.float64:
        r = libdevice.atan2(y.to(tl.float64), x.to(tl.float64))
    else:
        r = libdevice.atan2(y, x)
    return r


def _gelu_float32_kernel(x):
    return activation.gelu_kernel(x)


def _knob_set(knob: str, value: bool, fn):
    """``fn`` run with the boolean ``KNOBS.<knob>`` set to ``value``."""
    def call(*args):
        before = getattr(KNOBS, knob)
        setattr(KNOBS, knob, value)
        try:
            return fn(*args)
        finally:
            setattr(KNOBS, knob, before)
    return call


def _knob_off(knob: str, fn):
    """``fn`` run with ``KNOBS.<knob>`` off: the kernel the knob replaced."""
    return _knob_set(knob, False, fn)


def _with_knobs(fn, **settings):
    """``fn`` run with each ``KNOBS.<name>`` set to its value in ``settings``."""
    def call(*args):
        before = {name: getattr(KNOBS, name) for name in settings}
        for name, value in settings.items():
            setattr(KNOBS, name, value)
        try:
            return fn(*args)
        finally:
            for name, value in before.items():
                setattr(KNOBS, name, value)
    return call


def _ieee_division(fn):
    return _knob_off("half_approx_division", fn)


def _routed(route):
    """A call of the kernel a route (``binary.pow``) picks for its arguments, knobs read at each call."""
    def call(*args):
        kernel, kernel_args = route(*args)
        return kernel(*kernel_args)
    return call


# The pointwise benchmark's pow cases: Tensor ** Tensor, x ** 2.5, 2 ** x.
_pow = _routed(binary.pow)
POW_EXPONENT, POW_BASE = 2.5, 2.0


def _pow_scalar_exponent(x):
    return _pow(x, POW_EXPONENT)


def _pow_scalar_base(x):
    return _pow(POW_BASE, x)


_gcd, _lcm = _routed(binary.gcd), _routed(binary.lcm)
# Every gcd and lcm knob as it was before int64 narrowed and narrower types took the lean loop.
GCD_OLD = {"gcd_steps_per_check": 2, "gcd_ctz_bfind": False, "gcd_lean_steps": False, "lcm_inverse_division": False,
           "gcd64_narrow_blocks": False, "gcd64_steps_per_check": 2, "gcd64_lean_steps": False,
           "gcd64_ctz_bfind": False, "lcm64_steps_per_check": 2, "lcm64_lean_steps": False,
           "lcm64_inverse_division": False}
# Variants timed for int64 cases only (the same kernel as the default for narrower types).
INT64_ONLY = ("64-bit",)


def _gcd_variants(fn):
    return {"old": _with_knobs(fn, **GCD_OLD), "64-bit": _with_knobs(fn, gcd64_narrow_blocks=False)}


def _floor_divide(x, y):
    return _routed(binary.div)(x, y, "floor")


def _silu_inplace(x):
    return activation.silu(x, out0=x)


LOGIT_EPS, CELU_ALPHA = 1e-3, 0.5


def _logit_eps(x):
    return unary.logit(x, LOGIT_EPS)


def _aten_logit(eps=None):
    """ATen's logit; on the CPU (the smoke run) through float32, as ATen's CUDA kernel computes half types
    (its CPU kernel computes them in their own precision)."""
    if ON_GPU:
        return lambda x: torch.logit(x, eps)
    return lambda x: torch.logit(x.float(), eps).to(x.dtype)


def _celu(x):
    return activation.celu(x, CELU_ALPHA)


def _log_sigmoid(x):
    return activation.log_sigmoid_forward(x)[0]


# op: (ATen's call, the variants besides the default: name -> call); an op ending in "_" works in place.
OPS = {
    "sinh": (torch.sinh, unary.sinh, {"float32": unary.sinh_kernel}),
    "atan": (torch.atan, unary.atan, {"float32": unary.atan_kernel}),
    "atan2": (torch.atan2, lambda y, x: binary.atan2(y, x)[0](y, x),
              {"float32": binary.atan2_kernel, "libdevice": atan2_libdevice_kernel}),
    "gelu": (torch.nn.functional.gelu, activation.gelu, {"float32": _gelu_float32_kernel}),
    "silu": (torch.nn.functional.silu, activation.silu, {"ieee div": _ieee_division(activation.silu)}),
    "silu_": (torch.ops.aten.silu_, _silu_inplace, {"ieee div": _ieee_division(_silu_inplace)}),
    "sigmoid": (torch.sigmoid, unary.sigmoid, {"ieee div": _ieee_division(unary.sigmoid)}),
    "silu_backward": (torch.ops.aten.silu_backward, activation_backward.silu_backward,
                      {"ieee div": _ieee_division(activation_backward.silu_backward)}),
    "softplus": (torch.nn.functional.softplus, activation.softplus,
                 {"float32 math": _knob_off("half_fast_softplus", activation.softplus)}),
    "erfc": (torch.erfc, unary.erfc, {"float32 math": _knob_off("half_fast_erfc", unary.erfc)}),
    "pow": (torch.pow, _pow, {}),
    "pow_scalar_exponent": (lambda x: torch.pow(x, POW_EXPONENT), _pow_scalar_exponent,
                            {"float32 math": _knob_off("half_fast_pow", _pow_scalar_exponent)}),
    "pow_scalar_base": (lambda x: torch.pow(POW_BASE, x), _pow_scalar_base,
                        {"float32 math": _knob_off("half_fast_pow", _pow_scalar_base)}),
    "digamma": (torch.digamma, unary.digamma, {"knob off": _knob_off("half_fast_digamma", unary.digamma)}),
    "lgamma": (torch.lgamma, unary.lgamma, {"knob off": _knob_off("half_fast_lgamma", unary.lgamma),
                                            "long fits": _knob_off("half_short_lgamma", unary.lgamma)}),
    "floor_divide": (torch.floor_divide, _floor_divide, {"knob off": _knob_off("half_exact_floor_div", _floor_divide)}),
    "asinh": (torch.asinh, unary.asinh, {"knob off": _knob_off("half_short_asinh", unary.asinh)}),
    "acosh": (torch.acosh, unary.acosh, {"knob off": _knob_off("half_fast_acosh", unary.acosh)}),
    "atanh": (torch.atanh, unary.atanh, {"knob off": _knob_off("half_fast_atanh", unary.atanh)}),
    "logit": (_aten_logit(), unary.logit, {"knob off": _knob_off("half_fast_logit", unary.logit)}),
    "logit_eps": (_aten_logit(LOGIT_EPS), _logit_eps, {"knob off": _knob_off("half_fast_logit", _logit_eps)}),
    "elu": (torch.nn.functional.elu, activation.elu, {"knob off": _knob_off("half_fast_elu", activation.elu)}),
    "celu": (lambda x: torch.nn.functional.celu(x, CELU_ALPHA), _celu, {"knob off": _knob_off("half_fast_elu", _celu)}),
    "log_sigmoid": (torch.nn.functional.logsigmoid, _log_sigmoid,
                    {"knob off": _knob_off("half_fast_log_sigmoid", _log_sigmoid)}),
    "gcd": (torch.gcd, _gcd, _gcd_variants(_gcd)),
    "lcm": (torch.lcm, _lcm, _gcd_variants(_lcm)),
}
# The ops whose log and expm1 formulas for half types sit behind knobs of their own.
LOG_FORMULA_OPS = ("asinh", "acosh", "atanh", "logit", "logit_eps", "elu", "celu", "log_sigmoid")
# Inputs drawn uniformly from a range instead of a standard normal, as in the pointwise benchmark: pow's
# base (its exponent stays normal), and the tensor raised to 2.5.
UNIFORM = {"pow": (0.5, 2.0), "pow_scalar_exponent": (0.1, 4.0), "acosh": (1.1, 10.0), "atanh": (-0.9, 0.9),
           "logit": (0.05, 0.95), "logit_eps": (0.0, 1.0)}
# Integer operands: uniform on [low, high), as in the pointwise benchmark.
INTEGER_RANGE = {"gcd": (1, 10000), "lcm": (1, 1000)}
# How many of ATen's silu_ turn a standard normal tensor into mostly subnormal values ("decayed").
DECAY_STEPS = 130


@dataclass(frozen=True)
class Case:
    op: str
    dtype: torch.dtype
    shape: tuple
    values: str = "randn"  # or "subnormal", "zeros", "decayed"; integers: "full" (the dtype's whole range)

    @property
    def name(self) -> str:
        shape = "x".join(map(str, self.shape))
        values = "" if self.values == "randn" else f" {self.values}"
        return f"{self.op} {str(self.dtype).removeprefix('torch.')} {shape}{values}"


def _cases(smoke: bool) -> list[Case]:
    big, activation_shape = ((64, 256), (2, 4, 8, 8)) if smoke else (BIG, ACTIVATION)
    cases = []
    for op in ("sinh", "atan", "atan2", "gelu"):
        cases += [Case(op, dtype, big) for dtype in (BF16, F16, F32)]
    cases += [Case("gelu", dtype, activation_shape) for dtype in (BF16, F16)]
    # The interpreter misreads bfloat16 subnormals: the smoke run checks those cases in float16.
    tiny = F16 if smoke else BF16
    cases += [Case("silu_", BF16, big), Case("silu_", tiny, big, "decayed"), Case("silu", tiny, big, "subnormal"),
              Case("silu", BF16, big, "zeros"), Case("silu", BF16, big), Case("silu", F16, big),
              Case("sigmoid", BF16, big), Case("silu_backward", BF16, big)]
    for op in ("softplus", "erfc", "pow", "pow_scalar_exponent", "pow_scalar_base", "digamma", "lgamma",
               "floor_divide"):
        cases += [Case(op, dtype, big) for dtype in (BF16, F16)]
    for op in LOG_FORMULA_OPS:
        cases += [Case(op, dtype, big) for dtype in (BF16, F16)]
    for op in INTEGER_RANGE:
        cases += [Case(op, dtype, big) for dtype in (torch.int32, torch.int64)]
        cases.append(Case(op, torch.int64, big, "full"))
    return cases


def _values(case: Case) -> torch.Tensor:
    """A tensor of the case's values (see the module's docstring)."""
    if case.values == "zeros":
        return torch.zeros(case.shape, device=DEVICE, dtype=case.dtype)
    if case.values == "subnormal":  # random signs and subnormal magnitudes: exponent bits 0, mantissa not 0
        bits = 7 if case.dtype == BF16 else 10
        magnitude = torch.randint(1, 1 << bits, case.shape, device=DEVICE, dtype=torch.int16)
        sign = torch.randint(0, 2, case.shape, device=DEVICE, dtype=torch.int16) << 15
        return (magnitude | sign).view(case.dtype)
    x = torch.randn(case.shape, device=DEVICE, dtype=case.dtype)
    if case.values == "decayed":
        for _ in range(DECAY_STEPS):
            torch.ops.aten.silu_(x)
    return x


def _inputs(case: Case) -> tuple:
    """The benchmark's inputs (standard normal), with zeros, infinities and NaN in the smoke run."""
    count = 2 if case.op in ("atan2", "silu_backward", "pow", "floor_divide", *INTEGER_RANGE) else 1
    if case.op in INTEGER_RANGE:
        return _integers(case, count)
    args = [_values(case) for _ in range(count)]
    if case.op in UNIFORM:
        low, high = UNIFORM[case.op]
        args[0] = torch.empty(case.shape, device=DEVICE, dtype=case.dtype).uniform_(low, high)
    if not ON_GPU and case.values == "randn":
        specials = [0.0, -0.0, float("nan"), 1e-6, 30.0, -30.0]
        if case.op != "gelu":  # ATen's CPU gelu gives NaN at inf (its CUDA one, like ours, inf)
            specials += [float("inf"), float("-inf")]
        specials = torch.tensor(specials)
        for i, a in enumerate(args):
            flat = a.view(-1)
            flat[:len(specials)] = specials.roll(i * 3).to(a.dtype)
    return tuple(args)


def _integers(case: Case, count: int) -> tuple:
    """Integer operands; the smoke run puts zeros, negatives and the largest values first (not the most
    negative one, whose blocks take Euclid's loop instead of the binary GCD)."""
    low, high = INTEGER_RANGE[case.op]
    if case.values == "full":
        low, high = torch.iinfo(case.dtype).min, torch.iinfo(case.dtype).max
    args = [torch.randint(low, high, case.shape, device=DEVICE, dtype=case.dtype) for _ in range(count)]
    if not ON_GPU:
        info = torch.iinfo(case.dtype)
        specials = torch.tensor([0, 0, -6, 4, -1, 12, 7, -18, info.max, info.max - 1], dtype=case.dtype)
        for i, a in enumerate(args):
            a.view(-1)[:len(specials)] = specials.roll(i * 3)
    return tuple(args)


def _mismatch(res: torch.Tensor, ref: torch.Tensor) -> str | None:
    """None when ``res`` is within 1 ulp of ``ref`` in the half type (4 ulp in float32), else a description."""
    if res.dtype != ref.dtype or res.shape != ref.shape:
        return f"dtype/shape {res.dtype}{tuple(res.shape)} != {ref.dtype}{tuple(ref.shape)}"
    if not ref.dtype.is_floating_point:
        off = res != ref
        return f"{int(off.sum())} values differ" if off.any() else None
    res32, ref32 = res.float(), ref.float()
    ulps = 4 if ref.dtype == F32 else 1
    step = torch.finfo(ref.dtype).eps * ref32.abs().clamp_min(torch.finfo(ref.dtype).tiny)
    same = (res32 == ref32) | (res32.isnan() & ref32.isnan())
    off = ~same & ~((res32 - ref32).abs() <= ulps * step + 1e-6)
    if off.any():
        i = int(off.view(-1).nonzero()[0])
        return f"{int(off.sum())} values off, e.g. {res32.view(-1)[i].item()!r} vs {ref32.view(-1)[i].item()!r}"
    return None


def _time_us(fn, rep_ms: float) -> float:
    if not ON_GPU:
        start = time.perf_counter()
        fn()
        return 1e6 * (time.perf_counter() - start)
    return 1e3 * triton.testing.do_bench(fn, warmup=max(5.0, rep_ms / 4), rep=rep_ms, return_mode="median")


def _copy_us(nbytes: int, rep_ms: float) -> float:
    """A device-to-device copy that reads and writes ``nbytes`` in all."""
    src = torch.empty(nbytes // 2, device=DEVICE, dtype=torch.uint8)
    dst = torch.empty_like(src)
    return _time_us(lambda: dst.copy_(src), rep_ms)


def _timer(fn, args: tuple, inplace: bool, rep_ms: float):
    """A timing of ``fn(*args)``; in place on a copy of ``args[0]`` reset to its values first, so that every
    timing of the case starts from the same values (they then change while timed, as in the benchmark)."""
    if not inplace:
        return lambda: _time_us(lambda: fn(*args), rep_ms)
    work = args[0].clone()

    def timing() -> float:
        work.copy_(args[0])
        return _time_us(lambda: fn(work, *args[1:]), rep_ms)

    return timing


def run_case(case: Case, rep_ms: float, deadline: float) -> list[str]:
    aten_fn, default, variants = OPS[case.op]
    args = _inputs(case)
    inplace = case.op.endswith("_")
    fresh = (lambda: (args[0].clone(), *args[1:])) if inplace else (lambda: args)
    ref = aten_fn(*fresh())
    nbytes = sum(a.nbytes for a in args) + (0 if inplace else ref.nbytes)
    if inplace:
        nbytes += args[0].nbytes  # read and written
    copy_us = _copy_us(nbytes, rep_ms)
    aten_timing = _timer(aten_fn, args, inplace, rep_ms)
    aten_us = aten_timing()
    lines = []
    rows = [("default", default)] + list(variants.items())
    for setting, fn in rows:
        if setting in INT64_ONLY and case.dtype is not torch.int64:
            continue
        if time.time() > deadline:
            lines.append(f"{case.name:36} {setting:10} skipped (time budget spent)")
            continue
        wrong = _mismatch(fn(*fresh()), ref)
        if wrong:
            lines.append(f"{case.name:36} {setting:10} mismatch: {wrong}")
            continue
        us = _timer(fn, args, inplace, rep_ms)()
        lines.append((case.name, setting, us))
    aten_us = min(aten_us, aten_timing())
    out = [f"{case.name:36} {'ATen':10} {aten_us:9.1f} {100 * copy_us / aten_us:6.1f}%"]
    for line in lines:
        if isinstance(line, str):
            out.append(line)
        else:
            name, setting, us = line
            out.append(f"{name:36} {setting:10} {us:9.1f} {100 * copy_us / us:6.1f}% {aten_us / us:7.2f}x")
    return out


def _selects(pattern: str, name: str) -> bool:
    """Whether ``--cases``' ``pattern`` picks the case ``name``: a part of it, or with ^ its start."""
    return name.startswith(pattern[1:]) if pattern.startswith("^") else pattern in name


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes; checks results, times mean nothing")
    parser.add_argument("--cases", nargs="*", default=(),
                        help="only cases whose name contains one of these (^name: starts with it)")
    parser.add_argument("--rep-ms", type=float, default=30.0, help="do_bench's measuring time per timing")
    parser.add_argument("--budget-s", type=float, default=100.0, help="seconds after which variants are skipped")
    opts = parser.parse_args(argv)
    cases = [c for c in _cases(opts.smoke) if not opts.cases or any(_selects(s, c.name) for s in opts.cases)]
    card = torch.cuda.get_device_name() if ON_GPU else "CPU (Triton interpreter, times mean nothing)"
    print(f"{card}; torch {torch.__version__}, triton {triton.__version__}")
    print(f"{'case':36} {'variant':10} {'us':>9} {'%copy':>7} {'vs ATen':>7}")
    torch.manual_seed(0)
    deadline = time.time() + opts.budget_s
    for case in cases:
        for line in run_case(case, opts.rep_ms, deadline):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
