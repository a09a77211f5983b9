"""Batch norm, training and eval, forward and backward, for every ATen entry point that reaches it.

Forward in training: per-channel Welford partials (per_channel.channel_sums), one small kernel that merges
them, saves mean and inverse std, updates the running statistics as ATen does (momentum, unbiased
variance) and writes each channel's affine coefficients, then one elementwise pass. Eval skips the
statistics. Backward: per-channel sums of dy and dy * (x - mean), the same kind of small kernel for
the weight and bias gradients and dx's coefficients, then one elementwise pass for dx.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from flag_gems import aten_kernel
from gems_norm.heuristics import cdiv, launch, next_pow2
from gems_norm.per_channel import ChannelView, channel_affine, channel_sums, channel_view
from gems_norm.semantics import ATEN_CUDA, FLOAT_DTYPES, params_ok, stats_dtype


@triton.jit
def _forward_coef_kernel(PART, splits, C, W, B, RM, RV, RM_OUT, RV_OUT, SAVE_MEAN, SAVE_INVSTD,
                         COEF, momentum, eps, BLOCK_C: tl.constexpr, TRAINING: tl.constexpr,
                         UPDATE: tl.constexpr, SAVE: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr):
    # PART holds the (count, mean, m2) planes of channel_sums, each (splits, C).
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    ok = c < C
    if TRAINING:
        count = tl.zeros([BLOCK_C], tl.float32)
        mean = tl.zeros([BLOCK_C], tl.float32)
        m2 = tl.zeros([BLOCK_C], tl.float32)
        for s in range(splits):
            part_count = tl.load(PART + s * C + c, mask=ok, other=0.0)
            delta = tl.load(PART + (splits + s) * C + c, mask=ok, other=0.0) - mean
            total = count + part_count
            share = part_count / tl.maximum(total, 1.0)
            mean += delta * share
            m2 += tl.load(PART + (2 * splits + s) * C + c, mask=ok, other=0.0) + delta * delta * count * share
            count = total
        invstd = 1.0 / tl.sqrt(m2 / tl.maximum(count, 1.0) + eps)
        if UPDATE:
            running_mean = tl.load(RM + c, mask=ok, other=0.0).to(tl.float32)
            running_var = tl.load(RV + c, mask=ok, other=0.0).to(tl.float32)
            unbiased = m2 / (count - 1.0)
            tl.store(RM_OUT + c, ((1.0 - momentum) * running_mean + momentum * mean).to(RM_OUT.dtype.element_ty),
                     mask=ok)
            tl.store(RV_OUT + c, ((1.0 - momentum) * running_var + momentum * unbiased).to(RV_OUT.dtype.element_ty),
                     mask=ok)
    else:
        mean = tl.load(RM + c, mask=ok, other=0.0).to(tl.float32)
        invstd = 1.0 / tl.sqrt(tl.load(RV + c, mask=ok, other=1.0).to(tl.float32) + eps)
    if SAVE:
        tl.store(SAVE_MEAN + c, mean.to(SAVE_MEAN.dtype.element_ty), mask=ok)
        tl.store(SAVE_INVSTD + c, invstd.to(SAVE_INVSTD.dtype.element_ty), mask=ok)
    scale = invstd
    if HAS_W:
        scale = scale * tl.load(W + c, mask=ok, other=0.0).to(tl.float32)
    shift = tl.zeros([BLOCK_C], tl.float32)
    if HAS_B:
        shift = tl.load(B + c, mask=ok, other=0.0).to(tl.float32)
    tl.store(COEF + c, mean, mask=ok)
    tl.store(COEF + C + c, scale, mask=ok)
    tl.store(COEF + 2 * C + c, shift, mask=ok)


@triton.jit
def _backward_coef_kernel(PART, splits, C, W, MEAN, INVSTD, DW, DB, COEF, count, eps,
                          BLOCK_C: tl.constexpr, TRAINING: tl.constexpr, INVSTD_GIVEN: tl.constexpr,
                          HAS_W: tl.constexpr, HAS_SUMS: tl.constexpr, NEED_DW: tl.constexpr,
                          NEED_DB: tl.constexpr):
    # PART holds the (sum of dy, sum of dy * (x - mean)) planes of channel_sums. Without INVSTD_GIVEN,
    # INVSTD holds the running variance.
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    ok = c < C
    mean = tl.load(MEAN + c, mask=ok, other=0.0).to(tl.float32)
    if INVSTD_GIVEN:
        invstd = tl.load(INVSTD + c, mask=ok, other=0.0).to(tl.float32)
    else:
        invstd = 1.0 / tl.sqrt(tl.load(INVSTD + c, mask=ok, other=1.0).to(tl.float32) + eps)
    gain = invstd
    if HAS_W:
        gain = gain * tl.load(W + c, mask=ok, other=0.0).to(tl.float32)
    p = tl.zeros([BLOCK_C], tl.float32)
    q = tl.zeros([BLOCK_C], tl.float32)
    if HAS_SUMS:
        sum_dy = tl.zeros([BLOCK_C], tl.float32)
        sum_dot = tl.zeros([BLOCK_C], tl.float32)
        for s in range(splits):
            sum_dy += tl.load(PART + s * C + c, mask=ok, other=0.0)
            sum_dot += tl.load(PART + (splits + s) * C + c, mask=ok, other=0.0)
        if NEED_DW:
            tl.store(DW + c, (sum_dot * invstd).to(DW.dtype.element_ty), mask=ok)
        if NEED_DB:
            tl.store(DB + c, sum_dy.to(DB.dtype.element_ty), mask=ok)
        if TRAINING:
            # dx = (dy - mean(dy) - (x - mean) * invstd^2 * mean(dy * (x - mean))) * invstd * w
            p = -gain * invstd * invstd * sum_dot / count
            q = -gain * sum_dy / count
    tl.store(COEF + c, mean, mask=ok)
    tl.store(COEF + C + c, p, mask=ok)
    tl.store(COEF + 2 * C + c, q, mask=ok)
    tl.store(COEF + 3 * C + c, gain, mask=ok)


def _coef_block(c: int) -> int:
    # Per-channel work is tiny: one program covers up to 1024 channels.
    return min(next_pow2(max(c, 1)), 1024)


def forward(x: torch.Tensor, view: ChannelView, weight, bias, running_mean, running_var, training: bool,
            momentum: float, eps: float, saved_dtype: torch.dtype, running_out=None, save_in_eval: bool = False):
    """(out, save_mean, save_invstd) of dense ``x`` seen as ``view``. In training with running statistics
    they are updated, in place or into ``running_out`` (a pair) for the functional forms. In eval the
    saved statistics are empty, or with ``save_in_eval`` the running mean and its inverse std."""
    c = view.c
    update = training and running_mean is not None
    save = training or save_in_eval
    rm_out, rv_out = running_out if running_out is not None else (running_mean, running_var)
    if training:
        part = channel_sums(view, x, welford=True)
        splits = part.shape[1]
    else:
        part, splits = x, 0
    save_mean = torch.empty(c if save else 0, dtype=saved_dtype, device=x.device)
    save_invstd = torch.empty(c if save else 0, dtype=saved_dtype, device=x.device)
    coef = torch.empty(3, c, dtype=torch.float32, device=x.device)
    block = _coef_block(c)
    dummy = coef
    args = [part, splits, c, weight if weight is not None else dummy,
            bias if bias is not None else dummy, running_mean if running_mean is not None else dummy,
            running_var if running_var is not None else dummy, rm_out if update else dummy,
            rv_out if update else dummy, save_mean if save else dummy, save_invstd if save else dummy,
            coef, momentum, eps]
    launch(_forward_coef_kernel, (cdiv(c, block),), args, 4, BLOCK_C=block, TRAINING=training,
           UPDATE=update, SAVE=save, HAS_W=weight is not None, HAS_B=bias is not None)
    out = channel_affine(view, x, coef, torch.empty_like(x))
    return out, save_mean, save_invstd


def backward(dy: torch.Tensor, x: torch.Tensor, view: ChannelView, weight, mean, spread, training: bool,
             invstd_given: bool, eps: float, need_dx: bool, need_dw: bool, need_db: bool, param_dtype: torch.dtype):
    """(dx, dw, db) of batch norm; ``dy`` has ``x``'s strides. ``mean`` and ``spread`` are the statistics
    the input was normalised with: ``spread`` the inverse std with ``invstd_given``, else the variance."""
    c = view.c
    has_sums = need_dw or need_db or (training and need_dx)
    if has_sums:
        part = channel_sums(view, dy, x, mu=mean)
        splits = part.shape[1]
    else:
        part, splits = x, 0
    dw = torch.empty(c, dtype=param_dtype, device=x.device) if need_dw else None
    db = torch.empty(c, dtype=param_dtype, device=x.device) if need_db else None
    coef = torch.empty(4, c, dtype=torch.float32, device=x.device)
    block = _coef_block(c)
    launch(_backward_coef_kernel, (cdiv(c, block),),
           [part, splits, c, weight if weight is not None else coef, mean, spread,
            dw if need_dw else coef, db if need_db else coef, coef, float(view.nb * view.k), eps],
           4, BLOCK_C=block, TRAINING=training, INVSTD_GIVEN=invstd_given, HAS_W=weight is not None,
           HAS_SUMS=has_sums, NEED_DW=need_dw, NEED_DB=need_db)
    dx = channel_affine(view, x, coef, torch.empty_like(x), dy=dy) if need_dx else None
    return dx, dw, db


# ATen entry points -------------------------------------------------------------------------------------

def _vector_ok(t: torch.Tensor | None, c: int, device) -> bool:
    return t is None or (t.dim() == 1 and t.numel() == c and t.is_contiguous() and t.device == device)


def dense_view(input: torch.Tensor, weight, bias, running_mean, running_var):
    """(x, view) when the kernels take this input, x being ``input`` or its copy in ATen's output layout;
    None sends the call to ATen."""
    if input.dtype not in FLOAT_DTYPES or input.dim() < 2 or input.numel() == 0:
        return None
    c = input.shape[1]
    if not all(_vector_ok(t, c, input.device) for t in (weight, bias, running_mean, running_var)):
        return None
    if not params_ok(input, weight, bias, running_mean, running_var, mixed=True):
        return None
    view = channel_view(input)
    if view is not None:
        return input, view
    x = input.contiguous(memory_format=input.suggest_memory_format())
    return x, channel_view(x)


def _saved_dtype(input, *params):
    return stats_dtype(input, *params, acc_on_cuda=True)


def _forward_op(input, weight, bias, running_mean, running_var, training, momentum, eps,
                running_out=None, save_in_eval=ATEN_CUDA):
    """Forward for the ATen forms taking the classic argument list; None when ATen must handle the call."""
    if not training and (running_mean is None or running_var is None):
        return None
    prepared = dense_view(input, weight, bias, running_mean, running_var)
    if prepared is None:
        return None
    x, view = prepared
    return forward(x, view, weight, bias, running_mean, running_var, training, momentum, eps,
                   _saved_dtype(input, weight, bias, running_mean, running_var), running_out, save_in_eval)


def native_batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps):
    """ATen's ``native_batch_norm``: (output, save_mean, save_invstd)."""
    result = _forward_op(input, weight, bias, running_mean, running_var, training, momentum,
                         eps)
    if result is None:
        return aten_kernel("native_batch_norm")(input, weight, bias, running_mean, running_var, training,
                                                momentum, eps)
    return result


