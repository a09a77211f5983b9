"""Batch norm, training and eval, forward and backward, for every ATen entry point that reaches it.

Forward: one kernel normalises each (channels, K) tile with its channels' statistics: in eval the
running ones, read in place; in training, where a program holds whole channels (one sample: instance
norm's view), computed from the tile itself (one read of x); otherwise gathered first as per-channel
Welford partials (per_channel.channel_sums) and merged by a small kernel into a table of coefficients, or
(few partials a channel, ``KNOBS.merge_in_apply``) by each normalising program itself.
Whichever computes the statistics saves them and updates the running ones as ATen does (momentum,
unbiased variance). Backward: per-channel sums of dy and dy * (x - mean), the same kind of small kernel
for the weight and bias gradients and dx's coefficients, then one elementwise pass for dx.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from flag_gems import aten_kernel
from gems_norm.heuristics import (
    KNOBS,
    MAX_ROW_BLOCK,
    TO_ATEN,
    Plans,
    ReadyLaunch,
    caller_aligned,
    cdiv,
    dtype_of,
    next_pow2,
    no_grads,
    row_tile,
    signature,
    warps,
)
from gems_norm.per_channel import ChannelView, channel_affine_launch, channel_sums_launch, channel_tile, channel_view
from gems_norm.semantics import ATEN_CUDA, FLOAT_DTYPES, params_ok, stats_dtype

# How the forward kernel gets each channel's statistics.
_EVAL, _TABLE, _WHOLE, _PARTIALS = 0, 1, 2, 3


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
def _merged_partials(PART, c, ok, C, splits):
    """(count, mean, m2) of channels ``c`` (any shape) merged from channel_sums' Welford planes, each
    (splits, C), in split order (Chan et al.)."""
    count = tl.zeros_like(c).to(tl.float32)
    mean = tl.zeros_like(count)
    m2 = tl.zeros_like(count)
    for s in range(splits):
        part_count = tl.load(PART + s * C + c, mask=ok, other=0.0)
        delta = tl.load(PART + (splits + s) * C + c, mask=ok, other=0.0) - mean
        total = count + part_count
        share = part_count / tl.maximum(total, 1.0)
        mean += delta * share
        m2 += tl.load(PART + (2 * splits + s) * C + c, mask=ok, other=0.0) + delta * delta * count * share
        count = total
    return count, mean, m2


@triton.jit
def _merge_stats_kernel(PART, W, B, RM, RV, RM_OUT, RV_OUT, SAVE_MEAN, SAVE_INVSTD, C, splits, param_c,
                        momentum, eps, BLOCK_C: tl.constexpr, UPDATE: tl.constexpr, SAVE: tl.constexpr,
                        HAS_W: tl.constexpr, HAS_B: tl.constexpr):
    # Merges channel_sums' (count, mean, m2) planes, each (splits, C), into each channel's statistics and
    # writes its rows (mean, scale, shift) of the table that follows them in PART (one buffer: one
    # allocation less). Weight and bias repeat every ``param_c`` channels.
    COEF = PART + 3 * splits * C
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    ok = c < C
    count, mean, m2 = _merged_partials(PART, c, ok, C, splits)
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
                           C, K, s_n, s_c, s_k, param_c, coef_at, splits, momentum, eps,
                           BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr, STATS: tl.constexpr,
                           UPDATE: tl.constexpr, SAVE: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
                           REVERSED: tl.constexpr):
    # A program normalises a (channels, K) tile of one sample with its channels' statistics: the running
    # ones (_EVAL), rows (mean, scale, shift) at ``coef_at`` of COEF written by _merge_stats_kernel (_TABLE),
    # merged here from the ``splits`` Welford partials at COEF (_PARTIALS: the program of each channel's first
    # tile saves and updates them), or taken from the tile itself, which then holds whole channels (_WHOLE:
    # one read of x; every program is the only one of its channels, so it also saves them). Parameters (and
    # running statistics read in eval) repeat every ``param_c`` channels: instance norm's (N*C) channels share
    # C of them.
    c_blocks = tl.cdiv(C, BLOCK_C)
    k_blocks = tl.cdiv(K, BLOCK_K)
    pid = tl.program_id(0)
    if REVERSED:  # from the end, which the statistics' pass read last
        pid = tl.num_programs(0) - 1 - pid
    rest = pid // c_blocks
    channels = (pid % c_blocks) * BLOCK_C + tl.arange(0, BLOCK_C)[:, None]
    c_ok = channels < C
    params = channels % param_c
    ks = (rest % k_blocks) * BLOCK_K + tl.arange(0, BLOCK_K)[None, :]
    mask = c_ok & (ks < K)
    offs = (rest // k_blocks).to(tl.int64) * s_n + channels.to(tl.int64) * s_c + ks.to(tl.int64) * s_k
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    if STATS == 1:
        table = COEF + coef_at
        mean = tl.load(table + channels, mask=c_ok, other=0.0)
        y = (x - mean) * tl.load(table + C + channels, mask=c_ok, other=0.0)
        y += tl.load(table + 2 * C + channels, mask=c_ok, other=0.0)
    else:
        if STATS == 0:
            mean = tl.load(RM + params, mask=c_ok, other=0.0).to(tl.float32)
            scale = 1.0 / tl.sqrt(tl.load(RV + params, mask=c_ok, other=1.0).to(tl.float32) + eps)
            if SAVE:
                if rest == 0:  # the first program of each channel block
                    tl.store(SAVE_MEAN + channels, mean.to(SAVE_MEAN.dtype.element_ty), mask=c_ok)
                    tl.store(SAVE_INVSTD + channels, scale.to(SAVE_INVSTD.dtype.element_ty), mask=c_ok)
        elif STATS == 3:
            count, mean, m2 = _merged_partials(COEF, channels, c_ok, C, splits)
            scale = _finish_stats(count, mean, m2, channels, c_ok & (rest == 0), RM, RV, RM_OUT, RV_OUT, SAVE_MEAN,
                                  SAVE_INVSTD, momentum, eps, UPDATE, SAVE)
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
def _backward_coef_kernel(PART, W, MEAN, INVSTD, DW, DB, COEF, splits, C, count, eps,
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


def _forward_plan(view: ChannelView, x_dtype: torch.dtype, w_dtype, b_dtype, rm_dtype, rv_dtype, training: bool,
                  update: bool, save: bool, param_c: int, saved_dtype: torch.dtype):
    """The forward of this signature (dtypes None for absent tensors): a function
    (x, weight, bias, running_mean, running_var, running_out, momentum, eps) -> (out, save_mean, save_invstd)."""
    c, f32 = view.c, torch.float32
    # Absent tensors are passed as ``out`` (never read; written only when given).
    stats_dtypes = (w_dtype or x_dtype, b_dtype or x_dtype, rm_dtype or x_dtype, rv_dtype or x_dtype,
                    rm_dtype if update else x_dtype, rv_dtype if update else x_dtype,
                    saved_dtype if save else x_dtype, saved_dtype if save else x_dtype)
    flags = dict(UPDATE=update, SAVE=save, HAS_W=w_dtype is not None, HAS_B=b_dtype is not None)
    saved = c if save else 0
    sums = merge = None
    splits = per_split = 0
    if not training:
        stats = _EVAL
    elif view.nb == 1 and view.s_k == 1 and next_pow2(view.k) <= MAX_ROW_BLOCK:
        stats = _WHOLE
    else:
        sums, splits, per_split = channel_sums_launch(view, (x_dtype, x_dtype, x_dtype, f32), True, False)
        stats = _PARTIALS if splits <= KNOBS.merge_in_apply else _TABLE
        if stats == _TABLE:
            block = _coef_block(c)
            merge = ReadyLaunch(_merge_stats_kernel, (cdiv(c, block),), 4, (f32, *stats_dtypes),
                                (c, splits, param_c), BLOCK_C=block, **flags)
            flags.update(UPDATE=False, SAVE=False)  # the merge saves and updates the statistics
    block_c, block_k = row_tile(view.c, view.k) if stats == _WHOLE else channel_tile(view)
    # The merge's table of coefficients follows the partial sums in one scratch buffer.
    scratch = 3 * (splits + int(merge is not None)) * c
    ints = (c, view.k, view.s_n, view.s_c, view.s_k, param_c, 3 * splits * c, splits)
    coef_dtype = x_dtype if sums is None else f32
    normalise = ReadyLaunch(_batch_norm_fwd_kernel, (cdiv(c, block_c) * cdiv(view.k, block_k) * view.nb,),
                            warps(block_c * block_k), (x_dtype, coef_dtype, *stats_dtypes, x_dtype),
                            ints, BLOCK_C=block_c, BLOCK_K=block_k, STATS=stats, **flags,
                            REVERSED=KNOBS.apply_reversed and sums is not None)

    def run(x, weight, bias, running_mean, running_var, running_out, momentum, eps):
        rm_out, rv_out = running_out or (running_mean, running_var)
        save_mean = torch.empty(saved, dtype=saved_dtype, device=x.device)
        save_invstd = torch.empty(saved, dtype=saved_dtype, device=x.device)
        out = torch.empty_like(x)
        stats_args = (out if weight is None else weight, out if bias is None else bias,
                      out if running_mean is None else running_mean, out if running_var is None else running_var,
                      rm_out if update else out, rv_out if update else out, save_mean if save else out,
                      save_invstd if save else out)
        momentum, eps = float(momentum), float(eps)
        given_aligned = caller_aligned(x, weight, bias, running_mean, running_var, rm_out, rv_out)
        coef = out
        if sums is not None:
            coef = torch.empty(scratch, dtype=f32, device=x.device)
            sums((x, x, x, coef, *view, per_split), given_aligned)
        if merge is not None:
            merge((coef, *stats_args, c, splits, param_c, momentum, eps), given_aligned)
        normalise((x, coef, *stats_args, out, *ints, momentum, eps), given_aligned)
        return out, save_mean, save_invstd

    return run


_forward_plans = Plans(_forward_plan)


def _planned_forward(view: ChannelView, x_dtype: torch.dtype, weight, bias, running_mean, running_var,
                     training: bool, save_in_eval: bool, param_c: int, saved_dtype: torch.dtype):
    """The kept ``_forward_plan`` for these arguments (the key ``forward`` and the ATen forms share)."""
    key = (view, x_dtype, dtype_of(weight), dtype_of(bias), dtype_of(running_mean), dtype_of(running_var), training,
           training and running_mean is not None, training or save_in_eval, param_c, saved_dtype)
    return _forward_plans.get(key) or _forward_plans.add(key, *key)


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
    plan = _planned_forward(view, x.dtype, weight, bias, running_mean, running_var, training, save_in_eval,
                            param_c or view.c, saved_dtype)
    return plan(x, weight, bias, running_mean, running_var, running_out, momentum, eps)


def _backward_plan(view: ChannelView, dy_dtype: torch.dtype, x_dtype: torch.dtype, w_dtype, mean_dtype: torch.dtype,
                   spread_dtype: torch.dtype, training: bool, invstd_given: bool, need_dx: bool, need_dw: bool,
                   need_db: bool, param_dtype: torch.dtype):
    """The backward of this signature: a function (dy, x, weight, mean, spread, eps) -> (dx, dw, db)."""
    c, f32 = view.c, torch.float32
    has_sums = need_dw or need_db or (training and need_dx)
    sums, splits, per_split = (channel_sums_launch(view, (dy_dtype, x_dtype, mean_dtype, f32), False, True)
                               if has_sums else (None, 0, 0))
    block = _coef_block(c)
    # Absent tensors are passed as ``coef`` (never read or written), absent partial sums as ``x``.
    coefficients = ReadyLaunch(_backward_coef_kernel, (cdiv(c, block),), 4,
                               (f32 if has_sums else x_dtype, w_dtype or f32, mean_dtype, spread_dtype,
                                param_dtype if need_dw else f32, param_dtype if need_db else f32, f32), (splits, c),
                               BLOCK_C=block, TRAINING=training, INVSTD_GIVEN=invstd_given, HAS_W=w_dtype is not None,
                               HAS_SUMS=has_sums, NEED_DW=need_dw, NEED_DB=need_db)
    affine = channel_affine_launch(view, (x_dtype, dy_dtype, f32, x_dtype), True) if need_dx else None
    count = float(view.nb * view.k)

    def run(dy, x, weight, mean, spread, eps):
        given_aligned = caller_aligned(dy, x, weight, mean, spread)
        part = x
        if has_sums:
            part = torch.empty(2, splits, c, dtype=f32, device=x.device)
            sums((dy, x, mean, part, *view, per_split), given_aligned)
        dw = torch.empty(c, dtype=param_dtype, device=x.device) if need_dw else None
        db = torch.empty(c, dtype=param_dtype, device=x.device) if need_db else None
        coef = torch.empty(4, c, dtype=f32, device=x.device)
        coefficients((part, coef if weight is None else weight, mean, spread, coef if dw is None else dw,
                      coef if db is None else db, coef, splits, c, count, float(eps)), given_aligned)
        dx = None
        if affine is not None:
            dx = torch.empty_like(x)
            affine((x, dy, coef, dx, *view), given_aligned)
        return dx, dw, db

    return run


_backward_plans = Plans(_backward_plan)


def _planned_backward(view: ChannelView, dy_dtype: torch.dtype, x_dtype: torch.dtype, weight, mean, spread,
                      training: bool, invstd_given: bool, need_dx: bool, need_dw: bool, need_db: bool,
                      param_dtype: torch.dtype):
    """The kept ``_backward_plan`` for these arguments (the key ``backward`` and the ATen forms share)."""
    key = (view, dy_dtype, x_dtype, dtype_of(weight), mean.dtype, spread.dtype, training, invstd_given, need_dx,
           need_dw, need_db, param_dtype)
    return _backward_plans.get(key) or _backward_plans.add(key, *key)


def backward(dy: torch.Tensor, x: torch.Tensor, view: ChannelView, weight, mean, spread, training: bool,
             invstd_given: bool, eps: float, need_dx: bool, need_dw: bool, need_db: bool, param_dtype: torch.dtype):
    """(dx, dw, db) of batch norm; ``dy`` has ``x``'s strides. ``mean`` and ``spread`` are the statistics
    the input was normalised with: ``spread`` the inverse std with ``invstd_given``, else the variance."""
    plan = _planned_backward(view, dy.dtype, x.dtype, weight, mean, spread, training, invstd_given, need_dx, need_dw,
                             need_db, param_dtype)
    return plan(dy, x, weight, mean, spread, eps)


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


def _forward_op_plan(input, weight, bias, running_mean, running_var, training, save_in_eval):
    if not training and (running_mean is None or running_var is None):
        return TO_ATEN
    prepared = dense_view(input, weight, bias, running_mean, running_var)
    if prepared is None:
        return TO_ATEN
    x, view = prepared
    run = _planned_forward(view, input.dtype, weight, bias, running_mean, running_var, training, save_in_eval, view.c,
                           _saved_dtype(input, weight, bias, running_mean, running_var))
    if x is input:
        return run
    memory_format = input.suggest_memory_format()

    def dense(input, *args):
        return run(input.contiguous(memory_format=memory_format), *args)

    return dense


#: Plans of the ATen forms taking the classic argument list, by the signatures of their tensors and flags.
_forward_op_plans = Plans(_forward_op_plan)


def _forward_op(input, weight, bias, running_mean, running_var, training, momentum, eps,
                running_out=None, save_in_eval=ATEN_CUDA):
    """Forward for the ATen forms taking the classic argument list; None when ATen must handle the call."""
    key = (signature(input), signature(weight), signature(bias), signature(running_mean), signature(running_var),
           training, save_in_eval)
    plan = (_forward_op_plans.get(key)
            or _forward_op_plans.add(key, input, weight, bias, running_mean, running_var, training, save_in_eval))
    if plan is TO_ATEN:
        return None
    return plan(input, weight, bias, running_mean, running_var, running_out, momentum, eps)


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


def _backward_op_plan(grad_out, input, weight, running_mean, running_var, save_mean, save_invstd, train,
                      need_dx, need_dw, need_db):
    prepared = dense_view(input, weight, None, running_mean, running_var)
    if prepared is None or grad_out.shape != input.shape or grad_out.dtype != input.dtype:
        return TO_ATEN
    x, view = prepared
    c = view.c
    # CPU's eval backward reads the running statistics; CUDA's reads saved ones whenever they are given.
    use_saved_mean = train or (ATEN_CUDA and save_mean is not None and save_mean.numel() != 0)
    use_saved_invstd = train or (ATEN_CUDA and save_invstd is not None and save_invstd.numel() != 0)
    mean = save_mean if use_saved_mean else running_mean
    spread = save_invstd if use_saved_invstd else running_var
    if any(t is None or not _vector_ok(t, c, input.device) for t in (mean, spread)):
        return TO_ATEN
    if not (need_dx or need_dw or need_db):
        return no_grads
    run = _planned_backward(view, grad_out.dtype, x.dtype, weight, mean, spread, train, use_saved_invstd, need_dx,
                            need_dw, need_db, input.dtype if weight is None else weight.dtype)
    memory_format = None if x is input else input.suggest_memory_format()
    copy_dy = grad_out.stride() != x.stride()

    def call(grad_out, input, weight, running_mean, running_var, save_mean, save_invstd, eps):
        x = input if memory_format is None else input.contiguous(memory_format=memory_format)
        if copy_dy:
            grad_out = torch.empty_like(x).copy_(grad_out)
        return run(grad_out, x, weight, save_mean if use_saved_mean else running_mean,
                   save_invstd if use_saved_invstd else running_var, eps)

    return call


#: Plans of every ATen backward form, by the signatures of their tensors and flags.
_backward_op_plans = Plans(_backward_op_plan)


def _backward_op(grad_out, input, weight, running_mean, running_var, save_mean, save_invstd, train, eps,
                 output_mask):
    """Backward for every ATen form; None when ATen must handle the call."""
    need_dx, need_dw, need_db = output_mask
    key = (signature(grad_out), signature(input), signature(weight), signature(running_mean),
           signature(running_var), signature(save_mean), signature(save_invstd), train, need_dx, need_dw, need_db)
    plan = (_backward_op_plans.get(key)
            or _backward_op_plans.add(key, grad_out, input, weight, running_mean, running_var, save_mean,
                                      save_invstd, train, need_dx, need_dw, need_db))
    if plan is TO_ATEN:
        return None
    return plan(grad_out, input, weight, running_mean, running_var, save_mean, save_invstd, eps)


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
