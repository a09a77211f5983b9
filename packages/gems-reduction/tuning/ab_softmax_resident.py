"""A/B timing of softmax over long rows: the resident path (resident.py) against the two-pass path it
replaces, and ATen.

    python packages/gems-reduction/tuning/ab_softmax_resident.py            # on a GPU, < 60 s
    python packages/gems-reduction/tuning/ab_softmax_resident.py --smoke    # tiny shapes, anywhere

For each case (shape, dim, dtype, softmax or log_softmax) it checks every variant against ATen, then prints
ATen's time, each variant's, and the share of a device-to-device copy of the same bytes (read + written)
that each variant reaches. Variants: "two-pass" (resident off), and resident ones given as
TILE_BYTES:TILE_WARPS:PREFETCH (``--variants 32768:8:1 16384:4:0``; default: the module's settings).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import flag_gems
from gems_reduction import reduce, resident

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import kernel_us  # noqa: E402

CASES = [((512, 131072), -1), ((64, 262144), -1), ((2048, 32768), -1), ((8, 4, 65536), -1), ((8192, 8192), -1),
         ((16, 1048576), -1)]
SMOKE = [((3, 300), -1), ((2, 2, 100), -1)]


def _settings(text: str | None) -> dict:
    if text is None:
        return dict(ENABLED=False)
    tile, warps, prefetch = (int(v) for v in text.split(":"))
    return dict(ENABLED=True, TILE_BYTES=tile, TILE_WARPS=warps, PREFETCH=bool(prefetch))


def _variant(settings: dict) -> None:
    for name, value in settings.items():
        setattr(resident, name, value)
    reduce.forget_plans()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--rep", type=int, default=200)
    default = f"{resident.TILE_BYTES}:{resident.TILE_WARPS}:{int(resident.PREFETCH)}"
    parser.add_argument("--variants", nargs="*", default=[default])
    parser.add_argument("--cases", nargs="*", type=int, default=None, help="indices into CASES")
    parser.add_argument("--dtypes", nargs="*", default=["bfloat16", "float32"])
    opts = parser.parse_args()
    original = {name: getattr(resident, name) for name in _settings(default)}
    device = flag_gems.device
    cases = SMOKE if opts.smoke else [CASES[i] for i in opts.cases] if opts.cases else CASES
    variants = [None, *opts.variants]
    print(f"{'case':42s} {'ATen us':>9s}  " + "  ".join(f"{v or 'two-pass':>16s}" for v in variants)
          + "   (us, then share of copy)")
    for shape, dim in cases:
        for dtype in [getattr(torch, d) for d in opts.dtypes]:
            x = torch.randn(shape, device=device, dtype=dtype) * 3
            copy_us = kernel_us(lambda: torch.empty_like(x).copy_(x), opts.rep)
            for name, fn in (("softmax", torch.softmax), ("log_softmax", torch.log_softmax)):
                expected = fn(x.float(), dim)
                aten = kernel_us(lambda: fn(x, dim), opts.rep)
                times = []
                for variant in variants:
                    _variant(_settings(variant))
                    with flag_gems.use_gems(families=["reduction"]):
                        got = fn(x, dim)
                        error = (got.float() - expected).abs().max().item()
                        scale = expected.abs().max().item() or 1.0
                        ok = error <= (2 ** -7 if dtype != torch.float32 else 2 ** -14) * scale
                        times.append(kernel_us(lambda: fn(x, dim), opts.rep) if ok else float("nan"))
                        if not ok:
                            print(f"  MISMATCH {name} {shape} {dim} {dtype} {variant}: {error:.3g}")
                label = f"{name} {'x'.join(map(str, shape))} dim {dim} {str(dtype)[6:]}"
                cells = "  ".join(f"{t:9.1f} {copy_us / t:6.0%}" for t in times)
                print(f"{label:42s} {aten:9.1f}  {cells}", flush=True)
    _variant(original)


if __name__ == "__main__":
    main()
