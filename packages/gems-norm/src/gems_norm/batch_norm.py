"""Batch norm, training and eval, forward and backward, for every ATen entry point that reaches it.

Forward: one kernel normalises each (channels, K) tile with its channels' statistics: in eval the
running ones, read in place; in training, where a program holds whole channels (one sample: instance
norm's view), computed from the tile itself (one read of x); otherwise gathered first as per-channel
Welford partials (per_channel.channel_sums) and merged by a small kernel into a table of coefficients.
Whichever computes the statistics saves them and updates the running ones as ATen does (momentum,
unbiased variance). Backward: per-channel sums of dy and dy * (x - mean), the same kind of small kernel
for the weight and bias gradients and dx's coefficients, then one elementwise pass for dx.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from flag_gems import aten_kernel
from gems_norm.heuristics import MAX_ROW_BLOCK, ReadyLaunch, cdiv, keep, launch, next_pow2, row_tile, warps
from gems_norm.per_channel import ChannelView, channel_affine, channel_sums, channel_tile, channel_view
from gems_norm.semantics import ATEN_CUDA, FLOAT_DTYPES, params_ok, stats_dtype

# How the forward kernel gets each channel's statistics.
_EVAL, _TABLE, _WHOLE = 0, 1, 2


@triton.jit
def _finish_stats(count, mean, m2, c, ok, RM, RV, RM_OUT, RV_OUT, SAVE_MEAN, SAVE_INVSTD, momentum, eps,
                  UPDATE: tl.constexpr, SAVE: tl.constexpr):
    """The inverse std of channels ``c`` from their (count, mean, m2); saves the mean and inverse std and
    updates the running statistics (momentum, unbiased variance) as ATen does."""
    invstd = 1.0 / tl.sqrt(m2 / tl.maximum(count, 1.0) + eps)
    if UPDATE:
        running_mean = tl.load(RM + c, mask=ok, other=0.0).to(tl.float32)
        running_var = tl.load(RV + c, mask=ok, other=0.0).to(tl.float32)
        unbiased = m2 / (count - 1.0)
        tl.store(RM_OUT + c, ((1.0 - momentum) * running_mean + momentum * mean).to(RM_OUT.dtype.element_ty),
                 mask=ok)
        tl.store(RV_OUT + c, ((1.0 - momentum) * running_var + momentum * unbiased).to(RV_OUT.dtype.element_ty),
                 mask=ok)
    if SAVE:
        tl.store(SAVE_MEAN + c, mean.to(SAVE_MEAN.dtype.element_ty), mask=ok)
        tl.store(SAVE_INVSTD + c, invstd.to(SAVE_INVSTD.dtype.element_ty), mask=ok)
    return invstd


@triton.jit
def _merge_stats_kernel(PART, W, B, RM, RV, RM_OUT, RV_OUT, SAVE_MEAN, SAVE_INVSTD, COEF, C, splits, param_c,
                        momentum, eps, BLOCK_C: tl.constexpr, UPDATE: tl.constexpr, SAVE: tl.constexpr,
                        HAS_W: tl.constexpr, HAS_B: tl.constexpr):
    # Merges channel_sums' (count, mean, m2) planes, each (splits, C), into each channel's statistics and
    # writes its rows (mean, scale, shift) of COEF. Weight and bias repeat every ``param_c`` channels.
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    ok = c < C
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
    scale = _finish_stats(count, mean, m2, c, ok, RM, RV, RM_OUT, RV_OUT, SAVE_MEAN, SAVE_INVSTD, momentum, eps,
                          UPDATE, SAVE)
    if HAS_W:
        scale = scale * tl.load(W + c % param_c, mask=ok, other=0.0).to(tl.float32)
    shift = tl.zeros([BLOCK_C], tl.float32)
    if HAS_B:
        shift = tl.load(B + c % param_c, mask=ok, other=0.0).to(tl.float32)
    tl.store(COEF + c, mean, mask=ok)
    tl.store(COEF + C + c, scale, mask=ok)
    tl.store(COEF + 2 * C + c, shift, mask=ok)


@triton.jit
def _batch_norm_fwd_kernel(X, COEF, W, B, RM, RV, RM_OUT, RV_OUT, SAVE_MEAN, SAVE_INVSTD, Y,
                           C, K, s_n, s_c, s_k, param_c, momentum, eps,
                           BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr, STATS: tl.constexpr,
                           UPDATE: tl.constexpr, SAVE: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr):
    # A program normalises a (channels, K) tile of one sample with its channels' statistics: the running
    # ones (_EVAL), rows (mean, scale, shift) of COEF written by _merge_stats_kernel (_TABLE), or taken from
    # the tile itself, which then holds whole channels (_WHOLE: one read of x; every program is the only
    # one of its channels, so it also saves them). Parameters (and running statistics read in eval) repeat
    # every ``param_c`` channels: instance norm's (N*C) channels share C of them.
    c_blocks = tl.cdiv(C, BLOCK_C)
    k_blocks = tl.cdiv(K, BLOCK_K)
    pid = tl.program_id(0)
    rest = pid // c_blocks
    channels = (pid % c_blocks) * BLOCK_C + tl.arange(0, BLOCK_C)[:, None]
    c_ok = channels < C
    params = channels % param_c
    ks = (rest % k_blocks) * BLOCK_K + tl.arange(0, BLOCK_K)[None, :]
    mask = c_ok & (ks < K)
    offs = (rest // k_blocks).to(tl.int64) * s_n + channels.to(tl.int64) * s_c + ks.to(tl.int64) * s_k
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    if STATS == 1:
        mean = tl.load(COEF + channels, mask=c_ok, other=0.0)
        y = (x - mean) * tl.load(COEF + C + channels, mask=c_ok, other=0.0)
        y += tl.load(COEF + 2 * C + channels, mask=c_ok, other=0.0)
    else:
        if STATS == 0:
            mean = tl.load(RM + params, mask=c_ok, other=0.0).to(tl.float32)
            scale = 1.0 / tl.sqrt(tl.load(RV + params, mask=c_ok, other=1.0).to(tl.float32) + eps)
            if SAVE:
                if rest == 0:  # the first program of each channel block
                    tl.store(SAVE_MEAN + channels, mean.to(SAVE_MEAN.dtype.element_ty), mask=c_ok)
                    tl.store(SAVE_INVSTD + channels, scale.to(SAVE_INVSTD.dtype.element_ty), mask=c_ok)
        else:
            count = tl.zeros([BLOCK_C, 1], tl.float32) + K
            mean = tl.sum(x, 1, keep_dims=True) / count
            centered = tl.where(mask, x - mean, 0.0)
            m2 = tl.sum(centered * centered, 1, keep_dims=True)
            scale = _finish_stats(count, mean, m2, channels, c_ok, RM, RV, RM_OUT, RV_OUT, SAVE_MEAN, SAVE_INVSTD,
                                  momentum, eps, UPDATE, SAVE)
        if HAS_W:
            scale = scale * tl.load(W + params, mask=c_ok, other=0.0).to(tl.float32)
        y = (x - mean) * scale
        if HAS_B:
            y += tl.load(B + params, mask=c_ok, other=0.0).to(tl.float32)
    tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)


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


#: Ready launches of the forward kernels, by (view or C, dtypes, statistics mode and options).
_forward_launches: dict[tuple, ReadyLaunch] = {}
_merge_launches: dict[tuple, ReadyLaunch] = {}


def _forward_launch(key: tuple) -> ReadyLaunch:
    view, dtypes, stats, param_c, update, save, has_w, has_b = key
    block_c, block_k = row_tile(view.c, view.k) if stats == _WHOLE else channel_tile(view)
    grid = (cdiv(view.c, block_c) * cdiv(view.k, block_k) * view.nb,)
    ready = ReadyLaunch(_batch_norm_fwd_kernel, grid, warps(block_c * block_k), dtypes,
                        (view.c, view.k, view.s_n, view.s_c, view.s_k, param_c), BLOCK_C=block_c, BLOCK_K=block_k,
                        STATS=stats, UPDATE=update, SAVE=save, HAS_W=has_w, HAS_B=has_b)
    return keep(_forward_launches, key, ready)


def _merge_launch(key: tuple) -> ReadyLaunch:
    c, splits, param_c, dtypes, update, save, has_w, has_b = key
    block = _coef_block(c)
    return keep(_merge_launches, key, ReadyLaunch(_merge_stats_kernel, (cdiv(c, block),), 4, dtypes,
                                                  (c, splits, param_c), BLOCK_C=block, UPDATE=update, SAVE=save,
                                                  HAS_W=has_w, HAS_B=has_b))


def forward(x: torch.Tensor, view: ChannelView, weight, bias, running_mean, running_var, training: bool,
            momentum: float, eps: float, saved_dtype: torch.dtype, running_out=None, save_in_eval: bool = False,
            param_c: int | None = None):
    """(out, save_mean, save_invstd) of dense ``x`` seen as ``view``. In training with running statistics
    they are updated, in place or into ``running_out`` (a pair) for the functional forms. In eval the
    saved statistics are empty, or with ``save_in_eval`` the running mean and its inverse std.
    ``param_c``: the parameters (and running statistics read in eval) repeat every ``param_c`` channels
    (only where running statistics are not updated).

    Eval and inputs whose channels each fit a program whole (one sample; instance norm) take one kernel
    and one read of ``x``; other training inputs first gather per-channel Welford partials (one more read)
    and merge them in a small kernel.
    """
    c = view.c
    update = training and running_mean is not None
    save = training or save_in_eval
    rm_out, rv_out = running_out if running_out is not None else (running_mean, running_var)
    save_mean = torch.empty(c if save else 0, dtype=saved_dtype, device=x.device)
    save_invstd = torch.empty(c if save else 0, dtype=saved_dtype, device=x.device)
    out = torch.empty_like(x)
    # Absent tensors are passed as ``out`` (never read; written only when given).
    stats_args = (out if weight is None else weight, out if bias is None else bias,
                  out if running_mean is None else running_mean, out if running_var is None else running_var,
                  rm_out if update else out, rv_out if update else out, save_mean if save else out,
                  save_invstd if save else out)
    flags = (update, save, weight is not None, bias is not None)
    param_c = param_c or c
    coef = out
    if not training:
        stats = _EVAL
    elif view.nb == 1 and view.s_k == 1 and next_pow2(view.k) <= MAX_ROW_BLOCK:
        stats = _WHOLE
    else:
        stats = _TABLE
        part = channel_sums(view, x, welford=True)
        coef = torch.empty(3, c, dtype=torch.float32, device=x.device)
        tensors = (part, *stats_args, coef)
        key = (c, part.shape[1], param_c, tuple([t.dtype for t in tensors]), *flags)
        ready = _merge_launches.get(key) or _merge_launch(key)
        ready((*tensors, c, part.shape[1], param_c, float(momentum), float(eps)))
        flags = (False, False, *flags[2:])  # the merge saved and updated the statistics
    tensors = (x, coef, *stats_args, out)
    key = (view, tuple([t.dtype for t in tensors]), stats, param_c, *flags)
    ready = _forward_launches.get(key) or _forward_launch(key)
    ready((*tensors, c, view.k, view.s_n, view.s_c, view.s_k, param_c, float(momentum), float(eps)))
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
