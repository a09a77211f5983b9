"""Every ATen overload of an elementwise op, generated from one routing function.

An op such as ``add`` has a Tensor and a Scalar overload, each functional, in-place (``add_``) and
``out=``. They share one semantics, so a family writes one *route* with the signature of the ATen op
(minus ``out``): it returns ``(kernel, kernel_args)`` for the cases our kernels compute, or None to
hand the call back to ATen. :func:`elementwise` reads the schemas of the overloads the running torch
has and wraps the route once per overload kind:

    functional  kernel(*kernel_args)
    in-place    kernel(*kernel_args, out0=self), returns self
    out=        kernel(*kernel_args, out0=out), returns out

Before the route runs, the arguments are checked once: every tensor must have a dtype the op
computes and sit on the device (a CPU 0-d tensor counts as a scalar); anything else goes to ATen,
which computes it or raises its own error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from flag_gems import OpImpl, aten_kernel, promote
from flag_gems.aten_names import is_composite_implicit
from flag_gems.runtime import device

FLOATS = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})
INTEGERS = frozenset({torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8})
#: Every dtype ``pointwise_dynamic`` computes.
ALL = FLOATS | INTEGERS | {torch.bool}
NUMBERS = FLOATS | INTEGERS

Route = Callable[..., tuple | None]

_Tensor = torch.Tensor
_F64 = torch.float64
_INTERPRETER = device.interpreter
_ON_GPU = not _INTERPRETER


def _check(args, dtypes) -> int:
    """0: hand the call to ATen; 1: our kernels take it; 2: they take it, but a float64 tensor is
    among the operands, so Python floats must reach the kernel exactly (see :func:`_exact`)."""
    state = 1
    for a in args:
        if isinstance(a, _Tensor):
            dtype = a.dtype
            if dtype not in dtypes:
                return 0
            if _ON_GPU and not a.is_cuda:
                if a.dim():
                    return 0
                if dtype is _F64:
                    state = 2
            elif dtype is _F64:
                state = 2
        elif type(a) is complex:
            return 0
    return state


def _exact(kernel_args, like: torch.Tensor) -> tuple:
    # A Python float reaches a Triton kernel as float32; beside float64 tensors it travels as a 0-d
    # float64 tensor on the device instead (the same promotion: a float64 operand is already present).
    return tuple(torch.scalar_tensor(a, dtype=_F64, device=like.device) if type(a) is float
                 else a.to(like.device) if type(a) is _Tensor and a.dtype is _F64 and a.device != like.device
                 else a for a in kernel_args)


def _first_tensor(args) -> torch.Tensor:
    return next(a for a in args if isinstance(a, _Tensor))


class AtenFallback:
    """ATen's kernel for one overload, the way our wrappers hand a call back.

    On the interpreter, ATen's kernel may call served ops again (a composite re-dispatching to
    another overload); core's re-entry guard is lifted for that call so that our wrappers, which
    guard their own kernel launches, take those nested calls.
    """

    __slots__ = ("kernel",)

    def __init__(self, name: str) -> None:
        self.kernel = aten_kernel(name)

    def __call__(self, *args, **kwargs):
        if not _INTERPRETER:
            return self.kernel(*args, **kwargs)
        return self.kernel.decomposed(*args, **kwargs)


def _functional(route: Route, fallback: AtenFallback, dtypes) -> Callable:
    def op(*args, **kwargs):
        state = _check(args, dtypes)
        if state:
            # Without keywords (nearly every call), no empty keyword dict is unpacked.
            call = route(*args, **kwargs) if kwargs else route(*args)
            if call is not None:
                kernel, kernel_args = call
                if state == 2:
                    kernel_args = _exact(kernel_args, _first_tensor(args))
                return kernel(*kernel_args)
        return fallback(*args, **kwargs)

    return op


def _inplace(route: Route, fallback: AtenFallback, dtypes, inplace_ok: Callable | None) -> Callable:
    def op(self, *args, **kwargs):
        state = _check((self, *args), dtypes)
        if state and (not _ON_GPU or self.is_cuda) and (inplace_ok is None or inplace_ok(self, *args)):
            call = route(self, *args, **kwargs)
            if call is not None:
                kernel, kernel_args = call
                if state == 2:
                    kernel_args = _exact(kernel_args, self)
                kernel(*kernel_args, out0=self)
                return self
        return fallback(self, *args, **kwargs)

    return op


def _out(route: Route, fallback: AtenFallback, dtypes, out_ok: Callable | None) -> Callable:
    out_dtypes = ALL | dtypes  # outputs receive a cast to their dtype

    def op(*args, out, **kwargs):
        state = _check(args, dtypes)
        if (state and out.dtype in out_dtypes and (not _ON_GPU or out.is_cuda)
                and (out_ok is None or out_ok(out, *args))):
            call = route(*args, **kwargs)
            if call is not None:
                kernel, kernel_args = call
                if state == 2:
                    kernel_args = _exact(kernel_args, out)
                kernel(*kernel_args, out0=out)
                return out
        return fallback(*args, out=out, **kwargs)

    return op


def _overload_names(packet_name: str) -> list[str]:
    packet = getattr(torch.ops.aten, packet_name, None)
    if packet is None:
        return []
    names = []
    for overload in packet.overloads():
        name = packet_name if overload == "default" else f"{packet_name}.{overload}"
        try:
            if is_composite_implicit(name):
                continue
        except RuntimeError:  # a TorchScript-only overload (add.int, ...): not a dispatcher op
            continue
        names.append(name)
    return names


def elementwise(packets: Iterable[str] | str, route: Route, dtypes=ALL,
                out_ok: Callable | None = None, inplace_ok: Callable | None = None) -> list[OpImpl]:
    """OpImpls for every overload of the ATen ``packets`` ("add" and "add_", say) that the running
    torch has and that is not CompositeImplicitAutograd, all computed by ``route``.

    ``dtypes``: the tensor dtypes the route handles (others go to ATen). ``out_ok(out, *args)``: for
    ops whose ``out=`` ATen restricts beyond a cast (``where`` wants the result dtype exactly).
    ``inplace_ok(self, *args)``: the same for the in-place overloads (False: ATen computes or raises).
    """
    if isinstance(packets, str):
        packets = (packets, packets + "_")
    impls = []
    for packet_name in packets:
        for name in _overload_names(packet_name):
            schema = getattr(getattr(torch.ops.aten, packet_name), name.partition(".")[2] or "default")._schema
            fallback = AtenFallback(name)
            if any(a.is_out for a in schema.arguments):
                fn = _out(route, fallback, dtypes, out_ok)
            elif schema.arguments[0].alias_info is not None and schema.arguments[0].alias_info.is_write:
                fn = _inplace(route, fallback, dtypes, inplace_ok)
            else:
                fn = _functional(route, fallback, dtypes)
            fn.__name__ = fn.__qualname__ = name.replace(".", "_")
            impls.append(OpImpl(name, fn))
    return impls


def fits(value, dtype: torch.dtype) -> bool:
    """Whether ATen converts the Python scalar ``value`` to ``dtype`` without its overflow error
    (fill_, masked_fill, clamp bounds, alpha...): in range, or a float's inf/nan into a float type."""
    if type(value) is bool:
        return True
    if dtype.is_floating_point:
        if dtype is _F64 or math.isinf(value) or math.isnan(value):
            return True
        return abs(value) <= torch.finfo(dtype).max
    if dtype is torch.bool:
        return True
    if isinstance(value, float) and not math.isfinite(value):
        return False
    info = torch.iinfo(dtype)
    # an integer may wrap into an unsigned type (-1 is 255 for uint8); a float may not
    low = -info.max if info.min == 0 and not isinstance(value, float) else info.min
    return low <= value <= info.max


