"""Accuracy of the softmax family and its gradients (row skeleton)."""

from __future__ import annotations

import gems_test_settings as settings
import pytest
import torch
from gems_test_settings import to_reference

import flag_gems
from flag_gems.testing import assert_close, assert_equal, served

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's numpy on -inf rows

DEVICE = flag_gems.device
FLOATS = [torch.float16, torch.bfloat16, torch.float32]
# (shape, dim): last dim and inner dims, short rows packed per program, odd and length-1 rows, and rows
# long enough for the two-loop (online) path on the interpreter.
CASES = [((3, 50), 1), ((3, 50), 0), ((4, 5, 6), 1), ((4, 5, 6), -1), ((33, 1), 1), ((1, 7), 0), ((7,), 0),
         ((2, 20000), 1), ((20000, 2), 0), ((2, 17000, 2), 1)]
if settings.QUICK:
    CASES = [CASES[i] for i in (0, 1, 2, 4, 7, 8)]


@pytest.mark.parametrize("shape, dim", CASES)
@pytest.mark.parametrize("dtype", FLOATS)
def test_softmax_and_log_softmax(shape, dim, dtype):
    x = torch.randn(shape, dtype=dtype, device=DEVICE) * 3
    ref_x = to_reference(x, upcast=True)
    with served("_softmax", "_log_softmax"):
        y = torch.softmax(x, dim)
        lsm = torch.log_softmax(x, dim)
    assert y.dtype == dtype and y.shape == x.shape and y.is_contiguous()
    assert_close(y, torch.softmax(ref_x, dim), dtype)
    assert_close(lsm, torch.log_softmax(ref_x, dim), dtype)


@pytest.mark.parametrize("shape, dim", CASES)
@pytest.mark.parametrize("dtype", FLOATS)
def test_softmax_backward(shape, dim, dtype):
    # The backward ops on given (grad, output), against their formulas in float64 on the same inputs.
    x = torch.randn(shape, dtype=dtype, device=DEVICE) * 3
    g = torch.randn(shape, dtype=dtype, device=DEVICE)
    y, lsm = torch.softmax(x, dim), torch.log_softmax(x, dim)
    with served("_softmax_backward_data", "_log_softmax_backward_data"):
        gy = torch.ops.aten._softmax_backward_data(g, y, dim, dtype)
        gl = torch.ops.aten._log_softmax_backward_data(g, lsm, dim, dtype)
    g64, y64, l64 = (to_reference(t, upcast=True) for t in (g, y, lsm))
    n = shape[dim] if shape else 1
    assert_close(gy, y64 * (g64 - (g64 * y64).sum(dim, keepdim=True)), dtype, reduce_dim=n)
    assert_close(gl, g64 - l64.exp() * g64.sum(dim, keepdim=True), dtype, reduce_dim=n)


@pytest.mark.parametrize("shape, dim", [((3, 50), 1), ((4, 5, 6), 1), ((2, 20000), 1)])
def test_gradients_through_autograd(shape, dim):
    x = torch.randn(shape, device=DEVICE, requires_grad=True)
    g = torch.randn(shape, device=DEVICE)
    ref_x = to_reference(x, upcast=True)
    ref = torch.autograd.grad((torch.softmax(ref_x, dim) * g.double()).sum() + torch.log_softmax(ref_x, dim).sum(),
                              ref_x)[0]
    with served("_softmax_backward_data", "_log_softmax_backward_data"):
        res = torch.autograd.grad((torch.softmax(x, dim) * g).sum() + torch.log_softmax(x, dim).sum(), x)[0]
    assert_close(res, ref, torch.float32, reduce_dim=shape[dim])


def test_minus_inf_rows_and_safe_softmax():
    x = torch.randn(4, 9, device=DEVICE)
    x[0] = float("-inf")
    x[1, :4] = float("-inf")
    x[2, 3] = float("nan")
    ref = to_reference(x)
    with served("_softmax", "_log_softmax", "_safe_softmax"):
        res = (torch.softmax(x, 1), torch.log_softmax(x, 1), torch.ops.aten._safe_softmax(x, 1),
               torch.softmax(x, 0), torch.ops.aten._safe_softmax(x, 1, torch.float64))
    ref_res = (torch.softmax(ref, 1), torch.log_softmax(ref, 1), torch.ops.aten._safe_softmax(ref, 1),
               torch.softmax(ref, 0), torch.ops.aten._safe_softmax(ref, 1, torch.float64))
    for a, b in zip(res, ref_res):
        assert a.dtype == b.dtype
        assert_close(a, b, a.dtype, equal_nan=True)
    assert_equal(res[2][0], torch.zeros(9))


