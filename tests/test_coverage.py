"""flag_gems.coverage: per-op call counts, where each call ran, why, and that observing changes nothing."""

from __future__ import annotations

import importlib.util
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import flag_gems
from flag_gems import coverage, plugins

DEVICE = flag_gems.device
# The probe family overrides whatever installed family serves exp2, with a warning saying so.
pytestmark = pytest.mark.filterwarnings("ignore::flag_gems.plugins.PluginWarning")

# A family written for these tests, in a module of its own (its calls count as gems-internal, the test's
# as the program's): exp2 on a kernel, handed back to ATen for float64; square (CompositeImplicitAutograd)
# served on the Autograd key.
PROBE = '''
import torch
import triton
import triton.language as tl

import flag_gems


@flag_gems.pointwise_dynamic(promotion_methods=[(0, "INT_TO_FLOAT")])
@triton.jit
def exp2_kernel(x):
    return tl.exp2(x)


def exp2(x):
    if x.dtype == torch.float64:
        return flag_gems.aten_kernel("exp2")(x)
    return exp2_kernel(x)


class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.mul(x, x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * 2 * x


@flag_gems.hookimpl
def gems_family():
    ops = [flag_gems.OpImpl("exp2", exp2), flag_gems.OpImpl("square", Square.apply, autograd=True)]
    return flag_gems.Family(name="coverage_probe", version="0.0.1", priority=100, ops=ops)
'''


