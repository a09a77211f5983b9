"""Accuracy of the reduce-over-dims family: sum ... dist, argmax/argmin, max/min along a dim."""

from __future__ import annotations

import math

import gems_test_settings as settings
import pytest
import torch
from gems_test_settings import to_reference

import flag_gems
from flag_gems.testing import assert_close, assert_equal, served

DEVICE = flag_gems.device
FLOATS = [torch.float16, torch.bfloat16, torch.float32]
QUICK = settings.QUICK

# (shape, dims) covering rows, columns, several dims (merged and not), negative dims, odd lengths.
CASES = [
    ((), None), ((7,), 0), ((1, 9), 1), ((4, 33), 1), ((4, 33), 0), ((4, 33), -1), ((3, 5, 17), (0, 2)),
    ((3, 5, 17), (-2,)), ((2, 3, 4, 5), (1, 3)), ((2, 3, 4, 5), (0, 2, 3)), ((2, 3, 4, 5, 6), (1, 3)),
    ((64, 130), 1), ((130, 64), 0), ((3, 5, 17), None),
]
if QUICK:
    CASES = CASES[1:2] + CASES[3:5] + CASES[6:7] + CASES[8:9] + CASES[10:12]


def _dims_arg(dims):
    return list(dims) if isinstance(dims, tuple) else dims


def _count(shape, dims):
    if dims is None:
        return max(math.prod(shape), 1)
    dims = [dims] if isinstance(dims, int) else dims
    return math.prod(shape[d] for d in dims)


def _rand(shape, dtype):
    if dtype.is_floating_point:
        return torch.randn(shape, dtype=dtype, device=DEVICE)
    if dtype == torch.bool:
        return torch.rand(shape, device=DEVICE) > 0.5
    return torch.randint(-20, 20, shape, device=DEVICE).to(dtype)


@pytest.mark.parametrize("shape, dims", CASES)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("keepdim", [False, True])
def test_sum_mean(shape, dims, dtype, keepdim):
    x = _rand(shape, dtype)
    ref = to_reference(x, upcast=True)
    d = _dims_arg(dims)
    ref_sum = torch.sum(ref, d, keepdim=keepdim) if d is not None else torch.sum(ref)
    ref_mean = torch.mean(ref, d, keepdim=keepdim) if d is not None else torch.mean(ref)
    with served("sum", "mean"):
        res_sum = torch.sum(x, d, keepdim=keepdim) if d is not None else torch.sum(x)
        res_mean = torch.mean(x, d, keepdim=keepdim) if d is not None else torch.mean(x)
    n = _count(shape, dims)
    assert res_sum.shape == ref_sum.shape and res_sum.dtype == dtype
    assert_close(res_sum, ref_sum, dtype, reduce_dim=n)
    assert_close(res_mean, ref_mean, dtype)


@pytest.mark.parametrize("shape, dims", CASES)
@pytest.mark.parametrize("dtype", FLOATS + [torch.int32])
def test_amax_amin_prod_nansum(shape, dims, dtype):
    x = _rand(shape, dtype)
    if dtype.is_floating_point:
        x = x.clamp(-2, 2) * 0.6 + 0.1  # a product of many values stays representable
    ref = to_reference(x, upcast=True)
    d = _dims_arg(dims) if dims is not None else []
    with served("amax", "amin", "nansum"):
        res = (torch.amax(x, d), torch.amin(x, d, keepdim=True), torch.nansum(x, d))
    assert_equal(res[0], torch.amax(ref, d))
    assert_equal(res[1], torch.amin(ref, d, keepdim=True))
    assert_close(res[2], torch.nansum(ref, d), dtype, reduce_dim=_count(shape, dims))
    if not isinstance(dims, tuple):
        ref_prod = torch.prod(ref, dims) if dims is not None else torch.prod(ref)
        with served("prod"):
            res_prod = torch.prod(x, dims) if dims is not None else torch.prod(x)
        assert res_prod.dtype == ref_prod.dtype if not dtype.is_floating_point else res_prod.dtype == dtype
        assert_close(res_prod, ref_prod, dtype, reduce_dim=_count(shape, dims))


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int8, torch.int32, torch.int64])
def test_integer_sums_promote(dtype):
    x = _rand((5, 31), dtype)
    with served("sum", "prod"):
        res = (x.sum(), x.sum(1), x.sum(0, dtype=torch.float32), x[:, :5].prod(1))
    ref = (x.sum(), x.sum(1), x.sum(0, dtype=torch.float32), x[:, :5].prod(1))
    for a, b in zip(res, ref):
        assert a.dtype == b.dtype
        assert_equal(a, b)