def test_non_contiguous_zero_dim_empty_and_out():
    base = torch.randn(8, 10, device=DEVICE)
    views = [base[:, ::2], base.t(), torch.tensor(1.5, device=DEVICE), torch.empty(0, 4, device=DEVICE)]
    for v in views:
        with served("_softmax", "_log_softmax"):
            y = torch.softmax(v, -1)
            lsm = torch.log_softmax(v, 0)
        assert_close(y, torch.softmax(to_reference(v, upcast=True), -1), torch.float32)
        assert_close(lsm, torch.log_softmax(to_reference(v, upcast=True), 0), torch.float32)
    out = torch.empty(0, device=DEVICE)
    with served("_softmax"):
        torch.ops.aten._softmax.out(base, 1, False, out=out)
    assert_close(out, torch.softmax(base, 1), torch.float32)


@pytest.mark.skipif(flag_gems.device == "cpu", reason="ATen has no half_to_float on CPU to compare with")
def test_half_to_float():
    x = torch.randn(6, 70, dtype=torch.float16, device=DEVICE)
    with served("_softmax", "_log_softmax"):
        y = torch.ops.aten._softmax(x, 1, True)
        lsm = torch.ops.aten._log_softmax(x, 1, True)
    assert y.dtype == lsm.dtype == torch.float32
    assert_close(y, torch.softmax(x.double(), 1), torch.float32)
    assert_close(lsm, torch.log_softmax(x.double(), 1), torch.float32)


def test_half_to_float_kernel():
    # The float16 -> float32 forward and the float32 grad -> float16 backward, checked on any device.
    from gems_reduction import softmax

    x = torch.randn(6, 70, dtype=torch.float16, device=DEVICE)
    g = torch.randn(6, 70, dtype=torch.float32, device=DEVICE)
    y = softmax.softmax(x, 1, True)
    assert y.dtype == torch.float32
    assert_close(y, torch.softmax(x.double(), 1), torch.float32)
    gi = softmax.softmax_backward(g, y, 1, torch.float16)
    assert gi.dtype == torch.float16
    ref = y.double() * (g.double() - (g.double() * y.double()).sum(1, keepdim=True))
    assert_close(gi, ref, torch.float16, reduce_dim=70)


def test_int64_index_path(monkeypatch):
    from gems_reduction import layout

    monkeypatch.setattr(layout, "force_int64", True)
    x = torch.randn(5, 300, device=DEVICE)
    with served("_softmax", "_log_softmax"):
        res = (torch.softmax(x, 1), torch.log_softmax(x, 0))
    assert_close(res[0], torch.softmax(x.double(), 1), torch.float32)
    assert_close(res[1], torch.log_softmax(x.double(), 0), torch.float32)


@pytest.mark.parametrize("log", [False, True])
def test_cached_calls(log):
    # The ready call of a signature serves later calls with new values; another shape, stride or
    # dtype gets its own (a non-contiguous input is copied first).
    from gems_reduction import layout

    fn = torch.log_softmax if log else torch.softmax
    base = torch.randn(3, 40, device=DEVICE)
    inputs = [base, torch.randn(3, 40, device=DEVICE), torch.randn(2, 40, device=DEVICE),
              torch.randn(40, 3, device=DEVICE).t(), base.to(torch.bfloat16), torch.randn(1024, device=DEVICE)]
    known = None
    for i, x in enumerate(inputs):
        with served("_log_softmax" if log else "_softmax"):
            res = (fn(x, -1), fn(x, 0))
            if i == 1:
                assert len(layout.calls) == known, "the same signature made a new ready call"
            known = len(layout.calls)
        ref = to_reference(x, upcast=True)
        assert_close(res[0], fn(ref, -1), x.dtype)
        assert_close(res[1], fn(ref, 0), x.dtype)


# The persistent grid over long rows: its default budgets hold every row of the interpreter's small
# tensors (the plain grid then), so tiny budgets make each program take several rows.


@pytest.fixture
def knobs(monkeypatch):
    """Sets ``tiles`` knobs for one test; plans built under other values are dropped before and after."""
    from gems_reduction import reduce, tiles

    def apply(**values):
        for name, value in values.items():
            monkeypatch.setattr(tiles, name, value)
        reduce.forget_plans()

    reduce.forget_plans()
    yield apply
    reduce.forget_plans()


def _persistent_grids() -> list:
    """The grids of the ready persistent launches (forward calls and backward plans)."""
    from gems_reduction import layout, softmax

    found = []
    for call in layout.calls.values():
        launch = call.launch if isinstance(call, softmax._Call) else call
        if isinstance(launch, layout.Launch) and launch.launcher.constexprs.get("PERSISTENT"):
            found.append(launch.grid)
    return found