def native_batch_norm_legit(input, weight, bias, running_mean, running_var, training, momentum, eps):
    """ATen's ``_native_batch_norm_legit``."""
    result = _forward_op(input, weight, bias, running_mean, running_var, training, momentum, eps)
    if result is None:
        return aten_kernel("_native_batch_norm_legit")(input, weight, bias, running_mean, running_var, training,
                                                       momentum, eps)
    return result


def native_batch_norm_legit_no_stats(input, weight, bias, training, momentum, eps):
    """ATen's ``_native_batch_norm_legit.no_stats``."""
    result = _forward_op(input, weight, bias, None, None, training, momentum, eps)
    if result is None:
        return aten_kernel("_native_batch_norm_legit.no_stats")(input, weight, bias, training, momentum, eps)
    return result


def native_batch_norm_legit_no_training(input, weight, bias, running_mean, running_var, momentum, eps):
    """ATen's ``_native_batch_norm_legit_no_training`` (eval)."""
    result = _forward_op(input, weight, bias, running_mean, running_var, False, momentum, eps)
    if result is None:
        return aten_kernel("_native_batch_norm_legit_no_training")(input, weight, bias, running_mean, running_var,
                                                                   momentum, eps)
    return result


def native_batch_norm_legit_functional(input, weight, bias, running_mean, running_var, training, momentum, eps):
    """ATen's ``_native_batch_norm_legit_functional``: the updated running statistics are new tensors."""
    new_running = (torch.empty_like(running_mean), torch.empty_like(running_var)) if training else None
    result = _forward_op(input, weight, bias, running_mean, running_var, training, momentum, eps, new_running)
    if result is None:
        return aten_kernel("_native_batch_norm_legit_functional")(input, weight, bias, running_mean, running_var,
                                                                  training, momentum, eps)
    if new_running is None:
        new_running = (running_mean.clone(), running_var.clone())
    return (*result, *new_running)


