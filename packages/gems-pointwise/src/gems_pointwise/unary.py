"""Unary math ops."""

import triton
import triton.language as tl

from flag_gems import pointwise_dynamic


@pointwise_dynamic(promotion_methods=[(0, "COMPLEX_TO_FLOAT")])
@triton.jit
def abs_kernel(x):
    return tl.abs(x)
