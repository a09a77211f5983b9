"""Accuracy in ulps of the elementwise ops whose kernels evaluate formulas of their own (sinh, atan, atan2, gelu,
softplus, erfc, pow, digamma, lgamma) or may divide approximately (silu, sigmoid, with the knob on and off), and
the identity of floor division's shortcut for half types, against float64: every value of the
half types, a float32 sample spread over the whole range, and the points where the formulas switch branch,
overflow or meet zeros, infinities and NaN.

Results rounded to a half type must stay within 0.6 ulp of the exact value (the rounding's 0.5, and
0.1 for the float32 formula, which is what lets the half-type kernels use shorter ones); float32 results
within 2 ulp (sinh 3.5: libdevice's expf alone is 2 ulp on the GPU, and the interpreter does not fuse
multiply-adds). gelu keeps ATen's formula ``x / 2 (1 + erf)``, whose sum cancels as x -> -inf: there
it may be off by float32's step of 1 + erf, ``2**-24 |x|``, as ATen's is. silu and sigmoid keep ATen's
``x / (1 + exp(-x))``, whose exp overflows float32 below -88.7 (the results are 0 there): they are
measured against that formula's exact value with float32's overflow.
"""

from __future__ import annotations

import math

import pytest
import torch

import flag_gems
from flag_gems.testing import served

# isort: split
# after flag_gems, which turns Triton's interpreter on where there is no GPU
import triton
import triton.language as tl

from flag_gems import pointwise_dynamic
from gems_pointwise import binary

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
DEVICE = flag_gems.device
F16, BF16, F32 = torch.float16, torch.bfloat16, torch.float32
INF, NAN = math.inf, math.nan
MANTISSA = {F16: 10, BF16: 7, F32: 23}
LIMIT = {F16: 0.6, BF16: 0.6}
# silu, sigmoid: libdevice's expf (2 ulp), the sum and the IEEE division, as in ATen.
LIMIT_F32 = {"sinh": 3.5, "atan": 2.0, "atan2": 2.0, "gelu": 2.0, "silu": 3.0, "sigmoid": 3.0}
# The switch points of the formulas (unary.py, activation.py), with their neighbours.
EDGES = [0.0, 1e-45, 1e-40, 2**-126, 1e-30, 1e-8, 1e-3, 0.1249, 0.125, 0.1251, 0.5, 0.999, 1.0, 1.001, 2.0,
         5.6568, 5.6569, 5.657, 10.0, 11.09, 11.1, 88.7, 89.0, 89.4, 89.5, 100.0, 65504.0, 1e10, 8.5e37,
         8.6e37, 1.7e38, 3.4e38, INF, NAN]
EDGES = EDGES + [-v for v in EDGES]