def _reserve(input):
    # What ATen returns when cuDNN is not used: an empty byte tensor.
    return torch.empty(0, dtype=torch.uint8, device=input.device)


def batch_norm_with_update(input, weight, bias, running_mean, running_var, momentum, eps):
    """ATen's ``_batch_norm_with_update``: training, running statistics updated in place."""
    result = _forward_op(input, weight, bias, running_mean, running_var, True, momentum, eps)
    if result is None:
        return aten_kernel("_batch_norm_with_update")(input, weight, bias, running_mean, running_var, momentum, eps)
    return (*result, _reserve(input))


def batch_norm_with_update_functional(input, weight, bias, running_mean, running_var, momentum, eps):
    """ATen's ``_batch_norm_with_update_functional``."""
    new_running = (torch.empty_like(running_mean), torch.empty_like(running_var))
    result = _forward_op(input, weight, bias, running_mean, running_var, True, momentum, eps, new_running)
    if result is None:
        return aten_kernel("_batch_norm_with_update_functional")(input, weight, bias, running_mean, running_var,
                                                                 momentum, eps)
    return (*result, _reserve(input), *new_running)


def batch_norm_no_update(input, weight, bias, running_mean, running_var, momentum, eps):
    """ATen's ``_batch_norm_no_update`` (eval)."""
    result = _forward_op(input, weight, bias, running_mean, running_var, False, momentum, eps)
    if result is None:
        return aten_kernel("_batch_norm_no_update")(input, weight, bias, running_mean, running_var, momentum, eps)
    return (*result, _reserve(input))


