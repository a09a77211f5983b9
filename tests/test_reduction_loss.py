"""Accuracy of the losses and their gradients: nll_loss(2d), mse_loss, the fused cross-entropy."""

from __future__ import annotations

import gems_test_settings as settings
import pytest
import torch
import torch.nn.functional as F
from gems_test_settings import to_reference

import flag_gems
from flag_gems.testing import assert_close, served

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

DEVICE = flag_gems.device
FLOATS = [torch.float16, torch.bfloat16, torch.float32]
REDUCTIONS = ["none", "mean", "sum"]


def _grad(loss, x):
    return torch.autograd.grad(loss.sum() if loss.dim() else loss, x)[0]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("dtype", FLOATS)
def test_nll_loss(reduction, weighted, dtype):
    x = torch.randn(13, 7, dtype=dtype, device=DEVICE).requires_grad_()
    t = torch.randint(0, 7, (13,), device=DEVICE)
    t[4] = -100
    w = torch.rand(7, dtype=dtype, device=DEVICE) if weighted else None
    ref_x = to_reference(x, upcast=True)
    ref = F.nll_loss(ref_x, t, weight=None if w is None else w.double(), reduction=reduction)
    with served("nll_loss_forward", "nll_loss_backward"):
        res = F.nll_loss(x, t, weight=w, reduction=reduction)
        grad = _grad(res, x)
    assert res.dtype == dtype and res.shape == ref.shape
    assert_close(res, ref, dtype, reduce_dim=13)
    assert_close(grad, _grad(ref, ref_x), dtype)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("rows", [1000, 20000])
def test_nll_loss_reduced_in_one_program_and_in_parts(reduction, rows):
    # Up to 1024 rows one program sums the batch; beyond, per-program partials are combined.
    x = torch.randn(rows, 3, device=DEVICE)
    t = torch.randint(0, 3, (rows,), device=DEVICE)
    t[::7] = -100
    w = torch.rand(3, device=DEVICE)
    ref = F.nll_loss(to_reference(x, upcast=True), t, weight=w.double(), reduction=reduction)
    with served("nll_loss_forward"):
        res, total = torch.ops.aten.nll_loss_forward(x, t, w, 1 if reduction == "mean" else 2, -100)
    assert_close(res, ref, torch.float32, reduce_dim=rows)
    expected_total = w[t[t != -100]].double().sum()
    assert_close(total, expected_total, torch.float32, reduce_dim=rows)


@pytest.mark.parametrize("knobs", [dict(PART_ROWS=1024, MAX_PARTS=4), dict(ONE_PROGRAM_ROWS=1 << 20)])
def test_nll_loss_reduced_tiles(monkeypatch, knobs):
    # Spread programs looping over several tiles (the last one to finish adds their sums), and one
    # program looping over every row. Calls repeat: the spread counter must start from zero each time.
    from gems_reduction import nll_loss

    for name, value in knobs.items():
        monkeypatch.setattr(nll_loss, name, value)
    rows = 20000
    x = torch.randn(rows, 3, device=DEVICE)
    t = torch.randint(0, 3, (rows,), device=DEVICE)
    t[::5] = -100
    w = torch.rand(6, device=DEVICE)[::2]  # a strided weight
    ref_x = to_reference(x, upcast=True)
    ignored = torch.full_like(t, -100)
    with served("nll_loss_forward"):
        results = [torch.ops.aten.nll_loss_forward(x, t, w, reduction, -100) for reduction in (1, 2, 1)]
        empty_mean, empty_total = torch.ops.aten.nll_loss_forward(x, ignored, None, 1, -100)
    for (res, total), reduction in zip(results, ("mean", "sum", "mean")):
        ref = F.nll_loss(ref_x, t, weight=w.double(), reduction=reduction)
        assert_close(res, ref, torch.float32, reduce_dim=rows)
        assert_close(total, w[t[t != -100]].double().sum(), torch.float32, reduce_dim=rows)
    assert torch.isnan(empty_mean) and empty_total.item() == 0


