"""How a reduction reads its input: checked dims, kept and reduced index spaces, outputs and ``out=``.

A reduction over ``dims`` of a strided tensor runs as a kernel over two index spaces: the kept
positions and the reduced positions, each made of at most two *groups* (runs of dims that merge into a
single stride because they are adjacent in memory). Kept groups stay in logical order, since the
output is written in that order; reduced groups may be reordered by stride when the reduction does
not care about order. A layout needing more groups is copied once into (kept, reduced) order, which
always fits. Everything here is computed once per (shape, strides, dims) and cached.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from flag_gems import launch as launches
from flag_gems.launch import Launcher, specialization
from flag_gems.runtime import device

INT32_MAX = 2**31 - 1

#: Tests set this to run the 64-bit index arithmetic on small tensors.
force_int64 = False

FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INTEGRAL = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
#: The dtypes our kernels load and store (complex and the unsigned 16-64 bit types go to ATen).
KERNEL_DTYPES = frozenset(FLOATING + INTEGRAL + (torch.bool,))


def wrap_dims(dims: Sequence[int] | None, ndim: int) -> tuple[int, ...] | None:
    """Sorted non-negative dims, all dims for ``None`` or ``[]``; None for an invalid list.

    A 0-d tensor accepts dim 0 and -1, as in ATen. Invalid lists (out of range, repeated) get None so
    that the caller hands the call to ATen, which raises its own error.
    """
    if dims is not None and not isinstance(dims, int):
        dims = tuple(dims)
    return _wrap_dims(dims, ndim)


@functools.lru_cache(maxsize=1024)
def _wrap_dims(dims, ndim: int) -> tuple[int, ...] | None:
    rank = max(ndim, 1)
    if dims is None or dims == ():
        return tuple(range(ndim))
    if isinstance(dims, int):
        dims = (dims,)
    wrapped = []
    for d in dims:
        if not -rank <= d < rank:
            return None
        wrapped.append(d % rank)
    if len(set(wrapped)) != len(wrapped):
        return None
    if ndim == 0:
        return ()
    return tuple(sorted(wrapped))


def reduced_shape(shape: Sequence[int], dims: Sequence[int], keepdim: bool) -> tuple[int, ...]:
    """The output shape of a reduction over ``dims``."""
    if keepdim:
        return tuple(1 if i in dims else s for i, s in enumerate(shape))
    return tuple(s for i, s in enumerate(shape) if i not in dims)


def _groups(order: Sequence[int], shape, strides) -> list[tuple[int, int]]:
    """(size, stride) runs of ``order``'s dims, merging neighbours that are adjacent in memory."""
    groups: list[list[int]] = []
    for d in order:
        size, stride = shape[d], strides[d]
        if size == 1:
            continue
        if groups and groups[-1][1] == size * stride:
            groups[-1][0] *= size
            groups[-1][1] = stride
        else:
            groups.append([size, stride])
    return [(s, st) for s, st in groups]


@dataclass(frozen=True)
class Layout:
    """Input seen as kept x reduced groups (outer group first, each padded to two with (1, 0))."""

    kept: tuple[tuple[int, int], tuple[int, int]]
    reduced: tuple[tuple[int, int], tuple[int, int]]
    #: When set, the input is first made ``x.permute(copy_perm).contiguous()``.
    copy_perm: tuple[int, ...] | None
    num_kept: int
    num_reduced: int
    int64: bool


def _pad(groups):
    groups = list(groups) + [(1, 0)] * (2 - len(groups))
    return tuple(groups)


def layout(shape: tuple, strides: tuple, dims: tuple, ordered: bool) -> Layout:
    """The kept/reduced groups of a tensor for a reduction over ``dims`` (see module docstring).

    ``ordered`` keeps the reduced dims in logical order (argmax-like reductions report positions).
    """
    return _layout(shape, strides, dims, ordered, force_int64)


@functools.lru_cache(maxsize=4096)
def _layout(shape: tuple, strides: tuple, dims: tuple, ordered: bool, wide: bool) -> Layout:
    ndim = len(shape)
    kept_dims = [d for d in range(ndim) if d not in dims]
    red_dims = list(dims)
    if not ordered:
        red_dims.sort(key=lambda d: -strides[d])
    kept = _groups(kept_dims, shape, strides)
    red = _groups(red_dims, shape, strides)
    perm = None
    if len(kept) > 2 or len(red) > 2:
        perm = tuple(kept_dims + list(dims))
        n_kept = 1
        for d in kept_dims:
            n_kept *= shape[d]
        n_red = 1
        for d in dims:
            n_red *= shape[d]
        kept = [(n_kept, n_red)] if n_kept > 1 else []
        red = [(n_red, 1)] if n_red > 1 else []
    return Layout(_pad(kept), _pad(red), perm, len(kept), len(red), wide or needs_int64(shape, strides))


