"""The runtime: device facts, FlagGems-compatible names, and the interpreter's shims."""

from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

import flag_gems
from flag_gems.runtime import device


def test_device_and_vendor_names():
    assert flag_gems.device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert flag_gems.vendor_name in ("nvidia", "cpu")
    assert flag_gems.runtime.device.support_fp64 is True
    assert flag_gems.runtime.device.support_int64 is True
    assert isinstance(flag_gems.runtime.device.support_bf16, bool)


def test_interpreter_is_on_exactly_without_a_gpu():
    assert device.interpreter == (not torch.cuda.is_available())
    assert triton.knobs.runtime.interpret == device.interpreter


@triton.jit
def _unary(x_ptr, out_ptr, n, WHICH: tl.constexpr, BLOCK: tl.constexpr):
    offsets = tl.arange(0, BLOCK)
    mask = offsets < n
    x = tl.load(x_ptr + offsets, mask=mask)
    if WHICH == 0:
        y = libdevice.tanh(x)
    elif WHICH == 1:
        y = libdevice.erfinv(x)
    elif WHICH == 2:
        y = libdevice.pow(x, 3.0)
    elif WHICH == 3:
        y = libdevice.atan2(x, x + 2.0)
    else:
        y = libdevice.lgamma(x + 3.0)
    tl.store(out_ptr + offsets, y, mask=mask)


@pytest.mark.parametrize("which,reference", [
    (0, torch.tanh), (1, torch.erfinv), (2, lambda x: x ** 3), (3, lambda x: torch.atan2(x, x + 2)),
    (4, lambda x: torch.lgamma(x + 3)),
])
def test_libdevice_functions_run_on_both(which, reference):
    x = torch.rand(100, device=flag_gems.device) * 1.8 - 0.9
    out = torch.empty_like(x)
    _unary[(1,)](x, out, x.numel(), WHICH=which, BLOCK=128)
    torch.testing.assert_close(out, reference(x), rtol=2e-6, atol=2e-6)


@triton.autotune(configs=[triton.Config({"BLOCK": 64}), triton.Config({"BLOCK": 128})], key=["n"])
@triton.jit
def _copy(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    tl.store(out_ptr + offsets, tl.load(x_ptr + offsets, mask=mask), mask=mask)


def test_multi_config_autotune_runs():
    x = torch.randn(300, device=flag_gems.device)
    out = torch.empty_like(x)
    _copy[lambda meta: (triton.cdiv(300, meta["BLOCK"]),)](x, out, 300)
    torch.testing.assert_close(out, x)


def test_compat_testing_helpers():
    a = torch.randn(100)
    flag_gems.testing.assert_close(a + 1e-7, a, torch.float32)
    flag_gems.testing.assert_equal(a.clone(), a)
    with pytest.raises(AssertionError):
        flag_gems.testing.assert_equal(a + 1, a)
    with pytest.raises(AssertionError):
        flag_gems.testing.assert_close(a + 1e-2, a, torch.float32)


@triton.jit
def _scaled_copy(x_ptr, out_ptr, n, scale, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    tl.store(out_ptr + offsets, tl.load(x_ptr + offsets, mask=mask) * scale, mask=mask)


def test_launch_helper_runs_a_kernel_repeatedly():
    from flag_gems.launch import launch

    x = torch.randn(1000, device=flag_gems.device)
    for scale in (1.0, 2.5, 3.0):
        out = torch.empty_like(x)
        launch(_scaled_copy, (4,), x, out, 1000, scale, BLOCK=256)
        torch.testing.assert_close(out, x * scale)


@triton.jit
def _constexpr_first(BLOCK: tl.constexpr, x_ptr, n):
    pass


@triton.jit
def _two_constexprs(x_ptr, out_ptr, n, SCALE: tl.constexpr, BLOCK: tl.constexpr):
    offsets = tl.arange(0, BLOCK)
    mask = offsets < n
    tl.store(out_ptr + offsets, tl.load(x_ptr + offsets, mask=mask) * SCALE, mask=mask)


def test_launch_wants_the_constexprs_last_and_orders_them():
    from flag_gems.launch import Launcher, launch

    x = torch.randn(10, device=flag_gems.device)
    with pytest.raises(TypeError, match="must end with the constexprs"):
        launch(_constexpr_first, (1,), x, 10, BLOCK=16)
    assert list(Launcher(_two_constexprs, {"BLOCK": 16, "SCALE": 2}).constexprs) == ["SCALE", "BLOCK"]
    out = torch.empty_like(x)
    launch(_two_constexprs, (1,), x, out, 10, BLOCK=16, SCALE=3)
    torch.testing.assert_close(out, x * 3)


def test_the_direct_launch_passes_tensors_as_their_addresses(monkeypatch):
    # The GPU's direct path: Triton compiles on the first launch, which records where the tensors sit among
    # the arguments; later launches hand the compiled launcher those tensors' addresses, in a list of
    # their own (the caller's arguments stay as they were). Checked on any device with a recording launcher.
    from flag_gems import launch as launch_module

    calls = []

    def triton_path(*args, **constexprs):
        calls.append(("triton", args))

    def compiled_launcher(*args):
        calls.append(("direct", args))

    class Kernel:
        arg_names = ["x_ptr", "out_ptr", "n", "BLOCK"]

        def __getitem__(self, grid):
            return triton_path

    monkeypatch.setattr(launch_module, "_direct_call", lambda kernel, constexprs: (compiled_launcher, "fn", ("h",),
                                                                                   constexprs))
    monkeypatch.setattr(launch_module, "_raw_stream", lambda index: 7 + index)
    monkeypatch.setattr(launch_module, "_current_device", lambda: 0)
    launcher = launch_module.Launcher(Kernel(), {"BLOCK": 16})
    launcher._direct = True
    x, out = torch.randn(4), torch.empty(4)
    args = [x, out, 4]
    launcher((1,), args, ("key",))
    launcher((2, 3), args, ("key",))
    assert calls[0][0] == "triton" and calls[0][1][0] is x and calls[0][1][1] is out
    assert calls[1] == ("direct", (2, 3, 1, 7, "fn", "h", x.data_ptr(), out.data_ptr(), 4, 16))
    assert args[0] is x and args[1] is out


def test_launch_helper_compiles_per_dtype():
    from flag_gems.launch import launch, specialization

    for dtype in (torch.float32, torch.float16, torch.float64):
        x = torch.randn(100, device=flag_gems.device).to(dtype)
        out = torch.empty_like(x)
        launch(_scaled_copy, (1,), x, out, 100, 2.0, BLOCK=128)
        torch.testing.assert_close(out, x * 2)
    a, b = torch.randn(4), torch.randn(4).half()
    assert specialization([a, 3]) != specialization([b, 3])
    assert specialization([a, 3]) != specialization([a, 3.0])
    assert specialization([a, 16]) != specialization([a, 2**40])


@triton.jit
def _to_bf16(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.arange(0, BLOCK)
    mask = offsets < n
    tl.store(out_ptr + offsets, tl.load(x_ptr + offsets, mask=mask).to(tl.bfloat16), mask=mask)


def test_fp32_to_bf16_rounds_to_nearest_even():
    x = torch.randn(4000, device=flag_gems.device)
    out = torch.empty(4000, device=flag_gems.device, dtype=torch.bfloat16)
    _to_bf16[(1,)](x, out, 4000, BLOCK=4096)
    assert torch.equal(out, x.bfloat16())