def _ulp(value: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The spacing of ``dtype`` at each float64 ``value`` (its smallest subnormal at zero)."""
    info = torch.finfo(dtype)
    _, exponent = torch.frexp(value.abs())
    exponent = torch.clamp(exponent - 1, min=math.log2(info.tiny))
    return torch.pow(2.0, exponent - MANTISSA[dtype]).to(torch.float64)


def _readable(x: torch.Tensor) -> torch.Tensor:
    """``x`` without the values the interpreter reads wrongly: bfloat16 subnormals (for every op, neg too)."""
    if x.dtype is BF16 and flag_gems.device == "cpu":
        x = x[(x == 0) | (x.float().abs() >= 2**-126) | x.isnan()]
    return x


def _every_value(dtype: torch.dtype) -> torch.Tensor:
    """Every bit pattern of a half type; for float32 a sample of every magnitude, and the edges (built on
    the CPU, with a CPU generator, whatever the default device)."""
    with torch.device("cpu"):
        return _every_value_on_cpu(dtype)


def _every_value_on_cpu(dtype: torch.dtype) -> torch.Tensor:
    edges = torch.tensor(EDGES, dtype=torch.float64).to(dtype)
    if dtype in (F16, BF16):
        return _readable(torch.cat([torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype),
                                    edges]))
    g = torch.Generator().manual_seed(0)
    n = 1 << 14
    magnitude = torch.exp(torch.empty(n, dtype=torch.float64).uniform_(-103, 89, generator=g))
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    normal = torch.randn(n, generator=g, dtype=torch.float64) * 3
    return torch.cat([normal.to(F32), (magnitude * sign).to(F32), edges])


def _range_edge_step(res: torch.Tensor, rounded: torch.Tensor) -> torch.Tensor:
    """Where ``res`` is one step from ``rounded`` at an end of the half type's range (the largest finite
    number against infinity, the smallest subnormal against zero): a result within an ulp before its
    rounding may land either side there, as the GPU's approximate float32 functions make ATen's do."""
    if res.dtype not in (F16, BF16):
        return torch.zeros_like(res, dtype=torch.bool)
    step = (res.view(torch.int16).int() - rounded.view(torch.int16).int()).abs() == 1
    ends = res.isinf() | rounded.isinf() | (res == 0) | (rounded == 0)
    return step & ends


def _check_ulps(name, res, x, exact, dtype):
    """``res`` within the op's ulp limit of the float64 ``exact``; zeros, infinities and NaN exactly."""
    res, exact = res.cpu(), exact.cpu()
    rounded = exact.to(dtype)
    special = (rounded == 0) | rounded.isinf() | rounded.isnan()
    assert torch.equal(res[special].isnan(), rounded[special].isnan())
    edge = _range_edge_step(res, rounded)
    numbers = special & ~rounded.isnan() & ~edge
    assert torch.equal(res[numbers], rounded[numbers]), name
    assert torch.equal(res[numbers].signbit(), rounded[numbers].signbit()), name
    limit = LIMIT.get(dtype) or LIMIT_F32[name]
    allowed = limit * _ulp(exact, dtype)
    if name == "gelu":  # the cancelling sum 1 + erf, as in ATen
        allowed = allowed + 2.0**-24 * x.cpu().double().abs()
    error = (res.double() - exact).abs()
    bad = ~special & ~edge & ~(error <= allowed)
    if bad.any():
        i = int(bad.nonzero()[0])
        worst = int((error / _ulp(exact, dtype)).masked_fill(special, 0).argmax())
        raise AssertionError(f"{name} {dtype}: {int(bad.sum())} results off, e.g. at {x.view(-1)[i].item()!r}: "
                             f"{res[i].item()!r}, exact {exact[i].item()!r}; worst "
                             f"{(error[worst] / _ulp(exact, dtype)[worst]).item():.2f} ulp")


UNARY = {"sinh": torch.sinh, "atan": torch.atan, "gelu": torch.nn.functional.gelu}


def _exp_in_float32_range(z: torch.Tensor) -> torch.Tensor:
    """float64 ``exp(z)``, infinite where float32's exp overflows (as it does in ATen's formulas)."""
    e = torch.exp(z)
    return torch.where(e.to(F32).isinf(), INF, e)


# ATen's formulas, exact but for their exp's overflow in float32.
DIVIDING = {"silu": (torch.nn.functional.silu, lambda x: x / (1.0 + _exp_in_float32_range(-x))),
            "sigmoid": (torch.sigmoid, lambda x: 1.0 / (1.0 + _exp_in_float32_range(-x)))}


@pytest.fixture(params=[False, True], ids=["ieee_division", "approx_division"])
def half_approx_division(request, monkeypatch):
    """Both settings of ``KNOBS.half_approx_division``."""
    from gems_pointwise.knobs import KNOBS

    monkeypatch.setattr(KNOBS, "half_approx_division", request.param)
    return request.param


@pytest.mark.parametrize("dtype", [F16, BF16, F32])
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_ulps(name, dtype):
    call = UNARY[name]
    x = _every_value(dtype)
    if name == "gelu":  # ATen's CPU gelu gives NaN at +inf in float32 (its CUDA one, and ours, +inf)
        x = x[~x.isinf()]
    x = x.to(DEVICE)
    with served(name):
        res = call(x)
    assert res.dtype == dtype
    _check_ulps(name, res, x, call(x.cpu().double()), dtype)


@pytest.mark.parametrize("dtype", [F16, BF16, F32])
@pytest.mark.parametrize("name", sorted(DIVIDING))
def test_dividing_ulps(name, dtype, half_approx_division):
    call, formula = DIVIDING[name]
    x = _every_value(dtype).to(DEVICE)
    with served(name):
        res = call(x)
    assert res.dtype == dtype
    _check_ulps(name, res, x, formula(x.cpu().double()), dtype)


@pytest.mark.parametrize("dtype", [F16, BF16])
def test_silu_backward_half_types(dtype, half_approx_division):
    """silu_backward over every value of a half type, with a gradient of 1 (its float32 formula cancels
    in ``1 - s``, as ATen's does): within a half-type ulp of ATen's result computed in float32."""
    x = _every_value(dtype)
    x = x[x.float().abs() < 88.0].to(DEVICE)  # where float32's exp neither overflows nor flushes
    grad = torch.ones_like(x)
    with served("silu_backward"):
        res = torch.ops.aten.silu_backward(grad, x)
    ref = torch.ops.aten.silu_backward(grad.cpu().float(), x.cpu().float()).double()
    error = (res.cpu().double() - ref).abs()
    assert (error <= _ulp(ref, dtype)).all(), f"{int((error > _ulp(ref, dtype)).sum())} results off"


