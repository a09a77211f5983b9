"""Shapes and strides of elementwise ops, the way ATen's TensorIterator decides them."""

from __future__ import annotations

import torch


def broadcast_shape(shapes: list) -> tuple[int, ...]:
    """The broadcast of ``shapes``, or ATen's error for the first pair that does not broadcast."""
    try:
        return tuple(torch.broadcast_shapes(*shapes))
    except RuntimeError:
        result: list[int] = []
        for shape in shapes:
            shape = list(shape)
            ndim = max(len(result), len(shape))
            a = [1] * (ndim - len(result)) + result
            b = [1] * (ndim - len(shape)) + shape
            for d in range(ndim - 1, -1, -1):
                if a[d] != b[d] and a[d] != 1 and b[d] != 1:
                    raise RuntimeError(f"The size of tensor a ({a[d]}) must match the size of tensor b ({b[d]}) "
                                       f"at non-singleton dimension {d}") from None
            result = [max(x, y) if min(x, y) != 0 else 0 for x, y in zip(a, b)]
        raise


def broadcast_strides(tensor: torch.Tensor, shape: tuple[int, ...]) -> list[int]:
    """``tensor``'s strides seen in the broadcast ``shape``: 0 along broadcast dimensions."""
    ndim = len(shape)
    lead = ndim - tensor.dim()
    strides = [0] * ndim
    for d, (size, stride) in enumerate(zip(tensor.shape, tensor.stride())):
        strides[lead + d] = 0 if (size == 1 and shape[lead + d] != 1) else stride
    return strides


def memory_order(shape: tuple[int, ...], operand_strides: list[list[int]]) -> list[int]:
    """Dimensions from fastest to slowest in memory, decided by the operands in order.

    The insertion sort of TensorIterator::reorder_dimensions: the first operand with two
    non-broadcast, unequal strides decides; equal strides put the smaller size first.
    """
    ndim = len(shape)
    perm = list(range(ndim - 1, -1, -1))

    def should_swap(dim0: int, dim1: int) -> int:
        for strides in operand_strides:
            s0, s1 = strides[dim0], strides[dim1]
            if s0 == 0 or s1 == 0:
                continue
            if s0 < s1:
                return -1
            if s0 > s1:
                return 1
            if shape[dim0] > shape[dim1]:
                return 1
        return 0

    for i in range(1, ndim):
        dim1 = i
        for dim0 in range(i - 1, -1, -1):
            comparison = should_swap(perm[dim0], perm[dim1])
            if comparison > 0:
                perm[dim0], perm[dim1] = perm[dim1], perm[dim0]
                dim1 = dim0
            elif comparison < 0:
                break
    return perm


def output_strides(shape: tuple[int, ...], perm: list[int]) -> list[int] | None:
    """Strides of a new output laid out in ``perm`` order; None when that is plain contiguous."""
    if perm == list(range(len(shape) - 1, -1, -1)):
        return None
    strides = [0] * len(shape)
    step = 1
    for d in perm:
        strides[d] = step
        step *= shape[d]
    return strides


def contiguous_strides(shape: tuple[int, ...]) -> list[int]:
    """The strides ``torch.empty(shape)`` gets (a size-0 dim counts as 1)."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return strides[::-1]


def coalesce(shape: tuple[int, ...], perm: list[int], operand_strides: list[list[int]]):
    """Merge dimensions that every operand walks as one; returns (sizes, strides per operand),
    slowest dimension first, without size-1 dimensions."""
    sizes: list[int] = []
    strides: list[list[int]] = [[] for _ in operand_strides]
    for d in perm:  # fastest first
        size = shape[d]
        if size == 1:
            continue
        if sizes and all(s[d] == acc[-1] * sizes[-1] for s, acc in zip(operand_strides, strides)):
            sizes[-1] *= size
            continue
        sizes.append(size)
        for s, acc in zip(operand_strides, strides):
            acc.append(s[d])
    sizes.reverse()
    for acc in strides:
        acc.reverse()
    return sizes, strides


def max_offset(sizes: list[int], strides: list[int]) -> int:
    return sum((n - 1) * abs(s) for n, s in zip(sizes, strides))
