"""Accuracy in ulps of the elementwise ops whose kernels evaluate formulas of their own (sinh, atan, atan2,
gelu), against float64: every value of the half types, a float32 sample spread over the whole range,
and the points where the formulas switch branch, overflow or meet zeros, infinities and NaN.

Results rounded to a half type must stay within 0.6 ulp of the exact value (the rounding's 0.5, and
0.1 for the float32 formula, which is what lets the half-type kernels use shorter ones); float32 results
within 2 ulp (sinh 3.5: libdevice's expf alone is 2 ulp on the GPU, and the interpreter does not fuse
multiply-adds). gelu keeps ATen's formula ``x / 2 (1 + erf)``, whose sum cancels as x -> -inf: there
it may be off by float32's step of 1 + erf, ``2**-24 |x|``, as ATen's is.
"""

from __future__ import annotations

import math

import pytest
import torch

import flag_gems
from flag_gems.testing import served

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
DEVICE = flag_gems.device
F16, BF16, F32 = torch.float16, torch.bfloat16, torch.float32
INF, NAN = math.inf, math.nan
MANTISSA = {F16: 10, BF16: 7, F32: 23}
LIMIT = {F16: 0.6, BF16: 0.6}
LIMIT_F32 = {"sinh": 3.5, "atan": 2.0, "atan2": 2.0, "gelu": 2.0}
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


def _check_ulps(name, res, x, exact, dtype):
    """``res`` within the op's ulp limit of the float64 ``exact``; zeros, infinities and NaN exactly."""
    res, exact = res.cpu(), exact.cpu()
    rounded = exact.to(dtype)
    special = (rounded == 0) | rounded.isinf() | rounded.isnan()
    assert torch.equal(res[special].isnan(), rounded[special].isnan())
    numbers = special & ~rounded.isnan()
    assert torch.equal(res[numbers], rounded[numbers]), name
    assert torch.equal(res[numbers].signbit(), rounded[numbers].signbit()), name
    limit = LIMIT.get(dtype) or LIMIT_F32[name]
    allowed = limit * _ulp(exact, dtype)
    if name == "gelu":  # the cancelling sum 1 + erf, as in ATen
        allowed = allowed + 2.0**-24 * x.cpu().double().abs()
    error = (res.double() - exact).abs()
    bad = ~special & ~(error <= allowed)
    if bad.any():
        i = int(bad.nonzero()[0])
        worst = int((error / _ulp(exact, dtype)).masked_fill(special, 0).argmax())
        raise AssertionError(f"{name} {dtype}: {int(bad.sum())} results off, e.g. at {x.view(-1)[i].item()!r}: "
                             f"{res[i].item()!r}, exact {exact[i].item()!r}; worst "
                             f"{(error[worst] / _ulp(exact, dtype)[worst]).item():.2f} ulp")


UNARY = {"sinh": torch.sinh, "atan": torch.atan, "gelu": torch.nn.functional.gelu}


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
