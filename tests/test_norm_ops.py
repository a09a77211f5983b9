"""Accuracy of the norm family: layer, RMS, group, batch, instance and weight norm, forward and backward.

Each result is compared with ATen on the same dtype (outputs, saved statistics, their shapes and dtypes)
and with a float64 reference; every call runs under ``served`` so a silent fallback to ATen fails.
"""

from __future__ import annotations

import math
import re
import zlib

import gems_test_settings as settings
import pytest
import torch
import torch.nn.functional as F
from gems_test_settings import to_reference

import flag_gems
from flag_gems.testing import RESOLUTION, assert_close, assert_equal
from flag_gems.testing import served as _served

DEVICE = flag_gems.device
QUICK = settings.QUICK
FLOATS = [torch.float32, torch.bfloat16] if QUICK else [torch.float32, torch.float16, torch.bfloat16]
aten = torch.ops.aten


def served(*ops):
    """``flag_gems.testing.served`` with this family alone, so other families' state cannot change results."""
    return _served(*ops, families=["norm"])


@pytest.fixture(autouse=True)
def _seed(request):
    torch.manual_seed(zlib.crc32(request.node.name.encode()))  # varied across cases, repeatable


def _rand(shape, dtype, requires_grad=False, scale=1.0, shift=0.0):
    t = (torch.randn(shape, device=DEVICE) * scale + shift).to(dtype)
    return t.requires_grad_(requires_grad)


def _grads(tensors):
    return [None if t is None else t.grad for t in tensors]


def _refs(tensors, upcast):
    return [None if t is None else to_reference(t, upcast=upcast) for t in tensors]


def _check_like_aten(res, ref):
    """Same shape, dtype (and values, within the dtype's tolerance) as ATen's tensor."""
    assert res.shape == ref.shape and res.dtype == ref.dtype
    if res.numel():
        assert_close(res, ref.to(res.device), res.dtype)


def _close_scaled(res, ref, dtype, reduce_dim=1):
    """Within a few units in the last place of the largest element: for values made of cancelling terms
    (gradients; outputs normalised from a rounded sum), whose error is absolute, not relative. In half
    dtypes on CPU ATen also saves rounded statistics, and the interpreter truncates bf16 stores."""
    atol = max(1e-4, RESOLUTION[dtype] * float(ref.detach().abs().max()))
    assert_close(res, ref, dtype, reduce_dim=reduce_dim, atol=atol)


def _check_grads(res, ref64, ref_aten, dtype, reduce_dims):
    for r, r64, ra, n in zip(res, ref64, ref_aten, reduce_dims):
        if r64 is None:
            assert r is None
            continue
        assert r.dtype == ra.dtype and r.shape == ra.shape
        _close_scaled(r, r64, dtype, n)
        _close_scaled(r, ra.to(r.device), dtype, n)


# layer norm ---------------------------------------------------------------------------------------------

# (shape, normalised trailing dims): one and several dims, rows of 1, odd widths, a very wide row
# (looped kernels), many narrow rows (several rows a program), a single row, a row held whole forward
# but looped backward.
LN_CASES = [((2, 3, 40), 1), ((4, 6, 10), 2), ((5, 1), 1), ((3, 257), 1), ((2, 65536), 1), ((300, 24), 1),
            ((2, 3, 5, 7), 3), ((1, 77), 1), ((2, 12000), 1)]
if QUICK:
    LN_CASES = LN_CASES[:5]


@pytest.mark.parametrize("shape, k", LN_CASES)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_forward_backward(shape, k, dtype, affine):
    ns = shape[-k:]
    x = _rand(shape, dtype, True, scale=2.0, shift=0.5)
    w = _rand(ns, dtype, True) if affine else None
    b = _rand(ns, dtype, True) if affine else None
    dy = _rand(shape, dtype)
    leaves = [x, w, b]
    ref64, ref = _refs(leaves, True), _refs(leaves, False)
    out64 = F.layer_norm(ref64[0], ns, ref64[1], ref64[2], 1e-5)
    out64.backward(to_reference(dy, upcast=True))
    out_ref = F.layer_norm(ref[0], ns, ref[1], ref[2], 1e-5)
    out_ref.backward(to_reference(dy))
    stats_ref = aten.native_layer_norm(ref[0].detach(), list(ns), None if w is None else ref[1].detach(),
                                       None if b is None else ref[2].detach(), 1e-5)
    with served("native_layer_norm", "native_layer_norm_backward"):
        out = F.layer_norm(x, ns, w, b, 1e-5)
        out.backward(dy)
        stats = aten.native_layer_norm(x.detach(), list(ns), None if w is None else w.detach(),
                                       None if b is None else b.detach(), 1e-5)
    assert out.dtype == dtype and out.shape == x.shape
    assert_close(out, out64, dtype)
    assert_close(out, out_ref, dtype)
    for res_t, ref_t in zip(stats[1:], stats_ref[1:]):
        _check_like_aten(res_t, ref_t)
    m = x.numel() // math.prod(ns)
    _check_grads(_grads(leaves), _grads(ref64), _grads(ref), dtype, [1, m, m])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape, ns, params", [((4, 7, 33), (33,), "wb"), ((3, 5, 6), (5, 6), "w"),
                                               ((2, 40), (40,), ""), ((1, 1, 2048), (2048,), "wb")])
def test_layer_norm_inference(dtype, shape, ns, params):
    # No gradient recorded (grad mode off, or no input requiring one): layer_norm itself is served, the
    # forward kernel alone, with ATen's results; a call that records a graph still reaches native_layer_norm.
    x = _rand(shape, dtype, scale=2.0, shift=0.5)
    w = _rand(ns, dtype) if "w" in params else None
    b = _rand(ns, dtype) if "b" in params else None
    ref = F.layer_norm(*_refs([x], True), ns, *_refs([w, b], True), 1e-5)
    with served("layer_norm") as counter:
        out = F.layer_norm(x, ns, w, b, 1e-5)
        with torch.no_grad():
            out_no_grad = F.layer_norm(x, ns, w, b, 1e-5)
    assert not counter.ran_on_gems("native_layer_norm"), "the statistics were computed for nothing"
    for res in (out, out_no_grad):
        assert res.dtype == dtype and res.shape == x.shape and not res.requires_grad
        assert_close(res, ref, dtype)
    if w is not None:
        with served("native_layer_norm"):
            graphed = F.layer_norm(x, ns, w.requires_grad_(), b, 1e-5)
        assert graphed.requires_grad
        assert_close(graphed, ref, dtype)


