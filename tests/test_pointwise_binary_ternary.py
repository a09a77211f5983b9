"""Accuracy of gems-pointwise's ternary and selection ops (addcmul, addcdiv, lerp, clamp, where,
masked_fill, fill) and of its conversions (_to_copy, copy_), against ATen, every call under ``served``."""

from __future__ import annotations

import gems_test_settings as settings
import pytest
import torch
from gems_test_settings import to_reference
from test_pointwise_binary import compare, make, raises_like_aten, seeded  # noqa: F401 (autouse fixture)

import flag_gems
from flag_gems.testing import assert_close, assert_equal, served

DEVICE = flag_gems.device
QUICK = settings.QUICK
FLOATS = [torch.float16, torch.bfloat16, torch.float32] + ([] if QUICK else [torch.float64])
INTS = [torch.int32, torch.uint8] + ([] if QUICK else [torch.int8, torch.int64])
SHAPES = [(), (0,), (33, 65), (2, 1, 3, 1, 4)] + ([] if QUICK else [(7,), (2, 3, 4, 5)])


def run(name, fn, *args, upcast=True, **kwargs):
    """``fn(*args)`` under gems against ATen (float64 for float results when ``upcast``)."""
    aten = fn(*[to_reference(a) for a in args], **kwargs)
    expected = fn(*[to_reference(a, upcast=True) for a in args], **kwargs) if upcast and aten.is_floating_point() \
        else aten
    with served(name):
        res = fn(*args, **kwargs)
    compare(res, aten, expected)
    return res