def test_dtype_argument_and_out():
    x = torch.randn(6, 40, dtype=torch.float16, device=DEVICE)
    ref = to_reference(x, upcast=True)
    out = torch.empty(0, dtype=torch.float32, device=DEVICE)
    with served("sum", "mean"):
        a = x.sum(1, dtype=torch.float32)
        b = x.mean(0, dtype=torch.float32)
        c = torch.sum(x, 1, dtype=torch.float32, out=out)
        d = torch.mean(x, (0, 1), keepdim=True)
    assert a.dtype == b.dtype == torch.float32 and c is out and d.shape == (1, 1)
    assert_close(a, ref.sum(1), torch.float32, reduce_dim=40)
    assert_close(b, ref.mean(0), torch.float32)
    assert_close(out, ref.sum(1), torch.float32, reduce_dim=40)
    assert_close(d, ref.mean((0, 1), keepdim=True), torch.float16)


def test_mean_of_integers_is_an_error():
    x = torch.arange(6, device=DEVICE)
    with pytest.raises(RuntimeError, match="mean"):
        x.mean()
    with flag_gems.use_gems(), pytest.raises(RuntimeError, match="mean"):
        x.mean()


def test_empty_and_zero_dim():
    e = torch.empty(0, 3, device=DEVICE)
    s = torch.tensor(2.5, device=DEVICE)
    with served("sum", "prod", "mean", "amax"):
        res = (e.sum(0), e.sum(1), e.prod(0), e.mean(0), e.sum(), s.sum(), s.sum(0), s.amax(), s.mean(-1, keepdim=True))
    ref = (e.sum(0), e.sum(1), e.prod(0), e.mean(0), e.sum(), s.sum(), s.sum(0), s.amax(), s.mean(-1, keepdim=True))
    for a, b in zip(res, ref):
        assert a.shape == b.shape
        assert_equal(a, b, equal_nan=True)
    for fn in (lambda t: t.amax(0), lambda t: t.max(), lambda t: t.argmax(), lambda t: t.max(0)):
        with pytest.raises((RuntimeError, IndexError)):
            fn(e)
        with flag_gems.use_gems(), pytest.raises((RuntimeError, IndexError)):
            fn(e)


def test_bad_dims_raise_like_aten():
    x = torch.randn(3, 4, device=DEVICE)
    for fn in (lambda: x.sum(2), lambda: x.sum((0, 0)), lambda: x.argmax(-3)):
        with pytest.raises((IndexError, RuntimeError)) as aten_error:
            fn()
        with flag_gems.use_gems(), pytest.raises(type(aten_error.value)):
            fn()


@pytest.mark.parametrize("view", ["stride", "transpose", "permute", "expand", "offset"])
def test_non_contiguous(view):
    base = torch.randn(6, 10, 12, device=DEVICE)
    x = {"stride": base[:, ::2, 1::3], "transpose": base[0].t(), "permute": base.permute(2, 0, 1),
         "expand": base[:1, :1].expand(5, 4, 12), "offset": base[1:, 2:7]}[view]
    ref = to_reference(x, upcast=True)
    with served("sum", "amax", "argmax", "mean"):
        res = (x.sum(), x.sum(-1), x.sum(0), x.amax(1), x.argmax(0), x.mean((0, -1)))
    n_all = x.numel()
    assert_close(res[0], ref.sum(), torch.float32, reduce_dim=n_all)
    assert_close(res[1], ref.sum(-1), torch.float32, reduce_dim=x.shape[-1])
    assert_close(res[2], ref.sum(0), torch.float32, reduce_dim=x.shape[0])
    assert_equal(res[3], ref.amax(1))
    assert_equal(res[4], ref.argmax(0))
    assert_close(res[5], ref.mean((0, -1)), torch.float32)


