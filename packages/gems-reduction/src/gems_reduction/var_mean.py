"""var, std, var_mean and std_mean (``correction`` overloads), in two passes over the input.

The first pass is the mean, the second the sum of squared deviations from it: as accurate as the
data allow (no cancellation of large sums), for the price of reading the input twice.
"""

from __future__ import annotations

import warnings

from gems_reduction import layout as lay
from gems_reduction.reduce import (
    DIVIDE,
    MEAN_OF,
    SQRT_DIVIDE,
    SQUARED_DEVIATION,
    SUM,
    Kind,
    acc_dtype,
    reduced_count,
    run,
)

VAR_OF = Kind.of(SUM, SQUARED_DEVIATION, DIVIDE)
STD_OF = Kind.of(SUM, SQUARED_DEVIATION, SQRT_DIVIDE)


def _moments(kind, x, dim, correction, keepdim, out, out_mean=None):
    """(var or std, mean in the accumulation dtype) or NotImplemented."""
    dims = lay.wrap_dims(dim, x.dim())
    if dims is None or x.dtype not in lay.FLOATING:
        return NotImplemented
    if out is not None and out.dtype != x.dtype or out_mean is not None and out_mean.dtype != x.dtype:
        return NotImplemented
    count = reduced_count(x.shape, dims)
    acc = acc_dtype(x.dtype)
    mean = run(x, dims, MEAN_OF, acc, d=float(count))[0]
    spread = max(0.0, count - (1.0 if correction is None else float(correction)))
    if spread == 0:
        warnings.warn("var(): degrees of freedom is <= 0. Correction should be strictly less than the reduction "
                      "factor (input numel divided by output numel).", UserWarning, stacklevel=4)
    result = run(x, dims, kind, x.dtype, keepdim=keepdim, shift=mean, d=spread, out=out)[0]
    return result, mean.reshape(lay.reduced_shape(x.shape, dims, keepdim))


def var(x, dim=None, *, correction=None, keepdim=False, out=None):
    """var.correction / var.correction_out."""
    result = _moments(VAR_OF, x, dim, correction, keepdim, out)
    return result if result is NotImplemented else result[0]


def std(x, dim=None, *, correction=None, keepdim=False, out=None):
    """std.correction / std.correction_out."""
    result = _moments(STD_OF, x, dim, correction, keepdim, out)
    return result if result is NotImplemented else result[0]


def _with_mean(kind, x, dim, correction, keepdim, out0, out1):
    if (out0 is None) != (out1 is None):
        return NotImplemented
    result = _moments(kind, x, dim, correction, keepdim, out0, out1)
    if result is NotImplemented:
        return result
    spread, mean = result
    return spread, lay.deliver(mean.to(x.dtype), out1)


def var_mean(x, dim=None, *, correction=None, keepdim=False, out0=None, out1=None):
    """var_mean.correction / var_mean.correction_out: (var, mean)."""
    return _with_mean(VAR_OF, x, dim, correction, keepdim, out0, out1)


def std_mean(x, dim=None, *, correction=None, keepdim=False, out0=None, out1=None):
    """std_mean.correction / std_mean.correction_out: (std, mean)."""
    return _with_mean(STD_OF, x, dim, correction, keepdim, out0, out1)
