"""addr: out = beta * input + alpha * outer(vec1, vec2), an elementwise op over the broadcast operands.

``torch.outer`` (CompositeImplicitAutograd) reaches ATen's ``mul``; addr is its non-composite relative.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl  # noqa: F401  (the interpreter looks for it among a jitted function's globals)

from flag_gems import aten_kernel, pointwise_dynamic
from gems_blas.operands import FLOATS, broadcast_strides, real_scalar


@pointwise_dynamic(is_tensor=[True, True, True, False, False], promotion_methods=[(0, 1, 2, "DEFAULT")])
@triton.jit
def _scaled_outer_plus_input(bias, v1, v2, beta, alpha):
    return beta * bias + alpha * (v1 * v2)


@pointwise_dynamic(is_tensor=[True, True, True, False], promotion_methods=[(0, 1, 2, "DEFAULT")])
@triton.jit
def _scaled_outer(bias, v1, v2, alpha):
    # beta == 0: the input only decides dtype and layout; its values (NaN included) are ignored.
    return alpha * (v1 * v2)


def _takes(bias: torch.Tensor, v1: torch.Tensor, v2: torch.Tensor, beta, alpha) -> bool:
    return (bias.dtype in FLOATS and v1.dtype in FLOATS and v2.dtype in FLOATS and v1.dim() == 1
            and v2.dim() == 1 and v1.device == bias.device and v2.device == bias.device
            and real_scalar(beta) and real_scalar(alpha)
            and broadcast_strides(bias, (v1.shape[0], v2.shape[0])) is not None)


def _addr(bias, v1, v2, beta, alpha, **out):
    col = v1.unsqueeze(1)
    if beta == 0:
        return _scaled_outer(bias, col, v2, float(alpha), **out)
    return _scaled_outer_plus_input(bias, col, v2, float(beta), float(alpha), **out)


def addr(bias: torch.Tensor, v1: torch.Tensor, v2: torch.Tensor, *, beta=1, alpha=1) -> torch.Tensor:
    """aten::addr"""
    if not _takes(bias, v1, v2, beta, alpha):
        return aten_kernel("addr")(bias, v1, v2, beta=beta, alpha=alpha)
    return _addr(bias, v1, v2, beta, alpha)


def addr_out(bias, v1, v2, *, beta=1, alpha=1, out: torch.Tensor) -> torch.Tensor:
    """aten::addr.out"""
    if not _takes(bias, v1, v2, beta, alpha) or out.device != bias.device:
        return aten_kernel("addr.out")(bias, v1, v2, beta=beta, alpha=alpha, out=out)
    return _addr(bias, v1, v2, beta, alpha, out0=out)


def addr_(bias: torch.Tensor, v1: torch.Tensor, v2: torch.Tensor, *, beta=1, alpha=1) -> torch.Tensor:
    """aten::addr_"""
    if not _takes(bias, v1, v2, beta, alpha) or bias.shape != (v1.shape[0], v2.shape[0]):
        return aten_kernel("addr_")(bias, v1, v2, beta=beta, alpha=alpha)
    return _addr(bias, v1, v2, beta, alpha, out0=bias)
