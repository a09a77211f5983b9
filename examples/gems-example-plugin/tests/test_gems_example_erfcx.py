"""aten::special_erfcx served by the example family, against ATen.

Values are compared with erfcx computed in float64: for large negative x ATen's float32 kernel
loses digits in exp(x * x), where the kernel here is accurate.
"""

import pytest
import torch

import flag_gems
from flag_gems.testing import assert_close, served

DEVICE = flag_gems.device
SPECIAL = [float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e-30, -1e-30, 30.0, -30.0, 1e30, -1e30, 5.0, -5.0]


def _reference(x):
    return torch.special.erfcx(x.double())


def _values(shape, dtype):
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=dtype, device=DEVICE) * 4
    flat = x.view(-1)
    n = min(flat.numel(), len(SPECIAL))
    flat[:n] = torch.tensor(SPECIAL[:n], dtype=dtype)
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(), (0,), (13,), (33, 65)])
def test_erfcx_matches_aten(shape, dtype):
    x = _values(shape, dtype)
    ref = torch.special.erfcx(x)
    with served("special_erfcx", families=["example"]):
        res = torch.special.erfcx(x)
    assert res.dtype == ref.dtype and res.shape == ref.shape
    assert_close(res, _reference(x), dtype, equal_nan=True)


def test_erfcx_of_a_strided_view():
    x = _values((40, 24), torch.float32).t()[::2]
    ref = torch.special.erfcx(x)
    with served("special_erfcx", families=["example"]):
        res = torch.special.erfcx(x)
    assert res.stride() == ref.stride()
    assert_close(res, _reference(x), torch.float32, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool, torch.uint8])
def test_integer_inputs_promote_to_float(dtype):
    x = torch.arange(-6, 6, device=DEVICE).to(dtype)
    ref = torch.special.erfcx(x)
    with served("special_erfcx", families=["example"]):
        res = torch.special.erfcx(x)
    assert res.dtype == ref.dtype == torch.get_default_dtype()
    assert_close(res, ref, res.dtype)


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.float64, torch.float16])
def test_out_variant_casts_and_resizes(out_dtype):
    x = _values((5, 7), torch.float32)
    out = torch.empty(0, dtype=out_dtype, device=DEVICE)
    with served("special_erfcx.out", families=["example"]):
        res = torch.special.erfcx(x, out=out)
    assert res is out and out.shape == x.shape
    # Computed in float32 (the input's precision), then stored in the out dtype.
    assert_close(out, _reference(x), torch.float16 if out_dtype == torch.float16 else torch.float32, equal_nan=True)


def test_out_of_integer_dtype_raises_as_aten():
    x = torch.randn(4, device=DEVICE)
    out = torch.empty(4, dtype=torch.int64, device=DEVICE)
    with pytest.raises(RuntimeError, match="can't be cast to the desired output type Long"):
        torch.special.erfcx(x, out=out)
    with flag_gems.use_gems(families=["example"]):
        with pytest.raises(RuntimeError, match="can't be cast to the desired output type Long"):
            torch.special.erfcx(x, out=out)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.complex64])
def test_types_aten_does_not_compute_go_back_to_aten(dtype):
    x = torch.ones(4, dtype=dtype, device=DEVICE)
    with pytest.raises(RuntimeError) as expected:
        torch.special.erfcx(x)
    with served(families=["example"]) as counter:
        with pytest.raises(RuntimeError) as got:
            torch.special.erfcx(x)
    assert str(got.value) == str(expected.value)
    assert counter.fallbacks["special_erfcx"] == 1


def test_gradient_matches_aten():
    x = _values((6, 9), torch.float64)[:, 1:].clamp(-20, 20).requires_grad_()
    grad = torch.randn(x.shape, dtype=x.dtype, device=DEVICE)
    ref = torch.autograd.grad(torch.special.erfcx(x), x, grad)[0]
    with served("special_erfcx", families=["example"]):
        res = torch.autograd.grad(torch.special.erfcx(x), x, grad)[0]
    assert_close(res, ref, torch.float64)


def test_the_family_serves_it_under_its_name():
    with flag_gems.use_gems(families=["example"]):
        served_now = flag_gems.registered_ops()
    assert served_now == {"special_erfcx": "example", "special_erfcx.out": "example"}
