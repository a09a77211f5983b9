"""fp32 products with tf32 off: cuBLAS, our FMA-unit kernel, and the split products of ``split_fp32``, timed and
checked for accuracy against a float64 reference on the same operands. Variants: "shipped" (the settings as
they stand: the FMA kernel below their sizes), "fma", "split" (the shipped split at every size), "no_promote"
(the tensor cores accumulate all of K), "promote8" (8 K steps between promotions), "terms9" (all nine
piece products).

    python packages/gems-blas/tuning/ab_split_fp32.py              # the shapes below, on the GPU
    python packages/gems-blas/tuning/ab_split_fp32.py --smoke      # tiny shapes (runs through the interpreter)

Error: the largest |result - exact| over the outputs, in units of 2^-24 of the sum of |a_ik b_kj| over each
output's terms (an fp32 dot product's rounding is a few units at these lengths). Operands: "randn" (normal
values), "wide" (exponents spread over 2^-20..2^20, every mantissa bit counting), "tiny" (normal values
times 2^-60: products near fp32's subnormal range).
"""

from __future__ import annotations

import argparse
import dataclasses

# isort: split
import flag_gems  # before triton: without a GPU it switches the interpreter on

# isort: split
import torch
import triton

from flag_gems.runtime import device
from gems_blas import bmm, mm, split_fp32

SHAPES = [(1, 512, 512, 512), (1, 1024, 1024, 1024), (1, 2048, 2048, 2048), (1, 4096, 4096, 4096),
          (1, 8192, 8192, 8192), (1, 4096, 4096, 512), (1, 256, 4096, 4096), (1, 1024, 4096, 14336),
          (32, 1024, 1024, 1024)]
SMOKE_SHAPES = [(1, 33, 40, 77), (2, 24, 17, 40)]
# Each variant's settings; all but "shipped" split every product, whatever its size.
_EVERY = split_fp32.SplitSettings(min_work=0, min_side=1)
VARIANTS = {
    "shipped": split_fp32.SplitSettings(),
    "fma": dataclasses.replace(_EVERY, terms=0),
    "split": _EVERY,
    "no_promote": dataclasses.replace(_EVERY, promote=0, tile=None),
    "promote8": dataclasses.replace(_EVERY, promote=8),
    "terms9": dataclasses.replace(_EVERY, terms=9, max_bytes=1 << 33),
}


def _operands(batch, m, n, k, kind, dev):
    a = torch.randn(batch, m, k, device=dev)
    b = torch.randn(batch, k, n, device=dev) * k**-0.5
    if kind == "wide":
        a = a * torch.exp2(torch.randint(-20, 21, a.shape, device=dev).float())
    elif kind == "tiny":
        a, b = a * 2.0**-60, b * 2.0**-60
    return (a[0], b[0]) if batch == 1 else (a, b)


def _error_units(res, a, b) -> float:
    a64, b64 = a.double(), b.double()
    exact = a64 @ b64
    magnitude = (a64.abs() @ b64.abs()).clamp_min(1e-300)
    return float(((res.double() - exact).abs() / magnitude).max()) * 2.0**24


def _time_us(fn, smoke: bool) -> float:
    if smoke:
        fn()
        return float("nan")
    return triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median") * 1e3


def run(smoke: bool) -> None:
    dev = flag_gems.device
    torch.backends.cuda.matmul.allow_tf32 = False
    shapes = SMOKE_SHAPES if smoke else SHAPES
    print(f"{'shape':>22} {'operands':>8} {'variant':>8} {'us':>9} {'vs cuBLAS':>9} {'error (2^-24)':>14}")
    for batch, m, n, k in shapes:
        flop = 2 * batch * m * n * k
        for kind in ("randn", "wide", "tiny"):
            a, b = _operands(batch, m, n, k, kind, dev)
            matmul = torch.bmm if batch > 1 else torch.mm
            base_us = _time_us(lambda: matmul(a, b), smoke)
            base_err = _error_units(matmul(a, b), a, b)
            rows = [("cuBLAS", base_us, base_err)]
            for name, settings in VARIANTS.items():
                split_fp32.SETTINGS = dataclasses.replace(settings, everywhere=smoke)
                mm.clear_caches()
                fn = (lambda: bmm.bmm(a, b)) if batch > 1 else (lambda: mm.mm(a, b))
                err = _error_units(fn(), a, b)
                rows.append((name, _time_us(fn, smoke) if kind == "randn" else float("nan"), err))
            label = f"{batch}x{m}x{n}x{k}"
            for name, us, err in rows:
                ratio = base_us / us if us == us else float("nan")
                tflops = flop / us * 1e-6 if us == us else float("nan")
                flag = "  mismatch" if err > max(64.0, 8 * base_err) else ""
                print(f"{label:>22} {kind:>8} {name:>8} {us:9.1f} {ratio:9.3f} {err:14.2f}"
                      f"  {tflops:6.1f} TFLOP/s{flag}")
    split_fp32.SETTINGS = split_fp32.SplitSettings()
    mm.clear_caches()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes through whatever device there is")
    args = parser.parse_args()
    if not args.smoke and device.interpreter:
        raise SystemExit("no GPU: use --smoke")
    run(args.smoke)


if __name__ == "__main__":
    main()
