"""Replayed launches (flag_gems.native): a signature's later calls launch from C++ and give ATen's results,
a new value of a scalar, alignment or layout is a new signature, calls of several launches replay with
memory of their own, calls that make tensors in other ways stay in Python, recorded blocks reach Python (GPU
only)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import flag_gems
from flag_gems import native
from flag_gems.testing import assert_close, served

DEVICE = flag_gems.device

pytestmark = pytest.mark.skipif(DEVICE == "cpu", reason="replayed launches: GPU only")

CALLS = 4  # the first call compiles through Triton, the second is recorded, the later ones replay


def _hits(op: str) -> int:
    return native.stats().get(op, (0, 0, 0, ""))[0]


def _plans(op: str) -> int:
    return native.stats().get(op, (0, 0, 0, ""))[1]


def _x(*shape, dtype=torch.bfloat16):
    return torch.randn(*shape, dtype=dtype, device=DEVICE)


# (id, ATen overload replayed, function, inputs)
CASES = [
    ("add", "add.Tensor", lambda a, b: a + b, lambda d: (_x(64, 33, dtype=d), _x(64, 33, dtype=d))),
    ("add_alpha", "add.Tensor", lambda a, b: torch.add(a, b, alpha=2),
     lambda d: (_x(1024, dtype=d), _x(1024, dtype=d))),
    ("add_broadcast", "add.Tensor", lambda a, b: a + b, lambda d: (_x(8, 1, 40, dtype=d), _x(40, dtype=d))),
    ("add_transposed", "add.Tensor", lambda a, b: a.t() + b, lambda d: (_x(40, 24, dtype=d), _x(24, 40, dtype=d))),
    ("add_misaligned", "add.Tensor", lambda a, b: a[1:] + b[1:], lambda d: (_x(1025, dtype=d), _x(1025, dtype=d))),
    ("sub", "sub.Tensor", lambda a, b: a - b, lambda d: (_x(300, dtype=d), _x(300, dtype=d))),
    ("mul_scalar", "mul.Tensor", lambda a: a * 0.5, lambda d: (_x(1024, dtype=d),)),
    ("div", "div.Tensor", lambda a, b: a / (b.abs() + 1), lambda d: (_x(500, dtype=d), _x(500, dtype=d))),
    ("neg", "neg", lambda a: -a, lambda d: (_x(7, 9, dtype=d),)),
    ("exp", "exp", torch.exp, lambda d: (_x(4096, dtype=d),)),
    ("silu", "silu", F.silu, lambda d: (_x(1, 1, 8192, dtype=d),)),
    ("gelu_tanh", "gelu", lambda a: F.gelu(a, approximate="tanh"), lambda d: (_x(2048, dtype=d),)),
    ("leaky_relu", "leaky_relu", lambda a: F.leaky_relu(a, 0.2), lambda d: (_x(1024, dtype=d),)),
    ("where", "where.self", lambda a, b: torch.where(a > 0, a, b), lambda d: (_x(333, dtype=d), _x(333, dtype=d))),
    ("clamp", "clamp", lambda a: a.clamp(-0.5, 0.5), lambda d: (_x(1000, dtype=d),)),
    ("softmax", "_softmax", lambda a: torch.softmax(a, -1), lambda d: (_x(16, 1024, dtype=d),)),
    ("log_softmax", "_log_softmax", lambda a: torch.log_softmax(a, -1), lambda d: (_x(16, 1000, dtype=d),)),
    ("sum_dim", "sum.dim_IntList", lambda a: a.sum(-1), lambda d: (_x(64, 512, dtype=d),)),
    ("amax", "amax", lambda a: a.amax(-1), lambda d: (_x(64, 512, dtype=d),)),
    ("linear", "mm", F.linear, lambda d: (_x(1, 2048, dtype=d), _x(2048, 2048, dtype=d))),
    ("mm_tiny", "mm", torch.mm, lambda d: (_x(16, 16, dtype=d), _x(16, 16, dtype=d))),
    # Several launches, passing partial results through memory the call allocates.
    ("argmax_last", "argmax", lambda a: a.argmax(-1), lambda d: (_x(2, 4096, dtype=d),)),
    ("argmax_all", "argmax", lambda a: a.argmax(), lambda d: (_x(64, 4096, dtype=d),)),
    ("sum_long_row", "sum.dim_IntList", lambda a: a.sum(-1), lambda d: (_x(1, 131072, dtype=d),)),
    ("glu", "glu", lambda a: F.glu(a, -1), lambda d: (_x(2, 4096, dtype=d),)),
    ("mm_skinny", "mm", torch.mm, lambda d: (_x(16, 4096, dtype=d), _x(4096, 1024, dtype=d))),
    ("bmm_small", "bmm", torch.bmm, lambda d: (_x(8, 64, 64, dtype=d), _x(8, 64, 64, dtype=d))),
    # In place and out=: the written tensor is an argument, and the result is that argument.
    ("add_inplace", "add_.Tensor", lambda a, b: a.add_(b), lambda d: (_x(64, 33, dtype=d), _x(64, 33, dtype=d))),
    ("add_inplace_itself", "add_.Tensor", lambda a: a.add_(a), lambda d: (_x(1000, dtype=d),)),
    ("mul_inplace_scalar", "mul_.Tensor", lambda a: a.mul_(1.5), lambda d: (_x(1000, dtype=d),)),
    ("add_out", "add.out", lambda a, b, o: torch.add(a, b, out=o),
     lambda d: (_x(500, dtype=d), _x(500, dtype=d), _x(500, dtype=d))),
    ("copy_into_a_column", "copy_", lambda c, k: c[:, 3].copy_(k), lambda d: (_x(64, 8, dtype=d), _x(64))),
    ("copy_converting", "copy_", lambda c, k: c.copy_(k), lambda d: (_x(4, 256, dtype=d), _x(4, 256))),
]



def _aten(fn, inputs):
    flag_gems.disable()
    return fn(*inputs)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_replayed_calls_match_aten(case, dtype):
    name, op, fn, make = case
    before = _hits(op)
    for _ in range(CALLS):
        inputs = make(dtype)  # new values (and addresses) each call: a replay reads the call's own tensors
        expected = _aten(fn, [t.clone() for t in inputs])  # clones: in-place cases write their arguments
        with flag_gems.use_gems():
            result = fn(*inputs)
        assert result.dtype == expected.dtype and result.shape == expected.shape
        assert result.stride() == expected.stride()
        assert_close(result, expected, dtype, reduce_dim=inputs[0].shape[-1])
    assert _hits(op) > before, f"{op} was not replayed: {native.stats().get(op)}"


@pytest.mark.parametrize("mask", [(True, True, True), (True, False, False), (False, True, True)])
def test_a_backward_replays_the_gradients_asked_for(mask):
    # native_layer_norm_backward: several launches (the input's gradient, the parameters' partial sums and
    # their reduction); gradients not asked for come back undefined.
    x, w, b = _x(8, 1024), _x(1024), _x(1024)
    _, mean, rstd = torch.ops.aten.native_layer_norm(x, [1024], w, b, 1e-5)
    op = "native_layer_norm_backward"
    before = _hits(op)
    for _ in range(CALLS):
        gy = _x(8, 1024)
        expected = _aten(torch.ops.aten.native_layer_norm_backward, (gy, x, [1024], mean, rstd, w, b, list(mask)))
        with flag_gems.use_gems():
            result = torch.ops.aten.native_layer_norm_backward(gy, x, [1024], mean, rstd, w, b, list(mask))
        for wanted, got, want in zip(mask, result, expected):
            if wanted:
                assert_close(got, want, torch.bfloat16, reduce_dim=8)
            else:
                assert got is None and want is None
    assert _hits(op) > before, f"{op} was not replayed: {native.stats().get(op)}"


@pytest.mark.parametrize("op, call, reference", [
    ("gems_norm::rms_norm", lambda x, w: flag_gems.rms_norm(x, (1024,), w, 1e-6),
     lambda x, w: F.rms_norm(x.float(), (1024,), w.float(), 1e-6)),
    ("gems_pointwise::silu_and_mul", flag_gems.silu_and_mul, lambda a, b: F.silu(a.float()) * b.float()),
])
def test_public_functions_replay_without_a_graph(op, call, reference):
    before = _hits(op)
    for _ in range(CALLS):
        x, w = _x(4, 1024), _x(1024)
        assert_close(call(x, w), reference(x, w), torch.bfloat16, reduce_dim=1024)
    assert _hits(op) > before, f"{op} was not replayed: {native.stats().get(op)}"


def test_an_in_place_op_over_its_own_shifted_view_raises_atens_error():
    a, b = _x(1025), _x(1025)
    with flag_gems.use_gems():
        for _ in range(CALLS):
            a[1:].add_(b[:-1])  # the same signature as below, without the overlap
        x = _x(1025)
        with pytest.raises(RuntimeError, match="single memory location"):
            x[1:].add_(x[:-1])


def test_an_autograd_key_op_replays_only_calls_that_record_no_graph():
    x, w = _x(1, 1, 2048), (torch.rand(2048, device=DEVICE) + 0.5).to(torch.bfloat16).requires_grad_()
    expected = _aten(lambda: F.rms_norm(x, (2048,), w, 1e-6), ())
    with flag_gems.use_gems():
        with torch.no_grad():
            before = _hits("rms_norm")
            for _ in range(CALLS):
                result = F.rms_norm(x, (2048,), w, 1e-6)
            assert _hits("rms_norm") > before
        assert_close(result, expected, torch.bfloat16)
        before = _hits("rms_norm")
        for _ in range(CALLS):
            graph = F.rms_norm(x, (2048,), w, 1e-6)
        assert _hits("rms_norm") == before  # a graph is recorded: Python's autograd function
        assert graph.grad_fn is not None
        graph.float().sum().backward()
    grad, w.grad = w.grad, None
    F.rms_norm(x, (2048,), w, 1e-6).float().sum().backward()
    assert_close(grad, w.grad, torch.bfloat16, reduce_dim=1)


def test_each_scalar_value_is_a_signature_of_its_own():
    x = _x(1024)
    with flag_gems.use_gems():
        for _ in range(CALLS):
            halves, triples = x * 0.5, x * 3.0
    assert_close(halves, x.float() * 0.5, torch.bfloat16)
    assert_close(triples, x.float() * 3.0, torch.bfloat16)


def test_enable_replays_as_a_block_does():
    x, y = _x(1024), _x(1024)
    flag_gems.enable()
    before = _hits("add.Tensor")
    for _ in range(CALLS):
        result = x + y
    assert _hits("add.Tensor") > before
    flag_gems.disable()
    after = _hits("add.Tensor")
    assert_close(x + y, result, torch.bfloat16)
    assert _hits("add.Tensor") == after  # ATen's kernel again


def test_a_call_that_makes_a_tensor_of_its_own_stays_in_python():
    # A float64 operand and a Python float: the float reaches the kernel as a device tensor the call makes.
    x = _x(1000, dtype=torch.float64)
    with flag_gems.use_gems():
        before = native.stats().get("add.Tensor", (0, 0, 0, ""))
        for _ in range(CALLS):
            result = x + 0.1
        after = native.stats().get("add.Tensor", (0, 0, 0, ""))
    torch.testing.assert_close(result, x + 0.1, rtol=0, atol=0)
    assert after[2] > before[2]  # given up on


def test_recorded_blocks_reach_python():
    x, y = _x(1024), _x(1024)
    with flag_gems.use_gems():
        for _ in range(CALLS):
            x + y
    before = _hits("add.Tensor")
    with served("add.Tensor") as counter:
        for _ in range(CALLS):
            x + y
    assert counter.served["add.Tensor"] == CALLS
    assert _hits("add.Tensor") == before


def test_bad_input_raises_atens_error_after_replays():
    x, y = _x(4, 4), _x(4, 4)
    with flag_gems.use_gems():
        for _ in range(CALLS):
            x + y
        with pytest.raises(RuntimeError, match="must match the size"):
            x + _x(3)


def test_clear_forgets_every_plan():
    x = _x(512)
    with flag_gems.use_gems():
        for _ in range(CALLS):
            torch.exp(x)
        assert _plans("exp") > 0
        native.clear()
        assert _plans("exp") == 0
        assert_close(torch.exp(x), torch.exp(x.float()), torch.bfloat16)


def test_replayed_calls_capture_in_a_cuda_graph():
    x, y = _x(4096), _x(4096)
    with flag_gems.use_gems():
        for _ in range(CALLS):
            F.silu(x) * y
        before = _hits("silu")
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = F.silu(x) * y
        assert _hits("silu") > before
    x.copy_(_x(4096))
    y.copy_(_x(4096))
    graph.replay()
    torch.cuda.synchronize()
    assert_close(out, F.silu(x.float()) * y.float(), torch.bfloat16)


def test_replay_switched_off_sends_calls_to_python():
    x = _x(2048)
    with flag_gems.use_gems():
        for _ in range(CALLS):
            torch.neg(x)
        native.set_enabled(False)
        try:
            before = _hits("neg")
            result = torch.neg(x)
            assert _hits("neg") == before
        finally:
            native.set_enabled(True)
    assert torch.equal(result, -x)
