"""Pick pointwise_dynamic's (BLOCK, num_warps) on a GPU: time a flat unary and binary kernel for
each candidate on large tensors against ATen and the copy ceiling. (Host time per call is measured by
benchmark/test_overhead_perf.py.)

    python scripts/tune_pointwise_blocks.py
"""

from __future__ import annotations

import itertools

import torch
import triton
import triton.language as tl
from triton.testing import do_bench

import flag_gems
from flag_gems import elementwise


@flag_gems.pointwise_dynamic(promotion_methods=[(0, "INT_TO_FLOAT")])
@triton.jit
def exp_kernel(x):
    return tl.exp(x)


@flag_gems.pointwise_dynamic(is_tensor=[True, True, False], promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def add_kernel(x, y, alpha):
    return x + y * alpha


def gbps(nbytes: int, ms: float) -> float:
    return nbytes / ms / 1e6


def copy_ceiling() -> float:
    src = torch.empty(2**28, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = do_bench(lambda: dst.copy_(src), warmup=25, rep=100, return_mode="median")
    return gbps(2 * src.numel(), ms)


def main() -> None:
    ceiling = copy_ceiling()
    print(f"device {torch.cuda.get_device_name()}  copy ceiling {ceiling:.0f} GB/s")
    n = 64 * 2**20
    original = elementwise.block_size
    print(f"{'dtype':8} {'BLOCK':>6} {'warps':>5} {'exp GB/s':>9} {'ratio':>6} {'add GB/s':>9} {'ratio':>6}")
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(n, device="cuda", dtype=dtype)
        y = torch.randn(n, device="cuda", dtype=dtype)
        size = x.element_size()
        aten_exp = do_bench(lambda: torch.exp(x), return_mode="median")
        aten_add = do_bench(lambda: torch.add(x, y), return_mode="median")
        print(f"{str(dtype)[6:]:8} {'aten':>6} {'':>5} {gbps(2 * n * size, aten_exp):9.0f} {'':>6} "
              f"{gbps(3 * n * size, aten_add):9.0f}")
        for block, warps in itertools.product((1024, 2048, 4096, 8192), (4, 8, 16)):
            if block // (warps * 32) < 4:
                continue
            elementwise.block_size = lambda _n, b=block, w=warps: (b, w)
            torch.testing.assert_close(exp_kernel(x), torch.exp(x))
            ms_exp = do_bench(lambda: exp_kernel(x), return_mode="median")
            ms_add = do_bench(lambda: add_kernel(x, y, 1.0), return_mode="median")
            print(f"{str(dtype)[6:]:8} {block:6} {warps:5} {gbps(2 * n * size, ms_exp):9.0f} "
                  f"{aten_exp / ms_exp:6.3f} {gbps(3 * n * size, ms_add):9.0f} {aten_add / ms_add:6.3f}")
    elementwise.block_size = original


if __name__ == "__main__":
    main()