@pytest.mark.parametrize("dtype", [F16, BF16, F32])
def test_atan2_ulps(dtype):
    values = _every_value(dtype)
    g = torch.Generator().manual_seed(1)
    y = values[torch.randperm(len(values), generator=g, device="cpu")]
    x = values[torch.randperm(len(values), generator=g, device="cpu")]
    edges = _readable(torch.tensor(EDGES, dtype=torch.float64, device="cpu").to(dtype))
    y = torch.cat([y, edges.repeat_interleave(len(edges)), edges]).to(DEVICE)
    x = torch.cat([x, edges.repeat(len(edges)), edges]).to(DEVICE)  # with atan2(v, v)
    with served("atan2"):
        res = torch.atan2(y, x)
    assert res.dtype == dtype
    _check_ulps("atan2", res, y, torch.atan2(y.cpu().double(), x.cpu().double()), dtype)


@pytest.mark.parametrize("dtype", [F16, BF16, F32])
def test_atan2_quadrants_exact(dtype):
    """C's atan2 at signed zeros and infinities: +-0, +-pi, +-pi/2, +-pi/4, +-3pi/4 to the bit, NaN in, NaN out."""
    values = [0.0, -0.0, 1.0, -1.0, INF, -INF, NAN]
    y = torch.tensor(values, dtype=dtype).repeat_interleave(len(values)).to(DEVICE)
    x = torch.tensor(values, dtype=dtype).repeat(len(values)).to(DEVICE)
    with served("atan2"):
        res = torch.atan2(y, x).cpu()
    ref = torch.atan2(y.cpu().double(), x.cpu().double()).to(dtype)
    assert torch.equal(res.isnan(), ref.isnan())
    numbers = ~ref.isnan()
    assert torch.equal(res[numbers], ref[numbers])
    assert torch.equal(res[numbers].signbit(), ref[numbers].signbit())


@pytest.mark.parametrize("name", ["sinh", "atan", "gelu", "atan2"])
def test_half_formulas_follow_the_output_dtype(name):
    """float16 inputs written to a float32 ``out=`` compute with the float32-accurate kernels."""
    x = torch.tensor(EDGES[:31], dtype=F16).to(DEVICE)
    args = (x, x.flip(0)) if name == "atan2" else (x,)
    out = torch.empty(x.shape, dtype=F32, device=DEVICE)
    call = torch.ops.aten.gelu.out if name == "gelu" else getattr(torch, name)
    with served(name):
        call(*args, out=out)
    exact = (torch.ops.aten.gelu if name == "gelu" else getattr(torch, name))(*[a.cpu().double() for a in args])
    _check_ulps(name, out, x, exact, F32)


def test_half_formulas_in_float32():
    """The half-type kernels' float32 results, before their rounding to the half type, stay within 8e-6 of
    the exact value (1.6% of a float16 ulp): the fits' own error and ex2.approx's."""
    from gems_pointwise import activation, binary, unary

    values = _every_value(F32)
    y = values[torch.randperm(len(values), generator=torch.Generator().manual_seed(2), device="cpu")]
    kernels = {"sinh": (unary.sinh_half_kernel, torch.sinh, (values,)),
               "atan": (unary.atan_half_kernel, torch.atan, (values,)),
               "gelu": (activation.gelu_half_kernel, torch.nn.functional.gelu, (values,)),
               "atan2": (binary.atan2_half_kernel, torch.atan2, (y, values))}
    for name, (kernel, call, args) in kernels.items():
        res = kernel(*[a.to(DEVICE) for a in args]).cpu().double()
        exact = call(*[a.double() for a in args])
        error = (res - exact).abs()
        allowed = 8e-6 * exact.abs() + 1e-37  # results past float32's normal range aside
        if name == "gelu":
            allowed = allowed + 2.0**-24 * values.double().abs()
        fine = (error <= allowed) | (res == exact) | exact.isnan() | (exact.abs() > torch.finfo(F32).max)
        assert fine.all(), f"{name}: {int((~fine).sum())} results off, e.g. at {args[0][~fine][0].item()!r}"


# -- softplus, erfc and pow: the half-type formulas of KNOBS.half_fast_softplus, half_fast_erfc and
# half_fast_pow, checked with the knobs on and off (off: the float32-accurate kernels, or pow's own).
FAST_KNOBS = ("half_fast_softplus", "half_fast_erfc", "half_fast_pow")