def fits_result(value, *operands) -> bool:
    """:func:`fits` against the dtype an op over ``operands`` and ``value`` promotes to; values every
    dtype holds skip the promotion."""
    if type(value) is bool or (type(value) is int and -128 <= value <= 127):
        return True
    if type(value) is float and not abs(value) > 65504.0:  # nan too
        return True
    if not isinstance(value, (int, float)):
        return False
    return fits(value, promote(*operands, value)[1])


def is_bool(value) -> bool:
    """A bool tensor or a Python bool."""
    return value.dtype is torch.bool if isinstance(value, _Tensor) else type(value) is bool


def is_integral(value) -> bool:
    """An integer or bool tensor, or a Python int or bool."""
    if isinstance(value, _Tensor):
        return not value.dtype.is_floating_point and not value.dtype.is_complex
    return isinstance(value, int)


def both_bool(x, y) -> bool:
    """Both operands bool (tensors or Python bools)."""
    return is_bool(x) and is_bool(y)


def both_integral(x, y) -> bool:
    """Both operands integer or bool (tensors or Python numbers)."""
    return is_integral(x) and is_integral(y)


def computes_in_output_dtype(out, *args) -> bool:
    """Whether ``out`` (an out= or in-place self) has the dtype the op over ``args`` computes in.

    For ops whose CUDA kernel computes in the output's dtype (bitwise and shift ops dispatch on it):
    ATen on CUDA raises for a float output and narrows the operands to a narrower one; ATen on CPU
    computes in the operands' dtype and casts. Elsewhere ATen decides.
    """
    return out.dtype == promote(*args)[1]


def inplace_computes_in_own_dtype(self, *args) -> bool:
    """:func:`computes_in_output_dtype` for an in-place ``self``."""
    return computes_in_output_dtype(self, self, *args)


def binary_route(kernel, doc: str, refuse: Callable | None = None) -> Route:
    """The route of an op ``(self, other)`` that ``kernel`` computes unless ``refuse(self, other)``."""
    if refuse is None:
        def route(self, other):
            return kernel, (self, other)
    else:
        def route(self, other):
            return None if refuse(self, other) else (kernel, (self, other))
    route.__doc__ = doc
    return route