def cudnn_batch_norm(input, weight, bias, running_mean, running_var, training, exponential_average_factor,
                     epsilon):
    """cuDNN's entry point (taken by F.batch_norm on CUDA for most float inputs): its saved variance is
    the inverse std, as ours; eval saves nothing."""
    result = _forward_op(input, weight, bias, running_mean, running_var, training, exponential_average_factor,
                         epsilon, save_in_eval=False)
    if result is None:
        return aten_kernel("cudnn_batch_norm")(input, weight, bias, running_mean, running_var, training,
                                               exponential_average_factor, epsilon)
    return (*result, _reserve(input))


def _backward_op(grad_out, input, weight, running_mean, running_var, save_mean, save_invstd, train, eps,
                 output_mask):
    """Backward for every ATen form; None when ATen must handle the call."""
    need_dx, need_dw, need_db = output_mask
    prepared = dense_view(input, weight, None, running_mean, running_var)
    if prepared is None or grad_out.shape != input.shape or grad_out.dtype != input.dtype:
        return None
    x, view = prepared
    c = view.c
    # CPU's eval backward reads the running statistics; CUDA's reads saved ones whenever they are given.
    use_saved_mean = train or (ATEN_CUDA and save_mean is not None and save_mean.numel() != 0)
    use_saved_invstd = train or (ATEN_CUDA and save_invstd is not None and save_invstd.numel() != 0)
    mean = save_mean if use_saved_mean else running_mean
    spread = save_invstd if use_saved_invstd else running_var
    if any(t is None or not _vector_ok(t, c, input.device) for t in (mean, spread)):
        return None
    if not (need_dx or need_dw or need_db):
        return None, None, None
    if grad_out.stride() != x.stride():
        grad_out = torch.empty_like(x).copy_(grad_out)
    return backward(grad_out, x, view, weight, mean, spread, train, use_saved_invstd, eps, need_dx, need_dw, need_db,
                    weight.dtype if weight is not None else input.dtype)


def native_batch_norm_backward(grad_out, input, weight, running_mean, running_var, save_mean, save_invstd, train,
                               eps, output_mask):
    """ATen's ``native_batch_norm_backward``: (dx, dweight, dbias), None where not asked for."""
    result = _backward_op(grad_out, input, weight, running_mean, running_var, save_mean, save_invstd, train, eps,
                          output_mask)
    if result is None:
        return aten_kernel("native_batch_norm_backward")(grad_out, input, weight, running_mean, running_var,
                                                         save_mean, save_invstd, train, eps, output_mask)
    return result


def batch_norm_backward(grad_out, input, weight, running_mean, running_var, save_mean, save_var, update, eps,
                        output_mask, reserve):
    """ATen's ``batch_norm_backward``, the backward of ``_batch_norm_with_update``."""
    result = _backward_op(grad_out, input, weight, running_mean, running_var, save_mean, save_var, update, eps,
                          output_mask)
    if result is None:
        return aten_kernel("batch_norm_backward")(grad_out, input, weight, running_mean, running_var, save_mean,
                                                  save_var, update, eps, output_mask, reserve)
    return result


def cudnn_batch_norm_backward(input, grad_output, weight, running_mean, running_var, save_mean, save_var,
                              epsilon, reserveSpace):
    # cuDNN's backward is always the training one, with every gradient.
    result = _backward_op(grad_output, input, weight, running_mean, running_var, save_mean, save_var, True,
                          epsilon, (True, True, True))
    if result is None:
        return aten_kernel("cudnn_batch_norm_backward")(input, grad_output, weight, running_mean, running_var,
                                                        save_mean, save_var, epsilon, reserveSpace)
    return result
