"""Unary math ops and activations (and their backward) served by this family.

Each op is one row: its ATen name, a launcher (a ``pointwise_dynamic`` kernel, or a function turning
ATen's arguments into a kernel call) and the dtypes it computes. ``_overloads`` turns a row into the
functional, in-place and ``out=`` overloads that the running torch has and that core accepts; a
dtype outside the row's set, or arguments a launcher declines (it returns ``NotImplemented``), go
to ATen's own kernel.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch

from flag_gems import OpImpl, aten_kernel, aten_names, lazy
from flag_gems.runtime import device

FLOAT = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})
INT = frozenset({torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64})
BOOL = frozenset({torch.bool})
REAL = FLOAT | INT | BOOL
HALF = frozenset({torch.float16, torch.bfloat16})


def _servable(name: str) -> bool:
    """Whether ``name`` exists in the running torch and may be served on the backend key."""
    return aten_names.resolve(name) is not None and not aten_names.is_composite_implicit(name)


def _overloads(base: str, launch: str, dtypes: frozenset, *, overload: str = "", out_overload: str = "out",
               out_args: Sequence[str] = ("out",), tensors: Sequence[int] = (0,),
               inplace: bool = True) -> list[OpImpl]:
    """OpImpls for ``base[.overload]``, ``base_[.overload]`` and ``base.<out_overload>``.

    ``launch`` names ("module:attribute" in this package) a function ``launch(*args, out0=None, **kwargs)``,
    imported at the first call of one of the overloads, that computes the op from ATen's arguments. The tensors at
    positions ``tensors`` must all have a dtype in ``dtypes``; ``out_args`` names the keyword-only
    output arguments of the out= overload, passed to ``launch`` as out0, out1, ...
    """
    functional = f"{base}.{overload}" if overload else base
    names = [(functional, _functional), (f"{base}.{out_overload}", functools.partial(_out, out_args=tuple(out_args)))]
    if inplace:
        names.append((f"{base}_.{overload}" if overload else f"{base}_", _inplace))
    accepts = _tensor_check(tuple(tensors), dtypes)
    return [OpImpl(name, lazy(f"gems_pointwise.{launch}", functools.partial(_made, make, name, accepts)))
            for name, make in names if _servable(name)]


def _made(make: Callable, name: str, accepts: Callable, launch: Callable) -> Callable:
    return make(name, launch, accepts)


def _tensor_check(tensors: tuple, dtypes: frozenset) -> Callable:
    """A check that the tensors at positions ``tensors`` all have a dtype in ``dtypes`` and share the
    first one's device (else ATen decides: it may raise). Kept cheap for the usual single tensor,
    which the dispatcher already put on our device: this runs on every call."""
    if tensors == (0,):
        return lambda args: args[0].dtype in dtypes
    first, rest = tensors[0], tensors[1:]

    def accepts(args) -> bool:
        device = args[first].get_device()
        return args[first].dtype in dtypes and all(
            args[i].dtype in dtypes and args[i].get_device() == device for i in rest)

    return accepts


def _functional(name, launch, accepts):
    fallback = aten_kernel(name)

    def functional(*args, **kwargs):
        if accepts(args):
            # Without keywords (nearly every call), no empty keyword dict is unpacked.
            result = launch(*args, **kwargs) if kwargs else launch(*args)
            if result is not NotImplemented:
                return result
        return fallback(*args, **kwargs)

    return functional


def _inplace(name, launch, accepts):
    fallback = aten_kernel(name)

    def inplace(*args, **kwargs):
        if accepts(args):
            result = launch(*args, out0=args[0], **kwargs)
            if result is not NotImplemented:
                return result
        return fallback(*args, **kwargs)

    return inplace


def _out(name, launch, accepts, out_args):
    fallback = aten_kernel(name)
    slots = tuple(f"out{j}" for j in range(len(out_args)))

    def out(*args, **kwargs):
        outs = [kwargs.pop(arg) for arg in out_args]
        device = args[0].get_device()
        # A kernel stores into any real dtype on the input's device; other outputs go to ATen.
        if accepts(args) and all(o.dtype in REAL and o.get_device() == device for o in outs):
            result = launch(*args, **dict(zip(slots, outs)), **kwargs)
            if result is not NotImplemented:
                return result
        return fallback(*args, **dict(zip(out_args, outs)), **kwargs)

    return out


def _rows():
    float_ops = [  # integer and bool inputs compute in the default float dtype, as in ATen
        "reciprocal", "sqrt", "rsqrt", "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sin", "cos",
        "tan", "asin", "acos", "cosh", "tanh", "erf",
        "erfinv", "i0", "sinc", "deg2rad", "rad2deg",
    ]
    on_cuda = not device.interpreter
    rows = [(name, f"unary:{name}_kernel", REAL, {}) for name in float_ops]
    rows += [
        # ATen's CUDA kernels: angle has none for half types, abs takes bool (the CPU ones: the reverse)
        ("angle", "unary:angle_kernel", REAL - HALF if on_cuda else REAL, {}),
        ("abs", "unary:abs_kernel", FLOAT | INT | BOOL if on_cuda else FLOAT | INT, {}),
        ("asinh", "unary:asinh", REAL, {}),
        ("acosh", "unary:acosh", REAL, {}),
        ("atanh", "unary:atanh", REAL, {}),
        ("atan", "unary:atan", REAL, {}),
        ("sinh", "unary:sinh", REAL, {}),
        ("erfc", "unary:erfc", REAL, {}),
        ("digamma", "unary:digamma", REAL, {}),
        ("lgamma", "unary:lgamma", REAL, {}),
        ("sigmoid", "unary:sigmoid", REAL, {}),
        ("neg", "unary:neg_kernel", FLOAT | INT, {}),
        ("sign", "unary:sign_kernel", REAL, {}),
        ("sgn", "unary:sign_kernel", REAL, {}),
        ("signbit", "unary:signbit_kernel", REAL, {}),
        ("floor", "unary:floor_kernel", FLOAT | INT, {}),
        ("ceil", "unary:ceil_kernel", FLOAT | INT, {}),
        ("trunc", "unary:trunc_kernel", FLOAT | INT, {}),
        ("round", "unary:round_kernel", FLOAT | INT, {}),
        ("round", "unary:round_decimals", FLOAT, dict(overload="decimals", out_overload="decimals_out")),
        ("frac", "unary:frac_kernel", FLOAT, {}),
        ("isnan", "unary:isnan_kernel", REAL, {}),
        ("isinf", "unary:isinf_kernel", REAL, {}),
        ("isposinf", "unary:isposinf_kernel", REAL, {}),
        ("isneginf", "unary:isneginf_kernel", REAL, {}),
        ("logical_not", "unary:logical_not_kernel", REAL, {}),
        ("bitwise_not", "unary:bitwise_not_kernel", INT | BOOL, {}),
        ("nan_to_num", "unary:nan_to_num", REAL, {}),
        ("logit", "unary:logit", REAL, {}),
        # activations
        ("relu", "activation:relu_kernel", FLOAT | INT, {}),
        ("hardtanh", "activation:hardtanh", FLOAT | (INT - {torch.uint8}), {}),  # ATen refuses uint8 and bool
        ("gelu", "activation:gelu", FLOAT, {}),
        ("silu", "activation:silu", FLOAT, {}),
        ("mish", "activation:mish_kernel", FLOAT, {}),
        ("elu", "activation:elu", FLOAT, {}),
        ("celu", "activation:celu", FLOAT, {}),
        ("softplus", "activation:softplus", FLOAT, {}),
        ("softshrink", "activation:softshrink", FLOAT, {}),
        ("hardshrink", "activation:hardshrink", FLOAT, {}),
        ("hardsigmoid", "activation:hardsigmoid_kernel", FLOAT, {}),
        ("hardswish", "activation:hardswish_kernel", FLOAT, {}),
        ("leaky_relu", "activation:leaky_relu", FLOAT, {}),
        ("threshold", "activation:threshold", FLOAT | INT, {}),
        ("log_sigmoid_forward", "activation:log_sigmoid_forward", FLOAT,
         dict(out_overload="output", out_args=("output", "buffer"), inplace=False)),
        ("glu", "activation:glu", FLOAT, dict(inplace=False)),
        ("_prelu_kernel", "activation:prelu", FLOAT, dict(tensors=(0, 1), inplace=False)),
    ]
    # backward ops: (grad_output, input, ...) -> grad_input
    grad = dict(out_overload="grad_input", out_args=("grad_input",), tensors=(0, 1), inplace=False)
    rows += [
        ("gelu_backward", "activation_backward:gelu_backward", FLOAT, grad),
        ("silu_backward", "activation_backward:silu_backward", FLOAT, grad),
        ("sigmoid_backward", "activation_backward:sigmoid_backward_kernel", FLOAT, grad),
        ("tanh_backward", "activation_backward:tanh_backward_kernel", FLOAT, grad),
        ("threshold_backward", "activation_backward:threshold_backward", FLOAT | INT, grad),
        ("elu_backward", "activation_backward:elu_backward", FLOAT, {**grad, "tensors": (0, 5)}),
        ("hardtanh_backward", "activation_backward:hardtanh_backward", FLOAT, grad),
        ("hardsigmoid_backward", "activation_backward:hardsigmoid_backward_kernel", FLOAT, grad),
        ("hardswish_backward", "activation_backward:hardswish_backward_kernel", FLOAT,
         {**grad, "out_overload": "out", "out_args": ("out",)}),
        ("leaky_relu_backward", "activation_backward:leaky_relu_backward", FLOAT, grad),
        ("softplus_backward", "activation_backward:softplus_backward", FLOAT, grad),
        ("softshrink_backward", "activation_backward:shrink_backward", FLOAT, grad),
        ("hardshrink_backward", "activation_backward:shrink_backward", FLOAT, grad),
        ("glu_backward", "activation_backward:glu_backward", FLOAT, grad),
        ("log_sigmoid_backward", "activation_backward:log_sigmoid_backward", FLOAT, grad),
        ("logit_backward", "activation_backward:logit_backward", FLOAT, grad),
        ("_prelu_kernel_backward", "activation_backward:prelu_backward", FLOAT, {**grad, "tensors": (0, 1, 2)}),
    ]
    return rows


def ops() -> list[OpImpl]:
    return [impl for base, launch, dtypes, options in _rows() for impl in _overloads(base, launch, dtypes, **options)]


def fused() -> dict:
    return {}
