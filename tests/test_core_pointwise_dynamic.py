"""Every feature of pointwise_dynamic, against ATen's results, dtypes, shapes and strides."""

from __future__ import annotations

import itertools
import os

import pytest
import torch
import triton
import triton.language as tl

import flag_gems
from flag_gems import elementwise as pd
from flag_gems import pointwise_dynamic
from flag_gems.elementwise import codegen


@pointwise_dynamic(promotion_methods=[(0, "COMPLEX_TO_FLOAT")])
@triton.jit
def abs_func(x):
    return tl.abs(x)


@pointwise_dynamic(is_tensor=[True, True, False], dtypes=[None, None, float], promotion_methods=[(0, 1, "DEFAULT")])
@triton.jit
def add_func(x, y, alpha):
    return x + y * alpha


@pointwise_dynamic(output_dtypes=[torch.bool])
@triton.jit
def ge(x, y):
    return x > y


@pointwise_dynamic(promotion_methods=[(0, "DEFAULT"), (0, "DEFAULT")], num_outputs=2)
@triton.jit
def min_max_pair(x):
    return x * 2, x * 3


@pointwise_dynamic(promotion_methods=[(0, "INT_TO_FLOAT")])
@triton.jit
def half_of(x):
    return x * 0.5


@pointwise_dynamic(is_tensor=[True, False], promotion_methods=[(0, "DEFAULT")])
@triton.jit
def scaled(x, k):
    return x * k


@pointwise_dynamic(is_tensor=[True, False], promotion_methods=[(0, "DEFAULT")],
                   constexprs={"TIMES": 2, "NEGATE": False})
@triton.jit
def repeated_add(x, TIMES: tl.constexpr, k, NEGATE: tl.constexpr):
    r = x
    for _ in tl.static_range(TIMES):  # compiles only with a constexpr TIMES
        r = r + k
    if NEGATE:
        r = -r
    return r


def test_bound_constexprs_reach_the_kernel_as_constexprs():
    x = torch.randn(5, 8)
    assert repeated_add.arg_names == ["x", "k"]
    torch.testing.assert_close(repeated_add(x, 0.5), x + 1.0)
    thrice = repeated_add.bind("thrice_negated", TIMES=3, NEGATE=True)
    assert thrice.__name__ == "thrice_negated"
    torch.testing.assert_close(thrice(x, 0.5), -(x + 1.5))
    torch.testing.assert_close(thrice(x.t(), 0.5), -(x.t() + 1.5))  # the strided kernel passes them too
    torch.testing.assert_close(repeated_add(x.t(), 0.5), x.t() + 1.0)  # the first op keeps its values
    with pytest.raises(TypeError, match="takes 2 arguments"):
        repeated_add(x, 0.5, 3)
    with pytest.raises(ValueError, match="not parameters"):
        repeated_add.bind("typo", TIMESS=3)


def test_bound_constexprs_go_to_their_parameter_positions():
    pattern = codegen.Pattern(("t", "v"), 1, 0, ((1, "TIMES"), (3, "NEGATE")))
    text = codegen.source(pattern)
    assert "K_TIMES: tl.constexpr, K_NEGATE: tl.constexpr)" in text
    assert "r0 = _fn(x0, K_TIMES, x1, K_NEGATE)" in text


def test_the_three_documented_forms():
    x, y = torch.randn(33, 7), torch.randn(7)
    torch.testing.assert_close(abs_func(x), x.abs())
    torch.testing.assert_close(add_func(x, y, 2), x + 2 * y)
    assert torch.equal(ge(x, y), x > y)


def test_promotion_methods_are_required():
    with pytest.raises(ValueError, match="promotion_methods is required"):
        @pointwise_dynamic
        @triton.jit
        def no_promotion(x):
            return x


@pytest.mark.parametrize("shape", [(), (0,), (1,), (5,), (3, 0, 2), (2, 3, 4, 5), (2, 1, 3, 1, 2)])
def test_ranks_zero_d_and_empty(shape):
    x = torch.randn(shape)
    out = abs_func(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, x.abs())


