"""Accuracy of the scans: cumsum, cumprod, cummax, cummin, logcumsumexp."""

from __future__ import annotations

import gems_test_settings as settings
import pytest
import torch
from gems_test_settings import to_reference

import flag_gems
from flag_gems.testing import assert_close, assert_equal, served

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

DEVICE = flag_gems.device
FLOATS = [torch.float16, torch.bfloat16, torch.float32]
CASES = [((5, 30), 1), ((5, 30), 0), ((3, 4, 5), 1), ((3, 4, 5), -1), ((7,), 0), ((), 0), ((2, 20000), 1),
         ((20000, 2), 0)]
if settings.QUICK:
    CASES = [CASES[i] for i in (0, 1, 2, 5, 6)]
# Custom associative scans are slow on the interpreter: small shapes for those.
SMALL = [((5, 30), 1), ((5, 30), 0), ((3, 4, 5), 1), ((7,), 0), ((), 0)]


@pytest.mark.parametrize("shape, dim", CASES)
@pytest.mark.parametrize("dtype", FLOATS)
def test_cumsum_cumprod(shape, dim, dtype):
    x = torch.randn(shape, dtype=dtype, device=DEVICE)
    p = (torch.rand(shape, device=DEVICE) * 0.2 + 0.9).to(dtype)
    ref_x, ref_p = to_reference(x, upcast=True), to_reference(p, upcast=True)
    with served("cumsum", "cumprod"):
        s = torch.cumsum(x, dim)
        c = torch.cumprod(p, dim)
    n = shape[dim] if shape else 1
    assert s.dtype == dtype and s.shape == x.shape
    assert_close(s, torch.cumsum(ref_x, dim), dtype, reduce_dim=n)
    assert_close(c, torch.cumprod(ref_p, dim), dtype, reduce_dim=n)


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int8, torch.int32, torch.int64])
def test_integer_scans(dtype):
    x = torch.randint(0, 3, (4, 19), device=DEVICE).to(dtype)
    with served("cumsum", "cumprod", "cummax", "cummin"):
        res = (x.cumsum(1), x.cumsum(0, dtype=torch.float32), x.cumprod(1), x.cummax(1), x.cummin(0))
    ref = (x.cumsum(1), x.cumsum(0, dtype=torch.float32), x.cumprod(1), x.cummax(1), x.cummin(0))
    for a, b in zip(res, ref):
        for a1, b1 in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            assert a1.dtype == b1.dtype
            assert_equal(a1, b1)


@pytest.mark.parametrize("shape, dim", SMALL)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_cummax_cummin_ties_and_nan(shape, dim, dtype):
    x = torch.randint(0, 4, shape, device=DEVICE).to(dtype)
    if x.dim() == 2:
        x[1, 3] = float("nan")
        x[1, 7] = float("nan")
        x[2, 5] = float("-inf")
    ref = to_reference(x)
    with served("cummax", "cummin"):
        mx, mn = torch.cummax(x, dim), torch.cummin(x, dim)
    rmx, rmn = torch.cummax(ref, dim), torch.cummin(ref, dim)
    assert_equal(mx.values, rmx.values, equal_nan=True)
    assert_equal(mx.indices, rmx.indices)
    assert_equal(mn.values, rmn.values, equal_nan=True)
    assert_equal(mn.indices, rmn.indices)


@pytest.mark.parametrize("shape, dim", SMALL)
@pytest.mark.parametrize("dtype", FLOATS)
def test_logcumsumexp(shape, dim, dtype):
    x = torch.randn(shape, dtype=dtype, device=DEVICE) * 5
    with served("logcumsumexp"):
        res = torch.logcumsumexp(x, dim)
    assert_close(res, torch.logcumsumexp(to_reference(x, upcast=True), dim), dtype)


def test_logcumsumexp_infinities():
    x = torch.tensor([[-float("inf"), -float("inf"), 1.0, float("inf"), 2.0],
                      [0.0, float("nan"), 1.0, -1.0, 3.0]], device=DEVICE)
    with served("logcumsumexp"):
        res = torch.logcumsumexp(x, 1)
    assert_close(res, torch.logcumsumexp(x, 1), torch.float32, equal_nan=True)


def test_out_gradient_and_layouts():
    x = torch.randn(6, 40, device=DEVICE)
    out = torch.empty(0, device=DEVICE)
    values, indices = torch.empty(0, device=DEVICE), torch.empty(0, dtype=torch.int64, device=DEVICE)
    w = torch.randn(6, 40, device=DEVICE, requires_grad=True)
    with served("cumsum", "cummax"):
        torch.cumsum(x[:, ::2], 1, out=out)
        torch.cummax(x.t(), 1, out=(values, indices))
        grad = torch.autograd.grad(torch.cumsum(w, 1).sum(), w)[0]
    assert_close(out, torch.cumsum(x[:, ::2].double(), 1), torch.float32, reduce_dim=20)
    assert_equal(values, torch.cummax(x.t(), 1).values)
    assert_equal(indices, torch.cummax(x.t(), 1).indices)
    assert_equal(grad, torch.arange(40, 0, -1, dtype=torch.float32, device=DEVICE).expand(6, 40))


def test_int64_index_path(monkeypatch):
    from gems_reduction import layout

    monkeypatch.setattr(layout, "force_int64", True)
    x = torch.randn(7, 300, device=DEVICE)
    with served("cumsum"):
        res = (torch.cumsum(x, 1), torch.cumsum(x, 0))
    assert_close(res[0], torch.cumsum(x.double(), 1), torch.float32, reduce_dim=300)
    assert_close(res[1], torch.cumsum(x.double(), 0), torch.float32, reduce_dim=7)