def _check_family(x, dim, dtype):
    """softmax, log_softmax and _safe_softmax of ``x`` over ``dim``, then both backwards, served by gems and
    against ATen in float64 (backwards: their formulas)."""
    ref = to_reference(x, upcast=True)
    with served("_softmax", "_log_softmax", "_safe_softmax"):
        res = (torch.softmax(x, dim), torch.log_softmax(x, dim), torch.ops.aten._safe_softmax(x, dim))
    ref_res = (torch.softmax(ref, dim), torch.log_softmax(ref, dim), torch.ops.aten._safe_softmax(ref, dim))
    for a, b in zip(res, ref_res):
        assert a.dtype == dtype and a.shape == b.shape
        assert_close(a, b, dtype, equal_nan=True)
    g = torch.randn_like(x)
    y, lsm = torch.softmax(x.nan_to_num(neginf=-1e4), dim), torch.log_softmax(x.nan_to_num(neginf=-1e4), dim)
    with served("_softmax_backward_data", "_log_softmax_backward_data"):
        gy = torch.ops.aten._softmax_backward_data(g, y, dim, dtype)
        gl = torch.ops.aten._log_softmax_backward_data(g, lsm, dim, dtype)
    g64, y64, l64 = (to_reference(t, upcast=True) for t in (g, y, lsm))
    n = x.shape[dim]
    assert_close(gy, y64 * (g64 - (g64 * y64).sum(dim, keepdim=True)), dtype, reduce_dim=n)
    assert_close(gl, g64 - l64.exp() * g64.sum(dim, keepdim=True), dtype, reduce_dim=n)


