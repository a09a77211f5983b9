"""Unary math ops and activations (and their backward) served by this family."""

from __future__ import annotations

import torch

from flag_gems import OpImpl, aten_kernel

from gems_pointwise import unary

_SUPPORTED = {torch.float16, torch.bfloat16, torch.float32, torch.float64,
              torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8}


def _abs(x):
    if x.dtype not in _SUPPORTED:
        return aten_kernel("abs")(x)
    return unary.abs_kernel(x)


def _abs_(x):
    if x.dtype not in _SUPPORTED:
        return aten_kernel("abs_")(x)
    return unary.abs_kernel(x, out0=x)


def _abs_out(x, *, out):
    if x.dtype not in _SUPPORTED:
        return aten_kernel("abs.out")(x, out=out)
    return unary.abs_kernel(x, out0=out)


def ops() -> list[OpImpl]:
    return [OpImpl("abs", _abs), OpImpl("abs_", _abs_), OpImpl("abs.out", _abs_out)]


def fused() -> dict:
    return {}