@pytest.mark.parametrize("dtype", FLOATS + INTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_addcmul_addcdiv(dtype, shape):
    x, a, b = make(shape, dtype), make(shape, dtype), make(shape, dtype, "nonzero")
    run("addcmul", torch.addcmul, x, a, b, value=0.5 if dtype.is_floating_point else 3)
    if dtype.is_floating_point:
        run("addcdiv", torch.addcdiv, x, a, b, value=-2)
        run("addcdiv", torch.addcdiv, x, a, b.to(torch.int32).clamp(min=1))  # mixed: floats and an integer


def test_addcmul_addcdiv_variants():
    x = make((4, 1, 6), torch.float32)
    a, b = make((5, 6), torch.bfloat16), make((4, 5, 1), torch.float32, "nonzero")
    run("addcmul", torch.addcmul, x, a, b)  # broadcast across ranks, mixed dtypes
    run("addcmul", torch.addcmul, make((5, 4), torch.int64), make((5, 4), torch.int64), make((4,), torch.int8),
        value=0.5)
    y = make((5, 4), torch.float32).t()
    divisor = torch.full((1,), 3.0, device=DEVICE)
    ref = to_reference(y).addcdiv_(to_reference(a[:4, :5].float()), divisor, value=0.25)
    with served("addcdiv_"):
        y.addcdiv_(a[:4, :5].float(), divisor, value=0.25)
    compare(y, ref)
    out = torch.empty(2, device=DEVICE)
    run("addcmul", lambda *t: torch.addcmul(*t, out=out), make((3, 4), torch.float32), a[:3, :4].float(), divisor)
    raises_like_aten(torch.addcdiv, make((3,), torch.int32), make((3,), torch.int32), make((3,), torch.int32))
    raises_like_aten(torch.addcmul, make((3,), torch.bool), make((3,), torch.bool), make((3,), torch.bool))


@pytest.mark.parametrize("dtype", FLOATS)
def test_lerp(dtype):
    x, end = make((33, 65), dtype), make((33, 65), dtype)
    for weight in (0.3, 0.7, -1.5, 1.0, 0.0):
        run("lerp", torch.lerp, x, end, weight)
    run("lerp", torch.lerp, x, end, make((65,), dtype, "unit"))
    run("lerp", torch.lerp, x[:4, :5], end[:1, :5], torch.tensor(0.25, dtype=torch.float64, device=DEVICE))
    y = x.t()
    ref = to_reference(y).lerp_(to_reference(end.t()), 0.6)
    expected = to_reference(y, upcast=True).lerp(to_reference(end, upcast=True).t(), 0.6)
    with served("lerp_"):
        y.lerp_(end.t(), 0.6)
    compare(y, ref, expected)
    raises_like_aten(torch.lerp, make((3,), torch.float32), make((3,), torch.float64), 0.5)
    raises_like_aten(torch.lerp, make((3,), torch.float32), make((3,), torch.float32), make((3,), torch.float64))


@pytest.mark.parametrize("dtype", FLOATS + INTS + [torch.bool])
@pytest.mark.parametrize("shape", SHAPES[:3])
def test_clamp(dtype, shape):
    x = make(shape, dtype)
    low, high = (-1.5, 2.0) if dtype.is_floating_point else (3, 12)
    run("clamp", torch.clamp, x, low, high)
    run("clamp", torch.clamp, x, min=low)
    run("clamp", torch.clamp, x, max=high)
    run("clamp", torch.clamp, x, high, low)  # min > max gives max
    run("clamp_min", torch.clamp_min, x, low)
    run("clamp_max", torch.clamp_max, x, high)
    bounds = make(shape, dtype), make(shape[-1:] if shape else (), dtype)
    if dtype is torch.bool:
        raises_like_aten(torch.clamp, x, *bounds)
    else:
        run("clamp", torch.clamp, x, *bounds)
    run("clamp", torch.clamp, x, None, bounds[1])
    run("clamp_min", torch.clamp_min, x, bounds[0])


def test_clamp_nan_promotion_and_errors():
    x = torch.tensor([float("nan"), -3.0, 0.5, 3.0, float("inf")], device=DEVICE)
    nan = float("nan")
    for args in [(nan, None), (None, nan), (0.0, nan), (-1.0, 1.0)]:
        run("clamp", torch.clamp, x, *args)
    run("clamp", torch.clamp, x, torch.tensor(nan, device=DEVICE), torch.ones(5, device=DEVICE))
    run("clamp_min", torch.clamp_min, x, nan)
    i = make((4, 5), torch.int32)
    run("clamp", torch.clamp, i, min=0.5)  # promotes to float
    run("clamp", torch.clamp, i, torch.tensor(0.5, device=DEVICE))
    run("clamp", torch.clamp, make((4,), torch.bool), 0, 1)  # promotes to int64
    raises_like_aten(torch.clamp, x)
    raises_like_aten(torch.clamp, make((3,), torch.int8), 1000)
    raises_like_aten(torch.clamp, make((3,), torch.float16), 1e6)
    y = x.clone()
    ref = to_reference(y).clamp_(-1, 1)
    with served("clamp_"):
        y.clamp_(-1, 1)
    compare(y, ref)


@pytest.mark.parametrize("dtype", FLOATS + INTS + [torch.bool])
@pytest.mark.parametrize("shape", SHAPES)
def test_where(dtype, shape):
    condition = make(shape, torch.bool)
    run("where", torch.where, condition, make(shape, dtype), make(shape, dtype), upcast=False)


def test_where_variants():
    condition = make((4, 1, 6), torch.bool)
    run("where", torch.where, condition, make((5, 6), torch.float16), make((4, 5, 1), torch.bfloat16), upcast=False)
    run("where", torch.where, condition, make((6,), torch.int32), 2.5, upcast=False)  # ScalarOther decomposes
    run("where", torch.where, condition.transpose(0, 2), make((4, 1, 6), torch.float32).transpose(0, 2), 0.0,
        upcast=False)
    out = torch.empty(3, device=DEVICE)
    run("where", lambda *t: torch.where(*t, out=out), condition, make((5, 6), torch.float32),
        torch.tensor(-1.0, device=DEVICE), upcast=False)
    raises_like_aten(lambda *t: torch.where(*t, out=torch.empty(0, device=DEVICE, dtype=torch.float64)),
                     condition, make((5, 6), torch.float32), make((6,), torch.float32))
    with served():  # a uint8 condition is deprecated; ATen warns and computes it
        with pytest.warns(UserWarning):
            res = torch.where(condition.to(torch.uint8), 1.0, 0.0)
    assert_equal(res, condition.float().expand(res.shape))


@pytest.mark.parametrize("dtype", FLOATS + INTS + [torch.bool])
def test_masked_fill(dtype):
    x = make((33, 65), dtype)
    mask = make((33, 65), torch.bool)
    value = 2.5 if dtype.is_floating_point else 7
    run("masked_fill", torch.masked_fill, x, mask, value, upcast=False)
    run("masked_fill", torch.masked_fill, x, mask[:1], torch.tensor(value, device=DEVICE), upcast=False)
    run("masked_fill", torch.masked_fill, x[:1], mask, torch.tensor(value), upcast=False)  # output broadcasts
    y = x.t()
    ref = to_reference(y).masked_fill_(to_reference(mask.t()), value)
    with served("masked_fill_"):
        y.masked_fill_(mask.t(), value)
    compare(y, ref)


def test_masked_fill_values_and_errors():
    f = make((4, 6), torch.float16)
    mask = make((4, 6), torch.bool)
    for value in (-float("inf"), float("nan"), -65504.0, True):
        run("masked_fill", torch.masked_fill, f, mask, value, upcast=False)
    run("masked_fill", torch.masked_fill, make((4, 6), torch.int64), mask, 2**40 + 1, upcast=False)
    run("masked_fill", torch.masked_fill, make((4, 6), torch.int32), mask, 1.7, upcast=False)  # truncates
    raises_like_aten(torch.masked_fill, make((3,), torch.int8), make((3,), torch.bool), 1000)
    raises_like_aten(torch.masked_fill, f, mask, 1e6)
    raises_like_aten(torch.masked_fill, f, mask, torch.ones(1, device=DEVICE))
    raises_like_aten(torch.masked_fill, f, mask.to(torch.uint8), 1.0)
    raises_like_aten(lambda a, m: a.masked_fill_(m, 1.0), make((1, 6), torch.float32), mask)


@pytest.mark.parametrize("dtype", FLOATS + INTS + [torch.bool])
def test_fill(dtype):
    value = {torch.bool: True, torch.uint8: 200}.get(dtype, -3.25 if dtype.is_floating_point else -7)
    for shape in ((), (0,), (33, 65)):
        run("fill_", lambda t: torch.full(t.shape, value, dtype=dtype, device=DEVICE), make(shape, dtype),
            upcast=False)
    x = make((6, 10), dtype)
    for target in (x.t(), x[::2, 1:7]):
        ref = to_reference(target).fill_(value)
        with served("fill_"):
            target.fill_(torch.tensor(value))
        compare(target, ref)
    run("fill", torch.ops.aten.fill.Scalar, make((5, 4), dtype).t(), value, upcast=False)


def test_fill_values_and_errors():
    for dtype, value in [(torch.float16, float("inf")), (torch.float64, 0.1), (torch.int64, -(2**62)),
                         (torch.uint8, -1), (torch.int32, 1.7), (torch.bool, 0.5),
                         (torch.int64, 123456789.7)]:  # truncated from the double, not from float32
        run("fill_", lambda t, v=value: t.fill_(v), make((3, 4), dtype), upcast=False)
    for dtype, value in [(torch.float16, 65519.0), (torch.int8, 128), (torch.int8, float("nan")),
                         (torch.float32, 3.5e38), (torch.uint8, 256),
                         (torch.uint8, -1.5)]:  # an int wraps into uint8, a float does not
        raises_like_aten(lambda t, v=value: t.fill_(v), make((3,), dtype))
    raises_like_aten(lambda t: t.fill_(torch.ones(2, device=DEVICE)), make((3,), torch.float32))
    expanded = torch.zeros(3, device=DEVICE).expand(2, 3)
    with served():  # ATen fills a view whose elements share memory; so does the fallback
        expanded.fill_(2.0)
    assert_equal(expanded, torch.full((2, 3), 2.0, device=DEVICE))


_CONVERSIONS = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int8, torch.int32, torch.int64,
                torch.uint8, torch.bool]
