"""Elementwise ops (gems-pointwise) against ATen: activations, math, binary, comparison, selection,
their backward ops and the fused public functions.

The ops an LLM or a vision model calls most come first and run on an LLM-sized tensor (16384 tokens
x hidden 4096, 64M elements) for bf16, fp16 and fp32, on a vision activation (32x256x56x56) and on
small decode-sized tensors; the rest run in bf16 on the LLM size. Every case is memory-bound: its
bytes are each input read once and each output written once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmark.harness import (
    BF16,
    FLOATS,
    FP32,
    Case,
    addressed_bytes,
    away_from_zero,
    mask,
    normal_inputs,
    randint,
    randn,
    uniform,
)

FAMILY = "pointwise"

LLM = (16384, 4096)
VISION = (32, 256, 56, 56)
SMALL = ((1, 4096), (64, 4096))
QUICK = (32, 48)
aten = torch.ops.aten


def _case(name, fn, make, aten_names, tier=1, dtypes=FLOATS, shapes=None, **kw) -> Case:
    """Tier 1: every float dtype, LLM and vision sizes, two small sizes. Tier 2: the first dtype on
    the LLM size and one small size."""
    if shapes is None:
        shapes = (LLM, VISION) if tier == 1 else (LLM,)
    small = SMALL if tier == 1 else SMALL[:1]
    if tier != 1:
        dtypes = dtypes[:1]
    return Case(name, fn, make, shapes=shapes, small=small, quick=QUICK, dtypes=dtypes,
                aten=aten_names, **kw)


# Input builders: make(shape, dtype) -> args ------------------------------------------------------

x_normal, xy_normal, three_normal = normal_inputs(1), normal_inputs(2), normal_inputs(3)
grad_x = xy_normal  # (grad_output, input) of a backward op
gated = xy_normal  # the two halves of a gated MLP


def x_in(low, high):
    def make(shape, dtype):
        return (uniform(shape, low=low, high=high, dtype=dtype),)
    return make


def xy_denominator(shape, dtype):
    return randn(shape, dtype=dtype), away_from_zero(shape, dtype=dtype)


def xy_positive_base(shape, dtype):
    return uniform(shape, low=0.5, high=2.0, dtype=dtype), randn(shape, dtype=dtype)


def x_row(shape, dtype):
    """A matrix and a row broadcast over it (a bias add)."""
    return randn(shape, dtype=dtype), randn(shape[-1], dtype=dtype)


def xy_transposed(shape, dtype):
    """Two transposed views: the output takes ATen's strides, every access is strided."""
    a = randn(shape[::-1], dtype=dtype).t()
    b = randn(shape[::-1], dtype=dtype).t()
    return a, b


def grad_sigmoid_out(shape, dtype):
    return randn(shape, dtype=dtype), torch.sigmoid(randn(shape, dtype=dtype))


def grad_tanh_out(shape, dtype):
    return randn(shape, dtype=dtype), torch.tanh(randn(shape, dtype=dtype))


def log_sigmoid_grad_args(shape, dtype):
    """(grad_output, input, buffer): the buffer log_sigmoid_forward returns (empty on the GPU)."""
    x = randn(shape, dtype=dtype)
    return randn(shape, dtype=dtype), x, aten.log_sigmoid_forward(x)[1]


def ints(low, high, count=2):
    def make(shape, dtype):
        return tuple(randint(shape, low=low, high=high, dtype=dtype) for _ in range(count))
    return make


def bools(count):
    def make(shape, dtype):
        return tuple(mask(shape) for _ in range(count))
    return make


def where_args(shape, dtype):
    return mask(shape), randn(shape, dtype=dtype), randn(shape, dtype=dtype)


def masked_fill_args(shape, dtype):
    return randn(shape, dtype=dtype), mask(shape, p=0.3)


def addcdiv_args(shape, dtype):
    return randn(shape, dtype=dtype), randn(shape, dtype=dtype), away_from_zero(shape, dtype=dtype)


