"""Reductions that report where: argmax, argmin, and max/min along a dim with their indices.

They run on the reduce skeleton with positions carried next to the values: the first position of
the extremum wins, and NaN beats every number (so the first NaN is reported), as in ATen.
"""

from __future__ import annotations

import torch

from gems_reduction import layout as lay
from gems_reduction.reduce import MAX, MIN, Kind, cached, deliver, plan

ARGMAX_OF = Kind.of(MAX, index=1)
ARGMIN_OF = Kind.of(MIN, index=1)


def _dims(x, dim):
    dims = lay.wrap_dims(dim, x.dim())
    if dims is None or x.dtype not in lay.KERNEL_DTYPES or any(x.shape[d] == 0 for d in dims):
        return None  # ATen raises for an empty reduced dim
    if dim is None and x.numel() == 0:
        return None
    return dims


def _arg_plan(x, dim, keepdim, kind, out=None):
    dims = _dims(x, dim)
    if dims is None or x.dtype == torch.bool or (out is not None and out.dtype != torch.int64):
        return None
    # Over everything with keepdim, every dim becomes 1: the plan's output shape.
    return plan(x.shape, x.stride(), dims, kind, x.dtype, x.dtype, x.dtype, False, keepdim)


def _arg(kind, x, dim, keepdim, out):
    if out is None:
        pl = cached(_arg_plan, x, dim, keepdim, kind)
        return NotImplemented if pl is None else pl.second_results(x)
    pl = _arg_plan(x, dim, keepdim, kind, out)
    return NotImplemented if pl is None else deliver(pl, x, None, out)[1]


def argmax(x, dim=None, keepdim=False, *, out=None):
    """argmax / argmax.out."""
    return _arg(ARGMAX_OF, x, dim, keepdim, out)


def argmin(x, dim=None, keepdim=False, *, out=None):
    """argmin / argmin.out."""
    return _arg(ARGMIN_OF, x, dim, keepdim, out)


def _with_plan(x, dim, keepdim, kind, out=None):
    dims = _dims(x, [dim])
    if dims is None:
        return None
    return plan(x.shape, x.stride(), dims, kind, x.dtype, x.dtype, x.dtype, False, keepdim)


def _with_indices(kind, x, dim, keepdim, values, indices):
    if values is None and indices is None:
        pl = cached(_with_plan, x, dim, keepdim, kind)
        return NotImplemented if pl is None else pl(x)
    if (values is None) != (indices is None) or values.dtype != x.dtype or indices.dtype != torch.int64:
        return NotImplemented
    pl = _with_plan(x, dim, keepdim, kind)
    return NotImplemented if pl is None else deliver(pl, x, values, indices)


def max_dim(x, dim, keepdim=False, *, max=None, max_values=None):
    """max.dim / max.dim_max: (values, indices) along ``dim``."""
    return _with_indices(ARGMAX_OF, x, dim, keepdim, max, max_values)


def min_dim(x, dim, keepdim=False, *, min=None, min_indices=None):
    """min.dim / min.dim_min: (values, indices) along ``dim``."""
    return _with_indices(ARGMIN_OF, x, dim, keepdim, min, min_indices)
