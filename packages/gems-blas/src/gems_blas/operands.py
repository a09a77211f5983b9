"""What the BLAS ops share: the calls our kernels take, ATen's scalar rules, ``out=`` tensors, launch keys,
and the planned calls that the call caches hold."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from flag_gems.launch import specialization
from flag_gems.outputs import resize_output
from flag_gems.runtime import device
from gems_blas import workspace

#: Operand dtypes our kernels compute; everything else goes back to ATen.
FLOATS = (torch.float16, torch.bfloat16, torch.float32)
#: Entries a call cache holds before it is emptied (shapes seen by one process are usually few).
CACHE_LIMIT = 4096

try:
    allow_tf32 = torch._C._get_cublas_allow_tf32
except AttributeError:  # pragma: no cover - older torch

    def allow_tf32() -> bool:
        return torch.backends.cuda.matmul.allow_tf32


def real_scalar(value) -> bool:
    """True for the alpha/beta values a floating-point product takes as they are (complex goes to ATen)."""
    return type(value) in (int, float, bool)


def broadcast_strides(t: torch.Tensor, shape: Sequence[int]) -> tuple[int, ...] | None:
    """``t``'s strides once expanded to ``shape`` (0 along broadcast dimensions), or None when ``t`` does
    not broadcast to ``shape`` (ATen then raises its own error)."""
    nd = len(shape)
    if t.dim() > nd:
        return None
    sizes, strides = t.shape, t.stride()
    lead = nd - t.dim()
    result = [0] * nd
    for i in range(t.dim()):
        size = sizes[i]
        if size == shape[lead + i]:
            result[lead + i] = strides[i] if size != 1 else 0
        elif size != 1:
            return None
    return tuple(result)


def _shares_storage(x: torch.Tensor, y: torch.Tensor) -> bool:
    return x.untyped_storage().data_ptr() == y.untyped_storage().data_ptr()


def prepare_out(out: torch.Tensor, shape: Sequence[int], dtype: torch.dtype, reads: Sequence[torch.Tensor],
                bias: torch.Tensor | None = None) -> torch.Tensor | None:
    """Make ``out`` ready to receive a product of ``shape`` and return the tensor to compute into: ``out``
    itself, or a fresh tensor when ``out`` shares memory with an operand the kernel reads while writing
    (the caller copies it back). None when ATen must handle the call (wrong dtype or device, an output
    whose elements overlap each other), so that ATen raises its own error.

    ``bias`` may be ``out`` itself (the in-place ops): each element is read before it is written.
    """
    if out.dtype != dtype or out.device != reads[0].device:
        return None
    resize_output(out, shape)
    if torch._debug_has_internal_overlap(out) == 1:
        return None
    if any(_shares_storage(out, t) for t in reads) or (
            bias is not None and bias is not out and _shares_storage(out, bias)):
        return torch.empty(shape, dtype=dtype, device=out.device)
    return out


def finish_out(out: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
    """Copy ``result`` into ``out`` when ``prepare_out`` had to compute elsewhere; return ``out``."""
    if result is not out:
        out.copy_(result)
    return out


def spec_key(dtypes: tuple, tensors: Sequence[torch.Tensor], ints: Sequence[int]) -> tuple:
    """The key of a compiled kernel for one launch: operand dtypes, 16-byte alignment of the pointers and
    what Triton specialises integer arguments on (equal to 1, divisible by 16, wider than 32 bits)."""
    return (*dtypes, *[t.data_ptr() % 16 == 0 for t in tensors], *specialization(ints))


class PlannedLaunch:
    """One kernel launch with its grid and integer arguments fixed, and so the compiled specialisation
    too: a call passes only its tensors (pointers first, in the kernel's order) and alpha and beta, which
    the kernels take right after the integers. Tensors given here serve only for their dtypes and
    alignment, which every later call's tensors share (they are part of each cache key)."""

    __slots__ = ("launcher", "grid", "ints", "tail", "spec")

    def __init__(self, launcher, grid: tuple, tensors: Sequence[torch.Tensor], ints: tuple, tail: tuple = ()):
        self.launcher = launcher
        self.grid = grid
        self.ints = ints
        self.tail = tail
        self.spec = None if device.interpreter else spec_key(tuple(t.dtype for t in tensors), tensors,
                                                             (*ints, *tail))

    def __call__(self, tensors: tuple, alpha: float, beta: float) -> None:
        self.launcher(self.grid, [*tensors, *self.ints, alpha, beta, *self.tail], self.spec)


class ProductCall:
    """out = alpha * a @ b + beta * bias with every decision taken: what a product of one cache key
    launches, given its tensors and float alpha and beta.

    ``main`` takes (a, b, out or the partials, bias or out) — (b, a, ...) when ``swap`` — and ``finish``
    (partials, out, bias or out); with no ``main``, ``finish`` alone writes beta * bias (K = 0 or
    alpha = 0), and with neither the output is empty. ``partials`` is the fp32 element count of a split
    reduction; ``descriptors``: ``main`` builds tensor descriptors in Triton's launch scratch;
    ``prepare``, when set, maps (a, b) to the operands ``main`` reads (copies in the layout it needs, or a
    split fp32 product's pieces); ``repair``, when set, runs last on (a, b, out, bias or out) as given.
    """

    __slots__ = ("main", "finish", "partials", "swap", "descriptors", "prepare", "repair")

    def __init__(self, main: PlannedLaunch | None, finish: PlannedLaunch | None, partials: int = 0,
                 swap: bool = False, descriptors: bool = False):
        self.main = main
        self.finish = finish
        self.partials = partials
        self.swap = swap
        self.descriptors = descriptors
        self.prepare = None
        self.repair = None

    def __call__(self, out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None,
                 alpha: float, beta: float) -> None:
        d = out if bias is None else bias
        main, finish = self.main, self.finish
        if main is None:
            if finish is not None:
                finish((out, out, d), 0.0, beta)
            return
        if self.swap:
            a, b = b, a
        given = a, b
        if self.prepare is not None:
            a, b = self.prepare(a, b)
        if self.descriptors:
            workspace.ensure_allocator()
        if finish is None:
            main((a, b, out, d), alpha, beta)
        else:
            p = workspace.partials(self.partials, out)
            main((a, b, p, d), alpha, beta)
            finish((p, out, d), alpha, beta)
        if self.repair is not None:
            self.repair((*given, out, d), alpha, beta)


def remember(cache: dict, key: tuple, value):
    """``cache[key] = value``, emptying ``cache`` first when it has grown past ``CACHE_LIMIT`` entries."""
    if len(cache) >= CACHE_LIMIT:
        cache.clear()
    cache[key] = value
    return value