def test_layer_norm_inference_hands_back_what_it_cannot_take():
    # A weight of another dtype than the input and an empty input go to ATen, with ATen's results; a wrong
    # normalized_shape gets ATen's error.
    x = _rand((4, 16), torch.bfloat16)
    w = _rand(16, torch.float32)
    try:
        expected = F.layer_norm(x, (16,), w)
    except RuntimeError as error:  # ATen's CUDA kernel refuses the mix its CPU kernel computes
        expected = error
    with served() as counter:
        if isinstance(expected, RuntimeError):
            with pytest.raises(RuntimeError, match=re.escape(str(expected))):
                F.layer_norm(x, (16,), w)
        else:
            assert_equal(F.layer_norm(x, (16,), w), expected)
        empty = F.layer_norm(torch.empty(0, 16, device=DEVICE), (16,))
    assert counter.fallbacks.get("layer_norm"), "the mixed-dtype call was not handed back to ATen"
    assert empty.shape == (0, 16)
    with pytest.raises(RuntimeError, match="normalized_shape"):
        with served():
            F.layer_norm(x, (8,))


@pytest.mark.parametrize("mask", [(True, False, False), (False, True, True), (True, True, False)])
def test_layer_norm_backward_output_mask(mask):
    x, w, b, dy = _rand((6, 33), torch.float32), _rand(33, torch.float32), _rand(33, torch.float32), \
        _rand((6, 33), torch.float32)
    _, mean, rstd = aten.native_layer_norm(x, [33], w, b, 1e-5)
    ref = aten.native_layer_norm_backward(dy, x, [33], mean, rstd, w, b, list(mask))
    with served("native_layer_norm_backward"):
        res = aten.native_layer_norm_backward(dy, x, [33], mean, rstd, w, b, list(mask))
    for r, e, wanted in zip(res, ref, mask):
        assert (r is None) == (not wanted)
        if wanted:
            assert_close(r, e, torch.float32, reduce_dim=6)


def test_layer_norm_noncontiguous_and_empty():
    x = _rand((40, 6), torch.float32).t()
    w = _rand(40, torch.float32)
    ref = F.layer_norm(to_reference(x, upcast=True), (40,), to_reference(w, upcast=True))
    with served("layer_norm"):  # no gradient asked for: the forward alone (test_layer_norm_inference)
        res = F.layer_norm(x, (40,), w)
    assert res.is_contiguous()
    assert_close(res, ref, torch.float32)
    empty = torch.empty(0, 8, device=DEVICE)
    with served():
        res = aten.native_layer_norm(empty, [8], None, None, 1e-5)
    for r, e in zip(res, aten.native_layer_norm(to_reference(empty), [8], None, None, 1e-5)):
        assert r.shape == e.shape and r.dtype == e.dtype


