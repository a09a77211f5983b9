"""A/B timing of the compute-heavy elementwise kernels (sinh, atan, atan2, gelu) against ATen, on the GPU.

    python packages/gems-pointwise/tuning/ab_pointwise.py                # every case, < 90 s on an H100
    python packages/gems-pointwise/tuning/ab_pointwise.py --cases gelu   # cases whose name contains "gelu"
    python packages/gems-pointwise/tuning/ab_pointwise.py --smoke        # tiny shapes; runs anywhere (CPU: interpreter)

For each case (an op, a dtype, a shape of the pointwise benchmark) it times ATen, then each variant of our
kernel: "default" is what the library runs; "float32" is the float32-accurate kernel, which half types took
before they had formulas of their own (sinh, atan and gelu's previous formulas); "libdevice" is atan2 through
libdevice's atan2f, the previous kernel. Kernel time is ``triton.testing.do_bench`` (median, L2 flushed before
each run); ATen is timed before and after the variants and the lower time kept. Every variant's result is
checked against ATen's before it is timed: within 1 ulp of the half type (float32: ATen's tolerance, 4 ulp),
with an absolute slack of 1e-6 for results rounded from float32 sums that cancel (gelu's tail); a variant
outside it is reported as a mismatch. The ceiling is a device-to-device copy of the case's bytes (read +
written), measured here beside each case. ``--smoke`` checks results on tiny shapes; its times mean nothing.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

import flag_gems
from flag_gems import pointwise_dynamic
from gems_pointwise import activation, binary, unary

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


# op: (ATen's call, the variants besides the default: name -> call)
OPS = {
    "sinh": (torch.sinh, unary.sinh, {"float32": unary.sinh_kernel}),
    "atan": (torch.atan, unary.atan, {"float32": unary.atan_kernel}),
    "atan2": (torch.atan2, lambda y, x: binary.atan2(y, x)[0](y, x),
              {"float32": binary.atan2_kernel, "libdevice": atan2_libdevice_kernel}),
    "gelu": (torch.nn.functional.gelu, activation.gelu, {"float32": _gelu_float32_kernel}),
}


@dataclass(frozen=True)
class Case:
    op: str
    dtype: torch.dtype
    shape: tuple

    @property
    def name(self) -> str:
        return f"{self.op} {str(self.dtype).removeprefix('torch.')} {'x'.join(map(str, self.shape))}"


def _cases(smoke: bool) -> list[Case]:
    big, activation_shape = ((64, 256), (2, 4, 8, 8)) if smoke else (BIG, ACTIVATION)
    cases = []
    for op in ("sinh", "atan", "atan2", "gelu"):
        cases += [Case(op, dtype, big) for dtype in (BF16, F16, F32)]
    cases += [Case("gelu", dtype, activation_shape) for dtype in (BF16, F16)]
    return cases


def _inputs(case: Case) -> tuple:
    """The benchmark's inputs (standard normal), with zeros, infinities and NaN in the smoke run."""
    count = 2 if case.op == "atan2" else 1
    args = [torch.randn(case.shape, device=DEVICE, dtype=case.dtype) for _ in range(count)]
    if not ON_GPU:
        specials = [0.0, -0.0, float("nan"), 1e-6, 30.0, -30.0]
        if case.op != "gelu":  # ATen's CPU gelu gives NaN at inf (its CUDA one, like ours, inf)
            specials += [float("inf"), float("-inf")]
        specials = torch.tensor(specials)
        for i, a in enumerate(args):
            flat = a.view(-1)
            flat[:len(specials)] = specials.roll(i * 3).to(a.dtype)
    return tuple(args)


def _mismatch(res: torch.Tensor, ref: torch.Tensor) -> str | None:
    """None when ``res`` is within 1 ulp of ``ref`` in the half type (4 ulp in float32), else a description."""
    if res.dtype != ref.dtype or res.shape != ref.shape:
        return f"dtype/shape {res.dtype}{tuple(res.shape)} != {ref.dtype}{tuple(ref.shape)}"
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


def run_case(case: Case, rep_ms: float, deadline: float) -> list[str]:
    aten_fn, default, variants = OPS[case.op]
    args = _inputs(case)
    ref = aten_fn(*args)
    nbytes = sum(a.nbytes for a in args) + ref.nbytes
    copy_us = _copy_us(nbytes, rep_ms)
    aten_us = _time_us(lambda: aten_fn(*args), rep_ms)
    lines = []
    rows = [("default", default)] + list(variants.items())
    for setting, fn in rows:
        if time.time() > deadline:
            lines.append(f"{case.name:28} {setting:10} skipped (time budget spent)")
            continue
        wrong = _mismatch(fn(*args), ref)
        if wrong:
            lines.append(f"{case.name:28} {setting:10} mismatch: {wrong}")
            continue
        us = _time_us(lambda: fn(*args), rep_ms)
        lines.append((case.name, setting, us))
    aten_us = min(aten_us, _time_us(lambda: aten_fn(*args), rep_ms))
    out = [f"{case.name:28} {'ATen':10} {aten_us:9.1f} {100 * copy_us / aten_us:6.1f}%"]
    for line in lines:
        if isinstance(line, str):
            out.append(line)
        else:
            name, setting, us = line
            out.append(f"{name:28} {setting:10} {us:9.1f} {100 * copy_us / us:6.1f}% {aten_us / us:7.2f}x")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes; checks results, times mean nothing")
    parser.add_argument("--cases", nargs="*", default=(), help="only cases whose name contains one of these")
    parser.add_argument("--rep-ms", type=float, default=30.0, help="do_bench's measuring time per timing")
    parser.add_argument("--budget-s", type=float, default=80.0, help="seconds after which variants are skipped")
    opts = parser.parse_args(argv)
    cases = [c for c in _cases(opts.smoke) if not opts.cases or any(s in c.name for s in opts.cases)]
    card = torch.cuda.get_device_name() if ON_GPU else "CPU (Triton interpreter, times mean nothing)"
    print(f"{card}; torch {torch.__version__}, triton {triton.__version__}")
    print(f"{'case':28} {'variant':10} {'us':>9} {'%copy':>7} {'vs ATen':>7}")
    torch.manual_seed(0)
    deadline = time.time() + opts.budget_s
    for case in cases:
        for line in run_case(case, opts.rep_ms, deadline):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
