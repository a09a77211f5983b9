"""enable / disable / use_gems, recording, fallbacks and the Autograd-key path, with a family added
by hand so that the tests do not depend on what the real families serve."""

from __future__ import annotations

import logging
import threading
import types

import pytest
import torch
import triton
import triton.language as tl

import flag_gems
from flag_gems import plugins, registry
from flag_gems.testing import assert_close


@flag_gems.pointwise_dynamic(promotion_methods=[(0, "INT_TO_FLOAT")])
@triton.jit
def _exp2_kernel(x):
    return tl.exp2(x)


def _exp2(x):
    if x.dtype == torch.float64:
        return flag_gems.aten_kernel("exp2")(x)
    return _exp2_kernel(x)


def _expm1_always_falls_back(x):
    # A kernel that hands every case back to ATen: served, but never ran on gems.
    return flag_gems.aten_kernel("expm1")(x)


class _Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return _exp2_kernel(x) * 0 + x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * 2 * x


def _square(x):
    return _Square.apply(x)


@pytest.fixture(scope="module", autouse=True)
def core_test_family():
    module = types.ModuleType("core_test_family")

    @flag_gems.hookimpl
    def gems_family():
        return flag_gems.Family(name="core_test", version="0", priority=100, ops=[
            flag_gems.OpImpl("exp2", _exp2),
            flag_gems.OpImpl("expm1", _expm1_always_falls_back),
            flag_gems.OpImpl("square", _square, autograd=True),
        ])

    module.gems_family = gems_family
    plugins.add_module("core_test", module)
    yield
    plugins.remove_module("core_test")


def served_by_core_test() -> set[str]:
    return {name for name, family in flag_gems.registered_ops().items() if family == "core_test"}


def test_enable_and_disable():
    flag_gems.enable(families=["core_test"])
    assert served_by_core_test() == {"exp2", "expm1", "square"}
    assert flag_gems.is_enabled()
    flag_gems.disable()
    assert flag_gems.registered_ops() == {}
    assert not flag_gems.is_enabled()


def test_unused_takes_base_and_overload_names():
    flag_gems.enable(families=["core_test"], unused=["expm1", "square.default"])
    assert served_by_core_test() == {"exp2"}


def test_use_gems_restores_nothing_after_exit():
    with flag_gems.use_gems(families=["core_test"]):
        assert served_by_core_test() == {"exp2", "expm1", "square"}
    assert flag_gems.registered_ops() == {}


def test_use_gems_nested_restores_each_level_exactly():
    flag_gems.enable(families=["core_test"], unused=["square"])
    outer = flag_gems.registered_ops()
    with flag_gems.use_gems(families=["core_test"], include=["exp2"]):
        assert flag_gems.registered_ops() == {"exp2": "core_test"}
        with flag_gems.use_gems(families=["core_test"], exclude=["exp2"]):
            assert served_by_core_test() == {"expm1", "square"}
        assert flag_gems.registered_ops() == {"exp2": "core_test"}
    assert flag_gems.registered_ops() == outer


def test_use_gems_restores_on_exception():
    with pytest.raises(KeyError):
        with flag_gems.use_gems(families=["core_test"]):
            raise KeyError("boom")
    assert flag_gems.registered_ops() == {}


def test_served_op_runs_our_kernel_and_matches_aten():
    x = torch.randn(1000)
    ref = torch.exp2(x)
    with flag_gems.testing.served("exp2", families=["core_test"]):
        out = torch.exp2(x)
    flag_gems.testing.assert_close(out, ref, torch.float32)


def test_served_detects_a_silent_fallback():
    x = torch.randn(10)
    with pytest.raises(AssertionError, match="not served by gems.*expm1"):
        with flag_gems.testing.served("expm1", families=["core_test"]):
            torch.expm1(x)


def test_fallback_reaches_aten_without_recursion():
    x = torch.randn(10, dtype=torch.float64)
    with flag_gems.use_gems(families=["core_test"]):
        out = torch.exp2(x)
    torch.testing.assert_close(out, torch.exp2(x))


def test_autograd_key_serves_a_composite_op_with_our_backward():
    x = torch.randn(50, requires_grad=True)
    ref_x = x.detach().clone().requires_grad_()
    (ref_x.square() * 3).sum().backward()
    with flag_gems.testing.served("square", families=["core_test"]):
        y = x.square()
    (y * 3).sum().backward()
    torch.testing.assert_close(y, ref_x.detach() ** 2)
    torch.testing.assert_close(x.grad, ref_x.grad)


def test_record_logs_each_served_call(caplog):
    x = torch.randn(8)
    with caplog.at_level(logging.INFO, logger="flag_gems"):
        flag_gems.enable(families=["core_test"], record=True)
        torch.exp2(x)
        torch.exp2(x)
    lines = [r.getMessage() for r in caplog.records if "exp2" in r.getMessage()]
    assert lines == ["gems served exp2 (core_test)"] * 2


def test_record_to_a_file(tmp_path):
    path = tmp_path / "gems.log"
    flag_gems.enable(families=["core_test"], record=True, path=str(path))
    torch.exp2(torch.randn(4))
    flag_gems.disable()
    assert "gems served exp2 (core_test)" in path.read_text()


def test_aten_kernel_is_captured_before_serving():
    flag_gems.enable(families=["core_test"])
    kernel = registry.aten_kernel("exp2")
    out = kernel(torch.tensor([3.0]))
    assert out.item() == 8.0


