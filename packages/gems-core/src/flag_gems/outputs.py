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