@pytest.fixture(params=[False, True], ids=["float32_formulas", "fast_formulas"])
def fast_formulas(request, monkeypatch):
    """Both settings of the half-type formula knobs of softplus, erfc and pow."""
    from gems_pointwise.knobs import KNOBS

    for knob in FAST_KNOBS:
        monkeypatch.setattr(KNOBS, knob, request.param)
    return request.param


# (beta, threshold): ATen's defaults, a scaled one, a negative beta, a negative threshold; the last
# (threshold past exp's overflow) keeps the float32 kernel with the knob on.
SOFTPLUS_ARGS = [(1.0, 20.0), (2.0, 5.0), (-0.5, 20.0), (0.3, -1.0), (1.0, 100.0)]


@pytest.mark.parametrize("dtype", [F16, BF16])
@pytest.mark.parametrize("beta, threshold", SOFTPLUS_ARGS)
def test_softplus_ulps(dtype, beta, threshold, fast_formulas):
    x = _every_value(dtype)
    x = x[~x.isinf() | (x * beta > 0)]  # ATen's e**(beta x) at -inf: log1p(0) / beta
    x = x.to(DEVICE)
    with served("softplus"):
        res = torch.nn.functional.softplus(x, beta, threshold)
    assert res.dtype == dtype
    # ATen's rule: beta x in float32 (beta as float32) against the threshold; its exp overflows from 88.72.
    beta32 = torch.tensor(beta, dtype=F32, device="cpu").double()
    z = (x.cpu().float() * beta32.float()).double()
    exact = torch.where(z > threshold, x.cpu().double(), torch.log1p(_exp_in_float32_range(z)) / beta32)
    _check_ulps("softplus", res, x, exact, dtype)


@pytest.mark.parametrize("dtype", [F16, BF16])
def test_erfc_ulps(dtype, fast_formulas):
    x = _every_value(dtype).to(DEVICE)
    with served("erfc"):
        res = torch.erfc(x)
    assert res.dtype == dtype
    _check_ulps("erfc", res, x, torch.special.erfc(x.cpu().double()), dtype)


def _half(value: float, dtype: torch.dtype) -> float:
    """``value`` rounded to ``dtype``, as ATen converts pow's scalar operand."""
    return torch.tensor(value, dtype=dtype).item()


# Fractions, ATen's own formulas (0.5, -0.5, -1, 2, 3, -2), small powers multiplied out (4..7), large
# and negative integers, 0, 1, infinities and NaN.
POW_EXPONENTS = [2.5, 0.3, -1.7, 1e-3, 0.5, -0.5, -1.0, 2.0, 3.0, -2.0, 4.0, 7.0, 9.0, 40.0, -3.0, 0.0, 1.0,
                 INF, -INF, NAN]
# The exponents ATen computes by formulas (sqrt, 1 / sqrt, 1 / x, x * x, x * x * x, 1 / (x * x)) in float32.
ATEN_POW_FORMULAS = {0.5, -0.5, -1.0, 2.0, 3.0, -2.0}
# Not -0.0: a scalar -0.0 reaches kernels as +0.0 (any kernel's scalar, with the knob on or off); tensor
# bases of -0.0 are in test_pow_tensors_ulps.
POW_BASES = [2.0, 0.5, 3.0, 1.0625, 10.0, 1.0, 0.0, -2.0, -1.0, INF, -INF, NAN]


@pytest.mark.parametrize("dtype", [F16, BF16])
@pytest.mark.parametrize("exponent", POW_EXPONENTS)
def test_pow_scalar_exponent_ulps(dtype, exponent, fast_formulas):
    x = _every_value(dtype).to(DEVICE)
    with served("pow"):
        res = torch.pow(x, exponent)
    assert res.dtype == dtype
    if exponent in ATEN_POW_FORMULAS:  # float32 products that may overflow where the power does not
        exact = torch.pow(x.cpu().float(), exponent).double()
    else:
        exact = torch.pow(x.cpu().double(), _half(exponent, dtype))
    _check_ulps("pow", res, x, exact, dtype)


@pytest.mark.parametrize("dtype", [F16, BF16])
@pytest.mark.parametrize("base", POW_BASES)
def test_pow_scalar_base_ulps(dtype, base, fast_formulas):
    y = _every_value(dtype).to(DEVICE)
    with served("pow"):
        res = torch.pow(base, y)
    assert res.dtype == dtype
    _check_ulps("pow", res, y, torch.pow(_half(base, dtype), y.cpu().double()), dtype)


