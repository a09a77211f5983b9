"""The replay module's logic without a GPU: ops of a test namespace whose Python kernels play a kernel on CPU
memory and report it as flag_gems.launch reports a launch; the module replays them through the same player.
What is planned, what is refused and why, in-place calls and overlaps, and the schemas it will not serve."""

from __future__ import annotations

import ctypes
import shutil
import struct

import numpy as np
import pytest
import torch

from flag_gems import launch, native

pytestmark = pytest.mark.skipif(not any(shutil.which(c) for c in ("c++", "g++", "clang++")),
                                reason="building the replay module needs a C++ compiler")

NS = "gems_replay_test"
SCALE, AXPY = 101, 102
FACTS = {SCALE: ((4, 1, 0), False, (0, 1), ["*fp32", "*fp32", "fp32", "i32"]),
         AXPY: ((4, 1, 0), False, (0, 1), ["*fp32", "*fp32", "fp32", "i32"])}


def _floats(address: int, n: int) -> np.ndarray:
    return np.frombuffer((ctypes.c_float * n).from_address(address), dtype=np.float32)


def _f32(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits & 0xFFFFFFFF))[0]


def play(function: int, grid, params) -> None:
    """The kernels, on raw addresses: what a launch computes, whether Python or the replay launches it."""
    n = params[3]
    if function == SCALE:  # out = x * s
        _floats(params[1], n)[:] = _floats(params[0], n) * _f32(params[2])
    elif function == AXPY:  # y += a * x
        _floats(params[0], n)[:] += _f32(params[2]) * _floats(params[1], n)


def _launch(function: int, pointers: list, a: float, n: int) -> None:
    addresses = [*pointers, a, n]
    play(function, (1, 1, 1), [*pointers, struct.unpack("<I", struct.pack("<f", a))[0], n])
    if launch.recording:
        launch._report(function, (1, 1, 1), FACTS[function], addresses)


def _scale(x, s):
    out = torch.empty_like(x)
    _launch(SCALE, [x.data_ptr(), out.data_ptr()], s, x.numel())
    return out


def _scale_(x, s):
    _launch(SCALE, [x.data_ptr(), x.data_ptr()], s, x.numel())
    return x


def _axpy_(y, x, a):
    _launch(AXPY, [y.data_ptr(), x.data_ptr()], a, y.numel())
    return y


def _twice(x):
    out = _scale(x, 2.0)
    _launch(SCALE, [out.data_ptr(), out.data_ptr()], 1.0, x.numel())
    return out


def _two_steps(x):
    # A partial result passed from one launch to the next, in memory the call allocates.
    partial, out = torch.empty_like(x), torch.empty_like(x)
    _launch(SCALE, [x.data_ptr(), partial.data_ptr()], 2.0, x.numel())
    _launch(SCALE, [partial.data_ptr(), out.data_ptr()], 3.0, x.numel())
    return out


_KEPT_PARTIAL = torch.empty(1000, device="cpu")  # the tests may run with a GPU as the default device


def _kept_buffer(x):
    # The same steps through a buffer kept from before the call: replays would share it. (A buffer the first
    # call allocates and keeps is the recorded call's own: replays get their own.)
    out = torch.empty_like(x)
    _launch(SCALE, [x.data_ptr(), _KEPT_PARTIAL.data_ptr()], 2.0, x.numel())
    _launch(SCALE, [_KEPT_PARTIAL.data_ptr(), out.data_ptr()], 3.0, x.numel())
    return out


def _second_half(x):
    # A launch on an element inside an argument.
    half = x.numel() // 2
    out = x.new_empty(x.numel() - half)
    _launch(SCALE, [x.data_ptr() + 4 * half, out.data_ptr()], 5.0, out.numel())
    return out


def _front_of_buffer(x):
    # The result is the front of a buffer whose back holds the partial result.
    n = x.numel()
    buffer = x.new_empty(2 * n)
    out = buffer[:n]
    _launch(SCALE, [x.data_ptr(), buffer[n:].data_ptr()], 2.0, n)
    _launch(SCALE, [buffer[n:].data_ptr(), out.data_ptr()], 1.0, n)
    return out


def _shifted(x, y):
    # Reads y from its second element: an address inside both x and y when y is a view of x.
    out = y.new_empty(y.numel() - 1)
    _launch(SCALE, [y.data_ptr() + 4, out.data_ptr()], 1.0, out.numel())
    return out


def _asked_for(x, mask):
    # Results a mask asks for; the others undefined, as ATen's backward ops return gradients not asked for.
    return tuple(_scale(x, 2.0 + i) if wanted else None for i, wanted in enumerate(mask))


