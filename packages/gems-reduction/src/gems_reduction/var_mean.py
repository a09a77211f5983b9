"""var, std, var_mean and std_mean (``correction`` overloads), in one pass over the input.

The reduce skeleton's MOMENTS op keeps a running (mean, sum of squared deviations) per lane by
Welford's rule and merges the lanes (and the partial results of a split range) by Chan's: no
cancellation of large sums, so values far from zero (1e4 + noise) keep their precision, and the
input is read once.
"""

from __future__ import annotations

import warnings

from gems_reduction import layout as lay
from gems_reduction.reduce import DIVIDE, MOMENTS, SQRT_DIVIDE, Kind, cached, deliver, plan, reduced_count

VAR_OF = Kind.of(MOMENTS, post=DIVIDE)
STD_OF = Kind.of(MOMENTS, post=SQRT_DIVIDE)


def _moments_plan(x, dim, keepdim, option, out=None):
    """(plan, whether the call warns) or None."""
    kind, correction = option
    dims = lay.wrap_dims(dim, x.dim())
    if dims is None or x.dtype not in lay.FLOATING:
        return None
    count = reduced_count(x.shape, dims)
    spread = max(0.0, count - (1.0 if correction is None else float(correction)))
    return plan(x.shape, x.stride(), dims, kind, x.dtype, x.dtype, x.dtype, False, keepdim, d=spread), spread == 0


def _moments(kind, x, dim, correction, keepdim, out, out_mean=None, with_mean=False):
    """(var or std, mean or None) or NotImplemented."""
    if with_mean:
        kind = kind._replace(index=1)
    if out is None and out_mean is None:
        found = cached(_moments_plan, x, dim, keepdim, (kind, correction))
    else:
        if out is not None and out.dtype != x.dtype or out_mean is not None and out_mean.dtype != x.dtype:
            return NotImplemented
        found = _moments_plan(x, dim, keepdim, (kind, correction))
    if found is None:
        return NotImplemented
    pl, degenerate = found
    if degenerate:
        warnings.warn("var(): degrees of freedom is <= 0. Correction should be strictly less than the reduction "
                      "factor (input numel divided by output numel).", UserWarning, stacklevel=4)
    return deliver(pl, x, out, out_mean)


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
    return _moments(kind, x, dim, correction, keepdim, out0, out1, with_mean=True)


def var_mean(x, dim=None, *, correction=None, keepdim=False, out0=None, out1=None):
    """var_mean.correction / var_mean.correction_out: (var, mean)."""
    return _with_mean(VAR_OF, x, dim, correction, keepdim, out0, out1)


def std_mean(x, dim=None, *, correction=None, keepdim=False, out0=None, out1=None):
    """std_mean.correction / std_mean.correction_out: (std, mean)."""
    return _with_mean(STD_OF, x, dim, correction, keepdim, out0, out1)
