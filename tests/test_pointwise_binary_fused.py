"""The fused public functions of gems-pointwise: silu_and_mul, gelu_and_mul and apply_rotary_pos_emb,
forward and gradients against plain torch code computed in float64."""

from __future__ import annotations

import gems_test_settings as settings
import pytest
import torch
from gems_test_settings import to_reference
from test_pointwise_binary import seeded  # noqa: F401 (autouse fixture)

import flag_gems
from flag_gems.testing import assert_close

DEVICE = flag_gems.device
QUICK = settings.QUICK
FLOATS = [torch.float16, torch.bfloat16, torch.float32] + ([] if QUICK else [torch.float64])


def _close(res, ref, dtype, **kwargs):
    assert_close(res, ref.to(res.device), dtype, **kwargs)  # references may live on CPU (--ref cpu)


def _gated_reference(kind, a, b):
    if kind == "silu":
        return torch.nn.functional.silu(a) * b
    return torch.nn.functional.gelu(a, approximate=kind) * b


def _gated(kind, a, b):
    if kind == "silu":
        return flag_gems.silu_and_mul(a, b)
    return flag_gems.gelu_and_mul(a, b, approximate=kind)


@pytest.mark.parametrize("kind", ["silu", "none", "tanh"])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shapes", [((), ()), ((0, 4), (0, 4)), ((33, 65), (33, 65)), ((2, 3, 8), (3, 8)),
                                    ((4, 1, 6), (5, 1))], ids=str)
