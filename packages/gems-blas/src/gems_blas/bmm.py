"""Batched products: bmm, baddbmm (a bias per product) and addbmm (the products summed)."""

from __future__ import annotations

import torch

from flag_gems import aten_kernel
from gems_blas.mm import cached_call, first_call, mm_into, op_key, product_call, tf32_to_aten, unit_stride
from gems_blas.operands import FLOATS, broadcast_strides, finish_out, prepare_out, real_scalar


def _takes(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a.dtype in FLOATS and b.dtype is a.dtype and a.dim() == 3 and b.dim() == 3
            and a.shape[0] == b.shape[0] and a.shape[2] == b.shape[1] and b.device == a.device
            and not tf32_to_aten(a, b))


def _shape(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int, int]:
    return a.shape[0], a.shape[1], b.shape[2]


def _bmm_call(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None,
              alpha=1.0, beta=0.0, sd: tuple | None = None) -> tuple:
    # (call, a, b) as ``mm.mm_call``, for 3-D operands.
    a = unit_stride(a)
    b = unit_stride(b)
    batch, m, k = a.shape
    call = product_call(out, a, b, bias, alpha, beta, batch, m, b.shape[2], k, a.stride(), b.stride(), out.stride(),
                        sd)
    return call, a, b


def _bmm_into(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None,
              alpha=1.0, beta=0.0, sd: tuple | None = None) -> torch.Tensor:
    call, a, b = _bmm_call(out, a, b, bias, alpha, beta, sd)
    call(out, a, b, bias, float(alpha), float(beta))
    return out


def bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """aten::bmm"""
    key = op_key("bmm", a, b)
    out = cached_call(key, a, b)
    if out is not None:
        return out
    if not _takes(a, b):
        return aten_kernel("bmm")(a, b)
    out = torch.empty(_shape(a, b), dtype=a.dtype, device=a.device)
    return first_call(key, out, _bmm_call(out, a, b), a, b, None, 1.0, 0.0)


def bmm_out(a: torch.Tensor, b: torch.Tensor, *, out: torch.Tensor) -> torch.Tensor:
    """aten::bmm.out"""
    target = prepare_out(out, _shape(a, b), a.dtype, (a, b)) if _takes(a, b) else None
    if target is None:
        return aten_kernel("bmm.out")(a, b, out=out)
    return finish_out(out, _bmm_into(target, a, b))


# -- baddbmm ----------------------------------------------------------------------------------------------
def _baddbmm_strides(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor, beta, alpha):
    if not (_takes(a, b) and bias.dtype is a.dtype and bias.device == a.device
            and real_scalar(alpha) and real_scalar(beta)):
        return None
    return broadcast_strides(bias, _shape(a, b))


def baddbmm(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, beta=1, alpha=1) -> torch.Tensor:
    """aten::baddbmm"""
    key = op_key("baddbmm", a, b, bias, alpha, beta)
    out = cached_call(key, a, b, bias, alpha, beta)
    if out is not None:
        return out
    sd = _baddbmm_strides(bias, a, b, beta, alpha)
    if sd is None:
        return aten_kernel("baddbmm")(bias, a, b, beta=beta, alpha=alpha)
    out = torch.empty(_shape(a, b), dtype=a.dtype, device=a.device)
    used = bias if beta != 0 else None
    return first_call(key, out, _bmm_call(out, a, b, used, alpha, beta, sd), a, b, used, float(alpha), float(beta))


def baddbmm_out(bias, a, b, *, beta=1, alpha=1, out: torch.Tensor) -> torch.Tensor:
    """aten::baddbmm.out"""
    sd = _baddbmm_strides(bias, a, b, beta, alpha)
    target = None if sd is None else prepare_out(out, _shape(a, b), a.dtype, (a, b), bias)
    if target is None:
        return aten_kernel("baddbmm.out")(bias, a, b, beta=beta, alpha=alpha, out=out)
    return finish_out(out, _bmm_into(target, a, b, bias if beta != 0 else None, alpha, beta, sd))


def baddbmm_(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, beta=1, alpha=1) -> torch.Tensor:
    """aten::baddbmm_"""
    sd = _baddbmm_strides(bias, a, b, beta, alpha)
    target = None
    if sd is not None and bias.shape == _shape(a, b):
        target = prepare_out(bias, bias.shape, a.dtype, (a, b), bias)
    if target is None:
        return aten_kernel("baddbmm_")(bias, a, b, beta=beta, alpha=alpha)
    return finish_out(bias, _bmm_into(target, a, b, bias if beta != 0 else None, alpha, beta, sd))


# -- addbmm -----------------------------------------------------------------------------------------------
def _addbmm_strides(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor, beta, alpha):
    if not (_takes(a, b) and bias.dtype is a.dtype and bias.device == a.device
            and real_scalar(alpha) and real_scalar(beta)):
        return None
    return broadcast_strides(bias, (a.shape[1], b.shape[2]))


def _addbmm_into(out: torch.Tensor, bias, a: torch.Tensor, b: torch.Tensor, beta, alpha, sd) -> torch.Tensor:
    # The sum of the batch's products is one product over the concatenated K: (M, B*K) @ (B*K, N), with a
    # single fp32 accumulation. Reshaping b is a view when its batches are stacked rows; a is copied
    # unless it already lies as (M, B, K).
    batch, m, k = a.shape
    n = b.shape[2]
    a2 = a.transpose(0, 1).reshape(m, batch * k)
    b2 = b.reshape(batch * k, n)
    return mm_into(out, a2, b2, bias if beta != 0 else None, alpha, beta, sd)


def addbmm(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, beta=1, alpha=1) -> torch.Tensor:
    """aten::addbmm"""
    sd = _addbmm_strides(bias, a, b, beta, alpha)
    if sd is None:
        return aten_kernel("addbmm")(bias, a, b, beta=beta, alpha=alpha)
    out = torch.empty((a.shape[1], b.shape[2]), dtype=a.dtype, device=a.device)
    return _addbmm_into(out, bias, a, b, beta, alpha, sd)


def addbmm_out(bias, a, b, *, beta=1, alpha=1, out: torch.Tensor) -> torch.Tensor:
    """aten::addbmm.out"""
    sd = _addbmm_strides(bias, a, b, beta, alpha)
    target = None if sd is None else prepare_out(out, (a.shape[1], b.shape[2]), a.dtype, (a, b), bias)
    if target is None:
        return aten_kernel("addbmm.out")(bias, a, b, beta=beta, alpha=alpha, out=out)
    return finish_out(out, _addbmm_into(target, bias, a, b, beta, alpha, sd))


def addbmm_(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, beta=1, alpha=1) -> torch.Tensor:
    """aten::addbmm_"""
    sd = _addbmm_strides(bias, a, b, beta, alpha)
    target = None
    if sd is not None and bias.shape == (a.shape[1], b.shape[2]):
        target = prepare_out(bias, bias.shape, a.dtype, (a, b), bias)
    if target is None:
        return aten_kernel("addbmm_")(bias, a, b, beta=beta, alpha=alpha)
    return finish_out(bias, _addbmm_into(target, bias, a, b, beta, alpha, sd))
