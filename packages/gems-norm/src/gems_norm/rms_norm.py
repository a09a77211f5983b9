"""RMS norm on the row-norm kernels (row_norm.py), forward and backward fused.

``rms_norm`` (and, on CPU, ``_fused_rms_norm``) are CompositeImplicitAutograd in recent torch, so they are
served on the Autograd key. Where autograd records nothing (grad mode off, or no input requiring grad:
inference, a decoding step) they call the forward kernel directly, as any autograd wrapper costs more
host time than the kernel. Where it records the call, the device decides: on CUDA, ATen's own
``rms_norm`` records a C++ autograd node over ``_fused_rms_norm`` and ``_fused_rms_norm_backward``, both
served here on the backend key, so the call goes there (no Python autograd.Function, no zero-filled
gradient of rstd); elsewhere the ``torch.autograd.Function`` below, whose backward is ours too. Also the
public ``rms_norm`` and ``fused_add_rms_norm`` (residual add fused in front of the norm).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from flag_gems import aten_kernel, aten_names, native
from flag_gems.runtime import device
from gems_norm import row_norm
from gems_norm.heuristics import KNOBS, TO_ATEN, Plans, signature
from gems_norm.layer_norm import (
    backward_op_plan,
    flat,
    forward_op_plan,
    param_shaped,
    records_graph,
    rows_of,
    stats_shape,
)

#: Whether ATen has ``_fused_rms_norm`` and its backward as kernels of this device (CUDA): this family
#: serves both there, under the C++ autograd node of ATen's ``rms_norm``.
_FUSED_ON_DEVICE = all(
    aten_names.resolve(op) is not None
    and torch._C._dispatch_has_kernel_for_dispatch_key(f"aten::{op}", device.dispatch_key)
    for op in ("_fused_rms_norm", "_fused_rms_norm_backward"))
_aten_rms_norm = aten_kernel("rms_norm", autograd=True)


def _eps(eps: float | None) -> float:
    # ATen's default: the epsilon of the computation type, float32 for every dtype the kernels take.
    return torch.finfo(torch.float32).eps if eps is None else eps


def _forward(x, weight, normalized_shape, eps, m, n):
    y, _, rstd, _ = row_norm.forward(x.contiguous(), m, n, flat(weight), None, _eps(eps), False, torch.float32,
                                     stats_shape(x, normalized_shape))
    return y, rstd


def _backward(dy, x, rstd, weight, need_dx, need_dw):
    m = rstd.numel()
    dx, dw, _ = row_norm.backward(dy, x.contiguous(), m, x.numel() // m, None, rstd.contiguous(),
                                  flat(weight), False, need_dx, need_dw, False, x.dtype)
    return dx, param_shaped(dw, weight)


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, normalized_shape, eps, m, n):
        y, rstd = _forward(x, weight, normalized_shape, eps, m, n)
        ctx.save_for_backward(x, weight, rstd)
        ctx.mark_non_differentiable(rstd)
        # rstd never has a gradient: without this, autograd would fill a zero tensor for it every backward.
        ctx.set_materialize_grads(False)
        return y, rstd

    @staticmethod
    def backward(ctx, dy, _):
        if dy is None:
            return None, None, None, None, None, None
        x, weight, rstd = ctx.saved_tensors
        dx, dw = _backward(dy, x, rstd, weight, ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        return dx, dw, None, None, None, None


class _AddRMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, residual, weight, eps, m, n):
        y, _, rstd, h = row_norm.forward(x.contiguous(), m, n, flat(weight), None, eps, False, torch.float32, (m,),
                                         residual=residual.contiguous())
        ctx.save_for_backward(h, weight, rstd)
        # An unused output's gradient stays None rather than a zero tensor read by the backward.
        ctx.set_materialize_grads(False)
        return y, h

    @staticmethod
    def backward(ctx, dy, dh_out):
        h, weight, rstd = ctx.saved_tensors
        need_dh = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        if dy is None:
            return dh_out, dh_out, None, None, None, None
        m = rstd.numel()
        fold = dh_out is not None and KNOBS.row_bwd_fold_dh
        dh, dw, _ = row_norm.backward(dy, h, m, h.numel() // m, None, rstd, flat(weight), False, need_dh,
                                      ctx.needs_input_grad[2], False, h.dtype, dh_out if fold else None)
        if dh is not None and dh_out is not None and not fold:
            dh = dh + dh_out
        return dh, dh, param_shaped(dw, weight), None, None, None


def _forward_plan(x, normalized_shape, weight, save_rstd):
    return forward_op_plan(x, normalized_shape, weight, None, False, save_rstd)


def _backward_plan(grad_out, input, normalized_shape, rstd, weight, need_dx, need_dw):
    return backward_op_plan(grad_out, input, normalized_shape, None, rstd, weight, None, need_dx, need_dw, False)


#: Plans of the forward kernel on its own (outside autograd) and of ``_fused_rms_norm_backward``, by the
#: signatures of their tensors and flags.
_forward_plans = Plans(_forward_plan)
_backward_plans = Plans(_backward_plan)


def _rms_norm(x, normalized_shape, weight, eps, differentiable: bool, rstd: bool = True):
    """(output, rstd shaped as ATen saves it) on the kernels, or None where they do not take the call.

    Through ``_RMSNorm`` only where ``differentiable`` (autograd records the call); otherwise the forward
    kernel directly, by a plan kept per signature, with no statistics (rstd None) unless ``rstd`` is asked for.
    """
    if differentiable:
        shape = rows_of(x, normalized_shape, weight)
        return None if shape is None else _RMSNorm.apply(x, weight, tuple(normalized_shape), eps, *shape)
    key = (signature(x), tuple(normalized_shape), signature(weight), rstd)
    plan = _forward_plans.get(key) or _forward_plans.add(key, x, normalized_shape, weight, rstd)
    if plan is TO_ATEN:
        return None
    y, _, saved, _ = plan(x, None, weight, None, _eps(eps))
    return y, saved


def rms_norm_op(input, normalized_shape, weight=None, eps=None):
    """ATen's ``rms_norm`` on the Autograd key."""
    differentiable = records_graph(input, weight)
    if differentiable and _FUSED_ON_DEVICE:
        # ATen's decomposition: its C++ node over _fused_rms_norm and _fused_rms_norm_backward, ours below it.
        return _aten_rms_norm.call_quietly(input, normalized_shape, weight, eps)
    out = _rms_norm(input, normalized_shape, weight, eps, differentiable, rstd=False)
    if out is None:
        return _aten_rms_norm(input, normalized_shape, weight, eps)
    return out[0]


