"""Reductions, scans, the softmax family, losses and selection (gems-reduction) against ATen.

The ops of issue 4's targets come first, on bf16 (8192, 8192) and (512, 131072) over the last dim
and over dim 0 (plus fp32 on the square shape): sum, mean, amax, argmax, softmax, log_softmax;
cross-entropy on (8192, 32000) and (4096, 128256); softmax backward; cumsum. The rest run once on a
realistic shape. All are memory-bound: bytes are the input read once and the output written once
(``nll_loss`` reads one value per row).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmark.harness import (
    BF16,
    FP32,
    Case,
    addressed_bytes,
    mask,
    normal_inputs,
    randint,
    randn,
    same_selected_values,
    uniform,
)

FAMILY = "reduction"

SQUARE = (8192, 8192)
WIDE = (512, 131072)
SMALL = ((1, 4096), (64, 4096))
QUICK = (8, 96)
aten = torch.ops.aten


def _last(shape):
    return shape[-1]


def _first(shape):
    return shape[0]


def _all(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def _case(name, fn, make, aten_names, tier=1, dtypes=(BF16, FP32), shapes=None, small=SMALL, quick=QUICK,
          **kw) -> Case:
    """Tier 1: both issue shapes in bf16, the square one in fp32 too, two small sizes. Tier 2: the
    first dtype on the first shape and one small size."""
    if shapes is None:
        shapes = (SQUARE, WIDE) if tier == 1 else (SQUARE,)
    if tier != 1:
        dtypes, small = dtypes[:1], small[:1]
    return Case(name, fn, make, shapes=shapes, small=small, quick=quick, dtypes=dtypes, aten=aten_names, **kw)


x_normal, xy_normal = normal_inputs(1), normal_inputs(2)


def x_near_one(shape, dtype):
    """Values near 1, so that long products neither vanish nor overflow."""
    return (uniform(shape, low=0.999, high=1.001, dtype=dtype),)


def with_nans(shape, dtype):
    x = randn(shape, dtype=dtype)
    x[mask(shape, p=0.05)] = float("nan")
    return (x,)


def with_zeros(shape, dtype):
    return (randn(shape, dtype=dtype) * mask(shape, p=0.7),)


def bools(shape, dtype):
    return (mask(shape, p=0.999),)


def small_ints(shape, dtype):
    """Values with many repeats (mode)."""
    return (randint(shape, low=0, high=50).to(dtype),)


def logits_and_targets(shape, dtype, requires_grad=False):
    rows, classes = shape
    return randn(rows, classes, dtype=dtype, requires_grad=requires_grad), randint(rows, low=0, high=classes)


def log_probs_and_targets(shape, dtype):
    rows, classes = shape
    return torch.log_softmax(randn(rows, classes), dim=-1).to(dtype), randint(rows, low=0, high=classes)


def softmax_grad_args(log: bool):
    def make(shape, dtype):
        x = randn(shape)
        out = torch.log_softmax(x, dim=-1) if log else torch.softmax(x, dim=-1)
        return randn(shape, dtype=dtype), out.to(dtype)
    return make


def nll_loss_backward_args(shape, dtype):
    logp, target = log_probs_and_targets(shape, dtype)
    total_weight = torch.tensor(float(shape[0]), device=logp.device, dtype=dtype)
    return randn((), dtype=dtype), logp, target, total_weight


def cross_entropy_grad(x, target):
    return torch.autograd.grad(F.cross_entropy(x, target), x)


def nll_bytes(args, out):
    # Reads the target and one log-probability per row.
    logp, target = args[0], args[1]
    return addressed_bytes(target) + target.numel() * logp.element_size() + addressed_bytes(out)


def _has(name: str) -> bool:
    base, _, overload = name.partition(".")
    return hasattr(aten, base) and (not overload or hasattr(getattr(aten, base), overload))


# F.cross_entropy reaches these (a family may serve the composite on the Autograd key).
CROSS_ENTROPY_OPS = ["cross_entropy_loss", "_log_softmax", "nll_loss_forward", "nll_loss_nd", "nll_loss"]
CE_SHAPES = ((8192, 32000), (4096, 128256))
CE_SMALL = ((1, 32000), (16, 128256))
idx_last, idx0 = same_selected_values(-1, values=False), same_selected_values(0, values=False)
vals_idx_last = same_selected_values(-1)

CASES = [
    # Issue 4's targets: last dim and dim 0, both shapes.
    _case("sum_last", lambda x: torch.sum(x, dim=-1), x_normal, ["sum"], reduce_dim=_last),
    _case("sum_dim0", lambda x: torch.sum(x, dim=0), x_normal, ["sum"], reduce_dim=_first),
    _case("mean_last", lambda x: torch.mean(x, dim=-1), x_normal, ["mean"], reduce_dim=_last),
    _case("mean_dim0", lambda x: torch.mean(x, dim=0), x_normal, ["mean"], reduce_dim=_first),
    _case("amax_last", lambda x: torch.amax(x, dim=-1), x_normal, ["amax"]),
    _case("amax_dim0", lambda x: torch.amax(x, dim=0), x_normal, ["amax"]),
    _case("argmax_last", lambda x: torch.argmax(x, dim=-1), x_normal, ["argmax"], check=idx_last),
    _case("argmax_dim0", lambda x: torch.argmax(x, dim=0), x_normal, ["argmax"], check=idx0),
    _case("softmax_last", lambda x: torch.softmax(x, dim=-1), x_normal, ["_softmax"]),
    _case("softmax_dim0", lambda x: torch.softmax(x, dim=0), x_normal, ["_softmax"]),
    _case("log_softmax_last", lambda x: torch.log_softmax(x, dim=-1), x_normal, ["_log_softmax"]),
    _case("log_softmax_dim0", lambda x: torch.log_softmax(x, dim=0), x_normal, ["_log_softmax"]),
    _case("cross_entropy", F.cross_entropy, logits_and_targets, CROSS_ENTROPY_OPS,
          shapes=CE_SHAPES, small=CE_SMALL, reduce_dim=_first),
    Case("cross_entropy_loss", F.cross_entropy, logits_and_targets, shapes=CE_SHAPES, small=CE_SMALL,
         quick=QUICK, dtypes=(BF16, FP32), gems="cross_entropy_loss", reduce_dim=_first),
    _case("cross_entropy_fwd_bwd", cross_entropy_grad, lambda s, d: logits_and_targets(s, d, requires_grad=True),
          CROSS_ENTROPY_OPS + ["_log_softmax_backward_data", "nll_loss_backward"],
          shapes=CE_SHAPES[:1], small=CE_SMALL[:1]),
    _case("softmax_backward", lambda g, y: aten._softmax_backward_data(g, y, -1, g.dtype), softmax_grad_args(False),
          ["_softmax_backward_data"], shapes=(SQUARE,)),
    _case("log_softmax_backward", lambda g, y: aten._log_softmax_backward_data(g, y, -1, g.dtype),
          softmax_grad_args(True), ["_log_softmax_backward_data"], shapes=(SQUARE,), reduce_dim=_last),
    _case("cumsum", lambda x: torch.cumsum(x, dim=-1), x_normal, ["cumsum"], dtypes=(FP32, BF16),
          shapes=((4096, 8192), WIDE), reduce_dim=_last),
    _case("cumsum_dim0", lambda x: torch.cumsum(x, dim=0), x_normal, ["cumsum"], tier=2, dtypes=(FP32,),
          shapes=((4096, 8192),), reduce_dim=_first),
    _case("sum_all", torch.sum, x_normal, ["sum"], tier=2, reduce_dim=_all, dtypes=(BF16, FP32)),
    # Other reductions.
    _case("nansum", lambda x: torch.nansum(x, dim=-1), with_nans, ["nansum"], tier=2, reduce_dim=_last),
    _case("prod", lambda x: torch.prod(x, dim=-1), x_near_one, ["prod"], tier=2, dtypes=(FP32,),
          reduce_dim=_last),
    _case("amin", lambda x: torch.amin(x, dim=-1), x_normal, ["amin"], tier=2),
    _case("argmin", lambda x: torch.argmin(x, dim=-1), x_normal, ["argmin"], tier=2, check=idx_last),
    _case("aminmax", lambda x: torch.aminmax(x, dim=-1), x_normal, ["aminmax"], tier=2),
    _case("max_dim", lambda x: torch.max(x, dim=-1), x_normal, ["max"], tier=2, check=vals_idx_last),
    _case("min_dim", lambda x: torch.min(x, dim=-1), x_normal, ["min"], tier=2, check=vals_idx_last),
    _case("max_all", torch.max, x_normal, ["max"], tier=2),
    _case("min_all", torch.min, x_normal, ["min"], tier=2),
    _case("all", lambda x: torch.all(x, dim=-1), bools, ["all"], tier=2, dtypes=(torch.bool,)),
    _case("any", lambda x: torch.any(x, dim=-1), lambda s, d: (mask(s, p=0.001),), ["any"], tier=2,
          dtypes=(torch.bool,)),
    _case("count_nonzero", lambda x: torch.count_nonzero(x, dim=-1), with_zeros, ["count_nonzero"],
          tier=2),
    _case("var", lambda x: torch.var(x, dim=-1), x_normal, ["var"], tier=2, dtypes=(FP32, BF16),
          reduce_dim=_last),
    _case("std", lambda x: torch.std(x, dim=-1), x_normal, ["std"], tier=2, dtypes=(FP32, BF16),
          reduce_dim=_last),
    _case("var_mean", lambda x: torch.var_mean(x, dim=-1), x_normal, ["var_mean"], tier=2,
          dtypes=(FP32, BF16), reduce_dim=_last),
    _case("std_mean", lambda x: torch.std_mean(x, dim=-1), x_normal, ["std_mean"], tier=2,
          dtypes=(FP32, BF16), reduce_dim=_last),
    _case("vector_norm", lambda x: torch.linalg.vector_norm(x, 2, dim=-1), x_normal, ["linalg_vector_norm"],
          tier=2, reduce_dim=_last),
    _case("vector_norm_inf", lambda x: torch.linalg.vector_norm(x, float("inf"), dim=-1), x_normal,
          ["linalg_vector_norm"], tier=2),
    _case("norm", lambda x: torch.norm(x, 2, dim=-1), x_normal, ["norm", "linalg_vector_norm"], tier=2,
          reduce_dim=_last),
    _case("logsumexp", lambda x: torch.logsumexp(x, dim=-1), x_normal, ["logsumexp"], tier=2,
          shapes=((8192, 32000),), reduce_dim=_last),
    _case("dist", torch.dist, xy_normal, ["dist"], tier=2, dtypes=(FP32,), reduce_dim=_all),
    # Scans.
    _case("cumprod", lambda x: torch.cumprod(x, dim=-1), x_near_one, ["cumprod"], tier=2, dtypes=(FP32,),
          shapes=((4096, 8192),), reduce_dim=_last),
    _case("cummax", lambda x: torch.cummax(x, dim=-1), x_normal, ["cummax"], tier=2, dtypes=(FP32,),
          shapes=((4096, 8192),), check=vals_idx_last),
    _case("cummin", lambda x: torch.cummin(x, dim=-1), x_normal, ["cummin"], tier=2, dtypes=(FP32,),
          shapes=((4096, 8192),), check=vals_idx_last),
    _case("logcumsumexp", lambda x: torch.logcumsumexp(x, dim=-1), x_normal, ["logcumsumexp"], tier=2,
          dtypes=(FP32,), shapes=((4096, 8192),), reduce_dim=_last),
    # Losses.
    _case("nll_loss", F.nll_loss, log_probs_and_targets, ["nll_loss_forward"], tier=2, dtypes=(FP32,),
          shapes=((8192, 32000),), bytes=nll_bytes, reduce_dim=_first),
    _case("nll_loss_backward",
          lambda g, logp, t, w: aten.nll_loss_backward(g, logp, t, None, 1, -100, w),
          nll_loss_backward_args, ["nll_loss_backward"], tier=2, dtypes=(FP32,), shapes=((8192, 32000),)),
    _case("mse_loss", F.mse_loss, xy_normal, ["mse_loss"], tier=2, shapes=((16384, 4096),), reduce_dim=_all),
    _case("mse_loss_backward", lambda g, x, y: aten.mse_loss_backward(g, x, y, 1),
          lambda s, d: (randn((), dtype=d), randn(s, dtype=d), randn(s, dtype=d)), ["mse_loss_backward"], tier=2,
          shapes=((16384, 4096),)),
    # Selection.
    _case("topk", lambda x: torch.topk(x, 50, dim=-1), x_normal, ["topk"], tier=2,
          shapes=((64, 128256),), small=((1, 128256),), check=vals_idx_last),
    _case("topk_moe_routing", lambda x: torch.topk(x, 8, dim=-1), x_normal, ["topk"], tier=2,
          shapes=((16384, 64),), small=((16, 64),), check=vals_idx_last),
    _case("sort", lambda x: torch.sort(x, dim=-1), x_normal, ["sort"], tier=2, shapes=((4096, 4096),),
          check=vals_idx_last),
    _case("sort_stable", lambda x: torch.sort(x, dim=-1, stable=True), x_normal, ["sort"], tier=2,
          dtypes=(FP32,), shapes=((4096, 4096),), check=vals_idx_last),
    _case("kthvalue", lambda x: torch.kthvalue(x, x.shape[-1] // 2, dim=-1), x_normal, ["kthvalue"], tier=2,
          dtypes=(FP32,), shapes=((4096, 4096),), check=vals_idx_last),
    _case("median_dim", lambda x: torch.median(x, dim=-1), x_normal, ["median"], tier=2, dtypes=(FP32,),
          shapes=((4096, 4096),), check=vals_idx_last),
    _case("median_all", torch.median, x_normal, ["median"], tier=2, dtypes=(FP32,), shapes=((4096, 4096),)),
    _case("mode", lambda x: torch.mode(x, dim=-1), small_ints, ["mode"], tier=2, dtypes=(FP32,),
          shapes=((1024, 4096),), check=vals_idx_last),
]
if _has("_safe_softmax"):
    CASES.append(_case("_safe_softmax", lambda x: aten._safe_softmax(x, -1), x_normal, ["_safe_softmax"], tier=2))


def test_reduction_perf(point, bench):
    bench.run(point)