def _accumulated(x):
    # Zeroed memory of the call's own that a launch accumulates into (a counter, partial sums).
    total = torch.zeros_like(x)
    _launch(AXPY, [total.data_ptr(), x.data_ptr()], 2.0, x.numel())
    return total


def _zeroed_twice(x):
    # A zero fill of memory the call allocated, between two launches: the order must hold.
    out = torch.empty_like(x)
    _launch(SCALE, [x.data_ptr(), out.data_ptr()], 2.0, x.numel())
    out.zero_()
    _launch(AXPY, [out.data_ptr(), x.data_ptr()], 3.0, x.numel())
    return out


def _accumulated_in_kept(x):
    _KEPT_PARTIAL.zero_()
    _launch(AXPY, [_KEPT_PARTIAL.data_ptr(), x.data_ptr()], 2.0, x.numel())
    out = torch.empty_like(x)
    _launch(SCALE, [_KEPT_PARTIAL.data_ptr(), out.data_ptr()], 1.0, x.numel())
    return out


def _own_memory(x):
    tmp, out = torch.empty_like(x), torch.empty_like(x)
    _launch(SCALE, [x.data_ptr(), tmp.data_ptr()], 3.0, x.numel())
    ctypes.memmove(out.data_ptr(), tmp.data_ptr(), 4 * x.numel())  # no op a recording would see
    return out


def _cloned(x):
    return _scale(x.clone(), 4.0)


_KEPT = {}


def _with_kept(x):
    # A second result kept from the first call: no launch of a later call writes it.
    kept = _KEPT.get(x.numel())
    if kept is None:
        kept = _KEPT[x.numel()] = torch.full_like(x, 7.0)
    return _scale(x, 2.0), kept


def _strict(x, s):
    if s < 0:
        raise ValueError("strict: s must not be negative")
    return _scale(x, s)


@pytest.fixture(scope="module")
def ops():
    lib = torch.library.Library(NS, "DEF")
    kernels = {
        "scale(Tensor x, float s) -> Tensor": _scale,
        "scale_(Tensor(a!) x, float s) -> Tensor(a!)": _scale_,
        "axpy_(Tensor(a!) y, Tensor x, float a) -> Tensor(a!)": _axpy_,
        "twice(Tensor x) -> Tensor": _twice,
        "two_steps(Tensor x) -> Tensor": _two_steps,
        "kept_buffer(Tensor x) -> Tensor": _kept_buffer,
        "second_half(Tensor x) -> Tensor": _second_half,
        "front_of_buffer(Tensor x) -> Tensor": _front_of_buffer,
        "shifted(Tensor x, Tensor y) -> Tensor": _shifted,
        "asked_for(Tensor x, bool[2] mask) -> (Tensor, Tensor)": _asked_for,
        "accumulated(Tensor x) -> Tensor": _accumulated,
        "zeroed_twice(Tensor x) -> Tensor": _zeroed_twice,
        "accumulated_in_kept(Tensor x) -> Tensor": _accumulated_in_kept,
        "clear_(Tensor(a!) x) -> Tensor(a!)": lambda x: x.zero_(),
        "own_memory(Tensor x) -> Tensor": _own_memory,
        "cloned(Tensor x) -> Tensor": _cloned,
        "strict(Tensor x, float s) -> Tensor": _strict,
        "with_kept(Tensor x) -> (Tensor, Tensor)": _with_kept,
        "view(Tensor(a) x) -> Tensor(a)": lambda x: x.view(-1),
        "pieces(Tensor x) -> Tensor[]": lambda x: [x.clone()],
        "noisy(Tensor x, Generator? generator=None) -> Tensor": lambda x, generator=None: x.clone(),
    }
    for schema, fn in kernels.items():
        lib.define(schema)
        lib.impl(schema.split("(")[0], fn, "CPU")
    native.use_test_launcher(play)
    handle = native.Handle("CPU")
    for name in ("scale", "scale_", "axpy_", "twice", "two_steps", "kept_buffer", "second_half", "front_of_buffer",
                 "shifted", "asked_for", "accumulated", "zeroed_twice", "accumulated_in_kept", "clear_",
                 "own_memory", "cloned", "strict", "with_kept"):
        assert handle.install(f"{NS}::{name}")
    yield getattr(torch.ops, NS)
    handle.reset()
    native.use_test_launcher(None)
    native.clear()
    lib._destroy()


def _stats(name: str):
    return native.stats().get(f"{NS}::{name}", (0, 0, 0, ""))


def _x(n: int = 1000) -> torch.Tensor:
    return torch.randn(n, dtype=torch.float32, device="cpu")


def test_a_signature_is_recorded_once_and_replayed_after(ops):
    op = ops
    native.clear()
    for _ in range(4):
        x = _x()
        torch.testing.assert_close(op.scale(x, 0.5), x * 0.5, rtol=0, atol=0)
    hits, plans, gave_up, _ = _stats("scale")
    assert (hits, plans, gave_up) == (3, 1, 0)
    assert launch.recording == 0