if QUICK:
    _CONVERSIONS = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int32, torch.uint8, torch.bool]


def _conversion_source(dtype, shape=(9, 13)):
    x = make(shape, dtype)
    if dtype.is_floating_point:
        # Values every destination holds (float -> int of an out-of-range value differs by device).
        x = torch.where(x.isfinite(), x.clamp(-100, 100), x)
    return x


def _compare_conversion(res, ref, strides=True):
    assert res.dtype == ref.dtype and res.shape == ref.shape
    assert res.stride() == ref.stride() or not strides
    if res.dtype is torch.bfloat16 and flag_gems.runtime.device.interpreter:
        # the interpreter truncates float32 to bfloat16 (the GPU rounds)
        assert_close(res, ref.to(res.device), res.dtype, equal_nan=True)
    else:
        assert_equal(res, ref.to(res.device), equal_nan=True)


@pytest.mark.parametrize("src", _CONVERSIONS, ids=str)
@pytest.mark.parametrize("dst", _CONVERSIONS, ids=str)
def test_to_copy_dtypes(src, dst):
    x = _conversion_source(src)
    if src.is_floating_point and not dst.is_floating_point and dst is not torch.bool:
        x = torch.where(x.isfinite(), x, torch.zeros_like(x))  # NaN and inf have no integer
    ref = to_reference(x).to(dst, copy=True)
    with served("_to_copy"):
        res = x.to(dst, copy=True)
    _compare_conversion(res, ref)


@pytest.mark.parametrize("layout", ["transposed", "sliced", "expanded", "channels_last", "zero_d", "empty"])
def test_to_copy_layouts(layout):
    x = {"transposed": lambda: make((7, 9), torch.float32).t(), "sliced": lambda: make((8, 12), torch.float32)[::2, 3:],
         "expanded": lambda: make((1, 9), torch.float32).expand(4, 9),
         "channels_last": lambda: make((2, 3, 4, 5), torch.float32).to(memory_format=torch.channels_last),
         "zero_d": lambda: make((), torch.float32), "empty": lambda: make((0, 3), torch.float32)}[layout]()
    for kwargs in ({"dtype": torch.float16}, {"dtype": torch.float64, "memory_format": torch.contiguous_format}):
        ref = torch.ops.aten._to_copy(to_reference(x), **kwargs)
        with served("_to_copy"):
            res = torch.ops.aten._to_copy(x, **kwargs)
        _compare_conversion(res, ref)