def needs_int64(shape: Sequence[int], strides: Sequence[int]) -> bool:
    """Whether a tensor's element count, or one past its largest element offset, exceeds int32."""
    numel = 1
    reach = 1
    for size, stride in zip(shape, strides):
        numel *= size
        reach += (size - 1) * abs(stride)
    return max(numel, reach) > INT32_MAX


def launch(launcher: Launcher, grid: tuple, args: list) -> None:
    """Launch a kernel of this family through core's Launcher (its cached direct path on the GPU)."""
    launcher(grid, args, None if device.interpreter else specialization(args))


# ---------------------------------------------------------------------------------------------------
# Ready calls: the hot path of every op of this family is one lookup in ``calls``, keyed by the op and
# a cheap tuple of the call's signature (tensor shapes, strides and dtypes, other arguments as passed,
# and the module settings that plans depend on), then its allocations and launches.

#: Ready calls kept at most: shapes that keep changing clear the cache rather than grow it.
MAX_CALLS = 4096
calls: dict[tuple, object] = {}


def remember(key: tuple, call):
    """Keep ``call`` as the ready call of signature ``key``; returns it."""
    if len(calls) >= MAX_CALLS:
        calls.clear()
    calls[key] = call
    return call


def dims_key(dim):
    """``dim`` as a hashable part of a key (ATen passes ``int[]`` arguments as lists)."""
    return tuple(dim) if dim.__class__ is list else dim


def spare(buffers: dict, device: torch.device, shape, dtype: torch.dtype) -> torch.Tensor:
    """A buffer of ``buffers`` (a ready call's, one per device) for a result a kernel must store but
    nobody reads: launches may share it, even concurrently, since nothing ever reads it. A call recorded for
    replay gets its own, which its replays allocate again (they take no memory from outside the call)."""
    if launches.recording:
        return torch.empty(shape, dtype=dtype, device=device)
    found = buffers.get(device)
    if found is None:
        found = buffers[device] = torch.empty(shape, dtype=dtype, device=device)
    return found


class Launch:
    """One kernel launch of a ready call: the launcher, the grid, and the arguments after the tensors.

    On the GPU the call's specialisation key is computed once: a ready call fixes every dtype and
    integer, so while the caller's tensors are 16-byte aligned (``ptr`` below, the OR of their
    addresses; fresh outputs always are) the key of the first aligned launch holds.
    """

    __slots__ = ("launcher", "grid", "tail", "spec")

    def __init__(self, launcher: Launcher, grid: tuple, tail: list) -> None:
        self.launcher = launcher
        self.grid = grid
        self.tail = tail
        self.spec = None

    def __call__(self, tensors: list, ptr: int = 0) -> None:
        """Launch with ``tensors`` (the leading arguments) followed by the fixed ones."""
        args = tensors + self.tail
        if device.interpreter:
            self.launcher(self.grid, args)
            return
        spec = self.spec
        if spec is None or ptr & 15:
            spec = specialization(args)
            if not ptr & 15:
                self.spec = spec
        self.launcher(self.grid, args, spec)


@functools.cache
def sm_count(index: int = 0) -> int:
    """Streaming multiprocessors of the GPU (1 on the interpreter, where programs run one by one)."""
    if device.interpreter:
        return 1
    return torch.cuda.get_device_properties(index).multi_processor_count


def fits_out(out: torch.Tensor | None, shape, dtype: torch.dtype) -> bool:
    """True when a kernel can write straight into ``out``."""
    return out is not None and out.dtype == dtype and tuple(out.shape) == tuple(shape) and out.is_contiguous()


def new_output(out: torch.Tensor | None, shape, dtype: torch.dtype, like: torch.Tensor) -> torch.Tensor:
    """``out`` itself when a kernel can write into it, else a fresh contiguous tensor."""
    if fits_out(out, shape, dtype):
        return out
    return like.new_empty(shape, dtype=dtype)  # no torch.device built: the cheapest allocation from Python


def deliver(result: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """``result``, or ``out`` resized (ATen's rules) and filled with it."""
    if out is None or result is out:
        return result
    resize_output(out, result.shape)
    out.copy_(result)
    return out


def resize_output(out: torch.Tensor, shape) -> None:
    """ATen's rule for ``out=`` tensors: resized to ``shape``, with a warning unless it was empty."""
    if tuple(out.shape) == tuple(shape):
        return
    if out.numel() != 0:
        warnings.warn(f"An output with one or more elements was resized since it had shape {list(out.shape)}, "
                      f"which does not match the required output shape {list(shape)}. This behavior is "
                      "deprecated, and in a future PyTorch release outputs will not be resized unless they have "
                      "zero elements. You can explicitly reuse an out tensor t by resizing it, inplace, to zero "
                      "elements with t.resize_(0).", UserWarning, stacklevel=3)
    out.resize_(shape)


__all__ = ["Layout", "layout", "needs_int64", "wrap_dims", "reduced_shape", "sm_count", "new_output", "deliver",
           "fits_out", "calls", "remember", "dims_key", "spare", "Launch", "FLOATING", "INTEGRAL", "KERNEL_DTYPES",
           "INT32_MAX"]