@pytest.mark.parametrize("dtype", [F16, BF16])
def test_pow_tensors_ulps(dtype, fast_formulas):
    """Shuffled pairs of every value, then every pair of the special values (signed zeros, +-1, negative
    bases with integer and fractional exponents, 0**0, 1**nan, (-1)**inf, x**0.5), then exact ties
    (1.0625**2 lies halfway between two half-type numbers)."""
    values = _every_value(dtype)
    g = torch.Generator().manual_seed(3)
    x = values[torch.randperm(len(values), generator=g, device="cpu")]
    y = values[torch.randperm(len(values), generator=g, device="cpu")]
    special = torch.tensor([0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 3.0, -3.0, 2.5, 7.0, 8.0, 1.0625, 1e4,
                            INF, -INF, NAN], dtype=dtype, device="cpu")
    count = len(special)
    ties = torch.tensor([1.0625, -1.0625, 1.0078125, 3.0, 5.0], dtype=dtype, device="cpu")
    x = torch.cat([x, special.repeat_interleave(count), ties.repeat_interleave(6)]).to(DEVICE)
    powers = torch.tensor([2.0, 3.0, 4.0, 5.0, 6.0, 7.0], dtype=dtype, device="cpu")
    y = torch.cat([y, special.repeat(count), powers.repeat(5)])
    y = y.to(DEVICE)
    with served("pow"):
        res = torch.pow(x, y)
    assert res.dtype == dtype
    _check_ulps("pow", res, x, torch.pow(x.cpu().double(), y.cpu().double()), dtype)


# Exponents whose powers of bfloat16's subnormal bases are normal numbers, 0 or inf (subnormal powers, as
# x ** 1, come from ex2.approx.ftz, which flushes them).
SUBNORMAL_BASE_EXPONENTS = [0.5, 0.25, 0.75, 0.1, 0.9, 0.3, -0.25, -0.5, -0.75, -1.0, 2.0, 3.0, 1.5, 2.5, 9.0, -3.0,
                            0.0, INF, -INF, NAN]


@pytest.mark.skipif(DEVICE == "cpu", reason="the interpreter misreads bfloat16 subnormals")
def test_pow_of_bfloat16_subnormal_bases(fast_formulas):
    """bfloat16 bases below 2**-126 keep their log2 (lg2.approx.ftz would flush them to zero, (1e-39) ** 0.5
    giving 0): Tensor ** Tensor, Tensor ** scalar and a negative scalar base as ATen's, one bit pattern apart
    at most (an ulp, or at the ends of the range the largest finite number against inf), NaN exactly."""
    tiny = torch.arange(1, 128, dtype=torch.int16, device=DEVICE).view(BF16)  # every positive subnormal
    bases = torch.cat([tiny, -tiny, torch.tensor([2**-126, 2**-125], dtype=BF16, device=DEVICE)])
    exponents = torch.tensor(SUBNORMAL_BASE_EXPONENTS, dtype=BF16, device=DEVICE)
    x = bases.repeat_interleave(len(exponents))
    y = exponents.repeat(len(bases))
    cases = {"Tensor ** Tensor": (lambda: torch.pow(x, y), torch.pow(x, y))}
    for e in SUBNORMAL_BASE_EXPONENTS:
        cases[f"Tensor ** {e}"] = (lambda e=e: torch.pow(bases, e), torch.pow(bases, e))
    cases["-1e-38 ** Tensor"] = (lambda: torch.pow(-1e-38, exponents), torch.pow(-1e-38, exponents))
    for name, (call, aten) in cases.items():
        with served("pow"):
            res = call()
        assert res.dtype == BF16, name
        res, aten = res.cpu(), aten.cpu()
        assert torch.equal(res.isnan(), aten.isnan()), name
        # one bit pattern apart is one ulp, or an end of the range; a sign change is many patterns apart
        steps = (res.view(torch.int16).int() - aten.view(torch.int16).int()).abs()
        bad = ~aten.isnan() & (steps > 1)
        assert not bad.any(), f"{name}: {res[bad][:4].tolist()} where ATen gives {aten[bad][:4].tolist()}"


def test_fast_formulas_in_float32():
    """The float32 results of the softplus and erfc half-type kernels, before their rounding to the half
    type, stay within 3e-6 of the exact value on a float32 sample (1e-5 past 4, where float16's results
    are 0 and a**2's rounding enters erfc's exponent): the fits' own error; ex2.approx adds 2**-21 on the
    GPU (squared)."""
    from gems_pointwise import activation, unary

    values = _every_value(F32)
    x = values.to(DEVICE)
    beta, threshold = 1.0, 20.0
    softplus = activation.softplus_half_kernel(x, beta, threshold, 1.0 / beta).cpu().double()
    exact = torch.nn.functional.softplus(values.double(), beta, threshold)
    erfc = unary.erfc_half_kernel(x).cpu().double()
    erfc_exact = torch.special.erfc(values.double())
    allowed = torch.where(values.abs() > 4, 1e-5, 3e-6).double()
    for name, res, ref in (("softplus", softplus, exact), ("erfc", erfc, erfc_exact)):
        error = (res - ref).abs()
        fine = (error <= allowed * ref.abs() + 1e-37) | (res == ref) | ref.isnan()
        assert fine.all(), f"{name}: {int((~fine).sum())} results off, e.g. at {values[~fine][0].item()!r}"