def test_nll_loss_strided_inputs():
    # A 4-D input whose spatial dims do not merge (copied first), a strided target and weight.
    x = torch.randn(2, 5, 3, 6, device=DEVICE)[..., :4].requires_grad_()
    t = torch.randint(0, 5, (2, 4, 3), device=DEVICE).transpose(1, 2)
    w = torch.rand(10, device=DEVICE)[::2]
    ref_x = to_reference(x, upcast=True)
    for reduction in REDUCTIONS:
        ref = F.nll_loss(ref_x, t, weight=w.double(), reduction=reduction)
        with served("nll_loss2d_forward", "nll_loss2d_backward"):
            res = F.nll_loss(x, t, weight=w, reduction=reduction)
            grad = _grad(res, x)
        assert_close(res, ref, torch.float32, reduce_dim=24)
        assert_close(grad, _grad(ref, ref_x), torch.float32)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss2d_and_one_sample(reduction):
    x = torch.randn(2, 5, 3, 4, device=DEVICE).requires_grad_()
    t = torch.randint(0, 5, (2, 3, 4), device=DEVICE)
    t[0, 1, 2] = 1
    w = torch.rand(5, device=DEVICE)
    ref_x = to_reference(x, upcast=True)
    ref = F.nll_loss(ref_x, t, weight=w.double(), reduction=reduction, ignore_index=1)
    with served("nll_loss2d_forward", "nll_loss2d_backward"):
        res = F.nll_loss(x, t, weight=w, reduction=reduction, ignore_index=1)
        grad = _grad(res, x)
    assert_close(res, ref, torch.float32, reduce_dim=24)
    assert_close(grad, _grad(ref, ref_x), torch.float32)
    v = torch.randn(6, device=DEVICE).requires_grad_()
    ref_v = to_reference(v, upcast=True)
    ref1 = F.nll_loss(ref_v, torch.tensor(2, device=DEVICE), reduction=reduction)
    with served("nll_loss_forward", "nll_loss_backward"):
        res1 = F.nll_loss(v, torch.tensor(2, device=DEVICE), reduction=reduction)
        grad1 = _grad(res1, v)
    assert res1.shape == ref1.shape
    assert_close(res1, ref1, torch.float32)
    assert_close(grad1, _grad(ref1, ref_v), torch.float32)


def test_nll_all_ignored_and_errors():
    x = torch.randn(4, 3, device=DEVICE)
    t = torch.full((4,), -100, device=DEVICE)
    with served("nll_loss_forward"):
        mean, total = torch.ops.aten.nll_loss_forward(x, t, None, 1, -100)
        summed, _ = torch.ops.aten.nll_loss_forward(x, t, None, 2, -100)
    ref_mean, ref_total = torch.ops.aten.nll_loss_forward(x, t, None, 1, -100)
    assert torch.isnan(mean) and torch.isnan(ref_mean) and total.item() == ref_total.item() == 0
    assert summed.item() == 0
    if not flag_gems.runtime.device.interpreter:
        # On a GPU, ATen's out-of-range check is a device-side assert, which poisons the process.
        return
    bad = torch.tensor([0, 3, 1, 1], device=DEVICE)
    with pytest.raises((IndexError, RuntimeError)):
        F.nll_loss(x, bad)
    with flag_gems.use_gems(), pytest.raises((IndexError, RuntimeError)):
        F.nll_loss(x, bad)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", FLOATS)
def test_mse_loss(reduction, dtype):
    a = torch.randn(5, 33, dtype=dtype, device=DEVICE).requires_grad_()
    b = torch.randn(5, 33, dtype=dtype, device=DEVICE)
    ref_a = to_reference(a, upcast=True)
    ref = F.mse_loss(ref_a, to_reference(b, upcast=True), reduction=reduction)
    with served("mse_loss", "mse_loss_backward"):
        res = F.mse_loss(a, b, reduction=reduction)
        grad = _grad(res, a)
    assert res.dtype == dtype
    assert_close(res, ref, dtype, reduce_dim=165)
    assert_close(grad, _grad(ref, ref_a), dtype)


def test_mse_loss_strided_and_broadcast():
    a = torch.randn(6, 8, device=DEVICE)[:, ::2]
    b = torch.randn(6, 4, device=DEVICE)
    c = torch.randn(4, device=DEVICE)
    with served("mse_loss"):
        res = (torch.ops.aten.mse_loss(a, b, 1), torch.ops.aten.mse_loss(a, c, 2), torch.ops.aten.mse_loss(b, c, 0))
    ref = (torch.ops.aten.mse_loss(a.double(), b.double(), 1), torch.ops.aten.mse_loss(a.double(), c.double(), 2),
           torch.ops.aten.mse_loss(b.double(), c.double(), 0))
    for x, y in zip(res, ref):
        assert x.shape == y.shape
        assert_close(x, y, torch.float32, reduce_dim=24)


CE_CASES = [dict(), dict(reduction="sum"), dict(reduction="none"), dict(label_smoothing=0.1), dict(weight=True),
            dict(weight=True, label_smoothing=0.2), dict(ignore_index=2), dict(weight=True, reduction="none")]


