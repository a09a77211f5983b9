"""Vector norms (linalg_vector_norm, norm), dist and logsumexp: reductions with a transform of each
element and of the result."""

from __future__ import annotations

import math

import torch

from flag_gems import aten_kernel
from gems_reduction import layout as lay
from gems_reduction.reduce import (
    ABS,
    ABS_POW,
    EXP_SHIFTED,
    LOG_SHIFTED,
    MAX,
    MAX_OF,
    MIN,
    NONZERO,
    ROOT,
    SQRT_DIVIDE,
    SQUARE,
    SUM,
    Kind,
    acc_dtype,
    cached,
    deliver,
    plan,
    run,
)

_ORDERS = {0: Kind.of(SUM, NONZERO), 1: Kind.of(SUM, ABS), 2: Kind.of(SUM, SQUARE, SQRT_DIVIDE),
           math.inf: Kind.of(MAX, ABS), -math.inf: Kind.of(MIN, ABS)}
_ANY_ORDER = Kind.of(SUM, ABS_POW, ROOT)
LOGSUMEXP_OF = Kind.of(SUM, EXP_SHIFTED, LOG_SHIFTED)


def vector_norm(x, ord=2, dim=None, keepdim=False, *, dtype=None, out=None, y=None):
    """linalg_vector_norm / linalg_vector_norm.out: (sum |x|^ord)^(1/ord), with the 0, inf and -inf
    orders as counts and extrema. With ``y`` (laid out like ``x``) it is the norm of ``x - y``."""
    out_dtype = dtype if dtype is not None else x.dtype
    dims = lay.wrap_dims(dim, x.dim())
    if (dims is None or x.numel() == 0 or x.dtype not in lay.FLOATING or out_dtype not in lay.FLOATING
            or (out is not None and out.dtype != out_dtype) or isinstance(ord, complex)):
        return NotImplemented
    order = float(ord)
    spec = _ORDERS.get(order, _ANY_ORDER)
    if y is not None:
        spec = spec._replace(diff=True)
    return run(x, dims, spec, out_dtype, keepdim=keepdim, cast=out_dtype, p=order, y=y, out=out)[0]


def norm(x, p=2, dim=None, keepdim=False, *, dtype=None, out=None):
    """norm.Scalar / norm.ScalarOpt_dim / norm.ScalarOpt_dim_dtype / norm.ScalarOpt_dtype and their
    out forms: the vector norm of order ``p`` (2 when None)."""
    return vector_norm(x, 2 if p is None else p, dim, keepdim, dtype=dtype, out=out)


def norm_all(x, p, *, dtype, out=None):
    """norm.ScalarOpt_dtype / norm.ScalarOpt_dtype_out: the norm of everything, in ``dtype``."""
    return norm(x, p, None, False, dtype=dtype, out=out)


def dist(x, other, p=2, *, out=None):
    """dist / dist.out: the ``p``-norm of ``x - other`` (broadcast)."""
    if not (x.is_floating_point() and other.is_floating_point()):
        return NotImplemented
    if x.shape == other.shape and x.stride() == other.stride() and x.dtype == other.dtype:
        return vector_norm(x, p, out=out, y=other)
    return vector_norm(aten_kernel("sub.Tensor")(x, other), p, out=out)


def _logsumexp_plans(x, dim, keepdim, option, out=None):
    """(plan of the maxima, plan of the shifted sums) or None."""
    dims = lay.wrap_dims(dim, x.dim())
    out_dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    if dims is None or x.dtype not in lay.KERNEL_DTYPES or (out is not None and out.dtype != out_dtype):
        return None
    peak = plan(x.shape, x.stride(), dims, MAX_OF, x.dtype, out_dtype, acc_dtype(out_dtype))
    return peak, plan(x.shape, x.stride(), dims, LOGSUMEXP_OF, x.dtype, out_dtype, out_dtype, True, keepdim)


def logsumexp(x, dim, keepdim=False, *, out=None):
    """logsumexp / logsumexp.out: max + log(sum(exp(x - max))), integers promoted to the default
    float dtype."""
    if out is None and x.is_floating_point():
        plans = cached(_logsumexp_plans, x, dim, keepdim)
    else:  # integers: the result dtype follows the default dtype, which may change between calls
        plans = _logsumexp_plans(x, dim, keepdim, None, out)
    if plans is None:
        return NotImplemented
    peak, total = plans
    return deliver(total, x, out, shift=peak(x)[0])[0]