# -- digamma and lgamma: the half-type formulas of KNOBS.half_fast_digamma, half_fast_lgamma and
# half_short_lgamma (bfloat16 results only), with the knobs on and off. ATen's float32 digamma cancels near
# its zeros (x = 1.4616, one in each interval of the negative axis), where even its result misses float16's
# 0.6 ulp (1.5 ulp at -16.73): there results may be as far off as ATen's float32 result before rounding,
# plus 0.1 ulp.
GAMMA_KNOBS = ("half_fast_digamma", "half_fast_lgamma", "half_short_lgamma")


@pytest.fixture(params=["float32_gamma", "fast_gamma", "long_fit_gamma"])
def fast_gamma(request, monkeypatch):
    """The half-type formula knobs of digamma and lgamma all off, all on, and on but half_short_lgamma (the
    bfloat16 lgamma kernel before it)."""
    from gems_pointwise.knobs import KNOBS

    fast = request.param != "float32_gamma"
    for knob in GAMMA_KNOBS:
        monkeypatch.setattr(KNOBS, knob, fast)
    if request.param == "long_fit_gamma":
        monkeypatch.setattr(KNOBS, "half_short_lgamma", False)
    return fast


def _check_near_float32(name, res, x, exact, float32_result, dtype):
    """``res`` within 0.6 ulp of ``exact``, or within ``float32_result``'s own error plus 0.1 ulp;
    zeros, infinities and NaN exactly."""
    res, exact = res.cpu(), exact.cpu()
    float32_error = (float32_result.cpu().double() - exact).abs() / _ulp(exact, dtype)
    rounded = exact.to(dtype)
    special = (rounded == 0) | rounded.isinf() | rounded.isnan()
    assert torch.equal(res[special].isnan(), rounded[special].isnan()), name
    numbers = special & ~rounded.isnan()
    assert torch.equal(res[numbers], rounded[numbers]), name
    assert torch.equal(res[numbers].signbit(), rounded[numbers].signbit()), name
    error = (res.double() - exact).abs() / _ulp(exact, dtype)
    bad = ~special & ~(error <= torch.clamp(float32_error + 0.1, min=LIMIT[dtype]))
    if bad.any():
        i = int(bad.nonzero()[0])
        raise AssertionError(f"{name} {dtype}: {int(bad.sum())} results off, e.g. at {x.view(-1)[i].item()!r}: "
                             f"{res[i].item()!r}, exact {exact[i].item()!r}")


@pytest.mark.parametrize("dtype", [F16, BF16])
@pytest.mark.parametrize("name", ["digamma", "lgamma"])
def test_gamma_ulps(name, dtype, fast_gamma):
    call = getattr(torch, name)
    x = _every_value(dtype).to(DEVICE)
    with served(name):
        res = call(x)
    assert res.dtype == dtype
    # The float32 result of ATen on the same device: CUDA's lgammaf is not the CPU's.
    _check_near_float32(name, res, x, call(x.cpu().double()), call(x.float()), dtype)


# -- floor division of half types with KNOBS.half_exact_floor_div: the CUDA kernels' steps (the ones ATen's
# CUDA kernels take: float32 throughout, float16 rounding the floor) with and without the shortcut, run here
# on the interpreter, must agree to the bit.
@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def _float16_floor_div_steps(x, y, EXACT: tl.constexpr):
    return binary._floor_div_steps(x, y, tl.float16, tl.float32, tl.float16, False, EXACT)


@pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def _bfloat16_floor_div_steps(x, y, EXACT: tl.constexpr):
    return binary._floor_div_steps(x, y, tl.bfloat16, tl.float32, tl.float32, False, EXACT)


CUDA_FLOOR_DIV = {F16: _float16_floor_div_steps, BF16: _bfloat16_floor_div_steps}


FLOOR_DIVISORS = [1.0, -1.0, 3.0, -3.0, 0.1, -0.1, 7.0, 1e-3, 1e4, -2.5, 1.5, 0.75, 2.0**-14, 0.0, -0.0, INF, -INF,
                  NAN]


