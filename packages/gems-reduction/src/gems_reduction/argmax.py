"""Reductions that report where: argmax, argmin, and max/min along a dim with their indices.

They run on the reduce skeleton with positions carried next to the values: the first position of
the extremum wins, and NaN beats every number (so the first NaN is reported), as in ATen.
"""

from __future__ import annotations

import torch

from gems_reduction import layout as lay
from gems_reduction.reduce import MAX, MIN, Kind, run

ARGMAX_OF = Kind.of(MAX, index=1)
ARGMIN_OF = Kind.of(MIN, index=1)


def _dims(x, dim):
    dims = lay.wrap_dims(dim, x.dim())
    if dims is None or x.dtype not in lay.KERNEL_DTYPES or any(x.shape[d] == 0 for d in dims):
        return None  # ATen raises for an empty reduced dim
    if dim is None and x.numel() == 0:
        return None
    return dims


def _arg(kind, x, dim, keepdim, out):
    dims = _dims(x, dim)
    if dims is None or x.dtype == torch.bool or (out is not None and out.dtype != torch.int64):
        return NotImplemented
    if dim is None and keepdim:
        # Over everything with keepdim: every dim becomes 1.
        shape = (1,) * x.dim()
        positions = run(x, dims, kind, x.dtype)[1].reshape(shape)
        return lay.deliver(positions, out)
    dest = lay.new_output(out, lay.reduced_shape(x.shape, dims, keepdim), torch.int64, x)
    return lay.deliver(run(x, dims, kind, x.dtype, keepdim=keepdim, out_index=dest)[1], out)


def argmax(x, dim=None, keepdim=False, *, out=None):
    """argmax / argmax.out."""
    return _arg(ARGMAX_OF, x, dim, keepdim, out)


def argmin(x, dim=None, keepdim=False, *, out=None):
    """argmin / argmin.out."""
    return _arg(ARGMIN_OF, x, dim, keepdim, out)


def _with_indices(kind, x, dim, keepdim, values, indices):
    dims = _dims(x, [dim])
    if dims is None or (values is None) != (indices is None):
        return NotImplemented
    if values is not None and (values.dtype != x.dtype or indices.dtype != torch.int64):
        return NotImplemented
    return run(x, dims, kind, x.dtype, keepdim=keepdim, out=values, out_index=indices)


def max_dim(x, dim, keepdim=False, *, max=None, max_values=None):
    """max.dim / max.dim_max: (values, indices) along ``dim``."""
    return _with_indices(ARGMAX_OF, x, dim, keepdim, max, max_values)


def min_dim(x, dim, keepdim=False, *, min=None, min_indices=None):
    """min.dim / min.dim_min: (values, indices) along ``dim``."""
    return _with_indices(ARGMIN_OF, x, dim, keepdim, min, min_indices)