@pytest.mark.parametrize("shape, dim", [((40000,), None), ((20000, 3), 0), ((3, 40000), 1), ((2, 20000, 2), 1)])
def test_split_reductions(monkeypatch, shape, dim):
    # Long reductions over few outputs are split over programs and combined in a second pass (the
    # target raised so that three outputs are few enough on the interpreter too).
    from gems_reduction import reduce, tiles

    monkeypatch.setattr(tiles, "PROGRAMS_PER_SM", 16)
    x = torch.randn(shape, device=DEVICE)
    x.view(-1)[12345] = 9.0
    ref = to_reference(x, upcast=True)
    assert reduce.plan(x.shape, x.stride(), tuple(range(x.dim())) if dim is None else (dim,), reduce.SUM_OF,
                       x.dtype, x.dtype, x.dtype).grid[1] > 1
    with served("sum", "argmax", "amin", "var"):
        res = (x.sum(dim) if dim is not None else x.sum(), x.argmax(dim), x.amin(dim if dim is not None else ()),
               x.var(dim))
    n = _count(shape, dim)
    assert_close(res[0], ref.sum(dim) if dim is not None else ref.sum(), torch.float32, reduce_dim=n)
    assert_equal(res[1], ref.argmax(dim))
    assert_equal(res[2], ref.amin(dim if dim is not None else ()))
    assert_close(res[3], ref.var(dim), torch.float32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_split_rows_of_dim0(monkeypatch, dtype):
    # Few column tiles over many rows: the rows are split over programs and a second pass combines the
    # partial results (values, maxima, positions, means with their counts). PROGRAMS_PER_SM is raised so
    # that a small tensor takes the path (8192, 8192) takes on a GPU; the last split is the shortest.
    from gems_reduction import reduce, tiles

    monkeypatch.setattr(tiles, "PROGRAMS_PER_SM", 64)
    x = torch.randn(3000, 300, dtype=dtype, device=DEVICE)
    x[1234, 7] = float("nan")
    x[2999, 8] = 50.0
    b = x > 2.5
    assert reduce.plan(x.shape, x.stride(), (0,), reduce.SUM_OF, dtype, dtype, dtype).grid[1] > 2
    ref = to_reference(x, upcast=True)
    with served("sum", "mean", "amax", "aminmax", "var_mean", "argmax", "all", "any"):
        res = (x.sum(0), x.mean(0), x.amax(0), *torch.aminmax(x, dim=0), *torch.var_mean(x, 0), x.argmax(0),
               b.all(0), b.any(0))
    ref_res = (ref.sum(0), ref.mean(0), ref.amax(0), *torch.aminmax(ref, dim=0), *torch.var_mean(ref, 0),
               ref.argmax(0), to_reference(b).all(0), to_reference(b).any(0))
    for i, (a, r) in enumerate(zip(res, ref_res)):
        assert a.shape == r.shape
        if i in (2, 3, 4, 7, 8, 9):
            assert_equal(a, r, equal_nan=True)
        else:
            assert_close(a, r, dtype, equal_nan=True, reduce_dim=3000)


def test_small_ranges_are_not_split(monkeypatch):
    # A split costs a second launch: programs that would read little unsplit keep their whole range.
    from gems_reduction import reduce, tiles

    monkeypatch.setattr(tiles, "INTERPRETER_TILES", False)  # the GPU's tiles, which split long ranges
    monkeypatch.setattr(tiles, "PROGRAMS_PER_SM", 64)
    x = torch.randn(512, 40, dtype=torch.bfloat16, device=DEVICE)
    shipped, grids = tiles.SPLIT_MIN_BYTES, []
    for min_bytes in (shipped, 0):
        monkeypatch.setattr(tiles, "SPLIT_MIN_BYTES", min_bytes)
        grids.append(reduce.plan(x.shape, x.stride(), (0,), reduce.SUM_OF, x.dtype, x.dtype, x.dtype).grid[1])
        with served("sum"):
            assert_close(x.sum(0), to_reference(x, upcast=True).sum(0), torch.bfloat16, reduce_dim=512)
    assert grids[0] == 1 and grids[1] > 1


# Knob settings the tuning script times on a GPU: each must give the same results.
TILE_SETTINGS = [
    {}, {"STEP_BYTES": 32768, "THREAD_BYTES": 128}, {"THREAD_BYTES": 32}, {"COLS_BYTES": 256},
    {"PROGRAMS_PER_SM": 64, "STAGES": 4}, {"ARG_STEP_ELEMENTS": 8192, "ARG_THREAD_ELEMENTS": 32},
    {"HALF_STEPS": False}, {"ARG_COLS_BYTES": 1024}, {"ARG_TILE": 0}, {"ARG_TILE": 2, "COLS_BYTES": 256},
    {"ARG_TILE_COLS": 1, "ARG_TILE_COLS_IN_THREAD": False}, {"ARG_TILE_COLS": 0},
    {"ARG_TILE_COLS": 1, "ARG_TILE_COLS_IN_THREAD": True, "IN_THREAD_PROGRAMS_PER_SM": 64},
    {"SPLIT_FLOOR": False, "PROGRAMS_PER_SM": 64}, {"COLS_PROGRAMS_PER_SM": 64, "COLS_BYTES": 256},
]


@pytest.fixture
def fresh_plans():
    from gems_reduction import reduce

    reduce.forget_plans()
    yield
    reduce.forget_plans()


@pytest.mark.parametrize("knobs", TILE_SETTINGS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_gpu_tiles(monkeypatch, fresh_plans, knobs, dtype):
    # The GPU's block sizes (many small programs, split reduced ranges), here on the interpreter too.
    from gems_reduction import tiles

    monkeypatch.setattr(tiles, "INTERPRETER_TILES", False)
    for name, value in knobs.items():
        monkeypatch.setattr(tiles, name, value)
    x = torch.randn(300, 240, dtype=dtype, device=DEVICE)
    x[5, 123] = 9.0
    x[250, 3] = 9.0
    ref = to_reference(x, upcast=True)
    with served("sum", "amax", "argmax"):
        res = (x.sum(-1), x.sum(0), x.sum(), x.amax(-1), x.amax(0), x.amin(), x.argmax(-1), x.argmax(0), x.argmax())
    ref_res = (ref.sum(-1), ref.sum(0), ref.sum(), ref.amax(-1), ref.amax(0), ref.amin(), ref.argmax(-1),
               ref.argmax(0), ref.argmax())
    counts = (240, 300, 72000)
    for i, (a, r) in enumerate(zip(res, ref_res)):
        if i < 3:
            assert_close(a, r, dtype, reduce_dim=counts[i])
        else:
            assert_equal(a, r.to(a.dtype) if a.is_floating_point() else r)


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int8])
def test_all_any_bytes_as_words(dtype):
    # 1-byte inputs reduced over their last dim are read as int32 words, four elements per test; views
    # that are not word-aligned take the element path. Any byte value may be nonzero (0x80, 0xFF).
    from gems_reduction import reduce

    if dtype == torch.bool:
        x = torch.rand(12, 64, device=DEVICE) > 0.05
    else:
        x = torch.randint(1, 256, (12, 64), device=DEVICE).to(torch.uint8).view(dtype)
    x[0] = 1
    x[1] = 0
    for row, col in ((2, 63), (3, 0), (4, 33), (5, 46)):
        x[row] = 1
        x[row, col] = 0
    if dtype != torch.bool:
        x[6] = torch.tensor([0x80, 0xFF, 0x01, 0x7F], dtype=torch.uint8, device=DEVICE).repeat(16).view(dtype)
    views = {"whole": x, "aligned": x[::2, :60], "offset": x[:, 1:61], "transposed": x.t()}
    assert reduce._as_words(views["aligned"], (0, 1)) is not None
    assert reduce._as_words(views["offset"], (1,)) is None and reduce._as_words(views["transposed"], (1,)) is None
    for name, v in views.items():
        ref = to_reference(v)
        with served("all", "any"):
            res = (v.all(-1), v.any(-1), v.all(), v.any(), torch.all(v, 1, keepdim=True), v.all(0), v.any((0, 1)))
        ref_res = (ref.all(-1), ref.any(-1), ref.all(), ref.any(), torch.all(ref, 1, keepdim=True), ref.all(0),
                   ref.any((0, 1)))
        for a, b in zip(res, ref_res):
            assert a.dtype == b.dtype and a.shape == b.shape, name
            assert_equal(a, b)
    long = torch.ones(4, 40000, dtype=dtype, device=DEVICE)
    long[3, 39999] = 0
    empty = torch.empty(3, 0, dtype=dtype, device=DEVICE)
    with served("all", "any"):
        res = (long.all(), long.any(), long.all(1), empty.all(1), empty.any(1), empty.t().all(0), empty.any())
    assert not res[0] and res[1] and res[2].tolist() == [True, True, True, False]
    # Nothing to reduce: all() is true and any() false (1 and 0 for uint8).
    for a, b in zip(res[3:], (empty.all(1), empty.any(1), empty.t().all(0), empty.any())):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert_equal(a, b)


