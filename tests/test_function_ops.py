"""Public fused functions without an autograd node to build run as ops of the dispatcher
(``flag_gems.native.function_op``), whose calls replay from C++ on a GPU: each one reaches its op, matches a
float64 reference, and leaves the differentiable path (a tensor that requires grad) as it was."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from gems_test_settings import to_reference
from torch.utils._python_dispatch import TorchDispatchMode

import flag_gems
from flag_gems.testing import assert_close

DEVICE = flag_gems.device


# What a Python kernel of ours calls besides its launches (the interpreter copies and sets tensors to run them):
# any other ATen op in a call would be ATen computing it.
_NOT_COMPUTING = ("aten::empty", "aten::new_empty", "aten::copy_", "aten::set_", "aten::resolve_conj",
                  "aten::resolve_neg", "aten::view", "aten::as_strided", "aten::contiguous", "aten::unsqueeze",
                  "aten::expand", "aten::reshape", "aten::_reshape_alias", "aten::select", "aten::slice")


def _aten_computing(fn, args) -> set[str]:
    """The ATen ops a call ran that compute something: none where our kernels did the work."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn(*args)
    return {e.name for e in prof.events() if e.name.startswith("aten::") and not e.name.startswith(_NOT_COMPUTING)}


class _OpsSeen(TorchDispatchMode):
    """The ops that reached the dispatcher's Python modes: our function ops among them."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.name())
        return func(*args, **(kwargs or {}))


def _x(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype, device=DEVICE)


def _rms_norm():
    x, w = _x(4, 64), _x(64)
    ref = F.rms_norm(to_reference(x), (64,), to_reference(w), 1e-6)
    return (lambda x, w: flag_gems.rms_norm(x, (64,), w, 1e-6)), (x, w), ref, 64


def _fused_add_rms_norm():
    x, r, w = _x(4, 64), _x(4, 64), _x(64)
    h = to_reference(x) + to_reference(r)
    return ((lambda x, r, w: flag_gems.fused_add_rms_norm(x, r, (64,), w, 1e-5)), (x, r, w),
            (F.rms_norm(h, (64,), to_reference(w), 1e-5), h), 64)


def _weight_norm():
    v, g = _x(8, 16), _x(8, 1).abs() + 0.5
    ref = to_reference(g) * to_reference(v) / to_reference(v).norm(dim=1, keepdim=True)
    return (lambda v, g: flag_gems.weight_norm(v, g, 0)), (v, g), ref, 16


def _cross_entropy_loss():
    x, t = _x(9, 37), torch.randint(0, 37, (9,), device=DEVICE)
    return flag_gems.cross_entropy_loss, (x, t), F.cross_entropy(to_reference(x), t), 37


def _silu_and_mul():
    a, b = _x(4, 33), _x(4, 33)
    return flag_gems.silu_and_mul, (a, b), F.silu(to_reference(a)) * to_reference(b), 1


def _gelu_and_mul():
    a, b = _x(4, 33), _x(33)
    return ((lambda a, b: flag_gems.gelu_and_mul(a, b, "tanh")), (a, b),
            F.gelu(to_reference(a), approximate="tanh") * to_reference(b), 1)


def _skip_layer_norm():
    x, r, w, b = _x(4, 64), _x(4, 64), _x(64), _x(64)
    h = to_reference(x) + to_reference(r)
    return ((lambda x, r, w, b: flag_gems.skip_layer_norm(x, r, (64,), w, b, 1e-5)), (x, r, w, b),
            F.layer_norm(h, (64,), to_reference(w), to_reference(b), 1e-5), 64)


def _rotary():
    q, k = _x(2, 5, 4, 16), _x(2, 5, 2, 16)
    angles = torch.arange(8, dtype=torch.float64, device=DEVICE)[:, None] * torch.rand(8, device=DEVICE).double()
    cos, sin = angles.cos(), angles.sin()

    def rotate(x):
        x = to_reference(x)
        a, b = x[..., :8], x[..., 8:]
        c, s = cos[:5, None, :], sin[:5, None, :]
        return torch.cat([a * c - b * s, b * c + a * s], -1)

    cos32, sin32 = cos.float(), sin.float()
    return ((lambda q, k: flag_gems.apply_rotary_pos_emb(q, k, cos32, sin32)), (q, k), (rotate(q), rotate(k)), 1)


CASES = {
    "gems_norm::skip_layer_norm": _skip_layer_norm,
    "gems_pointwise::apply_rotary_pos_emb": _rotary,
    "gems_norm::rms_norm": _rms_norm,
    "gems_norm::fused_add_rms_norm": _fused_add_rms_norm,
    "gems_norm::weight_norm": _weight_norm,
    "gems_reduction::cross_entropy_loss": _cross_entropy_loss,
    "gems_pointwise::silu_and_mul": _silu_and_mul,
    "gems_pointwise::gelu_and_mul": _gelu_and_mul,
}


def _check(result, ref, reduce_dim: int) -> None:
    for got, want in zip(result, ref) if isinstance(ref, tuple) else [(result, ref)]:
        assert got.dtype == torch.float32 and got.shape == want.shape
        assert_close(got, want, torch.float32, reduce_dim=reduce_dim)


@pytest.mark.parametrize("op", CASES)
def test_without_a_graph_the_function_is_an_op(op):
    fn, args, ref, reduce_dim = CASES[op]()
    with _OpsSeen() as seen:
        result = fn(*args)
    assert op in seen.names, seen.names
    _check(result, ref, reduce_dim)
    assert not _aten_computing(fn, args)  # our kernels computed it, not a fallback to ATen


@pytest.mark.parametrize("op", CASES)
def test_inputs_that_require_grad_take_the_op_under_no_grad_and_the_graph_otherwise(op):
    fn, args, ref, reduce_dim = CASES[op]()
    args = tuple(a.requires_grad_() if a.is_floating_point() else a for a in args)
    with torch.no_grad(), _OpsSeen() as seen:
        result = fn(*args)
    assert op in seen.names
    _check(result, ref, reduce_dim)
    with _OpsSeen() as seen:
        result = fn(*args)
    assert op not in seen.names  # an autograd node: the differentiable path
    first = result[0] if isinstance(result, tuple) else result
    assert first.grad_fn is not None
    _check(tuple(r.detach() for r in result) if isinstance(result, tuple) else result.detach(), ref, reduce_dim)


def _flat(result) -> tuple:
    return tuple(result) if isinstance(result, (tuple, list)) else (result,)


@pytest.mark.parametrize("op", CASES)
def test_the_fake_gives_the_results_shapes_and_dtypes(op):
    from torch._subclasses.fake_tensor import FakeTensorMode

    fn, args, _, _ = CASES[op]()
    real = _flat(fn(*args))
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake = _flat(fn(*(mode.from_tensor(a) for a in args)))
    assert [(r.shape, r.dtype) for r in real] == [(f.shape, f.dtype) for f in fake]


@pytest.mark.parametrize("op", ["gems_norm::rms_norm", "gems_pointwise::silu_and_mul",
                                "gems_pointwise::apply_rotary_pos_emb"])
def test_torch_compile_traces_the_op_whole(op):
    # The op is opaque to tracing (its fake gives the shapes): one graph, which calls our kernels.
    fn, args, ref, reduce_dim = CASES[op]()
    compiled = torch.compile(fn, backend="eager", fullgraph=True)
    _check(compiled(*args), ref, reduce_dim)