def test_registering_is_diffed_so_reentering_is_cheap():
    flag_gems.enable(families=["core_test"])
    before = {name: reg.batch for name, reg in registry._served.items()}
    with flag_gems.use_gems(families=["core_test"]):
        after = {name: reg.batch for name, reg in registry._served.items()}
    assert before == after


def test_narrowing_a_batch_keeps_the_rest_served_and_gives_the_others_back():
    from flag_gems.recording import CallCounter

    x = torch.randn(8)
    flag_gems.enable(families=["core_test"], record=True)  # one batch: exp2, expm1, square
    with flag_gems.use_gems(families=["core_test"], include=["exp2"], record=True):
        with CallCounter() as counter:
            torch.exp2(x)
            torch.expm1(x)
        assert dict(counter.served) == {"exp2": 1}
    with CallCounter() as counter:
        torch.exp2(x)
        torch.expm1(x)
    assert dict(counter.served) == {"exp2": 1, "expm1": 1}
    flag_gems.disable()
    with CallCounter() as counter:
        torch.exp2(x)
    assert not counter.served


def test_after_disable_the_dispatcher_holds_exactly_atens_kernels():
    names = ["aten::exp2", "aten::expm1", "aten::square"]
    before = {name: torch._C._dispatch_dump(name) for name in names}
    flag_gems.enable(families=["core_test"])
    assert {name: torch._C._dispatch_dump(name) for name in names} != before
    with flag_gems.use_gems(families=["core_test"], include=["exp2"]):
        pass
    flag_gems.disable()
    assert {name: torch._C._dispatch_dump(name) for name in names} == before


def test_a_use_gems_block_serves_its_own_thread_only():
    # Outside enable(), a block serves the thread that opened it (as torch.autocast's state): another
    # thread meanwhile runs ATen's kernels.
    from flag_gems.recording import CallCounter

    x = torch.randn(8)
    elsewhere = {}

    def other_thread():
        with CallCounter() as counter:
            torch.exp2(x)
        elsewhere.update(counter.served)

    expected = torch.exp2(x.double())
    with flag_gems.use_gems(families=["core_test"], record=True):
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
        with CallCounter() as counter:
            result = torch.exp2(x)
    assert_close(result, expected, torch.float32)
    assert dict(counter.served) == {"exp2": 1} and elsewhere == {}


def test_use_gems_blocks_enter_again_without_registering():
    # The block's set stays registered at its dispatch key; the next block with the same selection only
    # includes the key again. disable() gives it back.
    from flag_gems import scoped

    names = ["aten::exp2", "aten::expm1", "aten::square"]
    before = {name: torch._C._dispatch_dump(name) for name in names}
    with flag_gems.use_gems(families=["core_test"]):
        handle = scoped._registered.handle
    with flag_gems.use_gems(families=["core_test"]):
        assert scoped._registered.handle is handle
        assert served_by_core_test() == {"exp2", "expm1", "square"}
    assert flag_gems.registered_ops() == {}
    flag_gems.disable()
    assert {name: torch._C._dispatch_dump(name) for name in names} == before


def test_a_block_sends_tensors_of_another_backend_below_its_key(monkeypatch):
    # On a GPU, a block's kernels see every backend's tensors: those not on gems' device go on to ATen.
    # Here gems' device is taken to be the CPU and a meta tensor stands for the other backend.
    from flag_gems import scoped
    from flag_gems.runtime import device

    monkeypatch.setattr(device, "name", "cpu")
    calls = []
    wrapped = scoped._on_device_only(lambda *a, **k: calls.append("gems"), lambda *a, **k: calls.append("aten"))
    here, there = torch.ones(2, device="cpu"), torch.ones(2, device="meta")
    wrapped(here, 1.0)
    wrapped(there, 1.0)
    wrapped(1.0, here)  # the first tensor decides, wherever it stands
    wrapped(1.0, other=there)
    wrapped([here, here])
    assert calls == ["gems", "aten", "gems", "aten", "gems"]


def test_ops_with_a_composite_kernel_run_their_device_kernel_inside_a_block():
    # The dispatcher also puts an op's CompositeExplicitAutograd kernel at a block's key; ATen's composite
    # mse_loss (mean) warns of a resized output where its device kernel does not. Inside a block such ops
    # not served go on to their device kernel.
    import warnings

    x, t = torch.randn(2, 16, 32), torch.randn(2, 16, 32)
    expected = torch.nn.functional.mse_loss(x, t)
    for families in ([], ["core_test"]):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with flag_gems.use_gems(families=families):
                got = torch.nn.functional.mse_loss(x, t)
        assert_close(got, expected, torch.float32)


def test_ops_with_a_composite_kernel_not_served_stay_in_the_dispatcher_inside_a_block():
    # Such an op falls through the block's key to its device kernel without a Python kernel on the way: a
    # decoding step's cat paid ~10 us a call for one.
    from flag_gems import scoped
    from flag_gems.runtime import device

    is_fallthrough = torch._C._dispatch_kernel_for_dispatch_key_is_fallthrough
    with flag_gems.use_gems(families=["core_test"]):
        served = scoped.served()
        shadowed = [n for n in scoped._shadowed() if n not in served]
        assert "cat" in shadowed and "mse_loss" in shadowed
        assert all(is_fallthrough(f"aten::{n}", "CustomRNGKeyId") for n in shadowed)
        x = torch.randn(3, 4, device=device.name)
        assert_close(torch.cat([x, x]), torch.cat([x.cpu(), x.cpu()]).to(x.device), torch.float32)
