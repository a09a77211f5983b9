"""flag_gems.rope, the example family's fused function, against the unfused formula."""

import pytest
import torch

import flag_gems
from flag_gems.testing import assert_close
from gems_example_plugin import rope as rope_module
from gems_example_plugin.rope import rope, rope_reference

DEVICE = flag_gems.device


@pytest.fixture
def launches(monkeypatch):
    """Counts launches of the fused kernel, so that a test fails if the formula ran instead."""
    calls = []
    launch = rope_module._launch

    def counted(*args):
        calls.append(args[3])
        return launch(*args)

    monkeypatch.setattr(rope_module, "_launch", counted)
    return calls


def _tables(seq, half, dtype=torch.float32):
    angles = torch.outer(torch.arange(seq, dtype=torch.float64), 10000.0 ** (-torch.arange(half) / half))
    return angles.cos().to(DEVICE, dtype), angles.sin().to(DEVICE, dtype)


def _reference(x, cos, sin):
    return rope_reference(x.double(), cos.double(), sin.double())


SHAPES = [(2, 3, 8, 16), (1, 2, 5, 6), (4, 7, 32), (9, 128), (2, 2, 0, 8)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_rope_forward(shape, dtype, launches):
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=dtype, device=DEVICE)
    cos, sin = _tables(shape[-2], shape[-1] // 2, dtype)
    res = flag_gems.rope(x, cos, sin)
    assert res.dtype == rope_reference(x, cos, sin).dtype and res.shape == x.shape
    assert_close(res, _reference(x, cos, sin), dtype)
    assert launches == [1]


def test_rope_of_a_transposed_query(launches):
    q = torch.randn(2, 8, 4, 32, device=DEVICE).transpose(1, 2)  # (batch, heads, seq, head_dim), strided
    cos, sin = _tables(8, 16)
    assert_close(rope(q, cos, sin), _reference(q, cos, sin), torch.float32)
    assert launches == [1]


def test_result_dtype_follows_promotion(launches):
    x = torch.randn(3, 8, 16, dtype=torch.bfloat16, device=DEVICE)
    cos, sin = _tables(8, 8, torch.float32)
    res = rope(x, cos, sin)
    assert res.dtype == torch.float32
    assert_close(res, _reference(x, cos, sin), torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_backward(dtype, launches):
    torch.manual_seed(1)
    x = torch.randn(2, 8, 4, 16, dtype=dtype, device=DEVICE).transpose(1, 2).requires_grad_()
    cos, sin = _tables(8, 8, dtype)
    grad = torch.randn(2, 4, 8, 16, dtype=dtype, device=DEVICE)
    res = torch.autograd.grad(rope(x, cos, sin), x, grad)[0]
    x64 = x.detach().double().requires_grad_()
    ref = torch.autograd.grad(rope_reference(x64, cos.double(), sin.double()), x64, grad.double())[0]
    assert res.dtype == dtype
    assert_close(res, ref, dtype)
    assert launches == [1, -1]


def test_tables_that_need_a_gradient_use_the_formula(launches):
    x = torch.randn(2, 8, 16, device=DEVICE, requires_grad=True)
    cos, sin = (t.requires_grad_() for t in _tables(8, 8))
    rope(x, cos, sin).sum().backward()
    assert launches == []
    assert cos.grad is not None and sin.grad is not None


def test_broadcast_tables_use_the_formula(launches):
    x = torch.randn(2, 8, 16, device=DEVICE)
    cos, sin = _tables(8, 8)
    res = rope(x, cos[None], sin[None])
    assert launches == []
    assert_close(res, _reference(x, cos, sin), torch.float32)


def test_fused_function_is_published_by_core():
    assert flag_gems.rope is rope
    assert "rope" in next(f for f in flag_gems.families() if f["name"] == "example")["fused"]
