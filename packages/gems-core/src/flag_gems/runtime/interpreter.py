"""Covering the gaps of Triton's interpreter, so one kernel source runs on the GPU and on CPU.

Switched on only when no GPU is present (see ``device.interpreter``):
- ``libdevice`` functions are stubs in the interpreter (they return None). We give each common one a
  NumPy or torch implementation that works on the interpreter's tensors.
- ``triton.autotune`` with several configs needs a GPU benchmarker; the interpreter keeps the first.
"""

from __future__ import annotations

import numpy as np
import torch


def _torch_special(fn):
    # torch covers what NumPy lacks (erfinv, lgamma, digamma, i0); computed in float64.
    return lambda x: fn(torch.from_numpy(np.asarray(x, dtype=np.float64))).numpy()


def _round_half_away(x):
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _rsqrt(x):
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 / np.sqrt(x)


_UNARY = {
    "abs": np.abs, "fabs": np.abs, "floor": np.floor, "ceil": np.ceil, "trunc": np.trunc,
    "rint": np.rint, "nearbyint": np.rint, "round": _round_half_away,
    "exp": np.exp, "exp2": np.exp2, "exp10": lambda x: np.power(10.0, x), "expm1": np.expm1,
    "log": np.log, "log2": np.log2, "log10": np.log10, "log1p": np.log1p,
    "sqrt": np.sqrt, "rsqrt": _rsqrt, "cbrt": np.cbrt,
    "sin": np.sin, "cos": np.cos, "tan": np.tan, "asin": np.arcsin, "acos": np.arccos, "atan": np.arctan,
    "sinh": np.sinh, "cosh": np.cosh, "tanh": np.tanh,
    "asinh": np.arcsinh, "acosh": np.arccosh, "atanh": np.arctanh,
    "sinpi": lambda x: np.sin(np.pi * x), "cospi": lambda x: np.cos(np.pi * x),
    "erf": _torch_special(torch.special.erf), "erfc": _torch_special(torch.special.erfc),
    "erfinv": _torch_special(torch.special.erfinv), "erfcx": _torch_special(torch.special.erfcx),
    "lgamma": _torch_special(torch.lgamma), "tgamma": lambda x: np.exp(_torch_special(torch.lgamma)(x))
    * np.where((x < 0) & (np.floor(x) % 2 == 1), -1.0, 1.0),
    "digamma": _torch_special(torch.special.digamma),
    "cyl_bessel_i0": _torch_special(torch.special.i0), "cyl_bessel_i1": _torch_special(torch.special.i1),
    "normcdf": _torch_special(torch.special.ndtr), "normcdfinv": _torch_special(torch.special.ndtri),
    "isnan": np.isnan, "isinf": np.isinf, "signbit": np.signbit, "isfinited": np.isfinite,
    "finitef": np.isfinite,
}
_BINARY = {
    "pow": np.power, "atan2": np.arctan2, "hypot": np.hypot, "fmod": np.fmod,
    "remainder": np.remainder, "copysign": np.copysign, "nextafter": np.nextafter,
    "fmax": np.fmax, "fmin": np.fmin, "fdim": lambda a, b: np.maximum(a - b, 0), "div_rn": np.divide,
    "div_rz": np.divide, "ldexp": lambda a, b: a * np.power(2.0, b), "scalbn": lambda a, b: a * np.power(2.0, b),
}
_TERNARY = {"fma": lambda a, b, c: a * b + c, "fma_rn": lambda a, b, c: a * b + c}
# Functions whose result is an integer or boolean, not the float type of their argument.
_INT_RESULT = {"isnan", "isinf", "signbit", "isfinited", "finitef"}


def _make_shim(name: str, np_fn):
    import triton.language as tl
    from triton.runtime.interpreter import TensorHandle

    def shim(*args, _semantic=None, **_):
        ref = next((a for a in args if isinstance(a, tl.tensor)), None)
        values = [a.handle.data if isinstance(a, tl.tensor) else getattr(a, "value", a) for a in args]
        with np.errstate(all="ignore"):
            out = np.asarray(np_fn(*values))
        if ref is None:
            return out.item()
        if name in _INT_RESULT:
            return tl.tensor(TensorHandle(out.astype(np.int32), tl.int32), _retyped(ref.type, tl.int32))
        np_dtype = ref.handle.data.dtype
        return tl.tensor(TensorHandle(out.astype(np_dtype), ref.handle.dtype.scalar), ref.type)

    shim.__name__ = name
    return shim


def _retyped(block_type, scalar):
    import triton.language as tl

    return tl.block_type(scalar, block_type.shape) if isinstance(block_type, tl.block_type) else scalar


def _install_libdevice() -> None:
    import triton.language.extra.cuda.libdevice as cuda_libdevice
    import triton.language.extra.libdevice as libdevice

    table = {**_UNARY, **_BINARY, **_TERNARY}
    for name, np_fn in table.items():
        shim = _make_shim(name, np_fn)
        for module in (libdevice, cuda_libdevice):
            setattr(module, name, shim)


def _install_single_config_autotune() -> None:
    from triton.runtime import autotuner

    if getattr(autotuner.Autotuner.__init__, "_gems_shim", False):
        return
    original = autotuner.Autotuner.__init__

    def first_config_only(self, fn, arg_names, configs, *args, **kwargs):
        # No benchmarker exists in the interpreter: any config computes the same result.
        original(self, fn, arg_names, list(configs)[:1], *args, **kwargs)

    first_config_only._gems_shim = True
    autotuner.Autotuner.__init__ = first_config_only


def _round_to_bfloat16(data: np.ndarray) -> np.ndarray:
    """fp32 values to bf16 bit patterns, rounded to nearest even (as the GPU does; NaN stays NaN)."""
    bits = np.ascontiguousarray(data, dtype=np.float32).view(np.uint32)
    rounded = ((bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))
    nan = np.isnan(data)
    rounded = np.where(nan, (bits >> np.uint32(16)) | np.uint32(0x40), rounded)
    return rounded.astype(np.uint16)


def _install_bfloat16_rounding() -> None:
    import triton.language as tl
    from triton._C.libtriton import ir
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    if getattr(builder.create_fp_to_fp, "_gems_shim", False):
        return
    original_fp_to_fp, original_cast = builder.create_fp_to_fp, builder.cast_impl

    def needs_rounding(src, dst_type) -> bool:
        return src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16

    # The interpreter truncates fp32 to bf16; rounding to nearest even matches the GPU and ATen.
    # An explicit round-toward-zero conversion keeps the interpreter's truncation.
    def fp_to_fp(self, src, dst_type, rounding_mode):
        if needs_rounding(src, dst_type) and rounding_mode in (None, ir.ROUNDING_MODE.RTNE):
            return interpreter.TensorHandle(_round_to_bfloat16(src.data).view(np.uint16), dst_type.scalar)
        return original_fp_to_fp(self, src, dst_type, rounding_mode)

    def cast(self, src, dst_type):
        if needs_rounding(src, dst_type):
            return interpreter.TensorHandle(_round_to_bfloat16(src.data), dst_type.scalar)
        return original_cast(self, src, dst_type)

    fp_to_fp._gems_shim = True
    builder.create_fp_to_fp = fp_to_fp
    builder.cast_impl = cast


def install() -> None:
    """Switch the interpreter on and cover its gaps; call before any kernel is decorated."""
    import triton

    triton.knobs.runtime.interpret = True
    _install_libdevice()
    _install_single_config_autotune()
    _install_bfloat16_rounding()


__all__ = ["install"]
