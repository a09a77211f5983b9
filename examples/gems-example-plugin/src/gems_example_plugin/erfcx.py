"""``aten::special_erfcx``: the scaled complementary error function exp(x^2) * erfc(x)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl  # noqa: F401  (Triton's interpreter looks for it in a kernel's globals)
from triton.language.extra import libdevice

from flag_gems import OpImpl, aten_kernel, pointwise_dynamic


@pointwise_dynamic(promotion_methods=[(0, "INT_TO_FLOAT")])
@triton.jit
def erfcx_kernel(x):
    # Integer and bool inputs arrive as float32; float32 and float64 are computed in their own precision.
    return libdevice.erfcx(x)


# ATen computes erfcx in float32 and float64 only: half, bfloat16 and complex inputs raise there, so they
# go back to ATen, which raises its own error; so do layouts other than strided and non-float outputs.
_HANDED_BACK = (torch.float16, torch.bfloat16)
_FLOAT_OUTPUTS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _ours(x) -> bool:
    return x.layout == torch.strided and x.dtype not in _HANDED_BACK and not x.is_complex()


def special_erfcx(x):
    if not _ours(x):
        return aten_kernel("special_erfcx")(x)
    return erfcx_kernel(x)


def special_erfcx_out(x, *, out):
    if not _ours(x) or out.layout != torch.strided or out.dtype not in _FLOAT_OUTPUTS:
        return aten_kernel("special_erfcx.out")(x, out=out)
    return erfcx_kernel(x, out0=out)


def ops() -> list[OpImpl]:
    return [OpImpl("special_erfcx", special_erfcx), OpImpl("special_erfcx.out", special_erfcx_out)]
