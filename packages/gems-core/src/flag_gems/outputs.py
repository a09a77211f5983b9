"""``out=`` tensors, handled the way ATen handles them."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch


def resize_output(out: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Give ``out`` the shape ``shape`` as ATen's ``resize_output`` does: silently when it is empty,
    with ATen's deprecation warning when it held elements."""
    shape = tuple(shape)
    if tuple(out.shape) == shape:
        return out
    if out.numel() != 0:
        warnings.warn(
            f"An output with one or more elements was resized since it had shape {list(out.shape)}, which does "
            f"not match the required output shape {list(shape)}. This behavior is deprecated, and in a future "
            "PyTorch release outputs will not be resized unless they have zero elements. You can explicitly "
            "reuse an out tensor t by resizing it, inplace, to zero elements with t.resize_(0).",
            UserWarning, stacklevel=3)
    out.resize_(shape)
    return out


def is_non_overlapping_and_dense(t: torch.Tensor) -> bool:
    """Whether ``t``'s elements fill a block of memory exactly once, in some order of its dims."""
    if t.is_contiguous():
        return True
    expected = 1
    for stride, size in sorted((st, s) for s, st in zip(t.shape, t.stride()) if s != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _memory_range(t: torch.Tensor) -> tuple[int, int]:
    start = t.data_ptr()
    return start, start + t.numel() * t.element_size()


# Whether two tensors view one storage (not merely the same bytes): ATen's alias test.
_same_storage = torch._C._is_alias_of


def check_no_partial_overlap(out: torch.Tensor, inputs) -> None:
    """Raise ATen's error when ``out`` and an input share some memory but are not the same tensor.

    As ATen decides it: only tensors of one storage that are dense in memory are compared; equal memory
    ranges count as the same tensor (in-place use), any other overlap is an error. The storage test comes
    first: one C call settles the usual case, tensors of different storages.
    """
    out_range = None
    for t in inputs:
        if t is out or not _same_storage(t, out) or t.numel() == 0 or out.numel() == 0:
            continue
        if out_range is None:
            if not is_non_overlapping_and_dense(out):
                return
            out_range = _memory_range(out)
        if not is_non_overlapping_and_dense(t):
            continue
        start, end = _memory_range(t)
        if (start, end) == out_range or end <= out_range[0] or out_range[1] <= start:
            continue
        raise RuntimeError("unsupported operation: some elements of the input tensor and the written-to "
                           "tensor refer to a single memory location. Please clone() the tensor before "
                           "performing the operation.")