def test_a_new_scalar_alignment_or_shape_is_a_new_signature(ops):
    op = ops
    native.clear()
    x = _x(1001)
    for args in [(x, 0.5), (x, 2.0), (x[1:], 2.0), (x[:500], 2.0), (x, 0.5), (x[1:], 2.0)]:
        torch.testing.assert_close(op.scale(*args), args[0] * args[1], rtol=0, atol=0)
    hits, plans, _, _ = _stats("scale")
    assert plans == 4 and hits >= 2


def test_in_place_calls_replay_and_return_their_tensor(ops):
    op = ops
    native.clear()
    for _ in range(3):
        x = _x()
        expected = x * 1.5
        result = op.scale_(x, 1.5)
        assert result.data_ptr() == x.data_ptr()
        torch.testing.assert_close(x, expected, rtol=0, atol=0)
    assert _stats("scale_")[0] >= 2


def test_a_written_tensor_overlapping_another_argument_goes_to_python(ops):
    op = ops
    native.clear()
    for _ in range(3):
        y, x = _x(1001), _x(1001)
        op.axpy_(y[1:], x[:-1], 2.0)  # the signature of the call below, without an overlap
    hits = _stats("axpy_")[0]
    z = _x(1001)
    op.axpy_(z[1:], z[:-1], 2.0)
    assert _stats("axpy_")[0] == hits  # Python's kernel judged it


@pytest.mark.parametrize("name, expected", [("twice", 2.0), ("two_steps", 6.0), ("second_half", 5.0)])
def test_calls_of_several_launches_through_their_own_memory_replay(ops, name, expected):
    op = ops
    native.clear()
    fn = getattr(op, name)
    results = []
    for _ in range(4):
        x = _x()
        result = fn(x)
        results.append(result)
        torch.testing.assert_close(result, x[x.numel() - result.numel():] * expected, rtol=0, atol=0)
    assert _stats(name)[:3] == (3, 1, 0)
    assert len({r.data_ptr() for r in results}) == len(results)  # each call its own result


def test_results_not_asked_for_stay_undefined(ops):
    op = ops
    native.clear()
    for mask in [[True, False], [False, True], [True, True]] * 4:
        x = _x()
        results = op.asked_for(x, mask)
        for i, (wanted, result) in enumerate(zip(mask, results)):
            if wanted:
                torch.testing.assert_close(result, x * (2.0 + i), rtol=0, atol=0)
            else:
                assert result is None
    assert _stats("asked_for")[:3] == (9, 3, 0)  # each mask a signature of its own


@pytest.mark.parametrize("name, expected", [("accumulated", 2.0), ("zeroed_twice", 3.0)])
def test_zero_fills_of_the_calls_own_memory_replay_in_order(ops, name, expected):
    op = ops
    native.clear()
    fn = getattr(op, name)
    for _ in range(4):
        x = _x()
        torch.testing.assert_close(fn(x), x * expected, rtol=0, atol=0)
    assert _stats(name)[:3] == (3, 1, 0)


def test_a_zero_fill_of_other_memory_is_not_replayed(ops):
    op = ops
    native.clear()
    for _ in range(3):
        x = _x()
        torch.testing.assert_close(op.accumulated_in_kept(x), x * 2.0, rtol=0, atol=0)
        y = _x()
        assert op.clear_(y) is not None and not y.any()  # an argument zeroed: the op's own Python did it
    assert _stats("accumulated_in_kept")[1:] == (0, 1, "filled memory it did not allocate")
    assert _stats("clear_")[1:] == (0, 1, "filled memory it did not allocate")


@pytest.mark.parametrize("name, why", [
    ("kept_buffer", "launched on memory it did not allocate"),
    ("front_of_buffer", "returned part of a larger buffer"),
    ("own_memory", "returned a tensor its launch did not take"),
    ("cloned", "called another op aten::clone"),
])
def test_calls_a_replay_could_not_repeat_stay_in_python(ops, name, why):
    op = ops
    native.clear()
    fn = getattr(op, name)
    expected = {"kept_buffer": 6.0, "front_of_buffer": 2.0, "own_memory": 3.0, "cloned": 4.0}[name]
    for _ in range(4):
        x = _x()
        torch.testing.assert_close(fn(x), x * expected, rtol=0, atol=0)
    hits, plans, gave_up, reason = _stats(name)
    assert (hits, plans, gave_up) == (0, 0, 1)
    assert reason == why