def test_int64_index_path(monkeypatch):
    # The 64-bit offset arithmetic used past 2**31 elements, run on small tensors.
    from gems_reduction import layout

    monkeypatch.setattr(layout, "force_int64", True)
    x = torch.randn(20000, 3, device=DEVICE)
    y = torch.randn(5, 6, 7, device=DEVICE)
    b = torch.rand(6, 40, device=DEVICE) > 0.02
    ref_x, ref_y = to_reference(x, upcast=True), to_reference(y, upcast=True)
    with served("sum", "argmax", "amax", "var_mean", "aminmax", "all"):
        res = (x.sum(0), x.sum(), x.argmax(), y.sum((0, 2)), y.amax(1), y.permute(2, 0, 1).argmax(1),
               *torch.var_mean(x, 0), *torch.aminmax(y, dim=2), b.all(1))
    assert_close(res[0], ref_x.sum(0), torch.float32, reduce_dim=20000)
    assert_close(res[1], ref_x.sum(), torch.float32, reduce_dim=60000)
    assert_equal(res[2], ref_x.argmax())
    assert_close(res[3], ref_y.sum((0, 2)), torch.float32, reduce_dim=35)
    assert_equal(res[4], ref_y.amax(1))
    assert_equal(res[5], ref_y.permute(2, 0, 1).argmax(1))
    for a, b_ in zip(res[6:8], torch.var_mean(ref_x, 0)):
        assert_close(a, b_, torch.float32)
    assert_equal(res[8], y.amin(2))
    assert_equal(res[9], y.amax(2))
    assert_equal(res[10], to_reference(b).all(1))