@pytest.mark.parametrize("dtype", [F16, BF16])
def test_exact_floor_div_identical(dtype):
    """Every value divided by each of FLOOR_DIVISORS (and each of those by every value), and shuffled pairs
    of every value, sorted by the quotient's magnitude so that most blocks take the shortcut (its limit:
    |x / y| < 2**14 for bfloat16, 2**11 for float16) and the others ATen's steps; bfloat16's results also
    against ATen's float32 floor division on the CPU."""
    values = _every_value(dtype)
    divisors = _readable(torch.tensor(FLOOR_DIVISORS, dtype=dtype, device="cpu"))
    g = torch.Generator().manual_seed(4)
    shuffled = values[torch.randperm(len(values), generator=g, device="cpu")]
    x = torch.cat([values.repeat(len(divisors)), divisors.repeat_interleave(len(values)), values])
    y = torch.cat([divisors.repeat_interleave(len(values)), values.repeat(len(divisors)), shuffled])
    order = (x.double() / y.double()).abs().nan_to_num(nan=INF).argsort(stable=True)
    x, y = x[order].to(DEVICE), y[order].to(DEVICE)
    kernel = CUDA_FLOOR_DIV[dtype]
    steps = kernel(x, y, False).cpu()
    exact = kernel(x, y, True).cpu()
    same = (steps.view(torch.int16) == exact.view(torch.int16)) | (steps.isnan() & exact.isnan())
    assert same.all(), f"{int((~same).sum())} differ, e.g. {x[~same][:4].tolist()} / {y[~same][:4].tolist()}"
    if dtype is BF16:
        ref = torch.div(x.cpu().float(), y.cpu().float(), rounding_mode="floor").to(dtype)
        same = (ref.view(torch.int16) == exact.view(torch.int16)) | (ref.isnan() & exact.isnan())
        assert same.all(), f"{int((~same).sum())} differ from ATen, e.g. {x[~same][:4].tolist()} / {y[~same][:4]}"


# -- asinh, acosh, atanh, logit, elu, celu and log_sigmoid: the half-type formulas of KNOBS.half_short_asinh,
# half_fast_acosh, half_fast_atanh, half_fast_logit, half_fast_elu and half_fast_log_sigmoid, checked with the
# knobs on and off (off: the float32-accurate kernels, or asinh's own half-type kernel).
LOG_KNOBS = ("half_short_asinh", "half_fast_acosh", "half_fast_atanh", "half_fast_logit", "half_fast_elu",
             "half_fast_log_sigmoid")


@pytest.fixture(params=[False, True], ids=["earlier_formulas", "fast_log_formulas"])
def fast_logs(request, monkeypatch):
    """Both settings of the half-type formula knobs of asinh, acosh, atanh, logit, elu and log_sigmoid."""
    from gems_pointwise.knobs import KNOBS

    for knob in LOG_KNOBS:
        monkeypatch.setattr(KNOBS, knob, request.param)
    return request.param


def _float32(value: float) -> float:
    return torch.tensor(value, dtype=F32).item()


def _logit_exact(x: torch.Tensor, eps: float | None) -> torch.Tensor:
    """float64 logit of ``x`` clamped, as ATen does, to [eps, 1 - eps] with both bounds in float32."""
    x = x.double()
    if eps is not None:
        lo = _float32(eps)
        hi = _float32(1.0 - lo)
        x = torch.where(x < lo, lo, torch.where(x > hi, hi, x))
    return torch.log(x / (1.0 - x))


def _log_sigmoid_exact(x: torch.Tensor) -> torch.Tensor:
    """ATen's ``min(x, 0) - log1p(e**-|x|)`` in float64, e**-|x| 0 where float32's underflows (there ATen's
    result is +0, not -0)."""
    x = x.double()
    z = torch.exp(-x.abs())
    return torch.clamp(x, max=0.0) - torch.log1p(torch.where(z.to(F32) == 0, 0.0, z))


LOG_OPS = {
    "asinh": (torch.asinh, "asinh", torch.asinh),
    "acosh": (torch.acosh, "acosh", torch.acosh),
    "atanh": (torch.atanh, "atanh", torch.atanh),
    "logit": (torch.logit, "logit", lambda x: _logit_exact(x, None)),
    "logit_eps": (lambda x: torch.logit(x, 1e-3), "logit", lambda x: _logit_exact(x, 1e-3)),
    "logit_eps_wide": (lambda x: torch.logit(x, 0.3), "logit", lambda x: _logit_exact(x, 0.3)),
    "log_sigmoid": (lambda x: torch.ops.aten.log_sigmoid_forward(x)[0], "log_sigmoid_forward", _log_sigmoid_exact),
}


