"""Accuracy of the BLAS family: mm, addmm, bmm, baddbmm, addbmm, mv, addmv, dot, vdot, addr.

Each result is compared with ATen on the same inputs and with a float64 reference, with tolerances set by
the dtype and the length of the reduction (K); every call runs under ``served`` so that a silent fallback
to ATen fails. Shapes stay small on the interpreter; on a GPU the issue's large, odd and skinny shapes
run too.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
import zlib

import gems_test_settings as settings
import pytest
import torch
from gems_test_settings import to_reference

import flag_gems
from flag_gems.runtime import device
from flag_gems.testing import RESOLUTION, assert_close, assert_equal, served
from gems_blas import autotune, heuristics
from gems_blas import mm as mm_module
from gems_blas import mv as gemv_module

DEVICE = flag_gems.device
QUICK = settings.QUICK
GPU = not device.interpreter
FLOATS = [torch.float32, torch.bfloat16] if QUICK else [torch.float32, torch.float16, torch.bfloat16]
BLAS = ["blas"]
# Layouts of a matrix operand: contiguous, stored transposed (column-major), rows taken with a step
# (unit stride, padded rows) and columns taken with a step (no unit stride: the kernel gets a copy).
LAYOUTS = ["rows", "cols", "row_step", "col_step"]


@pytest.fixture(autouse=True)
def _seed(request):
    torch.manual_seed(zlib.crc32(request.node.name.encode()))  # varied across cases, repeatable


def _rand(shape, dtype, layout="rows", scale=1.0):
    """A random tensor of ``shape`` whose last two dimensions are laid out as ``layout``."""
    shape = tuple(shape)
    if layout == "rows" or len(shape) < 2:
        return (torch.randn(shape, device=DEVICE) * scale).to(dtype)
    if layout == "cols":
        t = (torch.randn(*shape[:-2], shape[-1], shape[-2], device=DEVICE) * scale).to(dtype)
        return t.transpose(-1, -2)
    if layout == "row_step":
        return (torch.randn(*shape[:-2], shape[-2] * 2, shape[-1], device=DEVICE) * scale).to(dtype)[..., ::2, :]
    return (torch.randn(*shape[:-1], shape[-1] * 2, device=DEVICE) * scale).to(dtype)[..., ::2]


def _check(res, ref64, ref_aten, dtype, k, atol=1e-4):
    """``res`` has ATen's shape and dtype, matches the float64 reference within the tolerance for K terms,
    and matches ATen. ATen's CPU kernels round some intermediate results to fp16/bf16 (addbmm after each
    product, addr after each operation), so against ATen half types get a few units of their resolution
    of the largest element."""
    assert res.shape == ref64.shape and res.dtype == dtype
    assert_close(res, ref64, dtype, reduce_dim=k, atol=atol)
    if ref_aten is ref64:
        return
    assert res.shape == ref_aten.shape and res.dtype == ref_aten.dtype
    if dtype is torch.float32 or not res.numel():
        assert_close(res, ref_aten.to(res.device), dtype, reduce_dim=k, atol=atol)
    else:
        scaled = 2 * RESOLUTION[dtype] * float(ref64.abs().max())
        assert_close(res, ref_aten.to(res.device), dtype, atol=max(atol * k**0.5, scaled))


def _refs(*tensors):
    return [to_reference(t, upcast=True) for t in tensors]


# mm --------------------------------------------------------------------------------------------------

# (M, N, K): square, rectangular, odd, skinny and its transpose, one row, one column.
MM_SHAPES = [(64, 64, 64), (32, 96, 48), (100, 300, 77), (16, 256, 2048), (256, 16, 2048), (1, 200, 300),
             (200, 1, 300)]
if GPU:
    MM_SHAPES += [(1000, 3000, 777), (16, 4096, 14336), (4096, 16, 14336), (512, 512, 512), (1, 4096, 4096)]
if QUICK:
    MM_SHAPES = MM_SHAPES[1:]


@pytest.mark.parametrize("m, n, k", MM_SHAPES)
@pytest.mark.parametrize("dtype", FLOATS)
def test_mm_shapes(m, n, k, dtype):
    a, b = _rand((m, k), dtype), _rand((k, n), dtype, scale=k**-0.5)
    a64, b64 = _refs(a, b)
    ref_aten = torch.mm(a, b)
    with served("mm", families=BLAS):
        res = torch.mm(a, b)
    _check(res, torch.mm(a64, b64), ref_aten, dtype, k)


@pytest.mark.parametrize("a_layout", LAYOUTS if not QUICK else LAYOUTS[:3])
@pytest.mark.parametrize("b_layout", LAYOUTS if not QUICK else LAYOUTS[:3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mm_layouts(a_layout, b_layout, dtype):
    m, n, k = 40, 72, 56
    a, b = _rand((m, k), dtype, a_layout), _rand((k, n), dtype, b_layout)
    a64, b64 = _refs(a, b)
    ref_aten = torch.mm(a, b)
    with served("mm", families=BLAS):
        res = torch.mm(a, b)
    _check(res, torch.mm(a64, b64), ref_aten, dtype, k)


# Both kernels on every device: the interpreter runs the Hopper kernel's indexing too (tensor
# descriptors, persistent tile loop, descriptor stores), a GPU runs the pointer kernel.
# The bias layouts the epilogue tells apart: one value per column (addmm's vector), per row, one scalar,
# a full matrix per product.
BIAS_CASES = {"bias": (40,), "bias_rows": (33, 1), "bias_scalar": (), "bias_full": (2, 33, 40)}


@pytest.mark.parametrize("kernel", ["tma", "tiled"])
@pytest.mark.parametrize("case", ["square", "transposed", "split", "batched", "odd_n", *BIAS_CASES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_both_kernels(kernel, case, dtype):
    batch, m, n, k = {"square": (1, 64, 64, 64), "transposed": (1, 48, 80, 64), "split": (1, 16, 128, 2048),
                      "batched": (3, 40, 24, 32), "odd_n": (1, 32, 40, 64)}.get(case, (2, 33, 40, 48))
    layout = "cols" if case == "transposed" else "rows"
    a, b = _rand((batch, m, k), dtype, layout), _rand((batch, k, n), dtype, layout, scale=k**-0.5)
    bias = _rand(BIAS_CASES.get(case, (n,)), dtype)
    a64, b64, bias64 = _refs(a, b, bias)
    with mm_module.forced_kernel(kernel):
        if case in BIAS_CASES:
            ref_aten = torch.baddbmm(bias, a, b, beta=0.5, alpha=2)
            with served("baddbmm", families=BLAS):
                res = torch.baddbmm(bias, a, b, beta=0.5, alpha=2)
            ref64 = torch.baddbmm(bias64, a64, b64, beta=0.5, alpha=2)
        else:
            ref_aten = torch.bmm(a, b)
            with served("bmm", families=BLAS):
                res = torch.bmm(a, b)
            ref64 = torch.bmm(a64, b64)
    _check(res, ref64, ref_aten, dtype, k)



@pytest.mark.parametrize("split_epilogue", [False, True])
@pytest.mark.parametrize("bias_kind", ["rows", "cols"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_persistent_programs_over_several_tiles(bias_kind, dtype, split_epilogue):
    # 16x16 tiles leave more output tiles than the Hopper kernel has persistent programs (18 for the
    # interpreter's 16; on a GPU, M grows past two programs an SM), so some programs run two tiles of
    # different matrices; with fused loops (on the interpreter: the code written for them) the epilogue
    # finds each tile again from a counter of its own. A split epilogue writes each tile as two 16x8
    # halves, the second past N = 24 in the last column of tiles (N is no multiple of 16: descriptor stores).
    sms = heuristics.device_facts(torch.empty(0).get_device()).num_sms
    batch, n, k = 3, 24, 48
    m = 40 if flag_gems.device == "cpu" else 16 * (sms // 3 + 1) + 8
    tiles = batch * -(-m // 16) * -(-n // 16)
    a, b = _rand((batch, m, k), dtype), _rand((batch, k, n), dtype, scale=k**-0.5)
    bias = _rand((batch, m, 1) if bias_kind == "rows" else (n,), dtype)
    a64, b64, bias64 = _refs(a, b, bias)
    ref64 = torch.baddbmm(bias64, a64, b64, beta=0.5, alpha=2)
    ref_aten = torch.baddbmm(bias, a, b, beta=0.5, alpha=2)
    sd = bias.expand(batch, m, n).stride()  # 0 along broadcast dimensions
    with mm_module.forced_kernel("tma"):
        for fuse_tiles in (False, True):
            out = torch.empty((batch, m, n), dtype=dtype, device=a.device)
            layout = mm_module.operand_layout(a.get_device(), a, b, batch, m, n, k, a.stride(), b.stride())
            key = mm_module.plan_key(layout, out, dtype, batch, m, n, k, bias, out.stride(), sd)
            config = heuristics.MatmulConfig(16, 16, 16, 2, 4, 2, fuse_tiles=fuse_tiles,
                                             split_epilogue=split_epilogue)
            plan = mm_module.plan_for(key, config)
            assert plan.kind == "tma" and plan.num_programs < tiles
            assert plan.launcher.constexprs["EPILOGUE_N"] == (8 if split_epilogue else 16)
            call = mm_module.layout_call(plan, layout, out, a, b, bias, batch, m, n, k, out.stride(), sd)
            call(out, a, b, bias, 2.0, 0.5)
            _check(out, ref64, ref_aten, dtype, k)


@pytest.mark.parametrize("tma_store", [False, True])
def test_split_epilogue_on_one_matrix(tma_store):
    # addmm's layout (one matrix, a bias per column) with the epilogue in halves: 32x32 tiles over a 48x80
    # output leave a last column of tiles whose right half lies wholly past N.
    m, n, k = 48, 80, 40
    a, b = _rand((m, k), torch.bfloat16), _rand((k, n), torch.bfloat16, scale=k**-0.5)
    bias = _rand((n,), torch.bfloat16)
    a64, b64, bias64 = _refs(a, b, bias)
    ref64 = torch.addmm(bias64, a64, b64, beta=0.5, alpha=2)
    ref_aten = torch.addmm(bias, a, b, beta=0.5, alpha=2)
    sa, sb, sd = (0, *a.stride()), (0, *b.stride()), (0, 0, 1)
    with mm_module.forced_kernel("tma"):
        out = torch.empty((m, n), dtype=torch.bfloat16, device=a.device)
        so = (0, *out.stride())
        layout = mm_module.operand_layout(a.get_device(), a, b, 1, m, n, k, sa, sb)
        key = mm_module.plan_key(layout, out, torch.bfloat16, 1, m, n, k, bias, so, sd)
        config = heuristics.MatmulConfig(32, 32, 16, 8, 4, 2, tma_store=tma_store, fuse_tiles=True,
                                         split_epilogue=True)
        plan = mm_module.plan_for(key, config)
        assert plan.kind == "tma" and plan.launcher.constexprs["C_DESC"] == tma_store
        call = mm_module.layout_call(plan, layout, out, a, b, bias, 1, m, n, k, so, sd)
        call(out, a, b, bias, 2.0, 0.5)
    _check(out, ref64, ref_aten, torch.bfloat16, k)


def test_fused_tile_loop_planning(monkeypatch):
    # As planned for an H100: the option asks Triton to fuse the tile and K loops, unless warp
    # specialisation pipelines them its own way.
    key = ("tma", torch.bfloat16, False, 0, 4, 2048, 2048, 256, True, True, False, "per_column", 2)
    fused = heuristics.MatmulConfig(128, 128, 64, 8, 4, 3, fuse_tiles=True)
    monkeypatch.setattr(device, "interpreter", False)
    monkeypatch.setattr(heuristics, "device_facts", lambda dev: heuristics.DeviceFacts(hopper=True, num_sms=132))
    plan = mm_module.plan_for(key, fused)
    assert plan.kind == "tma" and plan.launcher.constexprs["FLATTEN"]
    assert plan.num_programs == 2 * 132  # two programs a SM over 4 x 16 x 16 tiles
    assert not mm_module.plan_for(key, dataclasses.replace(fused, fuse_tiles=False)).launcher.constexprs["FLATTEN"]
    with_ws = dataclasses.replace(fused, warp_specialize=True)
    assert not mm_module.plan_for(key, with_ws).launcher.constexprs["FLATTEN"]
    # Descriptor stores of 128x256 bf16 tiles stage 64 KB, which leaves room for 3 operand stages; stored in
    # halves they stage 32 KB and keep 4.
    desc_key = key[:10] + (True,) + key[11:]  # an output that takes descriptor stores
    stored = heuristics.MatmulConfig(128, 256, 64, 8, 8, 4, tma_store=True, fuse_tiles=True)
    whole = mm_module.plan_for(desc_key, stored).launcher
    halves = mm_module.plan_for(desc_key, dataclasses.replace(stored, split_epilogue=True)).launcher
    assert (whole.options["num_stages"], whole.constexprs["EPILOGUE_N"]) == (3, 256)
    assert (halves.options["num_stages"], halves.constexprs["EPILOGUE_N"]) == (4, 128)

def test_split_k_is_deterministic():
    # Skinny products split K; the slices are summed in a fixed order, so repeated calls agree bitwise.
    a, b = _rand((16, 2048), torch.float32), _rand((2048, 256), torch.float32)
    with served("mm", families=BLAS):
        first = torch.mm(a, b)
        second = torch.mm(a, b)
    assert torch.equal(first, second)


def _off_alignment(t):
    """``t``'s values in a tensor of the same strides one element past a 16-byte aligned address."""
    flat = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    moved = flat[1:].view(t.shape)
    moved.copy_(t)
    assert moved.data_ptr() % 16 != 0
    return moved