def _ties_and_nans(columns: int, second_nan: int, dtype) -> torch.Tensor:
    """9 rows of values 0-2 (ties everywhere); in float: two NaN in row 2 (columns 5 and ``second_nan``),
    row 4 all -inf, column 7 all NaN."""
    x = torch.randint(0, 3, (9, columns), device=DEVICE).to(dtype)
    if dtype.is_floating_point:
        x[2, 5] = float("nan")
        x[2, second_nan] = float("nan")
        x[4, :] = float("-inf")
        x[:, 7] = float("nan")
    return x


def _assert_equal_results(res, ref_res) -> None:
    """Arg-reduction results (tensors, or (values, indices) pairs) equal to ATen's, NaN included."""
    for a, b in zip(res, ref_res):
        if isinstance(a, tuple):
            assert_equal(a[0], b[0], equal_nan=True)
            assert_equal(a[1], b[1])
        else:
            assert a.shape == b.shape
            assert_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("dtype", FLOATS + [torch.int32])
def test_argmax_argmin_ties_and_nan(dtype):
    x = _ties_and_nans(37, 20, dtype)
    ref = to_reference(x)
    with served("argmax", "argmin", "max", "min"):
        res = (x.argmax(1), x.argmin(1), x.argmax(0, keepdim=True), x.argmax(), x.max(1), x.min(0), x.max(),
               x.min(), x.argmax(keepdim=True))
    ref_res = (ref.argmax(1), ref.argmin(1), ref.argmax(0, keepdim=True), ref.argmax(), ref.max(1), ref.min(0),
               ref.max(), ref.min(), ref.argmax(keepdim=True))
    _assert_equal_results(res, ref_res)


@pytest.mark.parametrize("tile, in_thread", [(0, False), (1, False), (2, False), (1, True)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.int32])
def test_arg_tile_modes(monkeypatch, fresh_plans, tile, in_thread, dtype):
    # One (value, position) per output, folded step by step (tiles.ARG_TILE, ARG_TILE_COLS; in_thread:
    # warps side by side over dim 0), or a pair per element (0), on the GPU's tiles: ties keep the first
    # position, the first NaN wins, rows of -inf report 0, split ranges combine.
    from gems_reduction import tiles

    monkeypatch.setattr(tiles, "ARG_TILE", tile)
    monkeypatch.setattr(tiles, "ARG_TILE_COLS", tile)
    monkeypatch.setattr(tiles, "ARG_TILE_COLS_IN_THREAD", in_thread)
    monkeypatch.setattr(tiles, "INTERPRETER_TILES", False)
    monkeypatch.setattr(tiles, "PROGRAMS_PER_SM", 16)
    x = _ties_and_nans(600, 520, dtype)
    y = torch.randint(0, 3, (1500, 3), device=DEVICE).to(dtype)
    ref, ref_y = to_reference(x), to_reference(y)
    with served("argmax", "argmin", "max"):
        res = (x.argmax(1), x.argmin(1), x.argmax(0), x.t().argmin(0), x.argmax(), x.max(1), y.argmax(0), y.argmin(0))
    ref_res = (ref.argmax(1), ref.argmin(1), ref.argmax(0), ref.t().argmin(0), ref.argmax(), ref.max(1),
               ref_y.argmax(0), ref_y.argmin(0))
    _assert_equal_results(res, ref_res)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's numpy on -inf columns
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_softmax_split_over_dim0(monkeypatch, fresh_plans, dtype):
    # Softmax over a non-last dim too long for one pass, split into chunks (tiles.SOFTMAX_SPLIT_PER_SM):
    # chunk statistics, then each chunk written from its columns' combined statistics. Columns of
    # -inf (NaN, or 0 for _safe_softmax) and NaN as in ATen; the last chunk is the shortest. The
    # backward likewise (tiles.SOFTMAX_BACKWARD_SPLIT_PER_SM), against its formulas in float64.
    from gems_reduction import layout, softmax, tiles

    monkeypatch.setattr(tiles, "SOFTMAX_SPLIT_PER_SM", 4)
    monkeypatch.setattr(tiles, "SOFTMAX_BACKWARD_SPLIT_PER_SM", 4)
    monkeypatch.setattr(tiles, "SOFTMAX_SPLIT_COLS_BYTES", 256)  # so that these small columns take > 2 chunks
    monkeypatch.setattr(tiles, "INTERPRETER_TILES", False)
    x = torch.randn(1500, 40, dtype=dtype, device=DEVICE) * 3
    x[:, 3] = float("-inf")
    x[:700, 4] = float("-inf")
    x[1234, 5] = float("nan")
    x[1499, 6] = 80.0
    z = torch.randn(2, 1100, 20, dtype=dtype, device=DEVICE)
    assert softmax.split_tiles(40, 1500, 1, x.element_size(), 4, tiles.SOFTMAX_SPLIT_COLS_BYTES)[3] > 2
    ref, ref_z = to_reference(x, upcast=True), to_reference(z, upcast=True)
    with served("_softmax", "_log_softmax", "_safe_softmax"):
        res = (torch.softmax(x, 0), torch.log_softmax(x, 0), torch.ops.aten._safe_softmax(x, 0), torch.softmax(z, 1),
               torch.log_softmax(z, 1))
    assert any(isinstance(c, softmax._Call) and isinstance(c.launch, softmax._SplitLaunch)
               for c in layout.calls.values())
    ref_res = (torch.softmax(ref, 0), torch.log_softmax(ref, 0), torch.ops.aten._safe_softmax(ref, 0),
               torch.softmax(ref_z, 1), torch.log_softmax(ref_z, 1))
    for a, b in zip(res, ref_res):
        assert a.dtype == dtype and a.shape == b.shape
        assert_close(a, b, dtype, equal_nan=True)
    g, y, lsm = torch.randn_like(z), torch.softmax(z, 1), torch.log_softmax(z, 1)
    with served("_softmax_backward_data", "_log_softmax_backward_data"):
        gy = torch.ops.aten._softmax_backward_data(g, y, 1, dtype)
        gl = torch.ops.aten._log_softmax_backward_data(g, lsm, 1, dtype)
    g64, y64, l64 = (to_reference(t, upcast=True) for t in (g, y, lsm))
    assert_close(gy, y64 * (g64 - (g64 * y64).sum(1, keepdim=True)), dtype, reduce_dim=1100)
    assert_close(gl, g64 - l64.exp() * g64.sum(1, keepdim=True), dtype, reduce_dim=1100)


