"""Ternary and selection ops: addcmul, addcdiv, lerp, clamp, clamp_min, clamp_max, where, masked_fill
and fill.

Scalars that ATen converts to the result dtype with an overflow check (clamp bounds, fill and
masked_fill values) are checked the same way here, and a value that does not fit goes back to ATen,
which raises.
"""

from __future__ import annotations

import struct

import torch
import triton
import triton.language as tl

from flag_gems import pointwise_dynamic
from flag_gems.runtime import device
from gems_pointwise.binary import ieee_div, maximum_kernel, minimum_kernel
from gems_pointwise.overloads import fits, fits_result, is_bool, is_integral


@pointwise_dynamic(promotion_methods=[(0, 1, 2, "DEFAULT")])
@triton.jit
def addcmul_kernel(x, t1, t2, value):
    return x + value.to(x.dtype) * (t1 * t2)


@pointwise_dynamic(promotion_methods=[(0, 1, 2, "DEFAULT")])
@triton.jit
def addcdiv_kernel(x, t1, t2, value):
    return x + value.to(x.dtype) * ieee_div(t1, t2)


@pointwise_dynamic(promotion_methods=[(0, 1, 2, "DEFAULT")])
@triton.jit
def lerp_kernel(x, end, weight):
    # ATen's two-sided formula: exact at weight 0 and at weight 1.
    return tl.where(tl.abs(weight) < 0.5, x + weight * (end - x), end - (end - x) * (1 - weight))


@pointwise_dynamic(promotion_methods=[(0, 1, 2, "DEFAULT")])
@triton.jit
def clamp_kernel(x, low, high):
    return tl.minimum(tl.maximum(x, low, propagate_nan=tl.PropagateNan.ALL), high, propagate_nan=tl.PropagateNan.ALL)


# One bound: maximum and minimum, NaN propagating from either side as clamp does.
clamp_min_kernel = maximum_kernel.bind("clamp_min_kernel")
clamp_max_kernel = minimum_kernel.bind("clamp_max_kernel")


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def clamp_nan_bound_kernel(x, bound):
    # CUDA's clamp with one scalar bound takes fmax/fmin of x and the bound: a NaN bound leaves x.
    return x


@pointwise_dynamic(promotion_methods=[(1, 2, "NO_OPMATH")])
@triton.jit
def where_kernel(condition, x, y):
    return tl.where(condition, x, y)


@pointwise_dynamic(promotion_methods=[(0, "NO_OPMATH")])
@triton.jit
def masked_fill_kernel(x, mask, value):
    return tl.where(mask, value.to(x.dtype), x)


@pointwise_dynamic(promotion_methods=[(0, "NO_OPMATH")])
@triton.jit
def fill_kernel(x, value):
    # x gives the shape only; its load is dead code the compiler drops.
    return value.to(x.dtype)


@pointwise_dynamic(promotion_methods=[(0, "NO_OPMATH")])
@triton.jit
def fill_float64_kernel(x, bits):
    # A float64 value travels as its bit pattern: a float argument would reach the kernel as float32.
    return bits.to(tl.int64).to(tl.float64, bitcast=True)


def _number(value) -> bool:
    return type(value) in (int, float, bool)


def addcmul(self, tensor1, tensor2, value=1):
    """self + value * tensor1 * tensor2."""
    if not _number(value) or (is_bool(self) and is_bool(tensor1) and is_bool(tensor2)):
        return None
    return addcmul_kernel, (self, tensor1, tensor2, value)


def addcdiv(self, tensor1, tensor2, value=1):
    """self + value * tensor1 / tensor2; ATen refuses integer division here."""
    if not _number(value) or (is_integral(tensor1) and is_integral(tensor2)):
        return None
    return addcdiv_kernel, (self, tensor1, tensor2, value)


