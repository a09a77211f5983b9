"""Accuracy of selection: sort, topk, kthvalue, median, nanmedian, mode."""

from __future__ import annotations

import gems_test_settings as settings
import pytest
import torch
from gems_test_settings import to_reference

import flag_gems
from flag_gems.testing import assert_equal, served

DEVICE = flag_gems.device
# Rows are sorted by tl.sort, whose bitonic network is slow on the interpreter: short rows here.
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.int32, torch.uint8]
CASES = [((6, 9), 1), ((6, 9), 0), ((3, 4, 5), 1), ((3, 4, 5), -1), ((7,), 0), ((1, 1), 1), ((2, 100), 1)]
if settings.QUICK:
    DTYPES = [torch.bfloat16, torch.float32, torch.int32]
    CASES = CASES[:3] + CASES[4:6]


def _with_ties(shape, dtype):
    """Few distinct values (many ties), with NaN, -0.0 and 0.0 among the floats."""
    x = torch.randint(0, 5, shape, device=DEVICE).to(dtype)
    if dtype.is_floating_point and x.numel() > 8:
        flat = x.view(-1)
        flat[1] = float("nan")
        flat[5] = float("nan")
        flat[2] = -0.0
        flat[3] = 0.0
        flat[7] = float("-inf")
    return x