def test_softmax_split_int64_index_path(monkeypatch, fresh_plans):
    from gems_reduction import layout, tiles

    monkeypatch.setattr(tiles, "SOFTMAX_SPLIT_PER_SM", 4)
    monkeypatch.setattr(tiles, "SOFTMAX_BACKWARD_SPLIT_PER_SM", 4)
    monkeypatch.setattr(tiles, "SOFTMAX_SPLIT_COLS_BYTES", 256)  # so that these small columns take > 2 chunks
    monkeypatch.setattr(tiles, "INTERPRETER_TILES", False)
    monkeypatch.setattr(layout, "force_int64", True)
    x = torch.randn(1200, 3, 5, device=DEVICE)
    g = torch.randn(1200, 3, 5, device=DEVICE)
    ref, g64 = to_reference(x, upcast=True), to_reference(g, upcast=True)
    with served("_softmax", "_log_softmax_backward_data"):
        res = torch.softmax(x, 0)
        grad = torch.ops.aten._log_softmax_backward_data(g, torch.log_softmax(x, 0), 0, torch.float32)
    assert_close(res, torch.softmax(ref, 0), torch.float32)
    assert_close(grad, g64 - torch.softmax(ref, 0) * g64.sum(0, keepdim=True), torch.float32, reduce_dim=1200)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.uint8, torch.bool, torch.int32])
def test_all_any_count_nonzero(dtype):
    x = _rand((6, 45), dtype)
    if dtype.is_floating_point:
        x = (x > 0.8).to(dtype) * x
        x[1] = 1.0
        x[2, 3] = float("nan")
    ref = to_reference(x)
    with served("all", "any", "count_nonzero"):
        res = (x.all(), x.all(1), x.any(0), x.any(), torch.all(x, (0, 1), keepdim=True), torch.count_nonzero(x),
               torch.count_nonzero(x, 1), torch.count_nonzero(x, (0, 1)))
    ref_res = (ref.all(), ref.all(1), ref.any(0), ref.any(), torch.all(ref, (0, 1), keepdim=True),
               torch.count_nonzero(ref), torch.count_nonzero(ref, 1), torch.count_nonzero(ref, (0, 1)))
    for a, b in zip(res, ref_res):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert_equal(a, b)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.int32, torch.bool])