def test_gated_activation_forward_backward(kind, dtype, shapes):
    a = (torch.randn(shapes[0], device=DEVICE) * 3).to(dtype).requires_grad_()
    b = torch.randn(shapes[1], device=DEVICE).to(dtype).requires_grad_()
    a64, b64 = to_reference(a, upcast=True), to_reference(b, upcast=True)
    out64 = _gated_reference(kind, a64, b64)
    grad = torch.randn(out64.shape, device=DEVICE).to(dtype)
    out64.backward(to_reference(grad, upcast=True))
    out = _gated(kind, a, b)
    assert out.dtype == dtype and out.shape == out64.shape
    _close(out, out64, dtype)
    out.backward(grad)
    assert a.grad.shape == a.shape and b.grad.shape == b.shape and a.grad.dtype == dtype
    _close(a.grad, a64.grad, dtype, reduce_dim=max(1, out.numel() // max(1, a.numel())))
    _close(b.grad, b64.grad, dtype, reduce_dim=max(1, out.numel() // max(1, b.numel())))


def test_gated_activation_transposed_and_mixed_dtypes():
    a = torch.randn(16, 8, device=DEVICE).t().requires_grad_()
    b = torch.randn(8, 16, device=DEVICE, dtype=torch.bfloat16).requires_grad_()
    ref = _gated_reference("silu", to_reference(a, upcast=True), to_reference(b, upcast=True))
    out = flag_gems.silu_and_mul(a, b)
    assert out.dtype == torch.float32
    _close(out, ref, torch.float32)
    out.sum().backward()
    ref.sum().backward()
    assert b.grad.dtype == torch.bfloat16
    with pytest.raises(RuntimeError, match="approximate"):
        flag_gems.gelu_and_mul(a, b, approximate="erf")


def test_gated_activation_gradcheck():
    a = torch.randn(3, 5, device=DEVICE, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 5, device=DEVICE, dtype=torch.float64, requires_grad=True)
    for kind in ("silu", "none", "tanh"):
        assert torch.autograd.gradcheck(lambda x, y, k=kind: _gated(k, x, y), (a, b))


def _rotary_reference(q, k, cos, sin, positions, interleaved):
    # Llama's rotate-half (or GPT-J's interleaved pairs) written plainly, in float64.
    half = cos.shape[-1]
    if positions is None:
        positions = torch.arange(q.shape[-3], device=q.device)
    c, s = cos[positions].double().unsqueeze(-2), sin[positions].double().unsqueeze(-2)

    def rotate(x):
        x = x.double()
        rot, rest = x[..., : 2 * half], x[..., 2 * half:]
        if interleaved:
            x1, x2 = rot[..., 0::2], rot[..., 1::2]
            out = torch.stack([x1 * c - x2 * s, x2 * c + x1 * s], -1).flatten(-2)
        else:
            x1, x2 = rot[..., :half], rot[..., half:]
            out = torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], -1)
        return torch.cat([out, rest], -1)

    return rotate(q), rotate(k)


ROTARY_CASES = [
    # (q shape, k heads, rotary_dim, positions)
    ((2, 5, 4, 16), 2, 16, None),  # (batch, seq, heads, dim), GQA
    ((2, 5, 4, 16), 4, 16, "batch"),
    ((2, 5, 4, 16), 1, 8, "seq"),  # partial rotary: the last 8 features pass through
    ((7, 3, 12), 1, 12, "tokens"),  # (tokens, heads, dim)
    ((7, 3, 12), 3, 4, None),
    ((1, 1, 2, 128), 1, 128, "batch"),  # a decoding step
]


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32] if QUICK else FLOATS)
@pytest.mark.parametrize("case", ROTARY_CASES, ids=str)
def test_rotary_embedding(case, dtype, interleaved):
    q_shape, k_heads, rotary_dim, positions = case
    k_shape = (*q_shape[:-2], k_heads, q_shape[-1])
    q = torch.randn(q_shape, device=DEVICE).to(dtype).requires_grad_()
    k = torch.randn(k_shape, device=DEVICE).to(dtype).requires_grad_()
    max_positions = 24
    angles = torch.randn(max_positions, rotary_dim // 2, device=DEVICE)
    cos, sin = angles.cos(), angles.sin()
    if positions == "batch":
        positions = torch.randint(0, max_positions, q_shape[:2], device=DEVICE)
    elif positions == "seq":
        positions = torch.randint(0, max_positions, q_shape[1:2], device=DEVICE)
    elif positions == "tokens":
        positions = torch.randint(0, max_positions, q_shape[:1], device=DEVICE)
    q64, k64 = to_reference(q, upcast=True), to_reference(k, upcast=True)
    q_ref, k_ref = _rotary_reference(q64, k64, to_reference(cos), to_reference(sin), to_reference(positions),
                                     interleaved)
    q_out, k_out = flag_gems.apply_rotary_pos_emb(q, k, cos, sin, positions, rotary_interleaved=interleaved)
    assert q_out.dtype == dtype and q_out.shape == q.shape and k_out.shape == k.shape
    _close(q_out, q_ref, dtype)
    _close(k_out, k_ref, dtype)
    grad_q, grad_k = torch.randn_like(q_out), torch.randn_like(k_out)
    (q_ref * to_reference(grad_q, upcast=True)).sum().add((k_ref * to_reference(grad_k, upcast=True)).sum()).backward()
    torch.autograd.backward((q_out, k_out), (grad_q, grad_k))
    _close(q.grad, q64.grad, dtype)
    _close(k.grad, k64.grad, dtype)


def test_rotary_embedding_layouts_and_full_cache():
    # q and k as transposed views of (batch, heads, seq, dim) tensors, a Llama cache holding every
    # angle twice, and the same rotation from the half cache.
    batch, heads, seq, dim = 2, 4, 6, 8
    q = torch.randn(batch, heads, seq, dim, device=DEVICE).transpose(1, 2)
    k = torch.randn(batch, 2, seq, dim, device=DEVICE).transpose(1, 2)
    angles = torch.randn(seq, dim // 2, device=DEVICE)
    full = torch.cat([angles, angles], -1)
    q_ref, k_ref = _rotary_reference(to_reference(q), to_reference(k), to_reference(angles).cos(),
                                     to_reference(angles).sin(), None, False)
    for cos, sin in [(angles.cos(), angles.sin()), (full.cos(), full.sin())]:
        q_out, k_out = flag_gems.apply_rotary_pos_emb(q, k, cos, sin)
        _close(q_out, q_ref, torch.float32)
        _close(k_out, k_ref, torch.float32)
    interleaved_full = angles.repeat_interleave(2, -1)
    q_ref, _ = _rotary_reference(to_reference(q), to_reference(k), to_reference(angles).cos(),
                                 to_reference(angles).sin(), None, True)
    q_out, _ = flag_gems.apply_rotary_pos_emb(q, k, interleaved_full.cos(), interleaved_full.sin(),
                                              rotary_interleaved=True)
    _close(q_out, q_ref, torch.float32)
    with pytest.raises(ValueError):
        flag_gems.apply_rotary_pos_emb(q, k[..., :4], angles.cos(), angles.sin())
    with pytest.raises(ValueError):
        flag_gems.apply_rotary_pos_emb(q, k, torch.ones(seq, dim, 1, device=DEVICE), torch.ones(seq, dim, 1,
                                                                                                   device=DEVICE))