@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
@pytest.mark.parametrize("grad", ["sum", "expanded", "transposed"])
@pytest.mark.parametrize("shape", [(3, 5, 40), (2, 12000)])
def test_row_norm_strided_grad_output(op, grad, shape):
    """Gradients as ATen's for a grad_output that is not contiguous: the stride-0 gradient of ``.sum()``,
    one row expanded over all rows, a transposed tensor; also through the looped kernels of wide rows."""
    n = shape[-1]
    x = _rand(shape, torch.float32, True, scale=2.0, shift=0.5)
    w = _rand(n, torch.float32, True)
    b = _rand(n, torch.float32, True) if op == "layer_norm" else None
    dy = None
    if grad == "expanded":
        dy = _rand(n, torch.float32).expand(shape)
    elif grad == "transposed":
        dy = _rand(shape[::-1], torch.float32).permute(*reversed(range(len(shape))))

    def run(x_, w_, b_, dy_):
        out = F.layer_norm(x_, (n,), w_, b_, 1e-5) if op == "layer_norm" else F.rms_norm(x_, (n,), w_, 1e-5)
        if dy_ is None:
            out.sum().backward()
        else:
            out.backward(dy_)

    leaves = [x, w, b]
    ref = _refs(leaves, False)
    run(*ref, to_reference(dy))
    with served("native_layer_norm_backward" if op == "layer_norm" else "rms_norm"):
        run(*leaves, dy)
    for res_g, ref_g, k in zip(_grads(leaves), _grads(ref), [1, x.numel() // n, x.numel() // n]):
        if ref_g is not None:
            _close_scaled(res_g, ref_g.to(res_g.device), torch.float32, reduce_dim=k)


def test_expanded_grad_output_is_read_in_place():
    # The backward reads an expanded gradient through its strides: no 64 MB copy of a broadcast scalar.
    from gems_norm import row_norm

    dy = torch.ones((), device=DEVICE).expand(4, 6, 40)
    rows, s_m, s_n = row_norm.grad_rows(dy, 24, 40)
    assert rows.data_ptr() == dy.data_ptr() and (s_m, s_n) == (0, 0)
    dy = _rand(40, torch.float32).expand(4, 6, 40)
    rows, s_m, s_n = row_norm.grad_rows(dy, 24, 40)
    assert rows.data_ptr() == dy.data_ptr() and (s_m, s_n) == (0, 1)


def test_layer_norm_bad_shape_raises_like_aten():
    x = _rand((4, 6), torch.float32)
    with pytest.raises(RuntimeError) as expected:
        aten.native_layer_norm(to_reference(x), [5], None, None, 1e-5)
    with pytest.raises(RuntimeError) as got, served():
        aten.native_layer_norm(x, [5], None, None, 1e-5)
    assert str(got.value) == str(expected.value)


# RMS norm -----------------------------------------------------------------------------------------------

RMS_CASES = [((2, 3, 40), 1), ((4, 6, 10), 2), ((5, 1), 1), ((3, 257), 1), ((2, 65536), 1), ((300, 24), 1)]
if QUICK:
    RMS_CASES = RMS_CASES[:5]


@pytest.mark.parametrize("shape, k", RMS_CASES)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("affine, eps", [(True, None), (False, 1e-6)])
def test_rms_norm_forward_backward(shape, k, dtype, affine, eps):
    ns = shape[-k:]
    x = _rand(shape, dtype, True, scale=2.0)
    w = _rand(ns, dtype, True) if affine else None
    dy = _rand(shape, dtype)
    leaves = [x, w]
    ref64, ref = _refs(leaves, True), _refs(leaves, False)
    # ATen's default eps is that of the computation type: float32 for every dtype tested here.
    eps64 = torch.finfo(torch.float32).eps if eps is None else eps
    out64 = F.rms_norm(ref64[0], ns, ref64[1], eps64)
    out64.backward(to_reference(dy, upcast=True))
    out_ref = F.rms_norm(ref[0], ns, ref[1], eps)
    out_ref.backward(to_reference(dy))
    with served("rms_norm") as counter:
        out = F.rms_norm(x, ns, w, eps)
        out.backward(dy)
    assert counter.families["rms_norm"] == "norm"
    assert out.dtype == dtype and out.shape == x.shape
    assert_close(out, out64, dtype)
    assert_close(out, out_ref, dtype)
    _check_grads(_grads(leaves), _grads(ref64), _grads(ref), dtype, [1, x.numel() // math.prod(ns)])


@pytest.mark.skipif(flag_gems.aten_names.resolve("_fused_rms_norm") is None, reason="no _fused_rms_norm")
@pytest.mark.parametrize("dtype", FLOATS)
def test_fused_rms_norm_op(dtype):
    x, w = _rand((3, 4, 16), dtype, True), _rand(16, dtype, True)
    ref_out, ref_rstd = aten._fused_rms_norm(to_reference(x), [16], to_reference(w), 1e-5)
    x64, w64 = _refs([x, w], True)
    F.rms_norm(x64, (16,), w64, 1e-5).sum().backward()
    with served("_fused_rms_norm"):
        out, rstd = aten._fused_rms_norm(x, [16], w, 1e-5)
        out.sum().backward()
    _check_like_aten(out, ref_out)
    _check_like_aten(rstd, ref_rstd)
    _close_scaled(x.grad, x64.grad, dtype)
    _close_scaled(w.grad, w64.grad, dtype, reduce_dim=12)


@pytest.fixture
def function_calls(monkeypatch):
    """Counts calls of ``_RMSNorm.apply``: the autograd.Function that a call autograd does not record skips."""
    from gems_norm import rms_norm

    calls = []
    original = rms_norm._RMSNorm.apply

    def counted(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(rms_norm._RMSNorm, "apply", counted)
    return calls


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(1, 1024), (2, 3, 48)])
def test_rms_norm_outside_autograd(dtype, shape, function_calls):
    from gems_norm import rms_norm

    # A decoding step: grad mode off, or inputs that do not require grad. Still gems, same result as ATen,
    # nothing recorded; with inputs requiring grad autograd records the call and gradients match.
    n = shape[-1]
    x, w = _rand(shape, dtype, scale=2.0), _rand(n, dtype)
    ref = F.rms_norm(to_reference(x), (n,), to_reference(w), 1e-6)
    for grad_mode in (False, True):
        with torch.set_grad_enabled(grad_mode), served("rms_norm"):
            out = F.rms_norm(x, (n,), w, 1e-6)
        assert out.grad_fn is None and not out.requires_grad
        _check_like_aten(out, ref)
    if flag_gems.aten_names.resolve("_fused_rms_norm") is not None:
        ref_out, ref_rstd = aten._fused_rms_norm(to_reference(x), [n], to_reference(w), 1e-6)
        with torch.no_grad(), served("_fused_rms_norm"):
            out, rstd = aten._fused_rms_norm(x, [n], w, 1e-6)
        _check_like_aten(out, ref_out)
        _check_like_aten(rstd, ref_rstd)
    with torch.no_grad(), served():
        _check_like_aten(flag_gems.rms_norm(x, (n,), w, 1e-6), ref)
    assert not function_calls

    leaves = [x.requires_grad_(), w.requires_grad_()]
    ref_leaves = _refs(leaves, False)
    dy = _rand(shape, dtype)
    F.rms_norm(ref_leaves[0], (n,), ref_leaves[1], 1e-6).backward(to_reference(dy))
    # Where ATen has fused RMS norm kernels on the device (CUDA), its C++ autograd node runs over ours;
    # elsewhere our Function does.
    on_device = rms_norm._FUSED_ON_DEVICE
    with served("rms_norm", *(("_fused_rms_norm", "_fused_rms_norm_backward") if on_device else ())):
        out = F.rms_norm(x, (n,), w, 1e-6)
        out.backward(dy)
    assert bool(function_calls) != on_device
    _check_like_aten(out.detach(), ref)
    for res_g, ref_g, k in zip(_grads(leaves), _grads(ref_leaves), [1, x.numel() // n]):
        _close_scaled(res_g, ref_g.to(res_g.device), dtype, reduce_dim=k)


def test_ready_launch_key_names_triton_specialisation(monkeypatch):
    """The key a ready launch files its compiled kernel under: its ints' specialisation while every pointer
    is 16-byte aligned, Triton's whole specialisation otherwise (never the same key for both)."""
    import flag_gems.launch as launch_module
    from flag_gems.launch import specialization
    from gems_norm import heuristics, row_norm

    monkeypatch.setattr(launch_module, "_launchers", {})  # launchers built as on a GPU stay out of the real cache
    monkeypatch.setattr(heuristics.device, "interpreter", False)
    keys = []
    x = torch.zeros(64, dtype=torch.float32)
    # Rows of 1, multiples of 16, others, beyond int32: each specialised apart by Triton.
    for m, n in [(1, 1024), (32, 48), (3, 40), (2**31, 1)]:
        ready = heuristics.ReadyLaunch(row_norm._row_norm_fwd_kernel, (1,), 4, (torch.float32,) * 8, (m, n),
                                       BLOCK_M=1, BLOCK_N=64, CENTER=True, STATS_GIVEN=False, HAS_RES=False,
                                       HAS_W=False, HAS_B=False, SAVE_STATS=True, PARAMS_FIRST=True,
                                       ONE_PASS=False, STREAM=False)
        assert ready.spec == ("aligned", *specialization((m, n)))
        ready.launcher = lambda grid, args, spec_key: keys.append(spec_key)
        aligned = (x,) * 8 + (m, n, 1e-5)
        ready(aligned)
        unaligned = (x,) * 4 + (x[1:],) + (x,) * 3 + (m, n, 1e-5)
        ready(unaligned)
        assert keys[-2:] == [ready.spec, specialization(unaligned)]
    assert len(set(keys)) == len(keys) and len({k[1:] for k in keys[::2]}) == 4


def test_plans_check_the_alignment_of_the_tensors_they_are_given(monkeypatch):
    """A plan checks once per call the pointers it did not allocate: any of them unaligned, each launch takes
    Triton's whole specialisation as its key."""
    import flag_gems.launch as launch_module
    from flag_gems.launch import Launcher
    from gems_norm import heuristics, row_norm

    monkeypatch.setattr(launch_module, "_launchers", {})  # launchers built as on a GPU stay out of the real cache
    monkeypatch.setattr(heuristics.device, "interpreter", False)
    keys = []
    monkeypatch.setattr(Launcher, "__call__", lambda self, grid, args, spec_key=None: keys.append(spec_key))
    run = row_norm._forward_plan(True, torch.float32, None, torch.float32, None, torch.float32, 2, 32, (2, 1))
    x, w = torch.zeros(65, device=DEVICE), torch.ones(33, device=DEVICE)
    run(x[:64].view(2, 32), None, w[:32], None, 1e-5)
    run(x[1:].view(2, 32), None, w[:32], None, 1e-5)
    run(x[:64].view(2, 32), None, w[1:], None, 1e-5)
    assert keys[0][0] == "aligned" and keys[1][0] != "aligned" and keys[2][0] != "aligned"


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts, for the public fused functions (which bypass ATen), launches of the row norm's forward and
    backward kernels (whichever plan launches them) and calls of batch and weight norm's forward and backward."""
    from flag_gems import launch
    from gems_norm import batch_norm, row_norm, weight_norm

    calls = {}
    counted_kernels = {row_norm._row_norm_fwd_kernel: "forward", row_norm._row_norm_bwd_kernel: "backward"}
    launch_kernel = launch.Launcher.__call__

    def launched(self, grid, args, spec_key=None):
        name = counted_kernels.get(self.kernel)
        if name is not None:
            calls[name] = calls.get(name, 0) + 1
        return launch_kernel(self, grid, args, spec_key)

    monkeypatch.setattr(launch.Launcher, "__call__", launched)

    def spy(module, name):
        original = getattr(module, name)

        def counted(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)

    for module in (batch_norm, weight_norm):
        spy(module, "forward")
        spy(module, "backward")
    return calls


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(3, 5, 48), (2, 20000)])
def test_fused_add_rms_norm_and_public_rms_norm(dtype, shape, kernel_calls):
    n = shape[-1]
    x, r, w = _rand(shape, dtype, True), _rand(shape, dtype, True), _rand(n, dtype, True)
    dy, dh = _rand(shape, dtype), _rand(shape, dtype)
    leaves = [x, r, w]
    ref64 = _refs(leaves, True)
    h64 = (ref64[0] + ref64[1]).to(dtype).to(torch.float64)  # the sum rounds to the input dtype first
    h64 = h64 + (ref64[0] + ref64[1] - h64).detach()  # ... while gradients flow as through x + residual
    y64 = F.rms_norm(h64, (n,), ref64[2], 1e-5)
    torch.autograd.backward([y64, h64], [to_reference(dy, upcast=True), to_reference(dh, upcast=True)])
    with served():
        y, h = flag_gems.fused_add_rms_norm(x, r, (n,), w, 1e-5)
        torch.autograd.backward([y, h], [dy, dh])
        plain = flag_gems.rms_norm(x.detach(), (n,), w.detach())
    assert kernel_calls["forward"] == 2 and kernel_calls["backward"] == 1
    _close_scaled(y, y64, dtype)
    assert_close(h, h64, dtype)
    for res_g, ref_g, k in zip(_grads(leaves), _grads(ref64), [1, 1, math.prod(shape) // n]):
        _close_scaled(res_g, ref_g, dtype, reduce_dim=k)
    assert_close(plain, F.rms_norm(to_reference(x, upcast=True), (n,), to_reference(w, upcast=True)), dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("affine", [True, False])
def test_skip_layer_norm(dtype, affine, kernel_calls):
    shape, n = (4, 7, 96), 96
    x, r = _rand(shape, dtype, True), _rand(shape, dtype, True)
    w = _rand(n, dtype, True) if affine else None
    b = _rand(n, dtype, True) if affine else None
    dy = _rand(shape, dtype)
    leaves = [x, r, w, b]
    ref64 = _refs(leaves, True)
    h64 = (ref64[0] + ref64[1]).to(dtype).to(torch.float64)
    h64 = h64 + (ref64[0] + ref64[1] - h64).detach()
    F.layer_norm(h64, (n,), ref64[2], ref64[3], 1e-5).backward(to_reference(dy, upcast=True))
    with served():
        y = flag_gems.skip_layer_norm(x, r, (n,), w, b, 1e-5)
        y.backward(dy)
    assert kernel_calls["forward"] == 1 and kernel_calls["backward"] == 1
    y64 = F.layer_norm(h64.detach(), (n,), None if w is None else ref64[2].detach(),
                       None if b is None else ref64[3].detach(), 1e-5)
    _close_scaled(y, y64, dtype)
    for res_g, ref_g, k in zip(_grads(leaves), _grads(ref64), [1, 1, 28, 28]):
        if ref_g is not None:
            _close_scaled(res_g, ref_g, dtype, reduce_dim=k)


# group norm ---------------------------------------------------------------------------------------------

# (shape, groups): 4-d, 3-d, 2-d (HxW = 1; not groups of 2 values, whose dx vanishes), one group,
# one channel a group, a large group (looped tiles).
GN_CASES = [((2, 6, 5, 4), 3), ((3, 8, 7), 2), ((4, 24), 3), ((2, 5, 9), 1), ((2, 4, 3, 3), 4), ((2, 8, 40, 40), 2)]
if QUICK:
    GN_CASES = GN_CASES[:3] + GN_CASES[5:]


@pytest.mark.parametrize("shape, groups", GN_CASES)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("affine", [True, False])
def test_group_norm_forward_backward(shape, groups, dtype, affine):
    c = shape[1]
    x = _rand(shape, dtype, True, scale=3.0, shift=1.0)
    w = _rand(c, dtype, True) if affine else None
    b = _rand(c, dtype, True) if affine else None
    dy = _rand(shape, dtype)
    leaves = [x, w, b]
    ref64, ref = _refs(leaves, True), _refs(leaves, False)
    F.group_norm(ref64[0], groups, ref64[1], ref64[2], 1e-5).backward(to_reference(dy, upcast=True))
    F.group_norm(ref[0], groups, ref[1], ref[2], 1e-5).backward(to_reference(dy))
    n, hw = shape[0], math.prod(shape[2:])
    stats_args = (None if w is None else ref[1].detach(), None if b is None else ref[2].detach(), n, c, hw,
                  groups, 1e-5)
    stats_ref = aten.native_group_norm(ref[0].detach(), *stats_args)
    with served("native_group_norm", "native_group_norm_backward"):
        out = F.group_norm(x, groups, w, b, 1e-5)
        out.backward(dy)
        stats = aten.native_group_norm(x.detach(), None if w is None else w.detach(),
                                       None if b is None else b.detach(), n, c, hw, groups, 1e-5)
    out64 = F.group_norm(ref64[0].detach(), groups, None if w is None else ref64[1].detach(),
                         None if b is None else ref64[2].detach(), 1e-5)
    assert out.dtype == dtype
    assert_close(out, out64, dtype)
    _close_scaled(out, stats_ref[0], dtype)  # ATen rounds half statistics before normalising
    for res_t, ref_t in zip(stats[1:], stats_ref[1:]):
        _check_like_aten(res_t, ref_t)
    _check_grads(_grads(leaves), _grads(ref64), _grads(ref), dtype, [1, n * hw, n * hw])


def test_group_norm_uneven_groups_raise_like_aten():
    x = _rand((2, 6, 4), torch.float32)
    with pytest.raises(RuntimeError) as expected:
        F.group_norm(to_reference(x), 4)
    with pytest.raises(RuntimeError) as got, served():
        F.group_norm(x, 4)
    assert str(got.value) == str(expected.value)
    with pytest.raises(RuntimeError) as expected:
        aten.native_group_norm(to_reference(x), None, None, 2, 6, 4, 4, 1e-5)
    with pytest.raises(RuntimeError) as got, served():
        aten.native_group_norm(x, None, None, 2, 6, 4, 4, 1e-5)
    assert str(got.value) == str(expected.value)


# batch norm ---------------------------------------------------------------------------------------------

# 2-d, 3-d, 4-d, 5-d; one sample (each channel held whole by one program).
BN_SHAPES = [(16, 5), (4, 3, 10), (3, 4, 6, 5), (2, 3, 4, 3, 5), (1, 6, 7, 5)]


def _assert_batch_norm_served(counter):
    # On CUDA, F.batch_norm takes cuDNN's entry points for most inputs; both are ours.
    assert counter.ran_on_gems("native_batch_norm") or counter.ran_on_gems("cudnn_batch_norm"), counter.served
    assert (counter.ran_on_gems("native_batch_norm_backward")
            or counter.ran_on_gems("cudnn_batch_norm_backward")), counter.served


def _bn_params(c, dtype, affine, stats, param_dtype=None):
    pd = param_dtype or dtype
    w = _rand(c, pd, True) if affine else None
    b = _rand(c, pd, True) if affine else None
    rm = _rand(c, pd) if stats else None
    rv = (torch.rand(c, device=DEVICE) + 0.5).to(pd) if stats else None
    return w, b, rm, rv


@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_forward_backward(shape, dtype, training):
    c = shape[1]
    x = _rand(shape, dtype, True, scale=2.0, shift=0.3)
    w, b, rm, rv = _bn_params(c, dtype, True, True)
    dy = _rand(shape, dtype)
    leaves = [x, w, b]
    ref64, ref = _refs(leaves, True), _refs(leaves, False)
    rm64, rv64 = to_reference(rm, upcast=True), to_reference(rv, upcast=True)
    out64 = F.batch_norm(ref64[0], rm64, rv64, ref64[1], ref64[2], training, 0.2, 1e-5)
    out64.backward(to_reference(dy, upcast=True))
    rm_ref, rv_ref = to_reference(rm), to_reference(rv)
    out_ref = F.batch_norm(ref[0], rm_ref, rv_ref, ref[1], ref[2], training, 0.2, 1e-5)
    out_ref.backward(to_reference(dy))
    with served() as counter:
        out = F.batch_norm(x, rm, rv, w, b, training, 0.2, 1e-5)
        out.backward(dy)
    _assert_batch_norm_served(counter)
    count = x.numel() // c
    assert out.dtype == dtype and out.stride() == out_ref.stride()
    assert_close(out, out64, dtype)
    _close_scaled(out, out_ref, dtype)  # ATen's CPU kernel normalises half inputs with rounded statistics
    assert_close(rm, rm64, dtype, reduce_dim=count)
    assert_close(rv, rv64, dtype, reduce_dim=count)
    _check_grads(_grads(leaves), _grads(ref64), _grads(ref), dtype, [count, count, count])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_batch_norm_mixed_precision_and_channels_last(dtype):
    # Half activations with float32 parameters and running statistics, channels-last memory.
    x = _rand((3, 8, 5, 6), dtype, scale=2.0).to(memory_format=torch.channels_last).requires_grad_()
    w, b, rm, rv = _bn_params(8, dtype, True, True, param_dtype=torch.float32)
    dy = _rand((3, 8, 5, 6), dtype)
    ref = _refs([x, w, b], False)
    rm_ref, rv_ref = to_reference(rm), to_reference(rv)
    out_ref = F.batch_norm(ref[0], rm_ref, rv_ref, ref[1], ref[2], True, 0.1, 1e-5)
    out_ref.backward(to_reference(dy))
    saved_ref = aten.native_batch_norm(ref[0].detach(), ref[1].detach(), ref[2].detach(), rm_ref.clone(),
                                       rv_ref.clone(), True, 0.1, 1e-5)
    with served() as counter:
        out = F.batch_norm(x, rm, rv, w, b, True, 0.1, 1e-5)
        out.backward(dy)
    _assert_batch_norm_served(counter)
    with served("native_batch_norm"):
        saved = aten.native_batch_norm(x.detach(), w.detach(), b.detach(), rm.clone(), rv.clone(), True, 0.1, 1e-5)
    assert out.is_contiguous(memory_format=torch.channels_last)
    _close_scaled(out, out_ref, dtype)
    assert_close(rm, rm_ref, torch.float32, reduce_dim=90)
    assert_close(rv, rv_ref, torch.float32, reduce_dim=90)
    for res_t, ref_t in zip(saved[1:], saved_ref[1:]):
        _check_like_aten(res_t, ref_t)
    for res_g, ref_g in zip(_grads([x, w, b]), _grads(ref)):
        assert res_g.dtype == ref_g.dtype
        _close_scaled(res_g, ref_g, dtype, reduce_dim=90)


def test_batch_norm_entry_points_like_aten():
    """Every ATen form of batch norm: outputs, saved statistics and running statistics as ATen's."""
    x = _rand((4, 3, 5), torch.float32, scale=2.0)
    w, b, rm, rv = _bn_params(3, torch.float32, True, True)

    def run(op_name, *args):
        base, _, overload = op_name.partition(".")
        op = getattr(getattr(aten, base), overload or "default")
        ref_args = [to_reference(a).clone() if isinstance(a, torch.Tensor) else a for a in args]
        expected = op(*ref_args)
        with served(op_name):
            got = op(*args)
        for g, e in zip(got, expected):
            _check_like_aten(g, e)
        for a, e in zip(args, ref_args):  # running statistics are updated in place as ATen updates them
            if isinstance(a, torch.Tensor):
                _check_like_aten(a, e)
        return got

    run("_native_batch_norm_legit", x, w, b, rm.clone(), rv.clone(), True, 0.1, 1e-5)
    run("_native_batch_norm_legit", x, w, b, rm.clone(), rv.clone(), False, 0.1, 1e-5)
    run("_native_batch_norm_legit.no_stats", x, w, b, True, 0.1, 1e-5)
    run("_native_batch_norm_legit_no_training", x, w, b, rm, rv, 0.1, 1e-5)
    run("_native_batch_norm_legit_functional", x, w, b, rm, rv, True, 0.1, 1e-5)
    run("_native_batch_norm_legit_functional", x, w, b, rm, rv, False, 0.1, 1e-5)
    run("native_batch_norm", x, None, None, None, None, True, 0.1, 1e-5)
    if flag_gems.aten_names.resolve("_batch_norm_with_update") is not None:
        out = run("_batch_norm_with_update", x, w, b, rm.clone(), rv.clone(), 0.1, 1e-5)
        run("_batch_norm_with_update_functional", x, w, b, rm, rv, 0.1, 1e-5)
        if DEVICE == "cpu":  # ATen's CUDA build routes this form to its CPU kernel, which then refuses
            run("_batch_norm_no_update", x, w, b, rm, rv, 0.1, 1e-5)
        dy = _rand((4, 3, 5), torch.float32)
        run("batch_norm_backward", dy, x, w, rm, rv, out[1], out[2], True, 1e-5, [True, True, True], out[3])


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("mask", [(True, True, True), (False, True, True), (True, False, False)])
def test_batch_norm_backward_output_mask(train, mask):
    x, dy = _rand((5, 4, 6), torch.float32), _rand((5, 4, 6), torch.float32)
    w, _, rm, rv = _bn_params(4, torch.float32, True, True)
    # The statistics the forward of the same mode saves (in eval: none on CPU, the running ones on CUDA).
    _, mean, invstd = aten.native_batch_norm(x, w, None, rm.clone(), rv.clone(), train, 0.1, 1e-5)
    args = (dy, x, w, rm, rv, mean, invstd, train, 1e-5, list(mask))
    expected = aten.native_batch_norm_backward(*[to_reference(a) for a in args])
    with served("native_batch_norm_backward"):
        got = aten.native_batch_norm_backward(*args)
    for g, e, wanted in zip(got, expected, mask):
        assert (g is None) == (not wanted)
        if wanted:
            assert_close(g, e, torch.float32, reduce_dim=30)


# instance norm (public) --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("use_input_stats, with_stats", [(True, False), (True, True), (False, True)])
def test_instance_norm(dtype, use_input_stats, with_stats, kernel_calls):
    shape = (3, 4, 6, 5)
    x = _rand(shape, dtype, True, scale=2.0, shift=1.0)
    w, b, rm, rv = _bn_params(4, dtype, True, with_stats)
    dy = _rand(shape, dtype)
    leaves = [x, w, b]
    ref64 = _refs(leaves, True)
    rm64, rv64 = to_reference(rm, upcast=True), to_reference(rv, upcast=True)
    out64 = F.instance_norm(ref64[0], rm64, rv64, ref64[1], ref64[2], use_input_stats, 0.1, 1e-5)
    out64.backward(to_reference(dy, upcast=True))
    with served():
        out = flag_gems.instance_norm(x, rm, rv, w, b, use_input_stats, 0.1, 1e-5)
        out.backward(dy)
    assert kernel_calls["forward"] == 1 and kernel_calls["backward"] == 1
    assert out.dtype == dtype
    assert_close(out, out64, dtype)
    if with_stats:
        assert_close(rm, rm64, dtype, reduce_dim=30)
        assert_close(rv, rv64, dtype, reduce_dim=30)
    for res_g, ref_g, k in zip(_grads(leaves), _grads(ref64), [30, 90, 90]):
        _close_scaled(res_g, ref_g, dtype, reduce_dim=k)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("use_input_stats, with_stats", [(True, False), (True, True), (False, True)])
def test_instance_norm_op(dtype, use_input_stats, with_stats):
    """ATen's ``instance_norm`` (CompositeImplicitAutograd) served on the Autograd key: output, running
    statistics and gradients as ATen's; without autograd, a channels-last input too."""
    shape = (3, 4, 6, 5)
    x = _rand(shape, dtype, True, scale=2.0, shift=1.0)
    w, b, rm, rv = _bn_params(4, dtype, True, with_stats)
    dy = _rand(shape, dtype)
    leaves = [x, w, b]
    ref64, ref = _refs(leaves, True), _refs(leaves, False)
    rm64, rv64 = to_reference(rm, upcast=True), to_reference(rv, upcast=True)
    rm_ref, rv_ref = to_reference(rm), to_reference(rv)
    args = (use_input_stats, 0.1, 1e-5)
    F.instance_norm(ref64[0], rm64, rv64, ref64[1], ref64[2], *args).backward(to_reference(dy, upcast=True))
    out_ref = F.instance_norm(ref[0], rm_ref, rv_ref, ref[1], ref[2], *args)
    out_ref.backward(to_reference(dy))
    x_last = x.detach().to(memory_format=torch.channels_last)
    eval_stats = (rm.clone(), rv.clone()) if with_stats else None
    plain_ref = F.instance_norm(to_reference(x_last), *_refs(eval_stats, False), ref[1].detach(), ref[2].detach(),
                                False, 0.1, 1e-5) if with_stats else None
    with served("instance_norm"):
        out = F.instance_norm(x, rm, rv, w, b, *args)
        out.backward(dy)
        if with_stats:
            with torch.no_grad():
                plain = F.instance_norm(x_last, *eval_stats, w, b, False, 0.1, 1e-5)
    assert out.dtype == dtype and out.shape == x.shape
    _close_scaled(out, out_ref.to(out.device), dtype)
    if with_stats:
        assert_close(rm, rm64, dtype, reduce_dim=30)
        assert_close(rv, rv64, dtype, reduce_dim=30)
        assert plain.stride() == plain_ref.stride() and not plain.requires_grad
        _close_scaled(plain, plain_ref.to(plain.device), dtype)
    _check_grads(_grads(leaves), _grads(ref64), _grads(ref), dtype, [30, 90, 90])


@pytest.mark.parametrize("with_stats", [True, False])
def test_instance_norm_planes_wider_than_a_program(with_stats):
    # Planes past what one program holds (16384 values): statistics gathered in a first pass, merged per plane.
    x = _rand((2, 3, 130, 130), torch.float32, True, scale=2.0, shift=1.0)
    w, b, rm, rv = _bn_params(3, torch.float32, True, with_stats)
    leaves = [x, w, b]
    ref = _refs(leaves, False)
    rm_ref, rv_ref = to_reference(rm), to_reference(rv)
    out_ref = F.instance_norm(ref[0], rm_ref, rv_ref, ref[1], ref[2], True, 0.1, 1e-5)
    out_ref.sum().backward()
    with served("instance_norm"):
        out = F.instance_norm(x, rm, rv, w, b, True, 0.1, 1e-5)
        out.sum().backward()
    _close_scaled(out, out_ref.to(out.device), torch.float32)
    if with_stats:
        assert_close(rm, rm_ref.to(rm.device), torch.float32, reduce_dim=16900)
        assert_close(rv, rv_ref.to(rv.device), torch.float32, reduce_dim=16900)
    for res_g, ref_g in zip(_grads(leaves), _grads(ref)):
        _close_scaled(res_g, ref_g.to(res_g.device), torch.float32, reduce_dim=16900)


# weight norm --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape, dim", [((6, 5, 3), 0), ((6, 5, 3), 2), ((7,), 0), ((40, 300), 1)])
def test_weight_norm_interface(shape, dim):
    v = _rand(shape, torch.float32, True)
    g = _rand([s if d == dim else 1 for d, s in enumerate(shape)], torch.float32, True)
    dw = _rand(shape, torch.float32)
    ref64 = _refs([v, g], True)
    torch._weight_norm(ref64[0], ref64[1], dim).backward(to_reference(dw, upcast=True))
    expected = aten._weight_norm_interface(to_reference(v).detach(), to_reference(g).detach(), dim)
    with served("_weight_norm_interface", "_weight_norm_interface_backward"):
        out = torch._weight_norm(v, g, dim)
        out.backward(dw)
        got = aten._weight_norm_interface(v.detach(), g.detach(), dim)
    k = v.numel() // shape[dim]
    assert_close(out, torch._weight_norm(ref64[0].detach(), ref64[1].detach(), dim), torch.float32)
    for res_t, ref_t in zip(got, expected):
        _check_like_aten(res_t, ref_t)
    _close_scaled(v.grad, ref64[0].grad, torch.float32, reduce_dim=k)
    _close_scaled(g.grad, ref64[1].grad, torch.float32, reduce_dim=k)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_public_weight_norm(dtype, dim, kernel_calls):
    shape = (5, 6, 7)
    v = _rand(shape, dtype, True)
    g_shape = [] if dim == -1 else [s if d == dim else 1 for d, s in enumerate(shape)]
    g = _rand(g_shape, dtype, True)
    dw = _rand(shape, dtype)
    ref64 = _refs([v, g], True)
    out64 = torch._weight_norm(ref64[0], ref64[1], dim)
    out64.backward(to_reference(dw, upcast=True))
    with served():
        out = flag_gems.weight_norm(v, g, dim)
        out.backward(dw)
        with torch.no_grad():  # no autograd.Function where autograd records nothing
            plain = flag_gems.weight_norm(v, g, dim)
    assert kernel_calls["forward"] == 2 and kernel_calls["backward"] == 1
    assert plain.grad_fn is None
    assert_equal(plain, out.detach())
    k = v.numel() if dim == -1 else v.numel() // shape[dim]
    assert out.dtype == dtype
    assert_close(out, out64, dtype)
    _close_scaled(v.grad, ref64[0].grad, dtype, reduce_dim=k)
    assert g.grad.shape == g.shape
    _close_scaled(g.grad, ref64[1].grad, dtype, reduce_dim=k)


# cached call plans -------------------------------------------------------------------------------------

def _plan_caches():
    """Every cache of call plans in the family (op plans and the launches they hold)."""
    from gems_norm import batch_norm, group_norm, heuristics, layer_norm, per_channel, reductions, rms_norm, row_norm

    return [value for module in (batch_norm, group_norm, layer_norm, per_channel, reductions, rms_norm, row_norm)
            for value in vars(module).values() if isinstance(value, heuristics.Plans)]


def _upstream(y):
    """A fixed, non-constant gradient for ``y``, the same on every call of a shape. A constant one would
    give the input a zero gradient through any normalisation, leaving only rounding noise to compare."""
    return torch.arange(y.numel(), device=y.device, dtype=torch.float32).sin().view(y.shape).to(y.dtype)


def _layer_norm_call(x, w, b):
    y = F.layer_norm(x, x.shape[-1:], w, b, 1e-5)
    return (y, *torch.autograd.grad(y, (x, w, b), _upstream(y)))


def _rms_norm_call(x, w, b):
    with torch.no_grad():
        plain = F.rms_norm(x, x.shape[-1:], w, 1e-6)
    y = F.rms_norm(x, x.shape[-1:], w, 1e-6)
    return (plain, y, *torch.autograd.grad(y, (x, w), _upstream(y)))


def _group_norm_call(x, w, b):
    y = F.group_norm(x, 2, w, b, 1e-5)
    return (y, *torch.autograd.grad(y, (x, w, b), _upstream(y)))


def _batch_norm_call(x, w, b):
    c = x.shape[1]
    rm = torch.linspace(-1, 1, c, device=DEVICE).to(w.dtype)
    rv = torch.linspace(0.5, 2, c, device=DEVICE).to(w.dtype)
    y = F.batch_norm(x, rm, rv, w, b, training=True, momentum=0.1, eps=1e-5)
    grads = torch.autograd.grad(y, (x, w, b), _upstream(y))
    with torch.no_grad():
        evaluated = F.batch_norm(x, rm, rv, w, b, training=False, eps=1e-5)
    return (y, *grads, rm, rv, evaluated)


@pytest.mark.parametrize("call, shapes", [
    (_layer_norm_call, [(3, 40), (5, 24)]),
    (_rms_norm_call, [(3, 40), (2, 3, 24)]),
    (_group_norm_call, [(2, 4, 5), (3, 6, 2, 3)]),
    (_batch_norm_call, [(4, 3, 5), (2, 5, 3, 2)]),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cached_plans_give_a_cold_calls_results(call, shapes, dtype):
    """A call served by the plans an earlier call of the same signature left (other values) gives what the
    same call gives with every plan built anew, and so does a call of another shape after them."""
    caches = _plan_caches()

    def inputs(shape, scale):
        c = shape[1] if call in (_group_norm_call, _batch_norm_call) else shape[-1]
        return (_rand(shape, dtype, True, scale=scale, shift=0.5), _rand(c, dtype, True), _rand(c, dtype, True))

    def cold(args):
        for cache in caches:
            cache.clear()
        return call(*args)

    first, second, other = inputs(shapes[0], 1.0), inputs(shapes[0], 3.0), inputs(shapes[1], 2.0)
    with served():
        results = [call(*first)]
        planned = sum(len(cache) for cache in caches)
        assert planned
        cached = call(*second)
        assert sum(len(cache) for cache in caches) == planned  # served by the first call's plans
        cached_other = call(*other)
        for args, res in [(second, cached), (other, cached_other)]:
            for r, c in zip(res, cold(args)):
                assert_equal(r, c)
        results += [cached, cached_other]
    for args, res in zip([first, second, other], results):
        for r, ref in zip(res, call(*args)):  # ATen's
            _close_scaled(r, ref, dtype, reduce_dim=args[0].numel())


# kernel variants chosen by the tuning knobs ----------------------------------------------------------------

#: Every knob off its default, with tiles small enough that the tiny shapes below take several steps and
#: splits (the programs-per-SM knobs do not count on the interpreter).
_ALL_KNOBS_TURNED = dict(row_bwd_tile=64, row_bwd_warps=8, row_bwd_programs_per_sm=1, row_bwd_prefetch_stats=True,
                         sums_tile=64, sums_programs_per_sm=4, sums_stages=2, sums_interleaved=True,
                         sums_shifted=True, apply_reversed=True, apply_tile=64, merge_in_apply=64,
                         row_fwd_tile=64, row_fwd_warps=8)


@pytest.fixture
def use_knobs():
    """Sets the family's knobs (the others at their defaults) and drops every plan; restores all after."""
    from gems_norm import heuristics

    def use(**values):
        chosen = heuristics.Knobs(**values)
        for name in vars(chosen):
            setattr(heuristics.KNOBS, name, getattr(chosen, name))
        heuristics.clear_plans()

    yield use
    use()


@pytest.mark.parametrize("call, shape", [
    (_layer_norm_call, (40, 24)),
    (_rms_norm_call, (5, 8, 24)),
    (_batch_norm_call, (4, 5, 3, 4)),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tuning_knobs_keep_results(use_knobs, call, shape, dtype):
    """Each variant the tuning script can pick computes what ATen does."""
    c = shape[1] if call is _batch_norm_call else shape[-1]
    args = (_rand(shape, dtype, True, shift=0.5), _rand(c, dtype, True), _rand(c, dtype, True))
    use_knobs(**_ALL_KNOBS_TURNED)
    with served():
        results = call(*args)
    for r, ref in zip(results, call(*args)):  # ATen's
        _close_scaled(r, ref, dtype, reduce_dim=args[0].numel())


def _add_rms_norm_grads(x, r, w, dy, dh, fused):
    """(y, h, grads of x, r, w) of rms_norm(x + r) with h = x + r an output too: ``fused_add_rms_norm`` or ATen's
    composition; dh None backpropagates h.sum() instead (an expanded gradient)."""
    leaves = [t for t in (x, r, w) if t is not None]
    n = x.shape[-1]
    if fused:
        y, h = flag_gems.fused_add_rms_norm(x, r, (n,), w, 1e-5)
    else:
        h = x + r
        y = F.rms_norm(h, (n,), w, 1e-5)
    if dh is None:
        grads = torch.autograd.grad([y, h.sum()], leaves, [dy, None])
    else:
        grads = torch.autograd.grad([y, h], leaves, [dy, dh])
    return (y, h, *grads)


@pytest.mark.parametrize("shape", [(3, 5, 77), (2, 12000), (2, 20000)])  # odd N; looped backward; looped both
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("affine", [True, False])
def test_fused_add_rms_norm_grad_of_the_sum_in_the_kernel(use_knobs, shape, dtype, affine, kernel_calls):
    """The gradient of the sum output added to dx in the backward kernel (``row_bwd_fold_dh``) gives ATen's
    composition's gradients, and in float32 and float16 those of the separate add bit for bit (the same
    roundings: dx in x's dtype, then the sum)."""
    n = shape[-1]
    x, r = _rand(shape, dtype, True), _rand(shape, dtype, True)
    w = _rand(n, dtype, True, shift=1.0) if affine else None
    dy, dh = _rand(shape, dtype), _rand(shape, dtype)
    ref = _add_rms_norm_grads(x, r, w, dy, dh, fused=False)  # ATen's
    results = {}
    for fold in (False, True):
        use_knobs(row_bwd_fold_dh=fold)
        with served():
            results[fold] = _add_rms_norm_grads(x, r, w, dy, dh, fused=True)
            expanded = _add_rms_norm_grads(x, r, w, dy, None, fused=True)
    assert kernel_calls["backward"] == 4
    for res, aten_ref in zip(results[True], ref):
        assert res.dtype == aten_ref.dtype and res.shape == aten_ref.shape
        _close_scaled(res, aten_ref, dtype, reduce_dim=x.numel() // n if res.dim() == 1 else 1)
    for res, aten_ref in zip(expanded, _add_rms_norm_grads(x, r, w, dy, None, fused=False)):
        _close_scaled(res, aten_ref, dtype, reduce_dim=x.numel() // n if res.dim() == 1 else 1)
    if dtype != torch.bfloat16 and DEVICE == "cpu":
        # On the interpreter (which truncates bfloat16 stores) folded and separate adds agree to the bit; a GPU
        # may contract the folded add into a multiply-add, one rounding fewer.
        for folded, separate in zip(results[True], results[False]):
            assert_equal(folded, separate)