def test_aminmax(dtype):
    # One pass computes both; NaN wins both, as in ATen.
    x = _rand((7, 19), dtype)
    if dtype.is_floating_point:
        x[2, 3] = float("nan")
        x[4] = float("-inf")
        x[5, 6] = float("inf")
    ref = to_reference(x)
    lo, hi = torch.empty(0, dtype=dtype, device=DEVICE), torch.empty(0, dtype=dtype, device=DEVICE)
    with served("aminmax"):
        res = (torch.aminmax(x), torch.aminmax(x, dim=1, keepdim=True), torch.aminmax(x, dim=0),
               torch.aminmax(x, dim=-1, out=(lo, hi)))
    ref_res = (torch.aminmax(ref), torch.aminmax(ref, dim=1, keepdim=True), torch.aminmax(ref, dim=0),
               torch.aminmax(ref, dim=-1))
    assert res[3].min is lo and res[3].max is hi
    for a, b in zip(res, ref_res):
        for a1, b1 in zip(a, b):
            assert a1.dtype == dtype and a1.shape == b1.shape
            assert_equal(a1, b1, equal_nan=True)


@pytest.mark.parametrize("shape, dims", CASES[1:])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("correction", [0, 1])
def test_var_std(shape, dims, dtype, correction):
    x = _rand(shape, dtype) * 3 + 10  # an offset mean: a one-pass formula would cancel
    ref = to_reference(x, upcast=True)
    d = _dims_arg(dims)
    with served("var", "std", "var_mean", "std_mean"):
        res = (torch.var(x, d, correction=correction), torch.std(x, d, correction=correction, keepdim=True),
               torch.var_mean(x, d, correction=correction), torch.std_mean(x, d, correction=correction))
    ref_res = (torch.var(ref, d, correction=correction), torch.std(ref, d, correction=correction, keepdim=True),
               torch.var_mean(ref, d, correction=correction), torch.std_mean(ref, d, correction=correction))
    for a, b in zip(res, ref_res):
        for a1, b1 in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            assert a1.dtype == dtype and a1.shape == b1.shape
            assert_close(a1, b1, dtype, equal_nan=True)


@pytest.mark.parametrize("shape, dim", [((37, 3000), 1), ((37, 3000), 0), ((3, 40000), None), ((20000, 3), 0)])
def test_var_far_from_zero(shape, dim):
    # One pass (Welford lanes merged by Chan's rule) keeps the precision of values far from zero, where a
    # sum of squares minus a squared sum would lose all of it; the last two shapes split the range.
    x = 1e4 + torch.randn(shape, device=DEVICE)
    ref = to_reference(x, upcast=True)
    with served("var", "var_mean", "std"):
        res = (torch.var(x, dim), *torch.var_mean(x, dim, correction=0), torch.std(x, dim, keepdim=True))
    ref_res = (torch.var(ref, dim), *torch.var_mean(ref, dim, correction=0), torch.std(ref, dim, keepdim=True))
    n = _count(shape, dim)
    for a, b in zip(res, ref_res):
        assert a.shape == b.shape and a.dtype == torch.float32
        # Each deviation from a mean of 1e4 carries float32's rounding there, 1e4 * 2**-24.
        assert_close(a, b, torch.float32, reduce_dim=n, atol=1e4 * 2.0**-24)


def test_var_corner_cases():
    x = torch.randn(4, 3, device=DEVICE)
    with served("var", "std"):
        res = (x[:1].var(0), x.var(0, correction=5), x.std(1, correction=0.5), torch.empty(0, 2).var(0))
    ref = (x[:1].var(0), x.var(0, correction=5), x.std(1, correction=0.5), torch.empty(0, 2).var(0))
    for a, b in zip(res, ref):
        assert_close(a, b, torch.float32, equal_nan=True)


@pytest.mark.parametrize("ord", [0, 1, 2, 3, 0.5, -1, math.inf, -math.inf])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_vector_norm(ord, dtype):
    x = torch.randn(5, 37, dtype=dtype, device=DEVICE)
    x[0, 3] = 0
    ref = to_reference(x, upcast=True)
    with served("linalg_vector_norm"):
        res = (torch.linalg.vector_norm(x, ord), torch.linalg.vector_norm(x, ord, dim=1, keepdim=True),
               torch.linalg.vector_norm(x, ord, dim=(0,), dtype=torch.float32))
    ref_res = (torch.linalg.vector_norm(ref, ord), torch.linalg.vector_norm(ref, ord, dim=1, keepdim=True),
               torch.linalg.vector_norm(ref, ord, dim=(0,)))
    assert res[2].dtype == torch.float32
    for a, b in zip(res, ref_res):
        assert_close(a, b, a.dtype, reduce_dim=37)


