"""Binary, ternary, comparison and conversion ops, and fused public functions, served by this family.

Each line names ATen op packets and the route computing them; ``overloads.elementwise`` expands it
into every overload the running torch has (Tensor/Scalar, functional/in-place/out=), leaving out the
CompositeImplicitAutograd ones, which decompose into these.
"""

from __future__ import annotations

import torch

from flag_gems import OpImpl
from flag_gems.runtime import device


def ops() -> list[OpImpl]:
    from gems_pointwise import binary, compare, conversion, ternary
    from gems_pointwise.overloads import (
        ALL,
        FLOATS,
        INTEGERS,
        NUMBERS,
        computes_in_output_dtype,
        elementwise,
        inplace_computes_in_own_dtype,
    )

    bits = INTEGERS | {torch.bool}
    # ATen's CUDA bitwise and shift kernels compute in the output's dtype: other outputs go to ATen.
    bit_outputs = () if device.interpreter else (computes_in_output_dtype, inplace_computes_in_own_dtype)
    table = [
        ("add", binary.add, ALL),
        ("sub", binary.sub, NUMBERS),
        (("rsub",), binary.rsub, NUMBERS),
        ("mul", binary.mul, ALL),
        ("div", binary.div, ALL),
        ("floor_divide", binary.floor_divide, NUMBERS),
        ("remainder", binary.remainder, NUMBERS),
        ("fmod", binary.fmod, NUMBERS),
        ("pow", binary.pow, ALL),
        ("maximum", binary.maximum, ALL),
        ("minimum", binary.minimum, ALL),
        ("fmax", binary.fmax, ALL),
        ("fmin", binary.fmin, ALL),
        ("atan2", binary.atan2, ALL),
        ("hypot", binary.hypot, FLOATS),
        ("copysign", binary.copysign, ALL),
        ("logaddexp", binary.logaddexp, FLOATS),
        ("logaddexp2", binary.logaddexp2, FLOATS),
        ("xlogy", binary.xlogy, ALL),
        ("nextafter", binary.nextafter, FLOATS),
        ("heaviside", binary.heaviside, ALL),
        ("ldexp", binary.ldexp, ALL),
        (("polar",), binary.polar, FLOATS | {torch.complex64, torch.complex128}),
        ("gcd", binary.gcd, INTEGERS),
        ("lcm", binary.lcm, INTEGERS),
        ("eq", compare.eq, ALL),
        ("ne", compare.ne, ALL),
        ("lt", compare.lt, ALL),
        ("le", compare.le, ALL),
        ("gt", compare.gt, ALL),
        ("ge", compare.ge, ALL),
        ("logical_and", compare.logical_and, ALL),
        ("logical_or", compare.logical_or, ALL),
        ("logical_xor", compare.logical_xor, ALL),
        ("bitwise_and", compare.bitwise_and, bits, *bit_outputs),
        ("bitwise_or", compare.bitwise_or, bits, *bit_outputs),
        ("bitwise_xor", compare.bitwise_xor, bits, *bit_outputs),
        (("bitwise_left_shift", "bitwise_left_shift_", "__lshift__", "__ilshift__"), compare.left_shift, bits,
         *bit_outputs),
        (("bitwise_right_shift", "bitwise_right_shift_", "__rshift__", "__irshift__"), compare.right_shift, bits,
         *bit_outputs),
        ("addcmul", ternary.addcmul, ALL),
        ("addcdiv", ternary.addcdiv, ALL),
        ("lerp", ternary.lerp, FLOATS),
        ("clamp", ternary.clamp, ALL),
        ("clamp_min", ternary.clamp_min, ALL),
        ("clamp_max", ternary.clamp_max, ALL),
        (("where",), ternary.where, ALL, ternary.where_out_ok),
        ("masked_fill", ternary.masked_fill, ALL, None, ternary.masked_fill_inplace_ok),
        (("fill", "fill_"), ternary.fill, ALL),
    ]
    impls = [impl for packets, route, dtypes, *checks in table for impl in elementwise(packets, route, dtypes, *checks)]
    impls += [OpImpl("_to_copy", conversion.to_copy), OpImpl("copy_", conversion.copy_)]
    return impls


def fused() -> dict:
    from gems_pointwise.fused import gelu_and_mul, silu_and_mul
    from gems_pointwise.rotary import apply_rotary_pos_emb

    return {"silu_and_mul": silu_and_mul, "gelu_and_mul": gelu_and_mul, "apply_rotary_pos_emb": apply_rotary_pos_emb}