@pytest.mark.parametrize("a_shape,b_shape", [((4, 1, 3), (5, 1)), ((1,), (2, 3)), ((2, 1, 4, 1, 3), (4, 1, 1))])
def test_broadcasting_across_ranks(a_shape, b_shape):
    a, b = torch.randn(a_shape), torch.randn(b_shape)
    torch.testing.assert_close(add_func(a, b, 1.5), torch.add(a, b, alpha=1.5))


def layouts():
    base = torch.randn(6, 8, 10)
    yield "transposed", base.transpose(0, 2), torch.randn(10, 8, 6)
    yield "sliced", base[:, ::2, 1:], torch.randn(6, 4, 9)
    yield "expanded", torch.randn(1, 8, 1).expand(6, 8, 10), base
    yield "channels_last", torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last), torch.randn(2, 3, 4, 5)
    yield "permuted_both", base.permute(2, 0, 1), base.permute(2, 0, 1).contiguous()


@pytest.mark.parametrize("name,a,b", list(layouts()), ids=[n for n, *_ in layouts()])
def test_non_contiguous_inputs_and_atens_output_strides(name, a, b):
    out = add_func(a, b, 1.0)
    ref = torch.add(a, b)
    torch.testing.assert_close(out, ref)
    assert out.stride() == ref.stride(), name
    out1 = abs_func(a)
    assert out1.stride() == torch.abs(a).stride(), name


def test_shapes_that_do_not_broadcast_give_atens_error():
    a, b = torch.randn(2, 4), torch.randn(2, 6)
    with pytest.raises(RuntimeError) as ours:
        add_func(a, b, 1)
    with pytest.raises(RuntimeError) as atens:
        torch.add(a, b)
    assert str(ours.value) == str(atens.value)


def test_overlapping_input_reads_fine():
    x = torch.randn(1).expand(100)
    torch.testing.assert_close(abs_func(x), x.abs())


def all_dtypes():
    return [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
            torch.float16, torch.bfloat16, torch.float32, torch.float64]


def sample(dtype, shape=(5,)):
    if dtype == torch.bool:
        return torch.rand(shape) > 0.5
    if dtype.is_floating_point:
        return torch.randn(shape).to(dtype)
    return torch.randint(1, 5, shape).to(dtype)


@pytest.mark.parametrize("a_dtype,b_dtype", list(itertools.product(all_dtypes(), all_dtypes())))
def test_promotion_matches_aten_for_every_dtype_pair(a_dtype, b_dtype):
    a, b = sample(a_dtype), sample(b_dtype)
    ref_dtype = torch.result_type(a, b)
    if ref_dtype == torch.bool:
        pytest.skip("add of two bools is logical or in ATen; not this test's kernel")
    out = add_func(a, b, 1)
    assert out.dtype == ref_dtype
    torch.testing.assert_close(out, torch.add(a, b), atol=1e-2 if ref_dtype == torch.bfloat16 else 1e-3, rtol=1e-2)


@pytest.mark.parametrize("kind", ["DEFAULT", "NO_OPMATH", "INT_TO_FLOAT", "ALWAYS_BOOL", "COMPLEX_TO_FLOAT",
                                  "BOOL_TO_LONG"])
@pytest.mark.parametrize("a_dtype,b_dtype", [(torch.int32, torch.float16), (torch.bool, torch.bool),
                                             (torch.bfloat16, torch.float16), (torch.int8, torch.uint8)])
def test_promote_agrees_with_prims_common(kind, a_dtype, b_dtype):
    from torch._prims_common import ELEMENTWISE_TYPE_PROMOTION_KIND, elementwise_dtypes

    a, b = sample(a_dtype), sample(b_dtype)
    expected = elementwise_dtypes(a, b, type_promotion_kind=ELEMENTWISE_TYPE_PROMOTION_KIND[kind])
    assert flag_gems.promote(a, b, kind=kind) == expected
    assert flag_gems.promote(a, 2.5, kind=kind) == elementwise_dtypes(
        a, 2.5, type_promotion_kind=ELEMENTWISE_TYPE_PROMOTION_KIND[kind])