@pytest.mark.parametrize("kwargs", CE_CASES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_cross_entropy_class_targets(kwargs, dtype):
    x = torch.randn(9, 37, dtype=dtype, device=DEVICE).requires_grad_()
    t = torch.randint(0, 37, (9,), device=DEVICE)
    t[3] = kwargs.get("ignore_index", -100)
    kwargs = dict(kwargs)
    if kwargs.pop("weight", False):
        kwargs["weight"] = torch.rand(37, dtype=dtype, device=DEVICE)
    ref_kwargs = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
    ref_x = to_reference(x, upcast=True)
    ref = F.cross_entropy(ref_x, t, **ref_kwargs)
    with served("cross_entropy_loss"):
        res = F.cross_entropy(x, t, **kwargs)
        grad = _grad(res, x)
    fused = flag_gems.cross_entropy_loss(x, t, **kwargs)
    assert res.dtype == dtype and res.shape == ref.shape
    assert_close(res, ref, dtype, reduce_dim=37)
    assert_close(fused, ref, dtype, reduce_dim=37)
    assert_close(grad, _grad(ref, ref_x), dtype)


@pytest.mark.parametrize("kwargs", [dict(), dict(label_smoothing=0.3, weight=True), dict(reduction="none")])
def test_cross_entropy_probability_targets(kwargs):
    x = torch.randn(6, 11, device=DEVICE).requires_grad_()
    q = torch.rand(6, 11, device=DEVICE).softmax(1)
    kwargs = dict(kwargs)
    if kwargs.pop("weight", False):
        kwargs["weight"] = torch.rand(11, device=DEVICE)
    ref_kwargs = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
    ref_x = to_reference(x, upcast=True)
    ref = F.cross_entropy(ref_x, q.double(), **ref_kwargs)
    with served("cross_entropy_loss"):
        res = F.cross_entropy(x, q, **kwargs)
        grad = _grad(res, x)
    assert_close(res, ref, torch.float32, reduce_dim=11)
    assert_close(grad, _grad(ref, ref_x), torch.float32)


def test_cross_entropy_shapes_and_all_ignored():
    x = torch.randn(3, 5, 4, 2, device=DEVICE).requires_grad_()
    t = torch.randint(0, 5, (3, 4, 2), device=DEVICE)
    v = torch.randn(5, device=DEVICE).requires_grad_()
    wide = torch.randn(3, 20000, device=DEVICE).requires_grad_()
    tw = torch.randint(0, 20000, (3,), device=DEVICE)
    ignored = torch.full((3,), -100, device=DEVICE)
    cases = [(x, t, dict(reduction="none")), (v, torch.tensor(1, device=DEVICE), dict()),
             (wide, tw, dict(label_smoothing=0.1)), (wide, ignored, dict())]
    for inp, target, kw in cases:
        ref_inp = to_reference(inp, upcast=True)
        ref = F.cross_entropy(ref_inp, target, **kw)
        with served("cross_entropy_loss"):
            res = F.cross_entropy(inp, target, **kw)
            grad = _grad(res, inp)
        assert res.shape == ref.shape
        assert_close(res, ref, torch.float32, equal_nan=True)
        assert_close(grad, _grad(ref, ref_inp), torch.float32, equal_nan=True)


@pytest.mark.skipif(settings.QUICK, reason="long rows of many programs: normal mode only")
def test_cross_entropy_many_rows():
    x = torch.randn(3000, 5, device=DEVICE).requires_grad_()
    t = torch.randint(0, 5, (3000,), device=DEVICE)
    ref_x = to_reference(x, upcast=True)
    ref = F.cross_entropy(ref_x, t)
    res = flag_gems.cross_entropy_loss(x, t)
    assert_close(res, ref, torch.float32, reduce_dim=3000)
    assert_close(_grad(res, x), _grad(ref, ref_x), torch.float32)


@pytest.mark.parametrize("kwargs", [dict(), dict(reduction="sum"), dict(reduction="none"),
                                    dict(weight=True, label_smoothing=0.1)])
def test_cross_entropy_cached_calls(kwargs):
    # The ready call of a signature serves later calls with new values, with and without a gradient
    # to record; another shape or dtype gets its own.
    from gems_reduction import layout

    kwargs = dict(kwargs)
    weighted = kwargs.pop("weight", False)
    shapes = [((2, 300), torch.float32), ((2, 300), torch.float32), ((5, 300), torch.float32),
              ((2, 300), torch.bfloat16), ((300,), torch.float32)]
    known = None
    for i, (shape, dtype) in enumerate(shapes):
        x = torch.randn(shape, dtype=dtype, device=DEVICE)
        t = torch.randint(0, 300, shape[:-1], device=DEVICE)
        kw = dict(kwargs, weight=torch.rand(300, dtype=dtype, device=DEVICE)) if weighted else kwargs
        ref_kw = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
        ref_x = to_reference(x, upcast=True).requires_grad_()
        ref = F.cross_entropy(ref_x, t, **ref_kw)
        with served("cross_entropy_loss"):
            plain = F.cross_entropy(x, t, **kw)
            with torch.no_grad():
                quiet = F.cross_entropy(x.requires_grad_(), t, **kw)
            res = F.cross_entropy(x, t, **kw)
            grad = _grad(res, x)
            if i == 1:
                assert len(layout.calls) == known, "the same signature made a new ready call"
            known = len(layout.calls)
        assert plain.grad_fn is None and quiet.grad_fn is None and res.grad_fn is not None
        for value in (plain, quiet, res):
            assert value.dtype == dtype and value.shape == ref.shape
            assert_close(value, ref, dtype, reduce_dim=300)
        assert_close(grad, _grad(ref, ref_x), dtype)


def test_cross_entropy_bad_target_after_cached_call():
    # A cached signature still checks its targets: ATen's error for a class out of range.
    x = torch.randn(2, 7, device=DEVICE)
    with served("cross_entropy_loss"):
        F.cross_entropy(x, torch.tensor([1, 2], device=DEVICE))
        if flag_gems.device == "cpu":
            with pytest.raises((IndexError, RuntimeError)):
                F.cross_entropy(x, torch.tensor([1, 7], device=DEVICE))