def lerp(self, end, weight):
    """self + weight * (end - self) for floating tensors of one dtype (a 0-d weight may differ)."""
    if not self.dtype.is_floating_point or not isinstance(end, torch.Tensor) or end.dtype is not self.dtype:
        return None
    if isinstance(weight, torch.Tensor):
        if weight.dim() and weight.dtype is not self.dtype:
            return None
    elif not _number(weight):
        return None
    return lerp_kernel, (self, end, weight)


def _bound_ok(bound, self, other) -> bool:
    return bound is None or isinstance(bound, torch.Tensor) or (_number(bound) and fits_result(bound, self, other))


def _nan(bound) -> bool:
    return type(bound) is float and bound != bound


def clamp(self, min=None, max=None):
    """self limited to [min, max] (either may be None); NaN in any operand gives NaN, except a lone
    NaN scalar bound on CUDA, which ATen's kernel ignores there."""
    if not device.interpreter and (min is None) != (max is None) and _nan(max if min is None else min):
        return clamp_nan_bound_kernel, (self, max if min is None else min)
    return _clamp(self, min, max)


def _clamp(self, min, max):
    if not _bound_ok(min, self, max) or not _bound_ok(max, self, min):
        return None
    if is_bool(self) and (min is None or is_bool(min)) and (max is None or is_bool(max)):
        # A bool result: ATen computes it for one bound given as a tensor only, and raises otherwise.
        bound = max if min is None else min
        if (min is not None and max is not None) or not isinstance(bound, torch.Tensor):
            return None
    if max is None:
        return None if min is None else (clamp_min_kernel, (self, min))
    if min is None:
        return clamp_max_kernel, (self, max)
    return clamp_kernel, (self, min, max)


def clamp_min(self, min):
    """max(self, min), NaN-propagating (ATen fills with a NaN min on every device)."""
    return _clamp(self, min, None) if min is not None else None


def clamp_max(self, max):
    """min(self, max), NaN-propagating (ATen fills with a NaN max on every device)."""
    return _clamp(self, None, max) if max is not None else None


def where(condition, self, other):
    """self where condition, else other (a bool condition; ATen handles the deprecated uint8 one)."""
    if not isinstance(condition, torch.Tensor) or condition.dtype is not torch.bool:
        return None
    return where_kernel, (condition, self, other)


def where_out_ok(out, condition, self, other) -> bool:
    """ATen's where wants an out= of the result dtype itself, not one it casts to."""
    return out.dtype == torch.result_type(self, other)


def _fill_value(value, dtype):
    """The Python value ATen writes, or None where ATen raises (or must decide)."""
    if isinstance(value, torch.Tensor):
        if value.dim():
            return None
        value = value.item()
    if not _number(value) or not fits(value, dtype):
        return None
    if type(value) is float and not dtype.is_floating_point and dtype is not torch.bool:
        return int(value)  # truncated here, as ATen does: a float would reach the kernel as float32
    return value


def masked_fill_inplace_ok(self, mask, value) -> bool:
    """masked_fill_ broadcasts mask to self, never self: ATen raises otherwise (its own message on
    each device)."""
    offset = self.dim() - mask.dim()
    return offset >= 0 and all(n == 1 or n == self.shape[offset + d] for d, n in enumerate(mask.shape))


def masked_fill(self, mask, value):
    """self with value where mask is set; value a scalar or a 0-d tensor."""
    if mask.dtype is not torch.bool:
        return None
    value = _fill_value(value, self.dtype)
    if value is None:
        return None
    return masked_fill_kernel, (self, mask, value)


def fill(self, value):
    """A tensor like self filled with value (in place for fill_)."""
    value = _fill_value(value, self.dtype)
    if value is None or (not self.is_contiguous() and torch._debug_has_internal_overlap(self) == 1):
        return None  # ATen fills overlapping views, which our strided store refuses
    if self.dtype is torch.float64:
        return fill_float64_kernel, (self, struct.unpack("<q", struct.pack("<d", value))[0])
    return fill_kernel, (self, value)