def test_python_scalars_and_cpu_zero_d_tensors_promote_like_aten():
    i = torch.arange(6, dtype=torch.int32)
    h = torch.randn(6).half()
    for other in (2, 2.5, True, torch.tensor(2.5), torch.tensor(3, dtype=torch.int64),
                  torch.tensor(1.5, dtype=torch.float64)):
        for t in (i, h):
            out = add_func(t, other, 1)
            ref = torch.add(t, other)
            assert out.dtype == ref.dtype, (t.dtype, other)
            torch.testing.assert_close(out, ref)


def test_int_to_float_of_integers():
    out = half_of(torch.arange(5))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.arange(5) * 0.5)


def test_several_outputs():
    x = torch.randn(4, 5)
    a, b = min_max_pair(x)
    torch.testing.assert_close(a, x * 2)
    torch.testing.assert_close(b, x * 3)
    o0, o1 = torch.empty(4, 5), torch.empty(4, 5)
    r0, r1 = min_max_pair(x, out0=o0, out1=o1)
    assert r0 is o0 and r1 is o1
    torch.testing.assert_close(o1, x * 3)


def test_out_is_resized_like_aten():
    x = torch.randn(3, 4)
    out = torch.empty(0)
    assert abs_func(x, out0=out) is out
    torch.testing.assert_close(out, x.abs())
    wrong = torch.empty(7)
    with pytest.warns(UserWarning, match="resized"):
        abs_func(x, out0=wrong)
    assert wrong.shape == (3, 4)


def test_out_with_a_dtype_that_cannot_hold_the_result_is_an_error():
    x = torch.randn(3)
    with pytest.raises(RuntimeError, match="result type Float can't be cast to the desired output type Long"):
        abs_func(x, out0=torch.empty(3, dtype=torch.long))


def test_out_non_contiguous_is_written_in_place():
    x = torch.randn(4, 6)
    out = torch.zeros(6, 4).t()
    abs_func(x, out0=out)
    torch.testing.assert_close(out, x.abs())


def test_in_place_with_aliasing():
    x = torch.randn(5, 5)
    ref = x + x * 2
    add_func(x, x, 2, out0=x)
    torch.testing.assert_close(x, ref)


def test_in_place_cannot_broadcast_the_written_tensor():
    x, y = torch.randn(1, 3), torch.randn(2, 3)
    with pytest.raises(RuntimeError, match="doesn't match the broadcast shape"):
        add_func(x, y, 1, out0=x)


def test_internal_overlap_in_the_output_is_an_error():
    out = torch.zeros(1).expand(4)
    with pytest.raises(RuntimeError, match="more than one element of the written-to tensor"):
        abs_func(torch.randn(4), out0=out)


def test_partial_overlap_of_output_and_input_is_an_error_like_atens():
    x = torch.randn(10)
    with pytest.raises(RuntimeError) as atens:
        torch.add(x[:-1], x[1:], out=x[1:])
    with pytest.raises(RuntimeError) as ours:
        add_func(x[:-1], x[1:], 1, out0=x[1:])
    assert str(ours.value) == str(atens.value)
    y = torch.randn(10)
    add_func(y, y, 1, out0=y)  # the same memory exactly is in-place use, not an error
    # Two storages over the same bytes: ATen sees no alias there, and neither do we.
    a = torch.zeros(10)
    b = torch.from_dlpack(a)  # a storage of its own over a's memory
    assert b.data_ptr() == a.data_ptr() and not torch._C._is_alias_of(a, b)
    torch.add(a[:-1], a[:-1], out=b[1:])  # ATen accepts it...
    add_func(a[:-1], a[:-1], 1, out0=b[1:])  # ...and so do we


def test_int64_indexing_path(monkeypatch):
    monkeypatch.setattr(pd, "_force_int64", True)
    a = torch.randn(7, 9)
    torch.testing.assert_close(add_func(a.t(), 1.0, 2.0), a.t() + 2.0)
    torch.testing.assert_close(abs_func(a), a.abs())


def test_int64_is_chosen_past_int32_offsets():
    from flag_gems.elementwise import shapes

    assert shapes.max_offset([2, 2**30 + 1], [2**31, 1]) > 2**31 - 1


