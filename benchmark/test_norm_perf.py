"""Normalisation layers (gems-norm) against ATen: forward, backward and the fused public functions.

LLM rows (8192 tokens x hidden 4096) and ViT rows (32 images x 197 tokens x 768) for layer_norm and
rms_norm; ResNet and diffusion activations for group_norm and batch_norm. Bytes are each input read
once and each output written once; backward cases read the saved statistics that ATen's forward
returned.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmark.harness import BF16, FLOATS, FP16, FP32, Case, fused_call, randn, uniform

FAMILY = "norm"

ROWS = ((8192, 4096), (32 * 197, 768))
IMAGES = ((32, 256, 56, 56), (8, 512, 64, 64))
SMALL_ROWS = ((1, 4096), (64, 4096))
SMALL_IMAGES = ((2, 64, 16, 16),)
QUICK_ROWS = (8, 64)
QUICK_IMAGES = (2, 32, 3, 3)
EPS = 1e-5
aten = torch.ops.aten


def _rows_case(name, fn, make, aten_names, dtypes=FLOATS, shapes=ROWS, small=SMALL_ROWS, **kw) -> Case:
    return Case(name, fn, make, shapes=shapes, small=small, quick=QUICK_ROWS, dtypes=dtypes, aten=aten_names,
                **kw)


def _image_case(name, fn, make, aten_names, dtypes=(FP16, BF16, FP32), shapes=IMAGES, **kw) -> Case:
    return Case(name, fn, make, shapes=shapes, small=SMALL_IMAGES, quick=QUICK_IMAGES, dtypes=dtypes,
                aten=aten_names, **kw)


def _rows(shape):
    return shape[0]


# Rows: layer_norm and rms_norm -----------------------------------------------------------------------

def ln_args(shape, dtype):
    n = shape[-1]
    return randn(shape, dtype=dtype), randn(n, dtype=dtype), randn(n, dtype=dtype)


def layer_norm(x, w, b):
    return F.layer_norm(x, (x.shape[-1],), w, b, EPS)


def ln_backward_args(shape, dtype):
    x, w, b = ln_args(shape, dtype)
    _, mean, rstd = aten.native_layer_norm(x, [shape[-1]], w, b, EPS)
    return randn(shape, dtype=dtype), x, mean, rstd, w, b


def ln_backward(gy, x, mean, rstd, w, b):
    return aten.native_layer_norm_backward(gy, x, [x.shape[-1]], mean, rstd, w, b, [True, True, True])


def ln_grad_args(shape, dtype):
    x, w, b = ln_args(shape, dtype)
    return x.requires_grad_(), w.requires_grad_(), b.requires_grad_(), randn(shape, dtype=dtype)


def layer_norm_grads(x, w, b, gy):
    return torch.autograd.grad(layer_norm(x, w, b), (x, w, b), gy)


def rms_args(shape, dtype):
    return randn(shape, dtype=dtype), (shape[-1],), uniform(shape[-1], low=0.5, high=1.5, dtype=dtype), 1e-6


def rms_norm_fp32(x, normalized_shape, w, eps):
    """rms_norm computed in float32 and rounded once: the fair reference for a fused kernel."""
    return F.rms_norm(x.float(), normalized_shape, w.float(), eps).to(x.dtype)


def add_rms_args(shape, dtype):
    x, ns, w, eps = rms_args(shape, dtype)
    return x, randn(shape, dtype=dtype), ns, w, eps


def add_rms_norm(x, residual, normalized_shape, w, eps):
    h = x + residual
    return F.rms_norm(h, normalized_shape, w, eps), h


def add_rms_norm_reference(x, residual, normalized_shape, w, eps):
    h = x.float() + residual.float()
    return F.rms_norm(h, normalized_shape, w.float(), eps).to(x.dtype), h.to(x.dtype)


def rms_grad_args(shape, dtype):
    x, ns, w, eps = rms_args(shape, dtype)
    return x.requires_grad_(), w.requires_grad_(), randn(shape, dtype=dtype)


def rms_norm_grads(x, w, gy):
    return torch.autograd.grad(F.rms_norm(x, (x.shape[-1],), w, 1e-6), (x, w), gy)


def skip_ln_args(shape, dtype):
    x, w, b = ln_args(shape, dtype)
    return x, randn(shape, dtype=dtype), (shape[-1],), w, b, EPS


def skip_layer_norm(x, residual, normalized_shape, w, b, eps):
    return F.layer_norm(x + residual, normalized_shape, w, b, eps)


def first_output(res):
    return res[0] if isinstance(res, (tuple, list)) else res


# Images: group_norm, batch_norm, instance_norm ------------------------------------------------------

def gn_args(shape, dtype):
    c = shape[1]
    return randn(shape, dtype=dtype), randn(c, dtype=dtype), randn(c, dtype=dtype)


def group_norm(x, w, b):
    return F.group_norm(x, 32, w, b, EPS)


def gn_backward_args(shape, dtype):
    x, w, b = gn_args(shape, dtype)
    n, c = shape[:2]
    hw = x[0, 0].numel()
    _, mean, rstd = aten.native_group_norm(x, w, b, n, c, hw, 32, EPS)
    return randn(shape, dtype=dtype), x, mean, rstd, w


def gn_backward(gy, x, mean, rstd, w):
    n, c = x.shape[:2]
    return aten.native_group_norm_backward(gy, x, mean, rstd, w, n, c, x[0, 0].numel(), 32, [True, True, True])


def bn_args(shape, dtype):
    """x, running mean and variance, weight and bias, all of x's dtype (a model cast to that dtype)."""
    c = shape[1]
    return (randn(shape, dtype=dtype), randn(c, dtype=dtype), uniform(c, low=0.5, high=2.0, dtype=dtype),
            randn(c, dtype=dtype), randn(c, dtype=dtype))