def fused_rms_norm_op(input, normalized_shape, weight, eps):
    """``_fused_rms_norm`` on the Autograd key: (output, rstd), rstd in float32 as ATen saves it."""
    out = _rms_norm(input, normalized_shape, weight, eps, records_graph(input, weight))
    if out is None:
        return aten_kernel("_fused_rms_norm", autograd=True)(input, normalized_shape, weight, eps)
    return out


def fused_rms_norm_backend_op(input, normalized_shape, weight, eps):
    """``_fused_rms_norm`` where torch serves it below autograd (with its own derivative formula)."""
    out = _rms_norm(input, normalized_shape, weight, eps, False)
    if out is None:
        return aten_kernel("_fused_rms_norm")(input, normalized_shape, weight, eps)
    return out


def fused_rms_norm_backward_op(grad_out, input, normalized_shape, rstd, weight, output_mask):
    """ATen's ``_fused_rms_norm_backward``: (dx, dweight), None where not asked for."""
    need_dx, need_dw = output_mask
    key = (signature(grad_out), signature(input), tuple(normalized_shape), signature(rstd), signature(weight),
           need_dx, need_dw)
    plan = (_backward_plans.get(key)
            or _backward_plans.add(key, grad_out, input, normalized_shape, rstd, weight, need_dx, need_dw))
    if plan is TO_ATEN:
        return aten_kernel("_fused_rms_norm_backward")(grad_out, input, normalized_shape, rstd, weight, output_mask)
    return plan(grad_out, input, None, rstd, weight)[:2]


def rms_norm(x: torch.Tensor, normalized_shape: Sequence[int], weight: torch.Tensor | None = None,
             eps: float | None = None) -> torch.Tensor:
    """RMS norm of ``x`` over its trailing ``normalized_shape`` dims, as ``torch.nn.functional.rms_norm``."""
    if not records_graph(x, weight):
        return _inference_op(x, list(normalized_shape), weight, eps)
    return _rms_norm_or_aten(x, normalized_shape, weight, eps, differentiable=True)


def _rms_norm_or_aten(x, normalized_shape, weight, eps, differentiable: bool = False):
    out = _rms_norm(x, normalized_shape, weight, eps, differentiable, rstd=False)
    if out is None:
        return torch.nn.functional.rms_norm(x, normalized_shape, weight, eps)
    return out[0]


# Without an autograd node to build, rms_norm is an op of the dispatcher: its calls replay from C++.
_inference_op = native.function_op(
    "gems_norm", "rms_norm(Tensor x, int[] normalized_shape, Tensor? weight, float? eps) -> Tensor", _rms_norm_or_aten,
    lambda x, *_: torch.empty_like(x, memory_format=torch.contiguous_format))


def fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, normalized_shape: Sequence[int],
                       weight: torch.Tensor | None = None, eps: float = 1e-5):
    """(``rms_norm(x + residual)``, ``x + residual``) in one pass over memory; differentiable.

    Unlike FlagGems' in-place version, ``x`` and ``residual`` are left unchanged, so autograd can see them.
    """
    shape = rows_of(x, normalized_shape, weight)
    if shape is None or residual.shape != x.shape or residual.dtype != x.dtype or residual.device != x.device:
        h = x + residual
        return torch.nn.functional.rms_norm(h, normalized_shape, weight, eps), h
    if records_graph(x, residual, weight):
        return _AddRMSNorm.apply(x, residual, weight, _eps(eps), *shape)
    return _add_inference_op(x, residual, list(normalized_shape), weight, eps)


def _add_inference(x, residual, normalized_shape, weight, eps):
    shape = rows_of(x, normalized_shape, weight)
    y, _, _, h = row_norm.forward(x.contiguous(), *shape, flat(weight), None, _eps(eps), False, torch.float32, None,
                                  residual=residual.contiguous())
    return y, h


_add_inference_op = native.function_op(
    "gems_norm", "fused_add_rms_norm(Tensor x, Tensor residual, int[] normalized_shape, Tensor? weight, float? eps) "
    "-> (Tensor, Tensor)", _add_inference,
    lambda x, *_: (torch.empty_like(x, memory_format=torch.contiguous_format),
                   torch.empty_like(x, memory_format=torch.contiguous_format)))