# Calls the op caches plan once: a tiny product, a split-K product, a decoding step's F.linear (one row
# times a transposed weight: the matrix-vector kernel, K split), a batched one, and addmm / baddbmm with
# alpha = 0 (no product at all) beside alpha != 0.
CACHED_CALLS = {
    "mm": ("mm", lambda x, y, z: torch.mm(x, y), (16, 16), (16, 16), None),
    "mm_split": ("mm", lambda x, y, z: torch.mm(x, y), (16, 2048), (2048, 128), None),
    "linear": ("mm", lambda x, y, z: torch.nn.functional.linear(x, y), (1, 2048), (48, 2048), None),
    "addmm_alpha0": ("addmm", lambda x, y, z: torch.addmm(z, x, y, beta=0.5, alpha=0), (24, 56), (56, 40), (40,)),
    "addmm": ("addmm", lambda x, y, z: torch.addmm(z, x, y, beta=0.5, alpha=2), (24, 56), (56, 40), (40,)),
    "bmm": ("bmm", lambda x, y, z: torch.bmm(x, y), (3, 20, 30), (3, 30, 10), None),
    "baddbmm": ("baddbmm", lambda x, y, z: torch.baddbmm(z, x, y, alpha=-1), (3, 20, 30), (3, 30, 10), (10,)),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cached_calls_alternating_shapes_and_alignment(dtype):
    # Every call after the first of its key skips planning; keys must tell apart what the kernels were
    # planned and compiled for: here shapes, alpha = 0 and operands off 16-byte alignment alternate.
    cases = {name: (op, fn, _rand(x, dtype), _rand(y, dtype), None if z is None else _rand(z, dtype))
             for name, (op, fn, x, y, z) in CACHED_CALLS.items()}
    held = []
    for _ in range(2):
        for op, fn, x, y, z in cases.values():
            x64, y64 = _refs(x, y)
            ref = fn(x64, y64, None if z is None else to_reference(z, upcast=True))
            for aligned in (True, False):
                args = (x, y, z) if aligned else [None if t is None else _off_alignment(t) for t in (x, y, z)]
                with served(op, families=BLAS):
                    res = fn(*args)
                _check(res, ref, ref, dtype, x.shape[-1])
        held.append(set(mm_module.op_calls))
    assert held[1] == held[0], "the second round found every call planned"
    mm_keys = [key for key in held[1] if key[0] == "mm" and key[1] is dtype]
    assert len(mm_keys) >= 6 and {key[-1] for key in mm_keys} == {True, False}


@pytest.mark.parametrize("op", ["mm", "addmm"])
def test_calls_that_copy_an_operand_are_cached(op, monkeypatch):
    # Rows that are not 16-byte aligned (K = 37 in bf16) are copied for the Hopper kernel at each call; the
    # call doing so is kept like any other, so a repeated call neither plans again nor reuses stale data.
    monkeypatch.setattr(mm_module, "_ALIGN_COPY_MIN_WORK", 0)
    m, n, k = 24, 40, 37
    bias = _rand((n,), torch.bfloat16)
    fn = (lambda x, y: torch.mm(x, y)) if op == "mm" else (lambda x, y: torch.addmm(bias, x, y))
    with mm_module.forced_kernel("tma"):
        for _ in range(2):
            a, b = _rand((m, k), torch.bfloat16), _rand((k, n), torch.bfloat16, scale=k**-0.5)
            ref = fn(a, b)
            with served(op, families=BLAS):
                res = fn(a, b)
            _check(res, ref, ref, torch.bfloat16, k)
            keys = [key for key in mm_module.op_calls if key[0] == op]
            assert len(keys) == 1, "the copying call is cached under one key"
            call = mm_module.op_calls[keys[0]][3]
            assert call.prepare is not None


def test_bias_layouts():
    assert mm_module.bias_layout(None, (0, 0, 1)) == "none"
    assert mm_module.bias_layout(torch.empty(0), (0, 0, 1)) == "per_column"
    assert mm_module.bias_layout(torch.empty(0), (0, 1, 0)) == "per_row"
    assert mm_module.bias_layout(torch.empty(0), (5, 0, 0)) == "scalar"
    assert mm_module.bias_layout(torch.empty(0), (0, 40, 1)) == "full"


@pytest.mark.parametrize("m, n, k", [(0, 5, 3), (4, 0, 3), (4, 5, 0), (0, 0, 0)])
def test_mm_empty_and_k0(m, n, k):
    a, b = _rand((m, k), torch.float32), _rand((k, n), torch.float32)
    with served("mm", families=BLAS):
        res = torch.mm(a, b)
    assert res.shape == (m, n)
    assert_equal(res, torch.zeros(m, n, device=DEVICE))


def test_mm_out():
    a, b = _rand((24, 40), torch.float32), _rand((40, 32), torch.float32)
    ref = torch.mm(a, b)
    out = torch.empty(24, 32, device=DEVICE)
    with served("mm.out", families=BLAS):
        res = torch.mm(a, b, out=out)
    assert res is out
    assert_close(out, ref, torch.float32, reduce_dim=40)
    # A transposed view as out: written through its strides.
    out_t = torch.empty(32, 24, device=DEVICE).t()
    with served("mm.out", families=BLAS):
        torch.mm(a, b, out=out_t)
    assert_close(out_t, ref, torch.float32, reduce_dim=40)
    # An empty out is resized silently, a full one with ATen's warning.
    empty = torch.empty(0, device=DEVICE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with served("mm.out", families=BLAS):
            torch.mm(a, b, out=empty)
    assert not [w for w in caught if "resized" in str(w.message)]
    assert_close(empty, ref, torch.float32, reduce_dim=40)
    wrong = torch.empty(3, 3, device=DEVICE)
    with pytest.warns(UserWarning, match="resized"), served("mm.out", families=BLAS):
        torch.mm(a, b, out=wrong)
    assert_close(wrong, ref, torch.float32, reduce_dim=40)


def test_mm_out_aliasing_an_input():
    a, b = _rand((32, 32), torch.float32), _rand((32, 32), torch.float32)
    ref = torch.mm(a, b)
    with served("mm.out", families=BLAS):
        torch.mm(a, b, out=a)
    assert_close(a, ref, torch.float32, reduce_dim=32)


# addmm -----------------------------------------------------------------------------------------------

BIAS_SHAPES = [(), (1,), (40,), (1, 40), (24, 1), (24, 40)]
SCALARS = [(1, 1), (0.5, 2.0), (0, 1.5), (2, 0), (3, -2)]  # (beta, alpha): floats and ints, zeros


@pytest.mark.parametrize("bias_shape", BIAS_SHAPES if not QUICK else BIAS_SHAPES[::2])
@pytest.mark.parametrize("beta, alpha", SCALARS)
@pytest.mark.parametrize("dtype", FLOATS)
def test_addmm(bias_shape, beta, alpha, dtype):
    m, n, k = 24, 40, 56
    a, b, bias = _rand((m, k), dtype), _rand((k, n), dtype, "cols"), _rand(bias_shape, dtype)
    if beta == 0:
        bias.fill_(float("nan"))  # ignored entirely when beta is 0
    a64, b64, bias64 = _refs(a, b, bias)
    ref_aten = torch.addmm(bias, a, b, beta=beta, alpha=alpha)
    ref64 = torch.addmm(bias64, a64, b64, beta=beta, alpha=alpha)
    with served("addmm", families=BLAS):
        res = torch.addmm(bias, a, b, beta=beta, alpha=alpha)
    _check(res, ref64, ref_aten, dtype, k)


@pytest.mark.parametrize("beta, alpha", [(1, 1), (0, 2), (0.5, 0)])
def test_addmm_out_and_inplace(beta, alpha):
    m, n, k = 24, 40, 56
    a, b, bias = _rand((m, k), torch.float32), _rand((k, n), torch.float32), _rand((m, n), torch.float32)
    ref = torch.addmm(bias, a, b, beta=beta, alpha=alpha)
    out = torch.empty(m, n, device=DEVICE)
    inplace = bias.clone()
    with served("addmm.out", "addmm_", families=BLAS):
        torch.addmm(bias, a, b, beta=beta, alpha=alpha, out=out)
        res = inplace.addmm_(a, b, beta=beta, alpha=alpha)
    assert res is inplace
    assert_close(out, ref, torch.float32, reduce_dim=k)
    assert_close(inplace, ref, torch.float32, reduce_dim=k)


@pytest.mark.parametrize("beta", [0, 1, 2.5])
def test_addmm_k0(beta):
    # K = 0: the product is empty; the result is beta * input, or zeros (NaN ignored) when beta is 0.
    bias = _rand((5, 6), torch.float32)
    if beta == 0:
        bias[0, 0] = float("nan")
    a, b = _rand((5, 0), torch.float32), _rand((0, 6), torch.float32)
    ref = torch.addmm(bias, a, b, beta=beta, alpha=float("nan"))
    with served("addmm", families=BLAS):
        res = torch.addmm(bias, a, b, beta=beta, alpha=float("nan"))
    assert_equal(res, ref)


def test_alpha_zero_ignores_nan_in_operands():
    # As in BLAS, alpha = 0 leaves the operands unread: NaN in them does not reach the result.
    bias, a, b = _rand((8, 12), torch.float32), _rand((8, 16), torch.float32), _rand((16, 12), torch.float32)
    b[3, 4] = float("nan")
    ref = torch.addmm(bias, a, b, alpha=0)
    with served("addmm", families=BLAS):
        res = torch.addmm(bias, a, b, alpha=0)
    assert_equal(res, ref)


# tf32 ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("allow_tf32", [False, True])
def test_fp32_precision_follows_allow_tf32(allow_tf32):
    # tf32 rounds operands to 10 mantissa bits on the GPU; the interpreter computes full fp32 either way,
    # so there this checks only that the tf32 path runs.
    # B column-major (K-major, as nn.Linear's weight): a Hopper GPU computes tf32 products of that order.
    m, n, k = (256, 256, 1024) if GPU else (32, 48, 256)
    a, b = _rand((m, k), torch.float32), _rand((k, n), torch.float32, "cols")
    a64, b64 = _refs(a, b)
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    try:
        ref_aten = torch.mm(a, b)
        with served("mm", families=BLAS):
            res = torch.mm(a, b)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    atol = 5e-3 if allow_tf32 else 1e-4
    _check(res, torch.mm(a64, b64), ref_aten, torch.float32, k, atol=atol)


@pytest.mark.parametrize("op", ["mm", "bmm"])
@pytest.mark.parametrize("a_layout, b_layout", [("rows", "rows"), ("cols", "cols"), ("rows", "cols")])
def test_tf32_products_hopper_cannot_take_go_to_aten(op, a_layout, b_layout, monkeypatch):
    # Hopper's tf32 instructions take K-major operands only: a large tf32 product with a row-major B (or a
    # column-major A) goes to ATen, where copying it K-major and our kernel lost to cuBLAS; K-major
    # operands stay ours. The size threshold is lowered so that a small product counts as large.
    from flag_gems.testing import CallCounter

    monkeypatch.setattr(mm_module, "_ALIGN_COPY_MIN_WORK", 0)
    m, n, k = 48, 40, 64
    lead = (3,) if op == "bmm" else ()
    a = _rand((*lead, m, k), torch.float32, a_layout)
    b = _rand((*lead, k, n), torch.float32, b_layout, scale=k**-0.5)
    fn = getattr(torch, op)
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with mm_module.forced_kernel("tma"):
            ref_aten = fn(a, b)
            with CallCounter() as counter, flag_gems.use_gems(families=BLAS, record=True):
                res = fn(a, b)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    ours = (a_layout, b_layout) == ("rows", "cols")
    assert counter.ran_on_gems(op) == ours
    a64, b64 = _refs(a, b)
    _check(res, fn(a64, b64), ref_aten, torch.float32, k, atol=5e-3)


# fp32 products split into bf16 pieces ----------------------------------------------------------------

@pytest.fixture
def operands_split(monkeypatch):
    """The shapes of the operands split into bf16 pieces, in order."""
    from gems_blas import split_fp32

    split = []
    call = split_fp32.SplitOperand.__call__

    def counted(self, t):
        split.append(tuple(t.shape))
        return call(self, t)

    monkeypatch.setattr(split_fp32.SplitOperand, "__call__", counted)
    mm_module.clear_caches()
    yield split
    mm_module.clear_caches()


@pytest.fixture
def split_everywhere(operands_split, monkeypatch):
    """Small fp32 products take the split path on any device; yields the list of operands split."""
    from gems_blas import split_fp32

    monkeypatch.setattr(split_fp32, "SETTINGS", split_fp32.SplitSettings(min_work=0, min_side=1, everywhere=True))
    mm_module.clear_caches()
    return operands_split


@pytest.mark.skipif(not GPU, reason="the split path's sizes and the Hopper kernel's promotion need the GPU")
def test_split_fp32_large_product_as_shipped(operands_split):
    # As shipped, a large fp32 product on Hopper splits, and lands at least as close to the exact result as
    # an fp32 dot product's rounding allows (cuBLAS's fp32 products stay within the same bound here).
    n = 2048
    a = _rand((n, n), torch.float32) * torch.exp2(torch.randint(-20, 20, (n, n), device=DEVICE).float())
    b = _rand((n, n), torch.float32, "cols", scale=n**-0.5)
    with served("mm", families=BLAS):
        res = torch.mm(a, b)
    assert operands_split == [(n, n), (n, n)]
    a64, b64 = _refs(a, b)
    _within_fp32_dot_error(res, a64 @ b64, a64.abs() @ b64.abs())


def _within_fp32_dot_error(res, ref64, magnitude64):
    # Each output within 2^-21 of the sum of its terms' magnitudes: a dot product computed in fp32 stays
    # within a few units of 2^-24 of that sum at these lengths; two bf16 pieces an operand would be off by
    # 2^-16 of it.
    bound = 2.0**-21 * magnitude64 + 1e-30
    excess = ((res.to(torch.float64) - ref64).abs() / bound).max()
    assert excess <= 1, f"error {float(excess):.2f} times the bound"


@pytest.mark.parametrize("terms", [6, 9])
@pytest.mark.parametrize("kernel", ["tma", "tiled"])
@pytest.mark.parametrize("a_layout, b_layout", [("rows", "rows"), ("cols", "cols"), ("rows", "cols")])
def test_split_fp32_products(terms, kernel, a_layout, b_layout, split_everywhere, monkeypatch):
    from gems_blas import split_fp32

    monkeypatch.setattr(split_fp32.SETTINGS, "terms", terms)
    m, n, k = 33, 40, 77
    # values spread over many binades, so that all 24 bits of each element count
    a = _rand((m, k), torch.float32, a_layout) * torch.exp2(torch.randint(-20, 20, (m, k), device=DEVICE))
    b = _rand((k, n), torch.float32, b_layout, scale=k**-0.5)
    bias = _rand((n,), torch.float32)
    a64, b64, bias64 = _refs(a, b, bias)
    ref_aten = torch.addmm(bias, a, b, beta=0.5, alpha=2)
    with mm_module.forced_kernel(kernel), served("mm", "addmm", families=BLAS):
        res = torch.mm(a, b)
        res_addmm = torch.addmm(bias, a, b, beta=0.5, alpha=2)
    assert split_everywhere == [(m, k), (k, n)] * 2
    magnitude = a64.abs() @ b64.abs()
    _within_fp32_dot_error(res, a64 @ b64, magnitude)
    ref64 = torch.addmm(bias64, a64, b64, beta=0.5, alpha=2)
    _within_fp32_dot_error(res_addmm, ref64, 2 * magnitude + 0.5 * bias64.abs())
    # and as close to ATen as ATen is to the exact result
    _within_fp32_dot_error(ref_aten.to(res.device), ref64, 2 * magnitude + 0.5 * bias64.abs())


def test_split_fp32_batched(split_everywhere):
    a, b = _rand((3, 24, 40), torch.float32, "cols"), _rand((3, 40, 17), torch.float32, scale=40**-0.5)
    a64, b64 = _refs(a, b)
    with served("bmm", families=BLAS):
        res = torch.bmm(a, b)
    assert split_everywhere == [(3, 24, 40), (3, 40, 17)]
    _within_fp32_dot_error(res, torch.bmm(a64, b64), torch.bmm(a64.abs(), b64.abs()))


def test_split_fp32_pieces_sum_to_the_operand(split_everywhere):
    from gems_blas import split_fp32

    x = _rand((5, 70), torch.float32) * torch.exp2(torch.randint(-100, 100, (5, 70), device=DEVICE).float())
    x[0, :4] = torch.tensor([3.4e38, -3.4e38, -0.0, 2.0**-100])
    x[1, :3] = torch.tensor([float("inf"), -float("inf"), float("nan")])
    split = split_fp32.SplitOperand(1, 5, 70, (0, 70, 1), (0, 1, 2))
    pieces = split(x)[0, :, :210].to(torch.float64)
    total = pieces[:, :70] + pieces[:, 70:140] + pieces[:, 140:]
    assert_equal(total, x.to(torch.float64), equal_nan=True)


def test_split_fp32_infinite_operands_repaired(split_everywhere):
    # Zero pieces meeting an infinite one make NaN (0 * inf) where fp32 gives inf: those tiles are repaired.
    m, n, k = 100, 90, 48
    a, b = _rand((m, k), torch.float32), _rand((k, n), torch.float32)
    a[3, 5] = float("inf")
    b[7, 80] = -float("inf")
    a[70, 9] = float("nan")
    bias = _rand((m, n), torch.float32)
    ref = torch.addmm(bias, a, b)
    with served("addmm", families=BLAS):
        res = torch.addmm(bias, a, b)
    assert split_everywhere == [(m, k), (k, n)]
    assert torch.equal(res.isnan(), ref.isnan()) and torch.equal(res.isinf(), ref.isinf())
    finite = ref.isfinite()
    assert_close(res[finite], ref[finite], torch.float32, reduce_dim=k)


def test_split_fp32_leaves_in_place_bias_and_tf32_alone(split_everywhere):
    a, b, bias = _rand((24, 32), torch.float32), _rand((32, 16), torch.float32), _rand((24, 16), torch.float32)
    expected = torch.addmm(bias, a, b)
    with served("addmm_", families=BLAS):
        bias.addmm_(a, b)
    assert split_everywhere == []
    assert_close(bias, expected, torch.float32, reduce_dim=32)
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with served("mm", families=BLAS):
            torch.mm(a, b)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    assert split_everywhere == []


# bmm, baddbmm, addbmm --------------------------------------------------------------------------------

BMM_SHAPES = [(1, 40, 30, 50), (5, 33, 17, 65), (4, 1, 24, 32), (3, 24, 1, 32)]
if GPU:
    BMM_SHAPES += [(32, 256, 256, 256), (64, 128, 64, 128)]


@pytest.mark.parametrize("batch, m, n, k", BMM_SHAPES)
@pytest.mark.parametrize("layout", ["rows", "cols"])
@pytest.mark.parametrize("dtype", FLOATS)
def test_bmm(batch, m, n, k, layout, dtype):
    a, b = _rand((batch, m, k), dtype, layout), _rand((batch, k, n), dtype, scale=k**-0.5)
    a64, b64 = _refs(a, b)
    ref_aten = torch.bmm(a, b)
    with served("bmm", families=BLAS):
        res = torch.bmm(a, b)
    _check(res, torch.bmm(a64, b64), ref_aten, dtype, k)


@pytest.mark.parametrize("bias_shape", [(17,), (1, 33, 17), (5, 1, 17), (5, 33, 17)])
@pytest.mark.parametrize("beta, alpha", SCALARS if not QUICK else SCALARS[1:3])
def test_baddbmm(bias_shape, beta, alpha):
    dtype = torch.float32
    batch, m, n, k = 5, 33, 17, 40
    a, b, bias = _rand((batch, m, k), dtype), _rand((batch, k, n), dtype, "cols"), _rand(bias_shape, dtype)
    if beta == 0:
        bias.fill_(float("nan"))
    a64, b64, bias64 = _refs(a, b, bias)
    ref_aten = torch.baddbmm(bias, a, b, beta=beta, alpha=alpha)
    with served("baddbmm", families=BLAS):
        res = torch.baddbmm(bias, a, b, beta=beta, alpha=alpha)
    _check(res, torch.baddbmm(bias64, a64, b64, beta=beta, alpha=alpha), ref_aten, dtype, k)


def test_bmm_and_baddbmm_out_and_inplace():
    a, b, bias = _rand((3, 20, 30), torch.float32), _rand((3, 30, 10), torch.float32), _rand((3, 20, 10),
                                                                                          torch.float32)
    out, out2, inplace = torch.empty(3, 20, 10, device=DEVICE), torch.empty(0, device=DEVICE), bias.clone()
    with served("bmm.out", "baddbmm.out", "baddbmm_", families=BLAS):
        torch.bmm(a, b, out=out)
        torch.baddbmm(bias, a, b, beta=0.5, out=out2)
        inplace.baddbmm_(a, b, alpha=2)
    assert_close(out, torch.bmm(a, b), torch.float32, reduce_dim=30)
    assert_close(out2, torch.baddbmm(bias, a, b, beta=0.5), torch.float32, reduce_dim=30)
    assert_close(inplace, torch.baddbmm(bias, a, b, alpha=2), torch.float32, reduce_dim=30)


@pytest.mark.parametrize("batch", [0, 1, 4])
@pytest.mark.parametrize("beta, alpha", [(1, 1), (0, 0.5), (2, -1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_addbmm(batch, beta, alpha, dtype):
    m, n, k = 24, 20, 36
    a, b, bias = _rand((batch, m, k), dtype), _rand((batch, k, n), dtype), _rand((n,), dtype)
    if beta == 0:
        bias.fill_(float("nan"))
    a64, b64, bias64 = _refs(a, b, bias)
    ref_aten = torch.addbmm(bias, a, b, beta=beta, alpha=alpha)
    with served("addbmm", families=BLAS):
        res = torch.addbmm(bias, a, b, beta=beta, alpha=alpha)
    _check(res, torch.addbmm(bias64, a64, b64, beta=beta, alpha=alpha), ref_aten, dtype, max(batch * k, 1))


def test_addbmm_out_and_inplace():
    a, b, bias = _rand((3, 20, 30), torch.float32), _rand((3, 30, 10), torch.float32), _rand((20, 10),
                                                                                          torch.float32)
    out, inplace = torch.empty(20, 10, device=DEVICE), bias.clone()
    with served("addbmm.out", "addbmm_", families=BLAS):
        torch.addbmm(bias, a, b, out=out)
        inplace.addbmm_(a, b, beta=2)
    assert_close(out, torch.addbmm(bias, a, b), torch.float32, reduce_dim=90)
    assert_close(inplace, torch.addbmm(bias, a, b, beta=2), torch.float32, reduce_dim=90)


# mv, addmv -------------------------------------------------------------------------------------------

MV_SHAPES = [(100, 300), (1, 50), (300, 1), (64, 4096), (3, 5)]
if GPU:
    MV_SHAPES += [(4096, 4096), (16, 65536)]


@pytest.mark.parametrize("m, k", MV_SHAPES)
@pytest.mark.parametrize("layout", ["rows", "cols"])
@pytest.mark.parametrize("dtype", FLOATS)
def test_mv(m, k, layout, dtype):
    a, x = _rand((m, k), dtype, layout), _rand((k * 2,), dtype)[::2]
    a64, x64 = _refs(a, x)
    ref_aten = torch.mv(a, x)
    with served("mv", families=BLAS):
        res = torch.mv(a, x)
    _check(res, torch.mv(a64, x64), ref_aten, dtype, k)


@pytest.mark.parametrize("bias_shape", [(), (1,), (70,)])
@pytest.mark.parametrize("beta, alpha", SCALARS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_addmv(bias_shape, beta, alpha, dtype):
    m, k = 70, 90
    a, x, bias = _rand((m, k), dtype), _rand((k,), dtype), _rand(bias_shape, dtype)
    if beta == 0:
        bias.fill_(float("nan"))
    a64, x64, bias64 = _refs(a, x, bias)
    ref64 = torch.addmv(bias64, a64, x64, beta=beta, alpha=alpha)
    ref_aten = torch.addmv(bias, a, x, beta=beta, alpha=alpha)
    if alpha == 0 and dtype is not torch.float32 and not GPU:
        ref_aten = ref64  # ATen's CPU kernel for half types returns the input unscaled when alpha is 0
    with served("addmv", families=BLAS):
        res = torch.addmv(bias, a, x, beta=beta, alpha=alpha)
    _check(res, ref64, ref_aten, dtype, k)


@pytest.mark.parametrize("rule", [heuristics.GemvRule(32768, 512, 8, 2, 2), heuristics.GemvRule(16384, 256, 4, 3, 8)])
@pytest.mark.parametrize("bias", [False, True])
def test_gemv_rules(rule, bias):
    # The tuners' rules: steps pipelined through shared memory (num_stages > 1) and more programs per SM,
    # which here splits K.
    m, k = 70, 600
    a, x, y = _rand((m, k), torch.bfloat16), _rand((k,), torch.bfloat16), torch.empty(m, dtype=torch.bfloat16)
    d = _rand((m,), torch.bfloat16) if bias else None
    call = gemv_module.gemv_call(y, a, x, d, False, m, k, k, 1, 1, 1, 1 if bias else 0, rule=rule)
    call(y, a, x, d, 2.0, 0.5 if bias else 0.0)
    ref64 = 2.0 * torch.mv(*_refs(a, x))
    if bias:
        ref64 += 0.5 * to_reference(d, upcast=True)
    _check(y, ref64, ref64, torch.bfloat16, k)


def test_gemv_splits_a_column_major_matrix_only_below_its_own_threshold(monkeypatch):
    # x @ W with W row-major reaches the matrix-vector kernel as a column-major matrix: its K is split only
    # when the row blocks give fewer than column_programs_per_sm programs an SM (partials and a finish kernel
    # cost more than the programs they add); a row-major matrix keeps programs_per_sm.
    from flag_gems.runtime import device

    monkeypatch.setattr(device, "interpreter", False)
    hopper = heuristics.DeviceFacts(True, 132)
    rule = heuristics.GemvRule(16384)
    unsplit = heuristics.gemv_config(4096, 4096, False, 2, hopper, rule)  # 128 blocks of 32 rows
    assert (unsplit.split_k, unsplit.block_k) == (1, 512)  # fewer programs than SMs: steps of twice the bytes
    assert heuristics.gemv_config(8192, 4096, False, 2, hopper, rule).block_k == 256
    assert heuristics.gemv_config(1024, 4096, False, 2, hopper, rule).split_k == 2  # 32 blocks: below 66
    assert heuristics.gemv_config(4096, 4096, True, 2, hopper, rule).split_k > 1
    old = heuristics.GemvRule(16384, column_programs_per_sm=2)
    assert heuristics.gemv_config(4096, 4096, False, 2, hopper, old).split_k == 2


def test_mv_addmv_out_inplace_and_empty():
    a, x, bias = _rand((30, 40), torch.float32), _rand((40,), torch.float32), _rand((30,), torch.float32)
    out, out2, inplace = torch.empty(30, device=DEVICE), torch.empty(0, device=DEVICE), bias.clone()
    with served("mv.out", "addmv.out", "addmv_", families=BLAS):
        torch.mv(a, x, out=out)
        torch.addmv(bias, a, x, alpha=3, out=out2)
        inplace.addmv_(a, x, beta=0.5)
        empty_k = torch.mv(_rand((6, 0), torch.float32), _rand((0,), torch.float32))
        empty_m = torch.mv(_rand((0, 6), torch.float32), _rand((6,), torch.float32))
    assert_close(out, torch.mv(a, x), torch.float32, reduce_dim=40)
    assert_close(out2, torch.addmv(bias, a, x, alpha=3), torch.float32, reduce_dim=40)
    assert_close(inplace, torch.addmv(bias, a, x, beta=0.5), torch.float32, reduce_dim=40)
    assert_equal(empty_k, torch.zeros(6, device=DEVICE))
    assert empty_m.shape == (0,)


# dot, vdot -------------------------------------------------------------------------------------------

DOT_LENGTHS = [0, 1, 1000, 8192, 8193, 70000] if not GPU else [0, 1, 1000, 8192, 8193, 70000, 1 << 22]


@pytest.mark.parametrize("n", DOT_LENGTHS)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("op", ["dot", "vdot"])
def test_dot(n, dtype, op):
    x, y = _rand((n,), dtype), _rand((2 * n,), dtype)[::2]
    x64, y64 = _refs(x, y)
    fn = getattr(torch, op)
    ref_aten = fn(x, y)
    with served(op, families=BLAS):
        res = fn(x, y)
    _check(res, fn(x64, y64), ref_aten, dtype, max(n, 1))


def test_dot_out():
    x, y = _rand((500,), torch.float32), _rand((500,), torch.float32)
    out, out2 = torch.empty((), device=DEVICE), torch.empty(0, device=DEVICE)
    with served("dot.out", "vdot.out", families=BLAS):
        torch.dot(x, y, out=out)
        torch.vdot(x, y, out=out2)
    assert_close(out, torch.dot(x, y), torch.float32, reduce_dim=500)
    assert_close(out2, torch.dot(x, y), torch.float32, reduce_dim=500)


# addr ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bias_shape", [(), (9,), (7, 1), (7, 9)])
@pytest.mark.parametrize("beta, alpha", SCALARS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_addr(bias_shape, beta, alpha, dtype):
    v1, v2, bias = _rand((7,), dtype), _rand((9,), dtype), _rand(bias_shape, dtype)
    if beta == 0:
        bias.fill_(float("nan"))
    v1_64, v2_64, bias64 = _refs(v1, v2, bias)
    ref_aten = torch.addr(bias, v1, v2, beta=beta, alpha=alpha)
    with served("addr", families=BLAS):
        res = torch.addr(bias, v1, v2, beta=beta, alpha=alpha)
    _check(res, torch.addr(bias64, v1_64, v2_64, beta=beta, alpha=alpha), ref_aten, dtype, 1)


def test_addr_promotion_out_and_inplace():
    bias, v1, v2 = _rand((5, 4), torch.float32), _rand((5,), torch.float16), _rand((4,), torch.float16)
    ref = torch.addr(bias, v1, v2, alpha=2)
    out, inplace = torch.empty(0, device=DEVICE), bias.clone()
    with served("addr", "addr.out", "addr_", families=BLAS):
        res = torch.addr(bias, v1, v2, alpha=2)
        torch.addr(bias, v1, v2, alpha=2, out=out)
        inplace.addr_(v1, v2, alpha=2)
    assert res.dtype == ref.dtype == torch.float32
    for r in (res, out, inplace):
        assert_close(r, ref, torch.float32)


# errors and fallbacks --------------------------------------------------------------------------------

BAD_CALLS = {
    "mm shapes": lambda: torch.mm(torch.ones(2, 3, device=DEVICE), torch.ones(4, 5, device=DEVICE)),
    "mm dtypes": lambda: torch.mm(torch.ones(2, 3, device=DEVICE), torch.ones(3, 5, device=DEVICE).half()),
    "mm dims": lambda: torch.mm(torch.ones(2, 3, device=DEVICE), torch.ones(3, device=DEVICE)),
    "addmm bias": lambda: torch.addmm(torch.ones(3, device=DEVICE), torch.ones(2, 4, device=DEVICE),
                                      torch.ones(4, 5, device=DEVICE)),
    "bmm batch": lambda: torch.bmm(torch.ones(2, 3, 4, device=DEVICE), torch.ones(3, 4, 5, device=DEVICE)),
    "mv shapes": lambda: torch.mv(torch.ones(2, 3, device=DEVICE), torch.ones(4, device=DEVICE)),
    "dot sizes": lambda: torch.dot(torch.ones(3, device=DEVICE), torch.ones(4, device=DEVICE)),
    "dot dtypes": lambda: torch.dot(torch.ones(3, device=DEVICE), torch.ones(3, device=DEVICE).half()),
    "addr dims": lambda: torch.addr(torch.ones(2, 3, device=DEVICE), torch.ones(2, 1, device=DEVICE),
                                    torch.ones(3, device=DEVICE)),
    "out dtype": lambda: torch.mm(torch.ones(2, 3, device=DEVICE), torch.ones(3, 5, device=DEVICE),
                                  out=torch.empty(2, 5, dtype=torch.float16, device=DEVICE)),
}


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_errors_are_atens(name):
    with pytest.raises(RuntimeError) as aten_error:
        BAD_CALLS[name]()
    with served(families=BLAS), pytest.raises(RuntimeError) as gems_error:
        BAD_CALLS[name]()
    assert str(gems_error.value) == str(aten_error.value)


# Integer products exist only on CPU (ATen has no CUDA kernel for them).
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex64] + ([] if GPU else [torch.int32]))
def test_other_dtypes_go_to_aten(dtype):
    a = torch.randn(6, 5, device=DEVICE).to(dtype)
    b = torch.randn(5, 4, device=DEVICE).to(dtype)
    x = torch.randn(5, device=DEVICE).to(dtype)
    ref_mm, ref_mv = torch.mm(a, b), torch.mv(a, x)
    with served(families=BLAS) as counter:
        res_mm, res_mv = torch.mm(a, b), torch.mv(a, x)
    assert counter.fallbacks["mm"] == 1 and counter.fallbacks["mv"] == 1
    assert_equal(res_mm, ref_mm)
    assert_equal(res_mv, ref_mv)


# gradients -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gradients_through_autograd(dtype):
    a, b = _rand((12, 20), dtype).requires_grad_(), _rand((20, 16), dtype).requires_grad_()
    bias = _rand((16,), dtype).requires_grad_()
    p, q = _rand((3, 12, 20), dtype).requires_grad_(), _rand((3, 20, 8), dtype).requires_grad_()
    leaves = [a, b, bias, p, q]
    refs = [to_reference(t, upcast=True) for t in leaves]
    grad_mm, grad_addmm, grad_bmm = _rand((12, 16), dtype), _rand((12, 16), dtype), _rand((3, 12, 8), dtype)

    def run(a, b, bias, p, q):
        torch.mm(a, b).backward(grad_mm.to(a.dtype))
        torch.addmm(bias, a, b, beta=0.5).backward(grad_addmm.to(a.dtype))
        torch.bmm(p, q).backward(grad_bmm.to(p.dtype))

    run(*refs)
    with served("mm", "addmm", "bmm", families=BLAS):
        run(*leaves)
    for leaf, ref in zip(leaves, refs):
        assert leaf.grad.dtype == dtype and leaf.grad.shape == leaf.shape
        # Gradients of a and b add two products rounded to the dtype: within its resolution of the largest.
        atol = max(1e-4, RESOLUTION[dtype] * float(ref.grad.abs().max()))
        assert_close(leaf.grad, ref.grad, dtype, atol=atol)


# tuning support ----------------------------------------------------------------------------------------

def test_heuristics_pick_split_k_for_skinny_shapes():
    facts = heuristics.DeviceFacts(hopper=True, num_sms=132)
    assert heuristics.split_for(1, 16, 4096, 14336, 16, 128, 128, 132) > 1
    assert heuristics.split_for(1, 4096, 4096, 4096, 128, 256, 64, 132) == 1
    assert heuristics.split_for(8, 16, 4096, 14336, 16, 128, 128, 132) == 1
    config = heuristics.matmul_config(1, 100, 300, 77, "f16", facts)
    assert heuristics.MatmulConfig.from_json(config.to_json()) == config


def test_config_options_round_trip_through_the_table_form():
    config = heuristics.MatmulConfig(128, 256, 64, 8, 4, 3, 1, tma_store=True, warp_specialize=True)
    assert config.to_json() == [128, 256, 64, 8, 4, 3, 1, "tma_store", "warp_specialize"]
    fused = heuristics.MatmulConfig.from_json([128, 256, 64, 8, 8, 4, 1, "fuse_tiles", "tma_store"])
    assert fused == heuristics.MatmulConfig(128, 256, 64, 8, 8, 4, 1, tma_store=True, fuse_tiles=True)
    assert fused.label() == "128x256x64 w8 s4 tma_store fuse_tiles"
    halves = heuristics.MatmulConfig.from_json([128, 256, 64, 8, 8, 4, 1, "split_epilogue", "fuse_tiles"])
    assert halves.to_json() == [128, 256, 64, 8, 8, 4, 1, "fuse_tiles", "split_epilogue"]
    assert halves.label() == "128x256x64 w8 s4 fuse_tiles split_epilogue"
    assert heuristics.MatmulConfig.from_json(config.to_json()) == config
    assert heuristics.MatmulConfig.from_json([128, 256, 64, 8, 8, 3, 1]).to_json() == [128, 256, 64, 8, 8, 3, 1]
    with pytest.raises(ValueError, match="unknown"):
        heuristics.MatmulConfig.from_json([128, 256, 64, 8, 8, 3, 1, "fast"])
    assert config.label() == "128x256x64 w4 s3 tma_store warp_specialize"


def test_programs_per_sm():
    # Two persistent programs share an SM where both fit: shared memory, and registers for 8 warps.
    assert heuristics.MatmulConfig(128, 128, 64, 8, 4, 3).programs_per_sm(2) == 2
    assert heuristics.MatmulConfig(128, 128, 64, 8, 8, 3).programs_per_sm(2) == 2
    assert heuristics.MatmulConfig(128, 256, 64, 8, 8, 3).programs_per_sm(2) == 1
    assert heuristics.MatmulConfig(128, 128, 64, 8, 4, 5).programs_per_sm(2) == 1
    assert heuristics.MatmulConfig(128, 128, 64, 8, 4, 3, warp_specialize=True).programs_per_sm(2) == 1


def test_gemv_rule_from_the_table(tmp_path, monkeypatch):
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"gemv": {"f16": {"step_bytes": 32768, "max_block_k": 512}}}))
    monkeypatch.setattr(heuristics, "TABLE_PATH", table)
    heuristics._table_data.cache_clear()
    try:
        hopper, other = heuristics.DeviceFacts(True, 132), heuristics.DeviceFacts(False, 132)
        assert heuristics.gemv_rule("f16", hopper) == heuristics.GemvRule(32768, 512)
        assert heuristics.gemv_rule("f16", other) == heuristics.GEMV_RULES["f16"]
        assert heuristics.gemv_rule("f32", hopper) == heuristics.GEMV_RULES["f32"]
    finally:
        heuristics._table_data.cache_clear()


def test_autotune_cache_is_merged_and_replaced_atomically(tmp_path, monkeypatch):
    path = tmp_path / "cache.json"
    monkeypatch.setenv("GEMS_BLAS_AUTOTUNE_CACHE", str(path))
    monkeypatch.setattr(autotune, "_cache", None)
    path.write_text(json.dumps({"other|process": {"config": [64, 64, 32, 8, 4, 3, 1], "ms": 1.0}}))
    autotune._record("this|process", {"config": [128, 128, 64, 8, 4, 4, 1], "ms": 0.5})
    data = json.loads(path.read_text())
    assert set(data) == {"other|process", "this|process"}
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]
    path.write_text("{ not json")  # a damaged file is replaced, not fatal
    autotune._record("third", {"config": [64, 64, 32, 8, 4, 3, 1], "ms": 2.0})
    assert set(json.loads(path.read_text())) == {"third"}


def test_autotune_keeps_the_fastest_within_budget(monkeypatch, tmp_path):
    monkeypatch.setenv("GEMS_BLAS_AUTOTUNE_CACHE", str(tmp_path / "cache.json"))
    monkeypatch.setattr(autotune, "_cache", None)
    monkeypatch.setattr(autotune, "_key", lambda *args: "shape")
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    configs = [heuristics.MatmulConfig(64, 64, 32), heuristics.MatmulConfig(128, 128, 64),
               heuristics.MatmulConfig(128, 64, 32)]
    times = {configs[0]: 2.0, configs[2]: 1.0}

    def time_ms(config):
        if config not in times:
            raise RuntimeError("out of resources")  # a candidate the device cannot run is skipped
        return times[config]

    assert autotune.tune((), configs, time_ms) == configs[2]
    assert json.loads((tmp_path / "cache.json").read_text())["shape"]["config"] == configs[2].to_json()
    monkeypatch.setattr(autotune, "budget_s", -1.0)  # no time left: the heuristic's choice stands
    assert autotune.tune((), configs, time_ms) == configs[0]


@pytest.mark.parametrize("shape", [(4, 2048, 2048), (16, 2048, 8192), (16, 8192, 2048), (64, 4096, 4096),
                                   (4096, 16, 8192), (16, 32000, 2048)])
def test_skinny_products_fill_a_hopper_gpu_without_splitting_k(shape, monkeypatch):
    # The rule as a 132-SM Hopper GPU sees it: every SM gets a tile of the long side, no K split (one launch),
    # and no table entry tuned for another skinny shape decides (off, 16x2048x8192 took a 16x4096x14336 entry's
    # 32 tiles).
    monkeypatch.setattr(heuristics, "device", type("Device", (), {"interpreter": False}))
    facts, (m, n, k) = heuristics.DeviceFacts(hopper=True, num_sms=132), shape
    config = heuristics.matmul_config(1, m, n, k, "f16", facts)
    tiles = -(-m // config.block_m) * -(-n // config.block_n)
    assert config.split_k == 1 and tiles >= min(132, -(-max(m, n) // 128))
    assert (config.block_m if m <= n else config.block_n) == min(64, max(16, min(m, n)))  # the short side's
    assert config.block_k * 2 == (512 if k >= 4 * max(m, n) else 256)
    assert heuristics.matmul_config(1, m, n, k, "f32", facts).block_k == 32  # full fp32: its own rule
    monkeypatch.setattr(heuristics, "SKINNY_FILL", False)
    if shape == (16, 2048, 8192):
        old = heuristics.matmul_config(1, m, n, k, "f16", facts)
        assert -(-m // old.block_m) * -(-n // old.block_n) == 32


def test_skinny_shapes_of_the_table_keep_their_entries(monkeypatch):
    monkeypatch.setattr(heuristics, "device", type("Device", (), {"interpreter": False}))
    facts = heuristics.DeviceFacts(hopper=True, num_sms=132)
    for entry in heuristics._table_data()["configs"]["f16"]:
        if entry.get("batch", 1) == 1 and min(entry["m"], entry["n"]) <= 64:
            expected = heuristics.MatmulConfig.from_json(entry["config"])
            assert heuristics.matmul_config(1, entry["m"], entry["n"], entry["k"], "f16", facts) == expected


@pytest.mark.parametrize("m, n, k", [(4, 40, 600), (24, 72, 96)])
def test_skinny_rule_configuration_computes_the_product(m, n, k, monkeypatch):
    # The configuration the skinny rule gives a Hopper GPU (16-wide tiles of the long side, 256 or 512 B of K a
    # step, no split), run on nn.Linear's layout (the weight transposed) through the Hopper kernel's code.
    monkeypatch.setattr(heuristics, "device", type("Device", (), {"interpreter": False}))
    config = heuristics.matmul_config(1, m, n, k, "f16", heuristics.DeviceFacts(hopper=True, num_sms=132))
    monkeypatch.undo()
    assert config.split_k == 1 and config.block_n == 16 and config.block_k == (256 if k >= 4 * n else 128)
    a, w = _rand((1, m, k), torch.bfloat16), _rand((1, n, k), torch.bfloat16, scale=k**-0.5)
    b = w.transpose(1, 2)
    ref64 = torch.bmm(*_refs(a, b))
    with mm_module.forced_kernel("tma"):
        out = torch.empty((1, m, n), dtype=torch.bfloat16, device=a.device)
        layout = mm_module.operand_layout(a.get_device(), a, b, 1, m, n, k, a.stride(), b.stride())
        key = mm_module.plan_key(layout, out, torch.bfloat16, 1, m, n, k, None, out.stride(), None)
        plan = mm_module.plan_for(key, config)
        call = mm_module.layout_call(plan, layout, out, a, b, None, 1, m, n, k, out.stride(), None)
        call(out, a, b, None, 1.0, 0.0)
    _check(out, ref64, torch.bmm(a, b), torch.bfloat16, k)