@pytest.mark.parametrize("shape", [(5, 17000), (2, 3, 16500)])
@pytest.mark.parametrize("dtype", FLOATS)
def test_long_rows_in_l2(knobs, monkeypatch, shape, dtype):
    # Rows longer than one pass, 5 or 6 of them: 2 persistent programs taking every other row; a row of
    # -inf, one partly -inf.
    from gems_reduction import resident

    x = torch.randn(shape, dtype=dtype, device=DEVICE) * 3
    flat = x.view(-1, shape[-1])
    flat[1] = float("-inf")
    flat[2, : shape[-1] // 2] = float("-inf")
    row_bytes = shape[-1] * x.element_size()
    # (On a GPU so few rows would take the split along rows, and the longest the resident path: off here.)
    monkeypatch.setattr(resident, "ENABLED", False)
    knobs(SOFTMAX_ROWS_IN_FLIGHT_BYTES=2 * row_bytes, SOFTMAX_BACKWARD_ROWS_IN_FLIGHT_BYTES=4 * row_bytes,
          SOFTMAX_SPLIT_FEW_ROWS=False)
    _check_family(x, -1, dtype)
    assert _persistent_grids() == [(2,)] * 5, "the persistent path did not serve every call"


@pytest.mark.parametrize("shape", [(3, 17000), (2, 2, 16500)])
@pytest.mark.parametrize("dtype", FLOATS)
def test_few_long_rows_split(knobs, monkeypatch, shape, dtype):
    # Fewer rows than SMs, each longer than one pass: each row split into chunks over several programs (the
    # interpreter counts one SM: it pretends to have 8); a row of -inf, one partly -inf.
    from gems_reduction import layout, resident, softmax

    monkeypatch.setattr(layout, "sm_count", lambda index=0: 8)
    monkeypatch.setattr(resident, "ENABLED", False)  # (on a GPU the longest rows would take it)
    knobs()
    x = torch.randn(shape, dtype=dtype, device=DEVICE) * 3
    flat = x.view(-1, shape[-1])
    flat[1] = float("-inf")
    flat[2, : shape[-1] // 2] = float("-inf")
    _check_family(x, -1, dtype)
    forward = [call for call in layout.calls.values() if isinstance(call, softmax._Call)]
    assert len(forward) == 3 and all(isinstance(call.launch, softmax._SplitLaunch) for call in forward)
    assert all(call.launch.shape[1] > 1 for call in forward), "rows not split into chunks"


def test_rows_budget():
    from gems_reduction import softmax

    assert softmax.rows_in_flight(512, 262144, 0) == 0
    assert softmax.rows_in_flight(512, 262144, 32 * 2**20) == 128
    assert softmax.rows_in_flight(512, 262144, 1) == 1
    assert softmax.rows_in_flight(512, 262144, 2**30) == 0  # no fewer programs than rows: the plain grid


# The resident path (gems_reduction/resident.py): on the interpreter each row is one chunk, which runs the
# kernel's code (statistics published, counted, combined); on a GPU the chunks of a row wait on each other.


def _resident_launches() -> list:
    from gems_reduction import layout, resident, softmax

    return [call.launch for call in layout.calls.values()
            if isinstance(call, softmax._Call) and isinstance(call.launch, resident.ResidentLaunch)]


def _with_inf_rows(shape, dtype):
    x = torch.randn(shape, dtype=dtype, device=DEVICE) * 3
    rows = x.view(-1, shape[-1])
    rows[0] = float("-inf")  # a row of -inf only, and one half -inf
    rows[1, : shape[-1] // 2] = float("-inf")
    return x


@pytest.mark.parametrize("shape", [(5, 300), (2, 3, 257)])
@pytest.mark.parametrize("dtype", FLOATS)
def test_resident_softmax_interpreted(knobs, monkeypatch, shape, dtype):
    from gems_reduction import resident

    if DEVICE != "cpu":
        pytest.skip("the interpreter's one-chunk rows; a GPU runs test_resident_softmax_chunks")
    monkeypatch.setattr(resident, "ENABLED", True)
    knobs()
    _check_family(_with_inf_rows(shape, dtype), -1, dtype)
    assert len(_resident_launches()) == 3, "the resident path did not serve every forward call"
    with served("_softmax"):
        torch.softmax(torch.randn(shape, dtype=dtype, device=DEVICE), 0)
    assert len(_resident_launches()) == 3, "softmax over a non-last dim took the resident path"


@pytest.mark.parametrize("shape", [(4, 70001), (2, 131072), (3, 2, 40000), (2, 1048576)])
@pytest.mark.parametrize("dtype", FLOATS)
def test_resident_softmax_chunks(knobs, shape, dtype):
    # Rows of several chunks, on a GPU: the programs of a row wait for each other's statistics.
    if DEVICE == "cpu":
        pytest.skip("the chunks of a row wait on each other: GPU only")
    knobs()
    _check_family(_with_inf_rows(shape, dtype), -1, dtype)
    launches = _resident_launches()
    assert len(launches) == 3 and all(launch.chunks > 1 for launch in launches), "not served by resident chunks"


def test_resident_softmax_in_cuda_graph(knobs):
    # The cooperative launch, its zeroed counters and buffers, captured and replayed.
    if DEVICE == "cpu":
        pytest.skip("CUDA graphs: GPU only")
    knobs()
    x = torch.randn(8, 100000, device=DEVICE, dtype=torch.bfloat16)
    with served("_softmax"):
        torch.softmax(x, -1)  # compiles outside the capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            y = torch.softmax(x, -1)
    assert _resident_launches(), "not served by the resident path"
    x.copy_(torch.randn_like(x) * 3)
    graph.replay()
    assert_close(y, torch.softmax(to_reference(x, upcast=True), -1), torch.bfloat16)


def test_resident_softmax_int64_index(knobs, monkeypatch):
    # The 64-bit offsets of the resident kernel (tensors past 2^31 elements), forced on a small input.
    from gems_reduction import layout, resident

    monkeypatch.setattr(layout, "force_int64", True)
    monkeypatch.setattr(resident, "ENABLED", True)
    knobs()
    x = torch.randn(3, 300 if DEVICE == "cpu" else 70000, device=DEVICE)
    with served("_softmax", "_log_softmax"):
        res = (torch.softmax(x, -1), torch.log_softmax(x, -1))
    assert len(_resident_launches()) == 2, "not served by the resident path"
    assert_close(res[0], torch.softmax(x.double(), -1), torch.float32)
    assert_close(res[1], torch.log_softmax(x.double(), -1), torch.float32)


def test_resident_grid_fits_the_gpu(monkeypatch):
    # The grid of programs that wait on each other never exceeds what one SM holds times the SMs: registers,
    # shared memory and threads of the device at hand (an H100's, and a GPU with fewer threads and less
    # shared memory an SM).
    import types

    from gems_reduction import resident

    compiled = types.SimpleNamespace(n_regs=32, metadata=types.SimpleNamespace(shared=1024))
    h100 = types.SimpleNamespace(regs_per_multiprocessor=65536, shared_memory_per_multiprocessor=233472,
                                 max_threads_per_multi_processor=2048)
    smaller = types.SimpleNamespace(regs_per_multiprocessor=65536, shared_memory_per_multiprocessor=102400,
                                    max_threads_per_multi_processor=1536)
    for props, expected in ((h100, 8), (smaller, 6)):  # registers for 8, threads for 8 or 6
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index=0, props=props: props)
        assert resident._programs_per_sm(compiled, 8) == expected
    heavy = types.SimpleNamespace(n_regs=128, metadata=types.SimpleNamespace(shared=60 * 1024))
    assert resident._programs_per_sm(heavy, 8) == 1  # shared memory: one 61 KB program in 100 KB
