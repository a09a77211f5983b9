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


def check_no_partial_overlap(out: torch.Tensor, inputs) -> None:
    """Raise ATen's error when ``out`` and an input share some memory but are not the same tensor.

    As ATen decides it: only tensors that are dense in memory are compared; equal memory ranges count
    as the same tensor (in-place use), any other overlap is an error.
    """
    if out.numel() == 0:
        return
    storage = out.untyped_storage().data_ptr()
    out_range = None
    for t in inputs:
        if t is out or t.numel() == 0 or t.untyped_storage().data_ptr() != storage:
            continue
        if not (is_non_overlapping_and_dense(out) and is_non_overlapping_and_dense(t)):
            continue
        out_range = out_range or _memory_range(out)
        start, end = _memory_range(t)
        if (start, end) != out_range and start < out_range[1] and out_range[0] < end:
            raise RuntimeError("unsupported operation: some elements of the input tensor and the written-to "
                               "tensor refer to a single memory location. Please clone() the tensor before "
                               "performing the operation.")