def test_contiguous_inputs_of_any_rank_use_the_flat_kernel():
    x = torch.randn(2, 3, 4, 5)
    before = set(abs_func._kernels)
    abs_func(x)
    abs_func(torch.randn(7, 2))
    ranks = {p.rank for p in set(abs_func._kernels) - before} | {p.rank for p in abs_func._kernels}
    assert 0 in ranks


def test_generated_code_is_cached_on_disk():
    abs_func(torch.randn(3, 5).t())  # this process generates at least one kernel, whatever ran before
    files = list(codegen.cache_dir().glob("pw_*.py"))
    assert files, "no generated kernel source found in the cache"
    assert all(os.path.getsize(f) > 0 for f in files)


def test_plans_are_cached_per_signature():
    x = torch.randn(10)
    add_func(x, x, 1.0)
    count = len(add_func._plans)
    add_func(torch.randn(20), torch.randn(20), 3.0)
    assert len(add_func._plans) == count


def test_outputs_passed_as_none_take_the_plain_calls_plan():
    x = torch.randn(10)
    add_func(x, x, 1.0)
    count = len(add_func._plans)
    torch.testing.assert_close(add_func(x, x, 1.0, out0=None), x + x)
    b = min_max_pair(x)[1]
    torch.testing.assert_close(min_max_pair(x, out0=None, out1=None)[1], b)
    o1 = torch.empty(10)
    assert min_max_pair(x, out1=o1)[1] is o1
    torch.testing.assert_close(o1, x * 3)
    assert len(add_func._plans) == count


def test_strided_layouts_are_kept_per_layout_and_stay_correct():
    def layouts() -> int:
        return sum(len(p.layouts) for p in add_func._plans.values())

    base = torch.randn(9, 33)
    before = layouts()
    for _ in range(2):  # the second round reuses each layout
        for x in (base.t(), base[:, 1:].t(), base[1:, ::2]):  # new data offsets: new pointer alignment
            y = torch.randn(x.shape[1])
            torch.testing.assert_close(add_func(x, y, 2.0), x + y * 2.0)
    assert layouts() - before == 3


def test_a_resized_output_layout_is_not_kept():
    x = torch.randn(4, 6).t()
    for _ in range(2):
        out = torch.empty(0)
        assert abs_func(x, out0=out) is out
        torch.testing.assert_close(out, x.abs())
        assert out.shape == (6, 4)


def test_integer_scalars_equal_to_one_do_not_reuse_another_kernel():
    # Triton compiles an integer argument equal to 1 as a constant: a kernel compiled for k=1 must
    # never run for k=3, on the flat path or the strided one.
    x = torch.arange(-40, 40, dtype=torch.int32).reshape(8, 10)
    for k in (1, 3, 16, 1, 5):
        assert torch.equal(scaled(x, k), x * k)
        assert torch.equal(scaled(x.t(), k), x.t() * k)


def test_the_gpu_launch_key_tells_what_triton_specialises_on():
    # The GPU's direct launch reuses a compiled kernel by this key: an operand or given output off 16-byte
    # alignment, or an integer scalar equal to 1 or divisible by 16, must give a key of its own.
    x = torch.arange(-40, 40, dtype=torch.int32)
    scaled(x, 3)
    plan = scaled._plans[(torch.int32, int)]
    assert plan.int_pos == [1]

    def key(t, k, given=(None,)):
        out = torch.empty_like(t)
        return pd._launch_spec(plan, ("fixed",), [t, k], [t], given, [t, k, out, t.numel()])

    keys = {key(x, 3), key(x, 1), key(x, 16), key(x[1:], 3), key(x, 3, (x[1:],))}
    assert len(keys) == 5
    assert key(x, 3) == key(x, 5) and key(x, 3) == key(x[4:], 3)
    add_func(torch.ones(3), torch.ones(3), 1.0)
    assert add_func._plans[(torch.float32, torch.float32, float)].int_pos == []  # floats add nothing to the key


def test_bf16_and_fp16_compute_in_fp32():
    x = torch.randn(100).bfloat16()
    torch.testing.assert_close(add_func(x, x, 0.5), torch.add(x, x, alpha=0.5))
    h = torch.randn(100).half()
    torch.testing.assert_close(add_func(h, h, 0.5), torch.add(h, h, alpha=0.5))