def batch_norm_train(x, running_mean, running_var, w, b):
    return F.batch_norm(x, running_mean, running_var, w, b, training=True, momentum=0.1, eps=EPS)


def batch_norm_eval(x, running_mean, running_var, w, b):
    return F.batch_norm(x, running_mean, running_var, w, b, training=False, eps=EPS)


def bn_backward_args(shape, dtype):
    x, rm, rv, w, b = bn_args(shape, dtype)
    _, save_mean, save_invstd = aten.native_batch_norm(x, w, b, rm.clone(), rv.clone(), True, 0.1, EPS)
    return randn(shape, dtype=dtype), x, w, rm, rv, save_mean, save_invstd


def bn_backward(gy, x, w, rm, rv, save_mean, save_invstd):
    return aten.native_batch_norm_backward(gy, x, w, rm, rv, save_mean, save_invstd, True, EPS, [True, True, True])


def instance_norm(x, w, b):
    return F.instance_norm(x, weight=w, bias=b, eps=EPS)


def weight_norm_args(shape, dtype):
    return randn(shape, dtype=dtype), uniform(shape[0], 1, low=0.5, high=2.0, dtype=dtype)


BATCH_NORM_OPS = ["native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
                  "_batch_norm_with_update", "_batch_norm_no_update", "cudnn_batch_norm"]

CASES = [
    _rows_case("layer_norm", layer_norm, ln_args, ["layer_norm", "native_layer_norm"]),
    _rows_case("rms_norm", lambda x, ns, w, eps: F.rms_norm(x, ns, w, eps), rms_args, ["rms_norm", "_fused_rms_norm"],
               reference=rms_norm_fp32),
    _rows_case("layer_norm_backward", ln_backward, ln_backward_args, ["native_layer_norm_backward"],
               dtypes=(BF16, FP32), shapes=ROWS[:1], reduce_dim=_rows),
    _rows_case("rms_norm_fwd_bwd", rms_norm_grads, rms_grad_args, ["rms_norm", "_fused_rms_norm"],
               dtypes=(BF16, FP32), shapes=ROWS[:1], reduce_dim=_rows),
    _rows_case("layer_norm_fwd_bwd", layer_norm_grads, ln_grad_args,
               ["native_layer_norm", "native_layer_norm_backward"], dtypes=(BF16,), shapes=ROWS[:1],
               reduce_dim=_rows),
    _image_case("group_norm", group_norm, gn_args, ["native_group_norm"]),
    _image_case("group_norm_backward", gn_backward, gn_backward_args, ["native_group_norm_backward"],
                dtypes=(FP16, FP32), shapes=IMAGES[:1], reduce_dim=lambda s: s[0] * s[2] * s[3]),
    _image_case("batch_norm_train", batch_norm_train, bn_args, BATCH_NORM_OPS, dtypes=(FP32, BF16), inplace=True),
    _image_case("batch_norm_eval", batch_norm_eval, bn_args, BATCH_NORM_OPS, dtypes=(FP32, BF16)),
    _image_case("batch_norm_backward", bn_backward, bn_backward_args, ["native_batch_norm_backward"],
                dtypes=(FP32,), shapes=IMAGES[:1], reduce_dim=lambda s: s[0] * s[2] * s[3]),
    _image_case("instance_norm", instance_norm, gn_args, ["instance_norm", *BATCH_NORM_OPS], dtypes=(FP16, FP32),
                shapes=IMAGES[:1]),
    _rows_case("weight_norm", lambda v, g: torch._weight_norm(v, g, 0), weight_norm_args,
               ["_weight_norm_interface"], dtypes=(BF16, FP32), shapes=((4096, 4096), (14336, 4096))),
    # Fused public functions.
    _rows_case("rms_norm_fused", lambda x, ns, w, eps: F.rms_norm(x, ns, w, eps), rms_args, [], gems="rms_norm",
               reference=rms_norm_fp32),
    _rows_case("fused_add_rms_norm", add_rms_norm, add_rms_args, [], gems="fused_add_rms_norm",
               reference=add_rms_norm_reference, inplace=True, dtypes=(BF16, FP16)),
    _rows_case("skip_layer_norm", skip_layer_norm, skip_ln_args, [], gems="skip_layer_norm",
               gems_output=first_output, dtypes=(BF16, FP16)),
    _image_case("instance_norm_fused", instance_norm, gn_args, [],
                gems=fused_call("instance_norm", lambda fused, x, w, b: fused(x, weight=w, bias=b, eps=EPS)),
                dtypes=(FP16,), shapes=IMAGES[:1]),
    _rows_case("weight_norm_fused", lambda v, g: torch._weight_norm(v, g, 0), weight_norm_args, [],
               gems=fused_call("weight_norm", lambda fused, v, g: fused(v, g, 0)), dtypes=(BF16,),
               shapes=((4096, 4096),)),
]


def test_norm_perf(point, bench):
    bench.run(point)