def test_norm_overloads_and_dist():
    x = torch.randn(6, 11, device=DEVICE)
    y = torch.randn(11, device=DEVICE)
    ref_x, ref_y = to_reference(x, upcast=True), to_reference(y, upcast=True)
    aten = torch.ops.aten
    calls = [lambda t: aten.norm.Scalar(t), lambda t: aten.norm.Scalar(t, 3),
             lambda t: aten.norm.ScalarOpt_dim(t, 3, [1]),
             lambda t: aten.norm.ScalarOpt_dim(t, None, [0, 1], True),
             lambda t: aten.norm.ScalarOpt_dim_dtype(t, 1, [0], False, dtype=torch.float64),
             lambda t: aten.norm.ScalarOpt_dtype(t, 2, dtype=torch.float64)]
    with served("norm", "dist"):
        res = [f(x) for f in calls] + [torch.dist(x, y), torch.dist(x, y, 1)]
    ref = [f(ref_x) for f in calls] + [torch.dist(ref_x, ref_y), torch.dist(ref_x, ref_y, 1)]
    assert res[4].dtype == res[5].dtype == torch.float64
    for a, b in zip(res, ref):
        assert a.shape == b.shape
        assert_close(a, b, a.dtype, reduce_dim=66)


@pytest.mark.parametrize("shape, dims", CASES[1:])
@pytest.mark.parametrize("dtype", FLOATS)
def test_logsumexp(shape, dims, dtype):
    x = _rand(shape, dtype) * 4
    ref = to_reference(x, upcast=True)
    d = _dims_arg(dims) if dims is not None else list(range(len(shape)))
    with served("logsumexp"):
        res = torch.logsumexp(x, d, keepdim=True)
    assert_close(res, torch.logsumexp(ref, d, keepdim=True), dtype)


def test_logsumexp_infinities_and_integers():
    x = torch.randn(4, 9, device=DEVICE)
    x[0] = float("-inf")
    x[1, 2] = float("inf")
    x[2, 3] = float("nan")
    i = torch.arange(12, device=DEVICE).reshape(3, 4)
    with served("logsumexp"):
        res = (torch.logsumexp(x, 1), torch.logsumexp(i, 1), torch.logsumexp(torch.empty(0, 3), 0))
    ref = (torch.logsumexp(x, 1), torch.logsumexp(i, 1), torch.logsumexp(torch.empty(0, 3), 0))
    for a, b in zip(res, ref):
        assert a.dtype == b.dtype
        assert_close(a, b, a.dtype, equal_nan=True)


CACHED_OPS = {
    "sum": (lambda t: torch.sum(t), "sum"), "sum_dim": (lambda t: t.sum(-1), "sum"),
    "mean": (lambda t: torch.mean(t), "mean"), "mean_dim": (lambda t: t.mean((0,), keepdim=True), "mean"),
    "amax": (lambda t: t.amax(-1), "amax"), "max_all": (lambda t: t.max(), "max"),
    "prod": (lambda t: t.prod(0), "prod"), "var": (lambda t: t.var(-1), "var"),
    "logsumexp": (lambda t: torch.logsumexp(t, -1), "logsumexp"),
}
CACHED_EXACT_OPS = {
    "argmax": (lambda t: torch.argmax(t), "argmax"), "argmin_dim": (lambda t: t.argmin(0), "argmin"),
    "max_dim": (lambda t: t.max(-1), "max"), "aminmax": (lambda t: torch.aminmax(t, dim=0), "aminmax"),
    "count_nonzero": (lambda t: torch.count_nonzero(t > 0, -1), "count_nonzero"),
}


def _signatures():
    """The same signature twice with new values, then another shape, stride and dtype."""
    base = torch.randn(4, 33, device=DEVICE)
    return [base, torch.randn(4, 33, device=DEVICE), torch.randn(5, 33, device=DEVICE),
            torch.randn(33, 4, device=DEVICE).t(), torch.randn(4, 66, device=DEVICE)[:, ::2],
            base.to(torch.bfloat16)]


@pytest.mark.parametrize("name", list(CACHED_OPS) + list(CACHED_EXACT_OPS))
def test_cached_calls(name):
    # A call's ready plan is cached under its signature: later calls with new values reuse it, and a
    # new shape, stride or dtype gets its own; every result matches ATen's.
    from gems_reduction import layout

    fn, op = CACHED_OPS.get(name) or CACHED_EXACT_OPS[name]
    known = None
    for i, x in enumerate(_signatures()):
        with served(op):
            res = fn(x)
            if i == 1:
                assert len(layout.calls) == known, "the same signature made a new ready call"
            known = len(layout.calls)
        if name in CACHED_EXACT_OPS:
            for r, e in zip(res if isinstance(res, tuple) else (res,), fn(x) if isinstance(res, tuple) else (fn(x),)):
                assert_equal(r, e)
        else:
            assert_close(res, fn(to_reference(x, upcast=True)), x.dtype, reduce_dim=33)
