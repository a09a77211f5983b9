"""Binary, ternary, comparison and conversion ops, and fused public functions, served by this family.

Each line names ATen op packets and the route computing them; ``overloads.elementwise`` expands it
into every overload the running torch has (Tensor/Scalar, functional/in-place/out=), leaving out the
CompositeImplicitAutograd ones, which decompose into these. Routes and their checks are named
("module:attribute" in this package): a line's kernel module is imported, and its overloads' wrappers
made, at the first call of one of them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from flag_gems import OpImpl, lazy
from flag_gems.runtime import device
from gems_pointwise.overloads import (
    ALL,
    FLOATS,
    INTEGERS,
    NUMBERS,
    Route,
    computes_in_output_dtype,
    elementwise,
    inplace_computes_in_own_dtype,
)


def _unimported(*args, **kwargs):
    raise RuntimeError("a route is called only once its module is imported")


def _line(packets, route: str, dtypes, *checks: str | Callable | None) -> list[OpImpl]:
    """The OpImpls of one line; ``route`` and string ``checks`` are imported at the first call of one of them."""

    @functools.cache
    def wrappers(loaded_route: Route) -> dict[str, Callable]:
        loaded = [lazy(f"gems_pointwise.{c}").load() if isinstance(c, str) else c for c in checks]
        return {impl.aten: impl.fn for impl in elementwise(packets, loaded_route, dtypes, *loaded)}

    def made(name: str) -> Callable[[Route], Callable]:
        return lambda loaded_route: wrappers(loaded_route)[name]

    # The overloads the running torch has, listed without the route (which runs only in the wrappers).
    names = [impl.aten for impl in elementwise(packets, _unimported, dtypes)]
    return [OpImpl(name, lazy(f"gems_pointwise.{route}", made(name))) for name in names]


def ops() -> list[OpImpl]:
    bits = INTEGERS | {torch.bool}
    # ATen's CUDA bitwise and shift kernels compute in the output's dtype: other outputs go to ATen.
    bit_outputs = () if device.interpreter else (computes_in_output_dtype, inplace_computes_in_own_dtype)
    table = [
        ("add", "binary:add", ALL),
        ("sub", "binary:sub", NUMBERS),
        (("rsub",), "binary:rsub", NUMBERS),
        ("mul", "binary:mul", ALL),
        ("div", "binary:div", ALL),
        ("floor_divide", "binary:floor_divide", NUMBERS),
        ("remainder", "binary:remainder", NUMBERS),
        ("fmod", "binary:fmod", NUMBERS),
        ("pow", "binary:pow", ALL),
        ("maximum", "binary:maximum", ALL),
        ("minimum", "binary:minimum", ALL),
        ("fmax", "binary:fmax", ALL),
        ("fmin", "binary:fmin", ALL),
        ("atan2", "binary:atan2", ALL),
        ("hypot", "binary:hypot", FLOATS),
        ("copysign", "binary:copysign", ALL),
        ("logaddexp", "binary:logaddexp", FLOATS),
        ("logaddexp2", "binary:logaddexp2", FLOATS),
        ("xlogy", "binary:xlogy", ALL),
        ("nextafter", "binary:nextafter", FLOATS),
        ("heaviside", "binary:heaviside", ALL),
        ("ldexp", "binary:ldexp", ALL),
        (("polar",), "binary:polar", FLOATS | {torch.complex64, torch.complex128}),
        ("gcd", "binary:gcd", INTEGERS),
        ("lcm", "binary:lcm", INTEGERS),
        ("eq", "compare:eq", ALL),
        ("ne", "compare:ne", ALL),
        ("lt", "compare:lt", ALL),
        ("le", "compare:le", ALL),
        ("gt", "compare:gt", ALL),
        ("ge", "compare:ge", ALL),
        ("logical_and", "compare:logical_and", ALL),
        ("logical_or", "compare:logical_or", ALL),
        ("logical_xor", "compare:logical_xor", ALL),
        ("bitwise_and", "compare:bitwise_and", bits, *bit_outputs),
        ("bitwise_or", "compare:bitwise_or", bits, *bit_outputs),
        ("bitwise_xor", "compare:bitwise_xor", bits, *bit_outputs),
        (("bitwise_left_shift", "bitwise_left_shift_", "__lshift__", "__ilshift__"), "compare:left_shift", bits,
         *bit_outputs),
        (("bitwise_right_shift", "bitwise_right_shift_", "__rshift__", "__irshift__"), "compare:right_shift", bits,
         *bit_outputs),
        ("addcmul", "ternary:addcmul", ALL),
        ("addcdiv", "ternary:addcdiv", ALL),
        ("lerp", "ternary:lerp", FLOATS),
        ("clamp", "ternary:clamp", ALL),
        ("clamp_min", "ternary:clamp_min", ALL),
        ("clamp_max", "ternary:clamp_max", ALL),
        (("where",), "ternary:where", ALL, "ternary:where_out_ok"),
        ("masked_fill", "ternary:masked_fill", ALL, None, "ternary:masked_fill_inplace_ok"),
        (("fill", "fill_"), "ternary:fill", ALL),
    ]
    impls = [impl for packets, route, dtypes, *checks in table for impl in _line(packets, route, dtypes, *checks)]
    impls += [OpImpl("_to_copy", lazy("gems_pointwise.conversion:to_copy")),
              OpImpl("copy_", lazy("gems_pointwise.conversion:copy_"))]
    return impls


def fused() -> dict:
    """Public functions (``flag_gems.<name>``); each imports its module at its first call."""
    return {"silu_and_mul": lazy("gems_pointwise.fused:silu_and_mul"),
            "gelu_and_mul": lazy("gems_pointwise.fused:gelu_and_mul"),
            "apply_rotary_pos_emb": lazy("gems_pointwise.rotary:apply_rotary_pos_emb")}