def test_an_address_inside_two_arguments_is_not_replayed(ops):
    op = ops
    native.clear()
    for _ in range(3):
        x = _x()
        y = x[1:]
        torch.testing.assert_close(op.shifted(x, y), y[1:], rtol=0, atol=0)
    hits, plans, gave_up, reason = _stats("shifted")
    assert (hits, plans, gave_up, reason) == (0, 0, 1, "launched on memory that several arguments hold")
    for _ in range(3):  # apart, the same call replays
        x, y = _x(), _x()
        torch.testing.assert_close(op.shifted(x, y), y[1:], rtol=0, atol=0)
    assert _stats("shifted")[0] == 2


def test_a_result_no_launch_wrote_is_not_replayed(ops):
    op = ops
    native.clear()
    for _ in range(4):
        x = _x(100)
        doubled, kept = op.with_kept(x)
        torch.testing.assert_close(doubled, x * 2.0, rtol=0, atol=0)
        torch.testing.assert_close(kept, torch.full_like(x, 7.0), rtol=0, atol=0)
    hits, plans, gave_up, reason = _stats("with_kept")
    assert (hits, plans, gave_up, reason) == (0, 0, 1, "returned a tensor it did not allocate on the device")


def test_an_error_raised_while_recording_reaches_the_caller(ops):
    op = ops
    native.clear()
    with pytest.raises(ValueError, match="must not be negative"):
        op.strict(_x(), -1.0)
    assert launch.recording == 0
    x = _x()
    for _ in range(3):
        torch.testing.assert_close(op.strict(x, 1.0), x, rtol=0, atol=0)
    assert _stats("strict")[0] == 2


def test_switched_off_and_cleared(ops):
    op = ops
    native.clear()
    x = _x(64)
    op.scale(x, 7.0)
    native.set_enabled(False)
    try:
        hits = _stats("scale")[0]
        torch.testing.assert_close(op.scale(x, 7.0), x * 7.0, rtol=0, atol=0)
        assert _stats("scale")[0] == hits
    finally:
        native.set_enabled(True)
    native.clear()
    assert _stats("scale")[1] == 0


@pytest.mark.parametrize("key, name", [
    ("CPU", f"{NS}::view"),  # a result that is a view of an argument
    ("CPU", f"{NS}::pieces"),  # a list of tensors
    ("CPU", f"{NS}::noisy"),  # a generator
    ("CPU", "native_dropout"),  # a random op (its schema's tag)
    ("AutogradCPU", "add_.Tensor"),  # in place at an Autograd key: the version counter
    ("CPU", f"{NS}::no_such_op"),
])
def test_ops_it_will_not_serve(ops, key, name):
    assert not native.Handle(key).install(name)


def _set_a_pointwise_knob():
    from gems_pointwise.knobs import KNOBS

    KNOBS.half_fast_pow = KNOBS.half_fast_pow


def _clear_norm_plans():
    from gems_norm import heuristics

    heuristics.clear_plans()


def _forget_reduction_plans():
    from gems_reduction import reduce

    reduce.forget_plans()


def _clear_blas_caches():
    from gems_blas import mm

    mm.clear_caches()


@pytest.mark.parametrize("change", [_set_a_pointwise_knob, _clear_norm_plans, _forget_reduction_plans,
                                    _clear_blas_caches])
def test_a_family_setting_changed_forgets_the_replayed_calls(ops, change):
    # A replayed call keeps the kernel its recording chose: a new setting must reach the next call.
    op = ops
    native.clear()
    x = _x(64)
    op.scale(x, 5.0)
    assert _stats("scale")[1] == 1
    change()
    assert _stats("scale")[1] == 0


def test_threads_record_and_replay_their_own_calls(ops):
    import threading

    op = ops
    native.clear()
    failures = []

    def work(scale: float) -> None:
        try:
            for _ in range(50):
                x = _x(257)
                torch.testing.assert_close(op.scale(x, scale), x * scale, rtol=0, atol=0)
        except AssertionError as error:
            failures.append(error)

    threads = [threading.Thread(target=work, args=(s,)) for s in (0.25, 0.5, 2.0, 4.0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    hits, plans, _, _ = _stats("scale")
    assert plans == 4 and hits >= 4 * 48
    assert launch.recording == 0


def test_an_op_whose_signatures_keep_changing_stops_recording(ops):
    # A scalar that differs every call makes a new signature every call: after 256 plans never replayed,
    # new signatures of the op go to Python without a recording.
    op = ops
    native.clear()
    x = _x(16)
    for i in range(300):
        torch.testing.assert_close(op.scale(x, 1.0 + i), x * (1.0 + i), rtol=0, atol=0)
    assert _stats("scale")[1] == 257
    torch.testing.assert_close(op.scale(x, 1.0), x, rtol=0, atol=0)
    assert _stats("scale")[0] == 1  # a signature planned before still replays
