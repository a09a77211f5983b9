"""addmm: out = beta * input + alpha * (mat1 @ mat2), the input broadcast to the product's shape."""

from __future__ import annotations

import torch

from flag_gems import aten_kernel
from gems_blas.mm import cached_call, first_call, mm_call, mm_into, op_key, takes
from gems_blas.operands import broadcast_strides, finish_out, prepare_out, real_scalar


def _bias_strides(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor, beta, alpha):
    """The input's strides broadcast to the product for a call our kernel takes, or None for ATen."""
    if not (takes(a, b) and bias.dtype is a.dtype and bias.device == a.device
            and real_scalar(alpha) and real_scalar(beta)):
        return None
    return broadcast_strides(bias, (a.shape[0], b.shape[1]))


def addmm(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, beta=1, alpha=1) -> torch.Tensor:
    """aten::addmm"""
    key = op_key("addmm", a, b, bias, alpha, beta)
    out = cached_call(key, a, b, bias, alpha, beta)
    if out is not None:
        return out
    sd = _bias_strides(bias, a, b, beta, alpha)
    if sd is None:
        return aten_kernel("addmm")(bias, a, b, beta=beta, alpha=alpha)
    out = torch.empty((a.shape[0], b.shape[1]), dtype=a.dtype, device=a.device)
    used = bias if beta != 0 else None
    return first_call(key, out, mm_call(out, a, b, used, alpha, beta, sd), a, b, used, float(alpha), float(beta))


def addmm_out(bias, a, b, *, beta=1, alpha=1, out: torch.Tensor) -> torch.Tensor:
    """aten::addmm.out"""
    sd = _bias_strides(bias, a, b, beta, alpha)
    target = None if sd is None else prepare_out(out, (a.shape[0], b.shape[1]), a.dtype, (a, b), bias)
    if target is None:
        return aten_kernel("addmm.out")(bias, a, b, beta=beta, alpha=alpha, out=out)
    return finish_out(out, mm_into(target, a, b, bias if beta != 0 else None, alpha, beta, sd))


def addmm_(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, beta=1, alpha=1) -> torch.Tensor:
    """aten::addmm_"""
    sd = _bias_strides(bias, a, b, beta, alpha)
    target = None
    if sd is not None and bias.dim() == 2 and bias.shape == (a.shape[0], b.shape[1]):
        target = prepare_out(bias, bias.shape, a.dtype, (a, b), bias)
    if target is None:
        return aten_kernel("addmm_")(bias, a, b, beta=beta, alpha=alpha)
    return finish_out(bias, mm_into(target, a, b, bias if beta != 0 else None, alpha, beta, sd))