@pytest.mark.parametrize("dtype", [F16, BF16])
@pytest.mark.parametrize("name", sorted(LOG_OPS))
def test_log_formulas_ulps(name, dtype, fast_logs):
    call, served_name, exact = LOG_OPS[name]
    x = _every_value(dtype)
    # domain edges and their neighbours: 1 for acosh, +-1 for atanh, 0, 1/4, 1/2, 3/4 and 1 for logit
    edges = torch.tensor([1.0, 0.25, 0.5, 0.75, 1.25], dtype=dtype, device="cpu")
    edges = torch.cat([edges, edges.nextafter(torch.zeros_like(edges)), edges.nextafter(edges + 1)])
    x = torch.cat([x, edges, -edges]).to(DEVICE)
    with served(served_name):
        res = call(x)
    assert res.dtype == dtype
    _check_ulps(name, res, x, exact(x.cpu().double()), dtype)


# (alpha, scale, input_scale); celu(alpha) is elu(alpha, 1, 1 / alpha): a negative alpha turns the exponent
# positive, where float32's expm1 overflows (from 88.72) as ATen's does.
ELU_ARGS = [(1.0, 1.0, 1.0), (1.5, 2.0, 0.5), (0.3, 1.0, 1.0 / 0.3), (-0.5, 1.0, -2.0)]


@pytest.mark.parametrize("dtype", [F16, BF16])
@pytest.mark.parametrize("alpha, scale, input_scale", ELU_ARGS)
def test_elu_ulps(dtype, alpha, scale, input_scale, fast_logs):
    x = _every_value(dtype).to(DEVICE)
    with served("elu"):
        res = torch.ops.aten.elu(x, alpha, scale, input_scale)
    assert res.dtype == dtype
    # ATen's float32 steps: x * input_scale and alpha * scale rounded (scale is a power of 2: x * scale exact)
    x64 = x.cpu().double()
    z = (x.cpu().float() * _float32(input_scale)).double()
    negcoef = _float32(_float32(alpha) * _float32(scale))
    expm1 = torch.where(torch.expm1(z).to(F32).isinf(), INF, torch.expm1(z))
    exact = torch.where(x64 > 0, x64 * scale, expm1 * negcoef)
    _check_ulps("elu", res, x, exact, dtype)


@pytest.mark.parametrize("dtype", [F16, BF16])
def test_celu_takes_the_fast_elu(dtype, fast_logs):
    """celu goes through elu's launcher: its results with the knob on within 0.6 ulp too."""
    x = _every_value(dtype).to(DEVICE)
    with served("celu"):
        res = torch.celu(x, 2.0)
    z = (x.cpu().float() * _float32(0.5)).double()
    exact = torch.where(x.cpu().double() > 0, x.cpu().double(), torch.expm1(z) * 2.0)
    _check_ulps("celu", res, x, exact, dtype)


def test_log_formulas_in_float32():
    """The float32 results of the half-type kernels of asinh, acosh, atanh, logit, elu and log_sigmoid, before
    their rounding to the half type, stay within 4e-6 of the exact value on a float32 sample (and at its
    neighbours of 1): the fits' own error; lg2.approx and ex2.approx add 2**-22 on the GPU."""
    from gems_pointwise import activation, unary

    values = _every_value(F32)
    near_one = 1.0 + torch.linspace(-0.3, 0.3, 4097, dtype=F32, device="cpu")
    values = torch.cat([values, near_one, near_one / 2, near_one / 4, near_one * 0.75])
    x = values.to(DEVICE)
    x64 = values.double()
    kernels = {"asinh": (unary.asinh_short_kernel(x), torch.asinh(x64)),
               "acosh": (unary.acosh_half_kernel(x), torch.acosh(x64)),
               "atanh": (unary.atanh_half_kernel(x), torch.atanh(x64)),
               "logit": (unary.logit_half_kernel(x), torch.log(x64 / (1.0 - x64))),
               "elu": (activation.elu_half_kernel(x, 1.0, 1.0, 1.0), torch.where(x64 > 0, x64, torch.expm1(x64))),
               "log_sigmoid": (activation.log_sigmoid_half_kernel(x), _log_sigmoid_exact(values))}
    for name, (res, exact) in kernels.items():
        res = res.cpu().double()
        error = (res - exact).abs()
        fine = (error <= 4e-6 * exact.abs() + 1e-37) | (res == exact) | exact.isnan() | (exact.abs() > 3.4e38)
        assert fine.all(), f"{name}: {int((~fine).sum())} results off, e.g. at {values[~fine][0].item()!r}"