def test_to_copy_falls_back_off_device_and_layout():
    x = make((3, 4), torch.float32)
    c = torch.randn(3, dtype=torch.complex64, device=DEVICE)
    with served():
        assert_equal(c.to(torch.complex128), to_reference(c).to(torch.complex128).to(DEVICE))
        assert torch.ops.aten._to_copy(x, device="meta").is_meta
        assert_equal(torch.ops.aten._to_copy(x.conj(), dtype=torch.float16), x.to(torch.float16))


@pytest.mark.parametrize("src", _CONVERSIONS[::2] if QUICK else _CONVERSIONS, ids=str)
@pytest.mark.parametrize("dst", _CONVERSIONS[1::2] if QUICK else _CONVERSIONS, ids=str)
def test_copy_dtypes_and_views(src, dst):
    x = _conversion_source(src, (6, 10))
    if src.is_floating_point and not dst.is_floating_point and dst is not torch.bool:
        x = torch.where(x.isfinite(), x, torch.zeros_like(x))
    for target, source in [(torch.empty(6, 10, dtype=dst, device=DEVICE), x),
                           (torch.empty(10, 6, dtype=dst, device=DEVICE).t(), x),
                           (make((6, 20), dst)[:, ::2], x[:1]),  # broadcast source into a strided view
                           (torch.empty(6, 10, dtype=dst, device=DEVICE), x[0, 0])]:
        ref = to_reference(target).copy_(to_reference(source))
        with served("copy_"):
            res = target.copy_(source)
        assert res is target
        _compare_conversion(res, ref, strides=False)


def test_copy_shared_memory_and_errors():
    x = make((10,), torch.float32)
    with served():  # a source sharing the destination's memory goes to ATen, which checks overlap
        ref = to_reference(x)
        x[:5].copy_(x[5:])
        ref[:5].copy_(ref[5:])
        assert_equal(x, ref.to(x.device))
    raises_like_aten(lambda a: a[1:].copy_(a[:-1]), make((6,), torch.float32))
    raises_like_aten(lambda a: a.copy_(make((4,), torch.float32)), make((2, 3), torch.float32))
    raises_like_aten(lambda a: a.copy_(make((2, 2, 3), torch.float32)), make((2, 3), torch.float32))
    raises_like_aten(lambda a: a.expand(2, 3).copy_(make((2, 3), torch.float32)), make((3,), torch.float32))


def test_clone_contiguous_and_scalar_conversions_inside_aten():
    # clone/contiguous reach copy_; ATen's own kernels convert wrapped numbers with _to_copy.
    x = make((5, 6), torch.float16).t()
    i = make((5, 6), torch.int32)
    with served("copy_"):
        res = (x.contiguous(), x.clone(), torch.special.xlog1py(x, 2), torch.eq(i[0, 0], 0), i.float().sum(),
               torch.nn.functional.softplus(x.float(), beta=2))
    ref = (to_reference(x).contiguous(), to_reference(x).clone(), torch.special.xlog1py(to_reference(x), 2),
           torch.eq(to_reference(i)[0, 0], 0), to_reference(i).float().sum(),
           torch.nn.functional.softplus(to_reference(x).float(), beta=2))
    assert res[0].is_contiguous() and res[1].stride() == ref[1].stride()
    for r, e in zip(res, ref):
        assert_close(r, e.to(r.device), r.dtype, equal_nan=True)


def test_autograd_through_served_ops():
    # Ops served below autograd keep ATen's derivative formulas.
    a = make((4, 5), torch.float32, specials=False).clamp(-2, 2).requires_grad_()
    b = make((4, 5), torch.float32, "positive").requires_grad_()
    a_ref, b_ref = to_reference(a), to_reference(b)

    def loss(x, y):
        return (torch.pow(y, x) + x * y - x / y + torch.atan2(x, y) + torch.where(x > 0, x, y).clamp(-1, 1)
                + torch.lerp(x, y, 0.3) + x.to(torch.float64).float()).sum()

    loss(a_ref, b_ref).backward()
    with served("pow", "mul", "div", "atan2", "where", "clamp", "lerp", "_to_copy"):
        loss(a, b).backward()
    assert_close(a.grad, a_ref.grad.to(DEVICE), torch.float32)
    assert_close(b.grad, b_ref.grad.to(DEVICE), torch.float32)