def with_nans(shape, dtype):
    x = randn(shape, dtype=dtype, scale=100.0)
    x[mask(shape, p=0.01)] = float("nan")
    x[mask(shape, p=0.01)] = float("inf")
    return (x,)


def rotary_args(shape, dtype):
    """q (tokens, 32 heads, 128), k (tokens, 8 heads, 128), cos and sin (tokens, 64)."""
    tokens, heads, kv_heads, dim = shape
    angle = uniform(tokens, dim // 2, low=0.0, high=6.28)
    return (randn(tokens, heads, dim, dtype=dtype), randn(tokens, kv_heads, dim, dtype=dtype),
            angle.cos().to(dtype), angle.sin().to(dtype))


def _rotate(x, cos, sin):
    half = x.shape[-1] // 2
    cos = torch.cat((cos, cos), dim=-1).unsqueeze(-2)
    sin = torch.cat((sin, sin), dim=-1).unsqueeze(-2)
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def rotary_aten(q, k, cos, sin):
    return _rotate(q, cos, sin), _rotate(k, cos, sin)


def rotary_reference(q, k, cos, sin):
    f = [t.float() for t in (q, k, cos, sin)]
    return tuple(t.to(q.dtype) for t in rotary_aten(*f))


def bias_gelu(x, b):
    return F.gelu(x + b)


CASES = [
    # The ops every model calls, on every float dtype and on vision sizes too.
    _case("add", torch.add, xy_normal, ["add.Tensor"]),
    _case("mul", torch.mul, xy_normal, ["mul.Tensor"]),
    _case("mul_scalar", lambda x: x * 1.5, x_normal, ["mul.Tensor", "mul.Scalar"]),
    _case("silu", F.silu, x_normal, ["silu"]),
    _case("gelu", F.gelu, x_normal, ["gelu"]),
    _case("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"), x_normal, ["gelu"]),
    _case("sigmoid", torch.sigmoid, x_normal, ["sigmoid"]),
    _case("exp", torch.exp, x_normal, ["exp"]),
    _case("relu", torch.relu, x_normal, ["relu"]),
    _case("where", torch.where, where_args, ["where.self"]),
    _case("div", torch.div, xy_denominator, ["div.Tensor"]),
    _case("tanh", torch.tanh, x_normal, ["tanh"]),
    _case("sub", torch.sub, xy_normal, ["sub.Tensor"]),
    _case("add_row_broadcast", torch.add, x_row, ["add.Tensor"], tier=2, dtypes=(BF16, FP32)),
    _case("add_transposed", torch.add, xy_transposed, ["add.Tensor"], tier=2),
    _case("add_", lambda x, y: x.add_(y), xy_normal, ["add_.Tensor"], tier=2, inplace=True),
    _case("silu_", lambda x: F.silu(x, inplace=True), x_normal, ["silu_"], tier=2, inplace=True),
    _case("bias_gelu", bias_gelu, x_row, ["gelu", "add.Tensor"], tier=2),
    _case("_to_copy_bf16_fp32", lambda x: x.to(torch.float32), x_normal, ["_to_copy"], tier=2),
    _case("copy_fp32_to_bf16", lambda x, y: y.copy_(x), lambda s, d: (randn(s), randn(s, dtype=BF16)),
          ["copy_"], tier=2, inplace=True, bytes=lambda args, out: addressed_bytes(args[0]) + addressed_bytes(out)),
    _case("fill_", lambda x: x.fill_(0.5), x_normal, ["fill_.Scalar"], tier=2, inplace=True,
          bytes=lambda args, out: addressed_bytes(out)),
    # Fused public functions.
    Case("silu_and_mul", lambda a, b: F.silu(a) * b, gated, shapes=((8192, 14336),), small=((1, 14336),),
         quick=QUICK, dtypes=(BF16, FP32), gems="silu_and_mul"),
    Case("gelu_and_mul", lambda a, b: F.gelu(a) * b, gated, shapes=((8192, 14336),), small=((1, 14336),),
         quick=QUICK, dtypes=(BF16,), gems="gelu_and_mul"),
    Case("apply_rotary_pos_emb", rotary_aten, rotary_args, shapes=((4096, 32, 8, 128),),
         small=((1, 32, 8, 128),), quick=(8, 2, 1, 16), dtypes=(BF16,), gems="apply_rotary_pos_emb",
         reference=rotary_reference, note="signature assumed as in FlagGems: (q, k, cos, sin)"),
    # Activations.
    _case("hardtanh", lambda x: F.hardtanh(x, 0.0, 6.0), x_normal, ["hardtanh"], tier=2),
    _case("leaky_relu", lambda x: F.leaky_relu(x, 0.1), x_normal, ["leaky_relu"], tier=2),
    _case("elu", F.elu, x_normal, ["elu"], tier=2),
    _case("celu", lambda x: F.celu(x, 0.5), x_normal, ["celu", "elu"], tier=2),
    _case("mish", F.mish, x_normal, ["mish"], tier=2),
    _case("softplus", F.softplus, x_normal, ["softplus"], tier=2),
    _case("softshrink", F.softshrink, x_normal, ["softshrink"], tier=2),
    _case("hardshrink", F.hardshrink, x_normal, ["hardshrink"], tier=2),
    _case("hardsigmoid", F.hardsigmoid, x_normal, ["hardsigmoid"], tier=2),
    _case("hardswish", F.hardswish, x_normal, ["hardswish"], tier=2),
    _case("log_sigmoid", F.logsigmoid, x_normal, ["log_sigmoid_forward"], tier=2),
    _case("threshold", lambda x: F.threshold(x, 0.1, 20.0), x_normal, ["threshold"], tier=2),
    _case("glu", lambda x: F.glu(x, -1), x_normal, ["glu"], tier=2),
    _case("prelu", lambda x, w: F.prelu(x, w), lambda s, d: (randn(s, dtype=d), randn(1, dtype=d)),
          ["_prelu_kernel"], tier=2),
    # Backward of activations (ATen's derivative formulas call these).
    _case("silu_backward", aten.silu_backward, grad_x, ["silu_backward"], tier=2, dtypes=(BF16, FP32)),
    _case("gelu_backward", aten.gelu_backward, grad_x, ["gelu_backward"], tier=2, dtypes=(BF16, FP32)),
    _case("sigmoid_backward", aten.sigmoid_backward, grad_sigmoid_out, ["sigmoid_backward"], tier=2),
    _case("tanh_backward", aten.tanh_backward, grad_tanh_out, ["tanh_backward"], tier=2),
    _case("threshold_backward", lambda g, x: aten.threshold_backward(g, x, 0.0), grad_x,
          ["threshold_backward"], tier=2),
    _case("elu_backward", lambda g, x: aten.elu_backward(g, 1.0, 1.0, 1.0, False, x), grad_x,
          ["elu_backward"], tier=2),
    _case("hardtanh_backward", lambda g, x: aten.hardtanh_backward(g, x, 0.0, 6.0), grad_x,
          ["hardtanh_backward"], tier=2),
    _case("hardsigmoid_backward", aten.hardsigmoid_backward, grad_x, ["hardsigmoid_backward"], tier=2),
    _case("hardswish_backward", aten.hardswish_backward, grad_x, ["hardswish_backward"], tier=2),
    _case("leaky_relu_backward", lambda g, x: aten.leaky_relu_backward(g, x, 0.1, False), grad_x,
          ["leaky_relu_backward"], tier=2),
    _case("softplus_backward", lambda g, x: aten.softplus_backward(g, x, 1.0, 20.0), grad_x,
          ["softplus_backward"], tier=2),
    _case("glu_backward", lambda g, x: aten.glu_backward(g, x, -1),
          lambda s, d: (randn(s[0], s[1] // 2, dtype=d), randn(s, dtype=d)), ["glu_backward"], tier=2),
    _case("log_sigmoid_backward", aten.log_sigmoid_backward, log_sigmoid_grad_args, ["log_sigmoid_backward"],
          tier=2),
    _case("logit_backward", lambda g, x: aten.logit_backward(g, x, None),
          lambda s, d: (randn(s, dtype=d), uniform(s, low=0.05, high=0.95, dtype=d)), ["logit_backward"], tier=2),
    # Unary math.
    _case("abs", torch.abs, x_normal, ["abs"], tier=2),
    _case("neg", torch.neg, x_normal, ["neg"], tier=2),
    _case("reciprocal", torch.reciprocal, lambda s, d: (away_from_zero(s, dtype=d),), ["reciprocal"], tier=2),
    _case("sqrt", torch.sqrt, x_in(0.01, 10.0), ["sqrt"], tier=2),
    _case("rsqrt", torch.rsqrt, x_in(0.01, 10.0), ["rsqrt"], tier=2),
    _case("exp2", torch.exp2, x_normal, ["exp2"], tier=2),
    _case("expm1", torch.expm1, x_normal, ["expm1"], tier=2),
    _case("log", torch.log, x_in(0.01, 10.0), ["log"], tier=2),
    _case("log2", torch.log2, x_in(0.01, 10.0), ["log2"], tier=2),
    _case("log10", torch.log10, x_in(0.01, 10.0), ["log10"], tier=2),
    _case("log1p", torch.log1p, x_in(-0.5, 10.0), ["log1p"], tier=2),
    _case("sin", torch.sin, x_normal, ["sin"], tier=2),
    _case("cos", torch.cos, x_normal, ["cos"], tier=2),
    _case("tan", torch.tan, x_in(-1.2, 1.2), ["tan"], tier=2),
    _case("asin", torch.asin, x_in(-0.95, 0.95), ["asin"], tier=2),
    _case("acos", torch.acos, x_in(-0.95, 0.95), ["acos"], tier=2),
    _case("atan", torch.atan, x_normal, ["atan"], tier=2),
    _case("sinh", torch.sinh, x_normal, ["sinh"], tier=2),
    _case("cosh", torch.cosh, x_normal, ["cosh"], tier=2),
    _case("asinh", torch.asinh, x_normal, ["asinh"], tier=2),
    _case("acosh", torch.acosh, x_in(1.1, 10.0), ["acosh"], tier=2),
    _case("atanh", torch.atanh, x_in(-0.9, 0.9), ["atanh"], tier=2),
    _case("erf", torch.erf, x_normal, ["erf"], tier=2),
    _case("erfc", torch.erfc, x_normal, ["erfc"], tier=2),
    _case("erfinv", torch.erfinv, x_in(-0.95, 0.95), ["erfinv"], tier=2),
    _case("logit", torch.logit, x_in(0.05, 0.95), ["logit"], tier=2),
    _case("sign", torch.sign, x_normal, ["sign"], tier=2),
    _case("sgn", torch.sgn, x_normal, ["sgn"], tier=2),
    _case("signbit", torch.signbit, x_normal, ["signbit"], tier=2),
    _case("floor", torch.floor, lambda s, d: (randn(s, dtype=d, scale=10.0),), ["floor"], tier=2),
    _case("ceil", torch.ceil, lambda s, d: (randn(s, dtype=d, scale=10.0),), ["ceil"], tier=2),
    _case("round", torch.round, lambda s, d: (randn(s, dtype=d, scale=10.0),), ["round"], tier=2),
    _case("round_decimals", lambda x: torch.round(x, decimals=2), x_normal, ["round.decimals"], tier=2,
          dtypes=(FP32,)),
    _case("trunc", torch.trunc, lambda s, d: (randn(s, dtype=d, scale=10.0),), ["trunc"], tier=2),
    _case("frac", torch.frac, lambda s, d: (randn(s, dtype=d, scale=10.0),), ["frac"], tier=2),
    _case("angle", torch.angle, x_normal, ["angle"], tier=2),
    _case("deg2rad", torch.deg2rad, x_normal, ["deg2rad"], tier=2),
    _case("rad2deg", torch.rad2deg, x_normal, ["rad2deg"], tier=2),
    _case("lgamma", torch.lgamma, x_in(0.5, 5.0), ["lgamma"], tier=2),
    _case("digamma", torch.digamma, x_in(0.5, 5.0), ["digamma"], tier=2),
    _case("i0", torch.i0, x_normal, ["i0"], tier=2, dtypes=(FP32,)),
    _case("sinc", torch.sinc, x_normal, ["sinc"], tier=2, dtypes=(FP32,)),
    _case("isnan", torch.isnan, with_nans, ["isnan"], tier=2),
    _case("isinf", torch.isinf, with_nans, ["isinf"], tier=2),
    _case("isposinf", torch.isposinf, with_nans, ["isposinf"], tier=2),
    _case("isneginf", torch.isneginf, with_nans, ["isneginf"], tier=2),
    _case("nan_to_num", torch.nan_to_num, with_nans, ["nan_to_num"], tier=2),
    _case("logical_not", torch.logical_not, bools(1), ["logical_not"], tier=2, dtypes=(torch.bool,)),
    _case("bitwise_not", torch.bitwise_not, ints(-1000, 1000, 1), ["bitwise_not"], tier=2,
          dtypes=(torch.int32,)),
    # Binary and comparison.
    _case("rsub", lambda x, y: torch.rsub(x, y, alpha=2), xy_normal, ["rsub.Tensor"], tier=2),
    _case("div_floor", lambda x, y: torch.div(x, y, rounding_mode="floor"), xy_denominator, ["div.Tensor_mode"],
          tier=2),
    _case("div_trunc", lambda x, y: torch.div(x, y, rounding_mode="trunc"), xy_denominator, ["div.Tensor_mode"],
          tier=2),
    _case("floor_divide", torch.floor_divide, xy_denominator, ["floor_divide"], tier=2),
    _case("remainder", torch.remainder, xy_denominator, ["remainder.Tensor"], tier=2),
    _case("fmod", torch.fmod, xy_denominator, ["fmod.Tensor"], tier=2),
    _case("pow", torch.pow, xy_positive_base, ["pow.Tensor_Tensor"], tier=2),
    _case("pow_scalar_exponent", lambda x: torch.pow(x, 2.5), x_in(0.1, 4.0), ["pow.Tensor_Scalar"], tier=2),
    _case("pow_scalar_base", lambda x: torch.pow(2.0, x), x_normal, ["pow.Scalar"], tier=2),
    _case("maximum", torch.maximum, xy_normal, ["maximum"], tier=2),
    _case("minimum", torch.minimum, xy_normal, ["minimum"], tier=2),
    _case("fmax", torch.fmax, xy_normal, ["fmax"], tier=2),
    _case("fmin", torch.fmin, xy_normal, ["fmin"], tier=2),
    _case("atan2", torch.atan2, xy_normal, ["atan2"], tier=2),
    _case("hypot", torch.hypot, xy_normal, ["hypot"], tier=2),
    _case("copysign", torch.copysign, xy_normal, ["copysign.Tensor"], tier=2),
    _case("logaddexp", torch.logaddexp, xy_normal, ["logaddexp"], tier=2),
    _case("logaddexp2", torch.logaddexp2, xy_normal, ["logaddexp2"], tier=2),
    _case("xlogy", torch.xlogy, lambda s, d: (randn(s, dtype=d), uniform(s, low=0.1, high=4.0, dtype=d)),
          ["xlogy.Tensor"], tier=2),
    _case("nextafter", torch.nextafter, xy_normal, ["nextafter"], tier=2, dtypes=(FP32,)),
    _case("heaviside", torch.heaviside, xy_normal, ["heaviside"], tier=2),
    _case("ldexp", lambda x, e: torch.ldexp(x, e), lambda s, d: (randn(s, dtype=d), randint(s, low=-4, high=5)),
          ["ldexp", "mul.Tensor", "exp2", "pow.Scalar"], tier=2, dtypes=(FP32,)),
    _case("lerp", lambda x, y: torch.lerp(x, y, 0.3), xy_normal, ["lerp.Scalar"], tier=2),
    _case("lerp_tensor", torch.lerp, three_normal, ["lerp.Tensor"], tier=2),
    _case("polar", torch.polar, lambda s, d: (uniform(s, low=0.1, high=2.0, dtype=d), randn(s, dtype=d)),
          ["polar"], tier=2, dtypes=(FP32,)),
    _case("gcd", torch.gcd, ints(1, 10000), ["gcd"], tier=2, dtypes=(torch.int32,)),
    _case("lcm", torch.lcm, ints(1, 1000), ["lcm"], tier=2, dtypes=(torch.int32,)),
    _case("eq", torch.eq, lambda s, d: (randint(s, low=0, high=4).to(d), randint(s, low=0, high=4).to(d)),
          ["eq.Tensor"], tier=2),
    _case("ne", torch.ne, xy_normal, ["ne.Tensor"], tier=2),
    _case("lt", torch.lt, xy_normal, ["lt.Tensor"], tier=2),
    _case("le", torch.le, xy_normal, ["le.Tensor"], tier=2),
    _case("gt", torch.gt, xy_normal, ["gt.Tensor"], tier=2),
    _case("ge_scalar", lambda x: torch.ge(x, 0.5), x_normal, ["ge.Scalar"], tier=2),
    _case("logical_and", torch.logical_and, bools(2), ["logical_and"], tier=2, dtypes=(torch.bool,)),
    _case("logical_or", torch.logical_or, bools(2), ["logical_or"], tier=2, dtypes=(torch.bool,)),
    _case("logical_xor", torch.logical_xor, bools(2), ["logical_xor"], tier=2, dtypes=(torch.bool,)),
    _case("bitwise_and", torch.bitwise_and, ints(-1000, 1000), ["bitwise_and.Tensor"], tier=2,
          dtypes=(torch.int32,)),
    _case("bitwise_or", torch.bitwise_or, ints(-1000, 1000), ["bitwise_or.Tensor"], tier=2, dtypes=(torch.int32,)),
    _case("bitwise_xor", torch.bitwise_xor, ints(-1000, 1000), ["bitwise_xor.Tensor"], tier=2,
          dtypes=(torch.int32,)),
    _case("bitwise_left_shift", torch.bitwise_left_shift,
          lambda s, d: (randint(s, low=-1000, high=1000, dtype=d), randint(s, low=0, high=8, dtype=d)),
          ["bitwise_left_shift.Tensor"], tier=2, dtypes=(torch.int32,)),
    _case("bitwise_right_shift", torch.bitwise_right_shift,
          lambda s, d: (randint(s, low=-1000, high=1000, dtype=d), randint(s, low=0, high=8, dtype=d)),
          ["bitwise_right_shift.Tensor"], tier=2, dtypes=(torch.int32,)),
    # Ternary and selection.
    _case("addcmul", lambda x, a, b: torch.addcmul(x, a, b, value=0.5), three_normal, ["addcmul"], tier=2),
    _case("addcdiv", lambda x, a, b: torch.addcdiv(x, a, b, value=0.5), addcdiv_args, ["addcdiv"], tier=2),
    _case("clamp", lambda x: torch.clamp(x, -0.5, 0.5), x_normal, ["clamp"], tier=2),
    _case("clamp_tensor", lambda x, lo, hi: torch.clamp(x, lo, hi),
          lambda s, d: (randn(s, dtype=d), uniform(s, low=-1.0, high=-0.1, dtype=d),
                        uniform(s, low=0.1, high=1.0, dtype=d)), ["clamp.Tensor"], tier=2),
    _case("clamp_min", lambda x: torch.clamp_min(x, 0.1), x_normal, ["clamp_min"], tier=2),
    _case("clamp_max", lambda x: torch.clamp_max(x, 0.1), x_normal, ["clamp_max"], tier=2),
    _case("masked_fill", lambda x, m: x.masked_fill(m, -1e4), masked_fill_args, ["masked_fill.Scalar"], tier=2),
]


def test_pointwise_perf(point, bench):
    bench.run(point)