@pytest.fixture(scope="module")
def probe_module(tmp_path_factory):
    path = tmp_path_factory.mktemp("probe") / "coverage_probe.py"
    path.write_text(textwrap.dedent(PROBE))
    spec = importlib.util.spec_from_file_location("coverage_probe", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["coverage_probe"] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules["coverage_probe"]


@pytest.fixture
def probe(probe_module):
    plugins.add_module("coverage_probe", probe_module)
    yield "coverage_probe"
    plugins.remove_module("coverage_probe")


def program(x):
    """Four exp2 calls (one in float64), a square, an op no family declares, a view."""
    y = torch.exp2(x) + torch.exp2(x) + torch.exp2(x)
    z = torch.exp2(x.double())
    w = torch.square(x)
    u = torch.ops.aten.histc(x).view(10, 10)
    return y, z, w, u.t()


def test_served_fallback_not_implemented_and_view(probe):
    x = torch.randn(4, 3, device=DEVICE)
    with coverage.collect(families=[probe]) as report:
        program(x)
    exp2 = report["exp2"]
    assert (exp2.calls, exp2.gems, exp2.aten, exp2.family) == (4, 3, 1, probe)
    assert exp2.status == "partial" and dict(exp2.reasons) == {coverage.FALLBACK: 1}
    square = report["square"]
    assert (square.calls, square.gems, square.status, square.family) == (1, 1, "gems", probe)
    histc = report["histc"]
    assert (histc.gems, histc.reason, histc.family) == (0, coverage.NOT_IMPLEMENTED, None)
    assert report["t"].reason == coverage.VIEW
    assert report.ran_on_gems("exp2") and report.ran_on_gems("square") and not report.ran_on_gems("histc")
    assert "exp2" in report.on_gems() and "histc" in report.on_aten() and "t" not in report.on_aten()
    assert report.by_family() == {probe: 4}


def test_calls_made_by_gems_kernels_are_not_the_programs(probe):
    # The autograd-key square computes with torch.mul inside the family's module, forward and backward.
    x = torch.randn(5, device=DEVICE, requires_grad=True)
    with coverage.collect(families=[probe]) as report:
        torch.square(x).sum().backward()
    assert report["square"].gems == 1
    assert "mul.Tensor" not in report and "mul.Scalar" not in report


def test_excluded_ops_name_the_family_that_declares_them(probe):
    x = torch.randn(8, device=DEVICE)
    with coverage.collect(families=[probe], exclude=["exp2"]) as report:
        torch.exp2(x)
    row = report["exp2"]
    assert (row.gems, row.reason, row.family) == (0, coverage.EXCLUDED, probe)


def test_collect_keeps_what_enable_serves(probe):
    flag_gems.enable(families=[probe], unused=["exp2"])
    try:
        with coverage.collect() as report:
            torch.exp2(torch.randn(3, device=DEVICE))
    finally:
        flag_gems.disable()
    assert report["exp2"].reason == coverage.EXCLUDED
    assert not flag_gems.is_enabled()


def test_program_that_changes_what_is_served_is_followed(probe):
    x = torch.randn(3, device=DEVICE)
    with coverage.collect(families=[probe]) as report:
        torch.exp2(x)
        with flag_gems.use_gems(families=[probe], exclude=["exp2"]):
            torch.exp2(x)
    assert report["exp2"].gems == 1 and dict(report["exp2"].reasons) == {coverage.EXCLUDED: 1}


def test_composite_ops_are_named_once_and_their_parts_counted():
    x = torch.randn(4, 8, device=DEVICE, requires_grad=True)
    w = torch.randn(6, 8, device=DEVICE, requires_grad=True)
    with coverage.collect() as report:
        F.linear(x, w).sum().backward()
    assert report["linear"].reason == coverage.COMPOSITE and report["linear"].calls == 1
    assert "mm" in report  # linear's forward and backward ran as mm (on gems or on ATen)


def test_inference_mode_decompositions_are_observed():
    x = torch.randn(4, 8, device=DEVICE)
    w = torch.randn(6, 8, device=DEVICE)
    with torch.inference_mode(), coverage.collect() as report:
        F.linear(x, w)
    assert report["linear"].calls == 1 and report["linear"].reason == coverage.COMPOSITE
    assert "matmul" not in report  # a composite part of linear: not counted again
    assert "mm" in report


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = torch.nn.LayerNorm(16)
        self.proj = torch.nn.Linear(16, 16)

    def forward(self, x):
        h = self.proj(self.norm(x)).abs()
        attn = F.scaled_dot_product_attention(h[None], h[None], h[None], is_causal=True)[0]
        return (F.gelu(attn) * h.exp2()).sum(-1).softmax(-1)


def _run(model, x):
    model.zero_grad(set_to_none=True)
    out = model(x)
    out.square().sum().backward()
    return out.detach(), [p.grad.clone() for p in model.parameters()]


def test_observing_changes_no_result(probe):
    torch.manual_seed(0)
    model = Tiny().to(DEVICE)
    x = torch.randn(12, 16, device=DEVICE)
    with flag_gems.use_gems():
        expected = _run(model, x)
    report = coverage.report(_run, model, x)
    out, grads = report.result
    assert torch.equal(out, expected[0])
    assert all(torch.equal(g, e) for g, e in zip(grads, expected[1]))
    assert report.ran_on_gems("exp2") and report.ran_on_gems("square")


def test_dict_and_table_forms(probe):
    x = torch.randn(4, 3, device=DEVICE)
    with coverage.collect(families=[probe]) as report:
        program(x)
    data = report.as_dict()
    assert data["exp2"] == {"calls": 4, "gems": 3, "aten": 1, "status": "partial", "family": probe,
                            "reasons": {"fallback": 1}}
    table = report.table()
    assert table.splitlines()[0].startswith("flag_gems coverage:")
    assert "exp2" in table and "fallback" in table and "not implemented" in table
    assert "views and aliases" in table and str(report) == table
    gems_calls, calls = report.totals()
    assert gems_calls == 4  # exp2 x3, square
    assert calls == 9  # and exp2 in float64, add x2, _to_copy, histc; the views left out


def test_report_passes_arguments_and_returns_the_result():
    report = coverage.report(torch.add, torch.ones(2, device=DEVICE), torch.ones(2, device=DEVICE), alpha=2)
    assert torch.equal(report.result, torch.full((2,), 3.0, device=DEVICE))
    assert report["add.Tensor"].calls == 1


def test_families_that_are_installed_show_up_when_their_ops_run():
    # Whatever the installed families serve and the program calls must be reported as gems calls.
    x = torch.randn(64, device=DEVICE)
    with flag_gems.use_gems():
        served = flag_gems.registered_ops()
    with coverage.collect() as report:
        x.abs()
        x.sum()
    for row in report:
        if row.op in served:
            assert row.gems == row.calls, row
            assert row.family == served[row.op]