@pytest.mark.parametrize("shape, dim", CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("descending", [False, True])
def test_sort_is_stable_like_aten(shape, dim, dtype, descending):
    x = _with_ties(shape, dtype)
    ref = to_reference(x)
    with served("sort"):
        res = torch.sort(x, dim=dim, descending=descending, stable=True)
        plain = torch.sort(x, dim, descending)
    expected = torch.sort(ref, dim=dim, descending=descending, stable=True)
    for r in (res, plain):
        assert_equal(r.values, expected.values, equal_nan=True)
        assert_equal(r.indices, expected.indices)


def test_sort_layouts_out_and_zero_dim():
    base = torch.randn(8, 12, device=DEVICE)
    values = torch.empty(0, device=DEVICE)
    indices = torch.empty(0, dtype=torch.int64, device=DEVICE)
    with served("sort"):
        t = base.t().sort(1)
        torch.sort(base[:, ::3], 0, out=(values, indices))
        s = torch.tensor(2.0, device=DEVICE).sort()
    assert t.values.stride() == base.t().sort(1).values.stride()
    assert_equal(t.values, base.t().sort(1).values)
    assert_equal(values, base[:, ::3].sort(0).values)
    assert_equal(indices, base[:, ::3].sort(0).indices)
    assert s.values.shape == () and s.indices.item() == 0


@pytest.mark.parametrize("shape, dim", CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_topk(shape, dim, dtype):
    x = _with_ties(shape, dtype)
    ref = to_reference(x)
    k = min(3, shape[dim])
    with served("topk"):
        big = torch.topk(x, k, dim)
        small = torch.topk(x, k, dim, largest=False)
    for res, largest in ((big, True), (small, False)):
        expected = torch.topk(ref, k, dim, largest=largest)
        assert_equal(res.values, expected.values, equal_nan=True)
        # Ties may be reported by any of their positions; ours are the earliest, in order.
        assert_equal(torch.gather(x, dim, res.indices), res.values, equal_nan=True)
        stable = torch.sort(ref, dim=dim, descending=largest, stable=True).indices.narrow(dim, 0, k)
        assert_equal(res.indices, stable)


@pytest.mark.parametrize("k", [7, 20])  # picked one at a time, and from a full sort
def test_topk_distinct_values_and_k_zero(k):
    x = torch.randn(5, 100, device=DEVICE)
    with served("topk"):
        res = torch.topk(x, k, 1, sorted=True)
        low = torch.topk(x.t(), k, 0, largest=False)
        none = torch.topk(x, 0, 1)
    for a, b in ((res, torch.topk(x, k, 1)), (low, torch.topk(x.t(), k, 0, largest=False))):
        assert_equal(a.values, b.values)
        assert_equal(a.indices, b.indices)
    assert none.values.shape == (5, 0)


def test_int64_index_path(monkeypatch):
    from gems_reduction import layout

    monkeypatch.setattr(layout, "force_int64", True)
    x = _with_ties((4, 11), torch.float32)
    with served("sort", "topk", "median"):
        res = (torch.sort(x, 1), torch.sort(x, 0, descending=True), torch.topk(x, 3, 1), torch.median(x, 0))
    expected = (torch.sort(x, dim=1, stable=True), torch.sort(x, dim=0, descending=True, stable=True))
    for a, b in zip(res, expected):
        assert_equal(a.values, b.values, equal_nan=True)
        assert_equal(a.indices, b.indices)
    assert_equal(res[2].values, torch.topk(x, 3, 1).values, equal_nan=True)
    assert_equal(res[3].values, torch.median(x, 0).values, equal_nan=True)


@pytest.mark.parametrize("shape, dim", CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("keepdim", [False, True])
def test_kthvalue_median_mode(shape, dim, dtype, keepdim):
    x = _with_ties(shape, dtype)
    ref = to_reference(x)
    k = shape[dim] // 2 + 1
    with served("kthvalue", "median"):
        kth = torch.kthvalue(x, k, dim, keepdim)
        med = torch.median(x, dim, keepdim)
        everything = torch.median(x)
    expectations = ((kth, torch.kthvalue(ref, k, dim, keepdim)), (med, torch.median(ref, dim, keepdim)))
    for res, expected in expectations:
        assert_equal(res.values, expected.values, equal_nan=True)
        index = res.indices if keepdim else res.indices.unsqueeze(dim)
        picked = torch.gather(x, dim, index)
        assert_equal(picked if keepdim else picked.squeeze(dim), res.values, equal_nan=True)
    assert_equal(everything, torch.median(ref), equal_nan=True)
    # ATen's mode of rows with NaN is not well defined; on a GPU, ATen serves mode (see sort.mode).
    if not dtype.is_floating_point and flag_gems.runtime.device.interpreter:
        with served("mode"):
            mode = torch.mode(x, dim, keepdim)
        expected = torch.mode(ref, dim, keepdim)
        assert_equal(mode.values, expected.values)
        if shape[dim] <= 16 and expected.indices.device.type == "cpu":
            # ATen's CPU mode reports the last occurrence for short rows; past 16 its sort is not stable.
            assert_equal(mode.indices, expected.indices)
        index = mode.indices if keepdim else mode.indices.unsqueeze(dim)
        picked = torch.gather(x, dim, index)
        assert_equal(picked if keepdim else picked.squeeze(dim), mode.values)


def test_nanmedian():
    x = _with_ties((6, 9), torch.float32)
    x[4] = float("nan")
    with served("nanmedian"):
        res = torch.nanmedian(x, 1)
        everything = torch.nanmedian(x)
    ref = to_reference(x)
    expected = torch.nanmedian(ref, 1)
    assert_equal(res.values, expected.values, equal_nan=True)
    # Which of tied elements (or which NaN of an all-NaN row) is reported is ATen's implementation
    # detail, and differs between its CPU and CUDA kernels: the index must point at the value.
    assert_equal(torch.gather(x, 1, res.indices[:, None]).squeeze(1), res.values, equal_nan=True)
    assert res.indices[4] == 0
    assert_equal(everything, torch.nanmedian(ref), equal_nan=True)


def _spread(shape, dtype):
    """Negative and positive values with many ties, -0.0 beside 0.0 among the floats."""
    x = torch.randint(-6, 7, shape, device=DEVICE)
    if not dtype.is_floating_point:
        return (x * 1000).to(dtype)
    x = x.to(torch.float32) * 1.5
    x[..., ::7] = -0.0
    x[..., 1::11] = torch.randn_like(x[..., 1::11]) * 100  # distinct values of both signs
    return x.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int32])
def test_selection_signed_values_with_ties(dtype):
    x = _spread((3, 150), dtype)
    ref = to_reference(x)
    ours = ("sort", "kthvalue", "median") + (("mode",) if flag_gems.runtime.device.interpreter else ())
    with served(*ours):
        res = torch.sort(x, dim=1, descending=True, stable=True)
        kth = [torch.kthvalue(x, k, 1) for k in (1, 40, 150)]
        med = torch.median(x, 1)
        mode = torch.mode(x, 1)
    expected = torch.sort(ref, dim=1, descending=True, stable=True)
    assert_equal(res.values, expected.values)
    assert_equal(res.indices, expected.indices)
    for k, got in zip((1, 40, 150), kth):
        assert_equal(got.values, torch.kthvalue(ref, k, 1).values)
    assert_equal(med.values, torch.median(ref, 1).values)
    # The mode's count must equal the top count: ATen may pick another value of that count.
    counts = (x == mode.values[:, None]).sum(1)
    top = torch.stack([torch.unique(row, return_counts=True)[1].max() for row in ref])
    assert_equal(counts, top)
    assert_equal(mode.values, torch.mode(ref, 1).values)
    assert_equal(torch.gather(x, 1, mode.indices[:, None]).squeeze(1), mode.values)


def test_long_rows_and_int64_go_to_aten():
    x = torch.randn(2, 5000, device=DEVICE)
    i = torch.randint(0, 9, (3, 7), device=DEVICE)
    with flag_gems.use_gems():
        a = torch.sort(x, 1)
        b = torch.sort(i, dim=1, stable=True)
    assert_equal(a.values, torch.sort(x, 1).values)
    assert_equal(b.indices, torch.sort(i, dim=1, stable=True).indices)


@pytest.mark.parametrize("length", [1500, 4096])
def test_rows_up_to_the_longest_sorted_in_registers(monkeypatch, length):
    # The longest rows our kernel can sort, many of them on a GPU (a (4096, 4096) kthvalue once came back
    # wrong there; the GPU limit, set for speed, is raised to run them); two on the interpreter, whose
    # sort of such rows is slow.
    from gems_reduction import sort as sort_module

    monkeypatch.setattr(sort_module, "GPU_MAX_ROW", sort_module.MAX_ROW)
    x = _spread((4096 if DEVICE == "cuda" else 2, length), torch.float32)
    ref = to_reference(x)
    with served("sort", "topk", "kthvalue"):
        up = torch.sort(x, dim=1, stable=True)
        top = torch.topk(x, 50, 1)
        kth = torch.kthvalue(x, length // 2, 1)
    expected = torch.sort(ref, dim=1, stable=True)
    assert_equal(up.values, expected.values)
    assert_equal(up.indices, expected.indices)
    assert_equal(top.values, torch.topk(ref, 50, 1).values)
    assert_equal(kth.values, torch.kthvalue(ref, length // 2, 1).values)
    assert_equal(torch.gather(x, 1, kth.indices[:, None]).squeeze(1), kth.values)


@pytest.fixture
def two_stages(monkeypatch):
    """topk of long rows on the two-stage kernels: on the interpreter the register sort's limit is lowered
    and the chunks made small, so that short rows take them (several chunks, a merged second stage)."""
    from gems_reduction import sort as sort_module

    if DEVICE == "cuda":
        monkeypatch.setattr(sort_module, "TOPK_CHUNK", 1024)
        return 20000
    monkeypatch.setattr(sort_module, "MAX_ROW", 256)
    monkeypatch.setattr(sort_module, "TOPK_CHUNK", 128)
    monkeypatch.setattr(sort_module, "TOPK_MERGE", 64)
    return 1500


def _check_topk(x, got, k, dim, largest):
    """Values exactly ATen's; indices those of a stable sort (ATen's tie rule: earlier positions first)."""
    ref = to_reference(x)
    expected = torch.topk(ref, k, dim, largest=largest)
    assert_equal(got.values, expected.values, equal_nan=True)
    stable = torch.sort(ref, dim=dim, descending=largest, stable=True).indices.narrow(dim, 0, k)
    assert_equal(got.indices, stable)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.int16, torch.int8, torch.uint8])
def test_topk_long_rows_two_stages(two_stages, dtype):
    # Few distinct values: ties within and across chunks; NaN, -inf, +inf and -0.0 among the floats.
    x = _with_ties((2, two_stages), dtype) if dtype.is_floating_point else _spread((2, two_stages), dtype)
    if dtype.is_floating_point:
        x[1, -3] = float("inf")
        x[1, 300:303] = float("nan")
        x[0, 200:260] = -0.0
        x[:, 400:460:3] = -torch.arange(20, device=DEVICE).to(dtype) / 2  # negatives, tied in pairs
    with served("topk"):
        big = torch.topk(x, 5, -1)
        small = torch.topk(x, 5, 1, largest=False, sorted=True)
    _check_topk(x, big, 5, 1, True)
    _check_topk(x, small, 5, 1, False)


@pytest.mark.parametrize("k", [1, 128])  # the smallest k, and the largest the two stages serve
def test_topk_two_stages_k_bounds(two_stages, k):
    x = torch.randn(1, two_stages, device=DEVICE, dtype=torch.bfloat16)
    x[0, 500:540] = x[0, 10]
    with served("topk"):
        big = torch.topk(x, k, 1)
        small = torch.topk(x, k, 1, largest=False)
    _check_topk(x, big, k, 1, True)
    _check_topk(x, small, k, 1, False)


def test_topk_two_stages_out_and_other_dims(two_stages):
    from flag_gems.testing import CallCounter

    x = _spread((two_stages, 3), torch.float16)
    values = torch.empty(0, device=DEVICE, dtype=x.dtype)
    indices = torch.empty(0, dtype=torch.int64, device=DEVICE)
    sized = (torch.empty(3, 4, device=DEVICE, dtype=x.dtype), torch.empty(3, 4, dtype=torch.int64, device=DEVICE))
    with served("topk"):
        columns = torch.topk(x, 4, 0)
        torch.topk(x, 4, 0, largest=False, out=(values, indices))
        torch.topk(x.t().contiguous(), 4, 1, out=sized)
    _check_topk(x, columns, 4, 0, True)
    _check_topk(x, torch.return_types.topk((values, indices)), 4, 0, False)
    _check_topk(x.t(), torch.return_types.topk(sized), 4, 1, True)
    # k past the bound, and 32-bit rows, go to ATen.
    wide = x.float()
    with CallCounter() as counter, flag_gems.use_gems(record=True):
        many = torch.topk(x, 129, 0)
        wide_top = torch.topk(wide, 4, 0)
    assert not counter.ran_on_gems("topk")
    assert_equal(many.values, torch.topk(x, 129, 0).values)
    assert_equal(wide_top.values, columns.values.float())


@pytest.fixture
def radix(monkeypatch):
    """kthvalue and the medians of long rows on the radix select: on the interpreter the register sort's limit
    is lowered so that short rows take it; on a GPU rows past its limit do."""
    from gems_reduction import sort as sort_module

    monkeypatch.setattr(sort_module, "RADIX_SELECT", True)
    monkeypatch.setattr(sort_module, "RADIX_MAX_ITEMSIZE", 8)
    if DEVICE == "cuda":
        return 3000
    monkeypatch.setattr(sort_module, "MAX_ROW", 32)
    monkeypatch.setattr(sort_module, "GPU_MAX_ROW", 32)
    return 150


def _check_pick(x, got, expected, dim, keepdim, k):
    """Values ATen's; indices those of a stable sort (the k-th place), which point at the value."""
    assert_equal(got.values, expected.values, equal_nan=True)
    stable = torch.sort(x, dim=dim, stable=True).indices.narrow(dim, k - 1, 1)
    assert_equal(got.indices, stable if keepdim else stable.squeeze(dim))
    index = got.indices if keepdim else got.indices.unsqueeze(dim)
    picked = torch.gather(x, dim, index)
    assert_equal(picked if keepdim else picked.squeeze(dim), got.values, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.int32, torch.int16,
                                   torch.int8, torch.uint8])
@pytest.mark.parametrize("dim, keepdim", [(1, False), (0, True), (-1, True)])
def test_kthvalue_median_radix_select(radix, dtype, dim, keepdim):
    shape = (3, radix) if dim != 0 else (radix, 2)
    x = _spread(shape, dtype) if dtype != torch.uint8 else torch.randint(0, 9, shape, device=DEVICE).to(dtype)
    if dtype.is_floating_point:
        x.select(dim, 4).fill_(float("inf"))
        x.select(dim, 9).fill_(float("-inf"))
    ref = to_reference(x)
    length = shape[dim]
    with served("kthvalue", "median"):
        kth = [torch.kthvalue(x, k, dim, keepdim) for k in (1, 40, length)]
        med = torch.median(x, dim, keepdim)
    for k, got in zip((1, 40, length), kth):
        _check_pick(x, got, torch.kthvalue(ref, k, dim, keepdim), dim, keepdim, k)
    _check_pick(x, med, torch.median(ref, dim, keepdim), dim, keepdim, (length - 1) // 2 + 1)


def test_median_radix_select_nan_rows_and_out(radix):
    x = _spread((4, radix), torch.float32)
    x[1, 17] = float("nan")
    x[2, 3:60:5] = float("nan")
    x[3] = float("nan")
    ref = to_reference(x)
    values = torch.empty(0, device=DEVICE)
    indices = torch.empty(0, dtype=torch.int64, device=DEVICE)
    with served("kthvalue", "median", "nanmedian"):
        med = torch.median(x, 1)
        nanmed = torch.nanmedian(x, 1)
        kth = torch.kthvalue(x, radix, 1)
        torch.median(x, 1, out=(values, indices))
        everything = (torch.median(x[:2, :radix // 2]), torch.nanmedian(x[1:3, :radix // 2]))
    # median: NaN, reported at the first NaN, where the row has one; nanmedian skips them.
    assert_equal(med.values, torch.median(ref, 1).values, equal_nan=True)
    assert_equal(med.indices[1:], torch.tensor([17, 3, 0], device=DEVICE))
    assert_equal(values, med.values, equal_nan=True)
    assert_equal(indices, med.indices)
    assert_equal(nanmed.values, torch.nanmedian(ref, 1).values, equal_nan=True)
    assert_equal(torch.gather(x, 1, nanmed.indices[:, None]).squeeze(1), nanmed.values, equal_nan=True)
    assert nanmed.indices[3] == 0
    assert_equal(kth.values, torch.kthvalue(ref, radix, 1).values, equal_nan=True)  # NaN is the largest
    assert_equal(everything[0], torch.median(ref[:2, :radix // 2]), equal_nan=True)
    assert_equal(everything[1], torch.nanmedian(ref[1:3, :radix // 2]), equal_nan=True)


def test_radix_select_hands_long_rows_of_wide_dtypes_to_aten():
    # float32 rows past the register sort's limit: ATen's (the radix select is slower there on the GPU).
    from flag_gems.testing import CallCounter

    x = torch.randn(2, 5000, device=DEVICE)
    with CallCounter() as counter, flag_gems.use_gems(record=True):
        got = torch.kthvalue(x, 7, 1)
    assert not counter.ran_on_gems("kthvalue")
    assert_equal(got.values, torch.kthvalue(x, 7, 1).values)


def test_radix_select_serves_long_half_rows_by_default():
    x = torch.randn(3, 5000, device=DEVICE).to(torch.bfloat16)
    with served("kthvalue", "median"):
        kth = torch.kthvalue(x, 700, 1)
        med = torch.median(x, 1)
    assert_equal(kth.values, torch.kthvalue(x.float(), 700, 1).values.to(torch.bfloat16))
    assert_equal(med.values, torch.median(x.float(), 1).values.to(torch.bfloat16))
    assert_equal(torch.gather(x, 1, kth.indices[:, None]).squeeze(1), kth.values)
