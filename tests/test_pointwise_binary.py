"""Accuracy of the binary elementwise ops of gems-pointwise: arithmetic, comparisons, logical and
bitwise ops, against ATen (float64 where ATen rounds), every call under ``served``."""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Callable
from typing import NamedTuple

import gems_test_settings as settings
import pytest
import torch
from gems_test_settings import to_reference

import flag_gems
from flag_gems.testing import assert_close, assert_equal, served

DEVICE = flag_gems.device
QUICK = settings.QUICK
FLOATS = [torch.float16, torch.bfloat16, torch.float32] + ([] if QUICK else [torch.float64])
INTS = [torch.int32, torch.uint8] + ([] if QUICK else [torch.int8, torch.int16, torch.int64])
BOOL = [torch.bool]
SPECIALS = [float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1.0, -1.0, 0.5]


@pytest.fixture(autouse=True)
def seeded(request):
    """Each test draws the same inputs on every run: a seed from its name."""
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))


def make(shape, dtype, domain="any", specials=True):
    """Random operand of ``dtype``; floats get NaN, ±inf and signed zeros at their first elements."""
    if dtype is torch.bool:
        return torch.rand(shape, device=DEVICE) > 0.5
    if dtype.is_floating_point:
        x = torch.randn(shape, device=DEVICE, dtype=torch.float64) * 3
        if domain == "positive":
            x = x.abs() + 0.1
        elif domain == "nonzero":
            x = torch.where(x.abs() < 0.1, 1.5, x)
        elif domain == "unit":
            x = x.tanh()
        if specials and x.numel() >= 2 * len(SPECIALS) and domain == "any":
            x.view(-1)[: len(SPECIALS)] = torch.tensor(SPECIALS, dtype=x.dtype)
        return x.to(dtype)
    unsigned = dtype is torch.uint8
    bits = torch.iinfo(dtype).bits
    if domain == "shift":
        return torch.randint(0 if unsigned else -2, bits + 3, shape, device=DEVICE).to(dtype)
    if domain == "exponent":
        return torch.randint(0 if unsigned else -3, 6, shape, device=DEVICE).to(dtype)
    if domain in ("nonzero", "positive"):
        x = torch.randint(1, 20, shape, device=DEVICE)
        if not unsigned and domain == "nonzero":
            x = torch.where(torch.rand(shape, device=DEVICE) > 0.5, x, -x)
        return x.to(dtype)
    return torch.randint(0 if unsigned else -20, 21, shape, device=DEVICE).to(dtype)


class Op(NamedTuple):
    name: str  # ATen base name: served(name) must hold, and name + "_" for the in-place form
    fn: Callable
    dtypes: list
    rhs: str = "any"  # domain of the second operand
    exact: bool = False  # compare with ATen in the same dtype (discontinuous ops), else float64


def _fn(name):
    return getattr(torch, name)


OPS = [
    Op("add", torch.add, FLOATS + INTS + BOOL),
    Op("sub", torch.sub, FLOATS + INTS),
    Op("rsub", torch.rsub, FLOATS + INTS),
    Op("mul", torch.mul, FLOATS + INTS + BOOL),
    Op("div", torch.div, FLOATS + INTS, rhs="nonzero"),
    Op("div", lambda a, b: torch.div(a, b, rounding_mode="trunc"), FLOATS + INTS, rhs="nonzero", exact=True),
    Op("div", lambda a, b: torch.div(a, b, rounding_mode="floor"), FLOATS + INTS, rhs="nonzero", exact=True),
    Op("floor_divide", torch.floor_divide, FLOATS + INTS, rhs="nonzero", exact=True),
    Op("remainder", torch.remainder, FLOATS + INTS, rhs="nonzero", exact=True),
    Op("fmod", torch.fmod, FLOATS + INTS, rhs="nonzero", exact=True),
    Op("pow", torch.pow, FLOATS + INTS, rhs="exponent"),
    Op("maximum", torch.maximum, FLOATS + INTS + BOOL, exact=True),
    Op("minimum", torch.minimum, FLOATS + INTS + BOOL, exact=True),
    Op("fmax", torch.fmax, FLOATS + INTS, exact=True),
    Op("fmin", torch.fmin, FLOATS + INTS, exact=True),
    Op("atan2", torch.atan2, FLOATS + INTS[:1]),
    Op("hypot", torch.hypot, FLOATS),
    Op("copysign", torch.copysign, FLOATS + INTS[:1]),
    Op("logaddexp", torch.logaddexp, FLOATS),
    Op("logaddexp2", torch.logaddexp2, FLOATS),
    Op("xlogy", torch.xlogy, FLOATS + INTS[:1]),
    Op("nextafter", torch.nextafter, [torch.float32, torch.float64], exact=True),
    Op("heaviside", torch.heaviside, FLOATS + INTS + BOOL, exact=True),
    Op("ldexp", torch.ldexp, FLOATS, rhs="exponent"),
    Op("gcd", torch.gcd, INTS),
    Op("lcm", torch.lcm, INTS),
    Op("eq", torch.eq, FLOATS + INTS + BOOL),
    Op("ne", torch.ne, FLOATS + INTS + BOOL),
    Op("lt", torch.lt, FLOATS + INTS + BOOL),
    Op("le", torch.le, FLOATS + INTS + BOOL),
    Op("gt", torch.gt, FLOATS + INTS + BOOL),
    Op("ge", torch.ge, FLOATS + INTS + BOOL),
    Op("logical_and", torch.logical_and, FLOATS + INTS + BOOL),
    Op("logical_or", torch.logical_or, FLOATS + INTS + BOOL),
    Op("logical_xor", torch.logical_xor, FLOATS + INTS + BOOL),
    Op("bitwise_and", torch.bitwise_and, INTS + BOOL),
    Op("bitwise_or", torch.bitwise_or, INTS + BOOL),
    Op("bitwise_xor", torch.bitwise_xor, INTS + BOOL),
    Op("bitwise_left_shift", torch.bitwise_left_shift, INTS, rhs="shift"),
    Op("bitwise_right_shift", torch.bitwise_right_shift, INTS, rhs="shift"),
]
SHAPES = [(), (0,), (7,), (33, 65), (2, 3, 4, 5), (2, 1, 3, 1, 4)]


def check(op: Op, fn: Callable, *args, served_as: str | None = None, **kwargs):
    """Runs ``fn(*args)`` under gems and compares it with ATen (float64 for smooth float ops)."""
    aten = fn(*[to_reference(a) for a in args], **kwargs)
    upcast = not op.exact and aten.is_floating_point()
    expected = fn(*[to_reference(a, upcast=upcast) for a in args], **kwargs) if upcast else aten
    with served(served_as or op.name):
        res = fn(*args, **kwargs)
    compare(res, aten, expected)
    return res


def compare(res, aten, expected=None, tolerance_dtype=None):
    """``res`` has ATen's dtype and shape, and its values (``expected`` where given), within the
    tolerance of ``tolerance_dtype`` (the result's own dtype by default)."""
    expected = aten if expected is None else expected
    assert res.dtype == aten.dtype and res.shape == aten.shape, (res.dtype, aten.dtype, res.shape, aten.shape)
    if aten.is_floating_point() or aten.is_complex():
        assert_close(res, expected.to(res.device), tolerance_dtype or res.dtype, equal_nan=True)
    else:
        assert_equal(res, aten.to(res.device))


def raises_like_aten(fn, *args, **kwargs):
    """Under gems, ``fn(*args)`` raises what ATen raises: the same type and first line of message.

    The cases are ones ATen's CPU kernels refuse; where its CUDA kernels compute them instead (a value
    out of a half type's range is accepted there), gems must give ATen's result on the GPU.
    """
    try:
        aten = fn(*[to_reference(a) for a in args], **kwargs)
    except Exception as error:
        with pytest.raises(type(error)) as ours, flag_gems.use_gems():
            fn(*args, **kwargs)
        assert str(ours.value).split("\n")[0] == str(error).split("\n")[0]
        return
    assert aten.is_cuda, "ATen's CPU kernels were expected to raise here"
    with flag_gems.use_gems():
        res = fn(*args, **kwargs)
    compare(res, aten)


def _cases(ops, dtypes_of=lambda op: op.dtypes):
    return [pytest.param(op, dt, id=f"{op.name}{OPS.index(op)}-{str(dt)[6:]}") for op in ops for dt in dtypes_of(op)]


def _shaped_cases():
    # Every shape for every (op, dtype); quick mode rotates the shapes (two per pair) instead.
    cases = []
    for k, case in enumerate(_cases(OPS)):
        shapes = SHAPES if not QUICK else [SHAPES[k % len(SHAPES)], SHAPES[(k + 3) % len(SHAPES)]]
        cases += [pytest.param(*case.values, shape, id=f"{case.id}-{shape}") for shape in shapes]
    return cases


@pytest.mark.parametrize("op, dtype, shape", _shaped_cases())
def test_binary_dtypes(op, dtype, shape):
    check(op, op.fn, make(shape, dtype), make(shape, dtype, op.rhs))


def _layout_operands(layout, dtype, rhs):
    def mk(shape, domain="any"):
        return make(shape, dtype, domain, specials=False)

    if layout == "transposed":
        return mk((10, 6)).t(), mk((6, 10), rhs)
    if layout == "both_transposed":
        return mk((10, 6)).t(), mk((10, 6), rhs).t()
    if layout == "sliced":
        return mk((12, 10))[::2, 1:8], mk((6, 14), rhs)[:, 3:10]
    if layout == "expanded":
        return mk((1, 10)).expand(6, 10), mk((6, 10), rhs)
    if layout == "broadcast_ranks":
        return mk((4, 1, 10)), mk((6, 1), rhs)
    return mk((2, 3, 4, 5)).permute(0, 2, 3, 1), mk((2, 4, 5, 3), rhs)


LAYOUT_OPS = [op for op in OPS if op.name in ("add", "mul", "div", "remainder", "pow", "maximum", "atan2", "lt",
                                              "logical_xor", "bitwise_and", "gcd", "bitwise_left_shift")]
LAYOUTS = ["transposed", "both_transposed", "sliced", "expanded", "broadcast_ranks", "permuted_4d"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op", LAYOUT_OPS, ids=lambda op: op.name)
def test_binary_layouts(op, layout):
    dtype = op.dtypes[2] if op.dtypes[0].is_floating_point else op.dtypes[0]
    a, b = _layout_operands(layout, dtype, op.rhs)
    res = check(op, op.fn, a, b)
    # Outputs take ATen's layout (TensorIterator's choice), not only its values.
    assert res.stride() == op.fn(to_reference(a), to_reference(b)).stride()


SCALAR_OPS = [op for op in OPS if op.name not in ("nextafter", "heaviside", "ldexp", "gcd", "lcm", "hypot",
                                                  "logaddexp", "logaddexp2", "maximum", "minimum", "fmax",
                                                  "fmin")]


def _scalar_for(op, dtype):
    if op.rhs == "shift":
        return 3
    if op.rhs == "exponent":
        return 2
    if dtype.is_floating_point:
        return -2.5
    return 3 if op.rhs != "any" or dtype is torch.uint8 else -3


@pytest.mark.parametrize("kind", ["python_rhs", "python_lhs", "cpu_0d_rhs", "device_0d_lhs"])
@pytest.mark.parametrize("op, dtype", _cases(SCALAR_OPS, lambda op: [op.dtypes[0], op.dtypes[-1]][: 1 if QUICK else 2]))
def test_binary_scalar_operands(op, dtype, kind):
    x = make((5, 7), dtype, "any" if "rhs" in kind else op.rhs)
    s = _scalar_for(op, dtype)
    if kind == "python_lhs":
        if op.rhs == "exponent":
            s = 2 if dtype.is_floating_point or dtype is torch.uint8 else -2
        if op.name in ("rsub", "bitwise_left_shift", "bitwise_right_shift"):
            return  # ATen's Python bindings take no scalar first operand for these
        args = (s, x)
    elif kind == "python_rhs":
        args = (x, s)
    elif kind == "cpu_0d_rhs":
        args = (x, torch.tensor(s))
    else:
        args = (torch.tensor(s, device=DEVICE).to(dtype), x)
    if op.rhs == "nonzero" and not dtype.is_floating_point and kind in ("python_lhs", "device_0d_lhs"):
        x[x == 0] = 1
    try:
        op.fn(*[to_reference(a) for a in args])
    except TypeError:
        return  # ATen's Python binding takes no scalar in this position
    check(op, op.fn, *args)


# Promotion across dtypes and categories; 0-d tensors rank below dimensioned ones.
MIXED = [
    (torch.float16, torch.float32), (torch.bfloat16, torch.float16), (torch.int8, torch.float16),
    (torch.bool, torch.int32), (torch.uint8, torch.int8), (torch.int32, torch.bfloat16), (torch.bool, torch.float32),
]


MIXED_OPS = ["add", "div", "pow", "eq", "logical_and", "sub"]
if not QUICK:
    MIXED_OPS += ["mul", "maximum", "atan2", "copysign", "xlogy"]


@pytest.mark.parametrize("op", [next(op for op in OPS if op.name == name) for name in MIXED_OPS], ids=MIXED_OPS)
@pytest.mark.parametrize("dtypes", MIXED, ids=lambda d: f"{str(d[0])[6:]}-{str(d[1])[6:]}")
def test_binary_mixed_dtypes(op, dtypes):
    if op.name == "sub" and torch.bool in dtypes:
        return  # ATen raises: tested in test_sub_bool_raises
    a = make((4, 9), dtypes[0], "positive" if op.name == "pow" else "any")
    b = make((4, 9), dtypes[1], "exponent" if op.name == "pow" else "nonzero")
    check(op, op.fn, a, b)
    check(op, op.fn, a, b[0, 0])  # a 0-d operand of the other dtype


def _resize_warnings(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [w for w in caught if "resized" in str(w.message)]


INPLACE_OPS = ["add", "mul", "div", "remainder", "pow", "atan2", "copysign", "maximum", "fmod", "bitwise_and", "eq",
               "logical_or", "gcd", "bitwise_left_shift"]


@pytest.mark.parametrize("op", [next(op for op in OPS if op.name == name) for name in INPLACE_OPS], ids=INPLACE_OPS)
def test_binary_inplace_and_out(op):
    method = op.name + "_"
    dtype = op.dtypes[2] if op.dtypes[0].is_floating_point else op.dtypes[0]
    x = make((6, 5), dtype, op.rhs)
    y = make((6, 5), dtype, op.rhs)
    if hasattr(x, method):
        # Aliasing: the output is also both inputs.
        ref = getattr(to_reference(x), method)(to_reference(x))
        with served(method):
            res = getattr(x, method)(x)
        assert res is x
        compare(res, ref)
        # Broadcasting into self, and self transposed.
        x = make((5, 6), dtype, op.rhs).t()
        ref = getattr(to_reference(x), method)(to_reference(y[:1]))
        with served(method):
            getattr(x, method)(y[:1])
        compare(x, ref)
    # out= of the wrong size is resized (with ATen's warning); out= of a wider dtype receives a cast.
    for out_shape, out_dtype in [((3,), None), ((6, 5), torch.float64)]:
        out_dtype = out_dtype or op.fn(x, y).dtype
        out = torch.empty(out_shape, dtype=out_dtype, device=DEVICE)
        ref_out = torch.empty(out_shape, dtype=out_dtype, device=DEVICE)
        try:
            aten_warnings = _resize_warnings(lambda: op.fn(to_reference(x), to_reference(y), out=ref_out))
        except NotImplementedError:
            # ATen's CUDA bitwise and shift kernels compute in the out= dtype, and have none for float64
            raises_like_aten(lambda a, b, o: op.fn(a, b, out=o), x, y, out)
            continue
        with served(op.name):
            ours = _resize_warnings(lambda: op.fn(x, y, out=out))
        assert len(ours) == len(aten_warnings)
        compare(out, ref_out, tolerance_dtype=dtype)  # computed in the operands' dtype, then cast


def test_inplace_result_must_cast():
    x = torch.arange(6, device=DEVICE, dtype=torch.int32)
    for method, other in [("add_", 1.5), ("mul_", torch.ones(6, device=DEVICE)), ("div_", 2), ("pow_", 0.5)]:
        with pytest.raises(RuntimeError, match="can't be cast"):
            getattr(to_reference(x), method)(other)
        with pytest.raises(RuntimeError, match="can't be cast"), flag_gems.use_gems():
            getattr(x, method)(other)
    with pytest.raises(RuntimeError), flag_gems.use_gems():
        torch.ones(3, 1, device=DEVICE).add_(torch.ones(3, 4, device=DEVICE))


def test_add_sub_alpha():
    f = make((5, 7), torch.float16)
    i = make((5, 7), torch.int32)
    b = make((5, 7), torch.bool)
    add, sub, rsub = OPS[0], OPS[1], OPS[2]
    check(add, torch.add, f, f, alpha=2.5)
    check(add, torch.add, i, i, alpha=-3)
    check(add, torch.add, i, 7, alpha=2)
    check(add, torch.add, b, b, alpha=True)
    check(add, torch.add, b, b, alpha=2)
    check(sub, torch.sub, f, 1.5, alpha=0.5)
    check(rsub, torch.rsub, i, i, alpha=3)
    check(add, torch.add, make((5, 7), torch.int8), 100, alpha=2)  # wraps like ATen
    for fn, args, kwargs in [
        (torch.add, (i, i), {"alpha": 1.5}),  # float alpha for integers
        (torch.add, (f, f), {"alpha": True}),  # bool alpha for a non-bool result
        (torch.add, (make((3,), torch.int8), 1), {"alpha": 1000}),  # alpha overflows the result dtype
    ]:
        raises_like_aten(fn, *args, **kwargs)
    # ATen converts alpha to the result dtype on CPU (1e6 overflows float16), to float32 on CUDA
    if flag_gems.runtime.device.interpreter:
        raises_like_aten(torch.add, f, 1, alpha=1e6)
    else:
        check(add, torch.add, f, 1, alpha=1e6)


@pytest.mark.parametrize("args", ["tensors", "tensor_python_bool", "rsub"])
def test_sub_bool_raises(args):
    b = make((4,), torch.bool)
    if args == "tensors":
        raises_like_aten(torch.sub, b, b)
    elif args == "tensor_python_bool":
        raises_like_aten(torch.sub, make((4,), torch.float32), True)
    else:
        raises_like_aten(torch.rsub, b, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int64, torch.int8])
def test_division_semantics(dtype):
    # Signs of quotient and remainder across every sign combination, zero dividends and signed zeros.
    values = [-7, -6, -1, 0, 1, 6, 7]
    a = torch.tensor([v for v in values for _ in range(4)], device=DEVICE).to(dtype)
    b = torch.tensor([3, -3, 2, -2] * len(values), device=DEVICE).to(dtype)
    if dtype.is_floating_point:
        a = torch.cat([a, torch.tensor([-0.0, 0.0, 5.0, -5.0, 0.5, -0.5, 1e-3], device=DEVICE, dtype=dtype)])
        b = torch.cat([b, torch.tensor([1.0, -1.0, float("inf"), float("inf"), 2.0, -2.0, -7.0],
                                       device=DEVICE, dtype=dtype)])
    ops = [OPS[4], OPS[5], OPS[6], OPS[7], OPS[8], OPS[9]]
    for op in ops:
        check(op, op.fn, a, b)
        check(op, op.fn, a, -2.5 if dtype.is_floating_point else 3)


def _finite_values(dtype, count):
    """``count`` distinct finite values of a half type, of every sign and magnitude (no bfloat16
    subnormals: the interpreter loads those wrongly)."""
    bits = torch.randperm(1 << 16, device=DEVICE)[: 4 * count].to(torch.int32).to(torch.int16)
    values = bits.view(dtype)
    keep = values.isfinite() & ((values.abs() >= torch.finfo(dtype).tiny) | (dtype is torch.float16))
    return values[keep][:count]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_floor_division_half_types(dtype):
    """A half-type floor division gives ATen's results to the bit (on CPU each step rounded to the
    type, on CUDA in float32 with the type's own roundings), for blocks of small quotients (fmod
    from the quotient), of any quotients (libdevice's fmod), exact multiples, zeros, infinities and
    NaN, and scalar divisors."""
    op = OPS[7]
    x = (torch.randn(512, device=DEVICE) * 8).to(dtype)
    y = torch.where(torch.rand(512, device=DEVICE) < 0.5, 0.5, -0.75).to(dtype) * (1 + torch.rand(512, device=DEVICE))
    n = torch.randint(-300, 300, (512,), device=DEVICE)
    a, b = _finite_values(dtype, 2048), _finite_values(dtype, 2048)
    specials = torch.tensor(SPECIALS + [3.0, -3.0], device=DEVICE, dtype=dtype)
    a = torch.cat([a, specials.repeat_interleave(len(specials)), a[:64]])
    b = torch.cat([b, specials.repeat(len(specials)), torch.full((64,), float("inf"), device=DEVICE, dtype=dtype)])
    # the last two: scalars that a half type cannot hold
    cases = [(x, y.to(dtype)), ((n * y.float()).to(dtype), y.to(dtype)), (a, b), (x, -2.5), (x * 100, 0.7), (a, -7.3)]
    for lhs, rhs in cases:
        res = check(op, op.fn, lhs, rhs)
        assert_equal(res, op.fn(lhs, rhs), equal_nan=True)


def test_pow_half_types():
    """Half-type results: pow's special values as ATen gives them, integer powers of integers exactly (ties
    between two half-type numbers included), and a scalar exponent rounded to the dtype first, as ATen
    does (2.001 is bfloat16's 2, a square)."""
    op = OPS[10]
    values = SPECIALS + [2.0, -2.0, 3.0, -3.0, 2.5, -2.5, 0.25, 100.0, -100.0, 1e-3]
    grid = torch.tensor(values, device=DEVICE)
    base, exponent = grid.repeat_interleave(len(values)), grid.repeat(len(values))
    bases = torch.arange(-40, 41, device=DEVICE).repeat(8)
    powers = torch.arange(-1, 8, device=DEVICE).repeat_interleave(81)[: bases.numel()]
    for dtype in (torch.bfloat16, torch.float16):
        aten = torch.pow(to_reference(base.to(dtype)), to_reference(exponent.to(dtype)))
        with served("pow"):
            res = torch.pow(base.to(dtype), exponent.to(dtype))
        assert_equal(res, aten.to(res.device), equal_nan=True)
        assert torch.equal(torch.signbit(res[res == 0]), torch.signbit(aten.to(res.device)[res == 0]))
        check(op, torch.pow, bases.to(dtype), powers.to(dtype))
        aten = torch.pow(to_reference(bases.to(dtype)), to_reference(powers.to(dtype)))
        with served("pow"):
            assert_equal(torch.pow(bases.to(dtype), powers.to(dtype)), aten.to(DEVICE), equal_nan=True)
    x = torch.tensor([1e10, 3.0, 0.5, 7.0, -2.0], device=DEVICE, dtype=torch.bfloat16)
    for e in (2.3, 2.001, 5.0, -3.0):
        aten = torch.pow(to_reference(x), e)
        with served("pow"):
            res = torch.pow(x, e)
        compare(res, aten)
        if e != 2.3:
            assert_equal(res, aten.to(res.device), equal_nan=True)


def test_pow_half_tensors_large_exponents():
    """Exponents of 2**22 and more, infinite ones beside finite ones, and integer exponent tensors, against
    ATen."""
    base = torch.tensor([1.5, -1.5, 0.5, -0.5, -1.0, 1.0, 2.0, -2.0, 0.0, -0.0], device=DEVICE)
    for dtype in (torch.bfloat16, torch.float16):
        for exponents in ([2.0**22, -(2.0**22), 2.0**23, 3.0, -3.0, 2.0**30, float("inf"), 5.0, -7.0, 0.5],
                          [float("inf"), -float("inf"), 3.0, -3.0, 4.0, 2.5, -2.5, 1e4, -1e4, 7.0]):
            exponent = torch.tensor(exponents, device=DEVICE)
            check(OPS[10], torch.pow, base.to(dtype), exponent.to(dtype))
        check(OPS[10], torch.pow, base.to(dtype), torch.tensor([3, -3, 2, 5, 7, 0, 1, 6, -1, 4], device=DEVICE))


# Settings of the gcd and lcm knobs besides the shipped ones: "old" is the kernel before int64 narrowed and
# narrower types took the lean loop; "turned" every other choice, 5 and 3 steps a check so that the loop's
# exit falls between checks (the interpreter runs no bfind: its setting only changes the kernel's name).
GCD_KNOB_SETS = {
    "default": {},
    "old": {"gcd_steps_per_check": 2, "gcd_ctz_bfind": False, "gcd_lean_steps": False, "lcm_inverse_division": False,
            "gcd64_narrow_blocks": False, "gcd64_steps_per_check": 2, "gcd64_lean_steps": False,
            "gcd64_ctz_bfind": False, "lcm64_steps_per_check": 2, "lcm64_lean_steps": False,
            "lcm64_inverse_division": False},
    "turned": {"gcd_steps_per_check": 5, "gcd_ctz_bfind": False, "gcd_lean_steps": False,
               "lcm_inverse_division": False, "gcd64_steps_per_check": 3, "gcd64_lean_steps": False,
               "gcd64_ctz_bfind": True, "lcm64_steps_per_check": 5, "lcm64_lean_steps": True},
}


@pytest.fixture(params=list(GCD_KNOB_SETS))
def gcd_knobs(request, monkeypatch):
    """The binary GCD as shipped, as before, and with the knobs of gcd and lcm turned otherwise."""
    from gems_pointwise.knobs import KNOBS
    for name, value in GCD_KNOB_SETS[request.param].items():
        assert hasattr(KNOBS, name), name
        monkeypatch.setattr(KNOBS, name, value)


def test_gcd_lcm_full_range(gcd_knobs):
    """Every integer dtype over its whole range; a block with the most negative value runs ATen's
    Euclid (|min| is min, and its results keep signs), the others the binary GCD."""
    for dtype in (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64):
        info = torch.iinfo(dtype)
        a = torch.randint(info.min, info.max, (300,), device=DEVICE, dtype=dtype)
        b = torch.randint(info.min, info.max, (300,), device=DEVICE, dtype=dtype)
        b[:20], a[20:30], b[30:40] = 0, 0, a[30:40]
        b[40:60] = a[40:60] * 3 if not dtype.is_signed else (a[40:60] // 8) * 6
        check(OPS[24], torch.gcd, a, b)
        check(OPS[25], torch.lcm, a, b)
        edges = torch.tensor([info.min, info.min, 0, info.min, 6, info.min, 7, 12, info.max], device=DEVICE)
        edges = edges.to(dtype)
        check(OPS[24], torch.gcd, edges, edges.flip(0))


def test_gcd_lcm_binary_edges(gcd_knobs):
    """Blocks without the most negative value (the binary GCD): the largest values, powers of two, zeros,
    signs, and lcm's products that wrap around as ATen's do."""
    for dtype in (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64):
        info = torch.iinfo(dtype)
        top = 1 << (info.bits - 2)
        values = [0, 1, 2, 6, 7, 12, 18, info.max, info.max - 1, top, top // 3, -1, -2, -12, -top, info.min + 1]
        grid = torch.tensor([v for v in values if info.min <= v <= info.max], device=DEVICE)
        a, b = grid.repeat_interleave(len(grid)), grid.repeat(len(grid))
        check(OPS[24], torch.gcd, a.to(dtype), b.to(dtype))
        check(OPS[25], torch.lcm, a.to(dtype), b.to(dtype))


def test_gcd_lcm_int64_narrowed_blocks(gcd_knobs):
    """int64 blocks whose operands are all below 2**31 in magnitude compute the gcd (and lcm's quotient) in
    int32: such blocks with their edges (2**31 - 1, zeros, signs, lcm's products up to 2**62), the same with
    one value just outside among them (-2**31, 2**31, the largest and most negative int64), and many blocks,
    some narrow and some not; exactly ATen's results."""
    top = 2**31 - 1
    inside = torch.tensor([0, 0, 1, -1, 6, -12, 7, 18, top, -top, top - 1, 2**30, -(2**30), 3 * 2**20, 46341,
                           -65536], device=DEVICE)
    others = inside.flip(0).roll(3)
    for a, b in ((inside, others), (inside, inside), (inside, torch.zeros_like(inside))):
        check(OPS[24], torch.gcd, a, b)
        check(OPS[25], torch.lcm, a, b)
    for outside in (-(2**31), 2**31, 2**40 * 3, -(2**63), 2**63 - 1):
        a = inside.clone()
        a[5] = outside
        check(OPS[24], torch.gcd, a, others)
        check(OPS[25], torch.lcm, a, others)
    count = 6000
    a = torch.randint(-top, top + 1, (count,), device=DEVICE)
    b = torch.randint(-top, top + 1, (count,), device=DEVICE)
    b[::7], a[3::11] = 0, b[3::11] * 5 // 3
    wide = torch.randint(-(2**62), 2**62, (count,), device=DEVICE)
    a[count // 2::97] = wide[count // 2::97]
    b[count // 2 + 40::131] = -(2**63)
    check(OPS[24], torch.gcd, a, b)
    check(OPS[25], torch.lcm, a, b)


def test_float_division_by_zero():
    a = torch.tensor([5.0, -5.0, 0.0, -0.0, float("nan")], device=DEVICE)
    z = torch.zeros(5, device=DEVICE)
    for op in OPS[4:10]:
        check(op, op.fn, a, z)
    check(OPS[4], torch.div, torch.arange(-2, 3, device=DEVICE), 0)  # integer true division gives inf/nan


@pytest.mark.parametrize("fn", [lambda a, b: torch.div(a, b, rounding_mode="trunc"),
                                lambda a, b: torch.div(a, b, rounding_mode="floor"),
                                torch.floor_divide, torch.remainder, torch.fmod],
                         ids=["trunc", "floor", "floor_divide", "remainder", "fmod"])
def test_integer_division_by_zero(fn):
    a = torch.arange(-3, 3, device=DEVICE)
    b = torch.tensor([1, 2, 0, 1, 2, 3], device=DEVICE)
    if flag_gems.runtime.device.interpreter:
        raises_like_aten(fn, a, b)  # ATen on CPU: ZeroDivisionError
        raises_like_aten(fn, a, 0)
    else:
        with flag_gems.use_gems():
            fn(a, b)  # ATen on the GPU computes something; so do we, without a device error
        torch.cuda.synchronize()


def test_div_rounding_mode_errors_and_bools():
    f = make((4,), torch.float32)
    raises_like_aten(torch.div, f, f, rounding_mode="round")
    b = make((4,), torch.bool)
    raises_like_aten(torch.div, b, b, rounding_mode="trunc")
    check(OPS[4], torch.div, b, b)  # true division of bools is float


def test_integer_overflow_wraps():
    for dtype in (torch.int8, torch.int32, torch.uint8):
        info = torch.iinfo(dtype)
        a = torch.tensor([info.max, info.min, info.max - 1], device=DEVICE, dtype=dtype)
        b = torch.tensor([1, 1, 3], device=DEVICE, dtype=dtype)
        check(OPS[0], torch.add, a, b)
        check(OPS[3], torch.mul, a, b)
        check(OPS[10], torch.pow, a, b)
    check(OPS[1], torch.sub, torch.tensor([torch.iinfo(torch.int32).min], device=DEVICE, dtype=torch.int32), 1)


def test_pow_overloads_and_special_exponents():
    pow_ = OPS[10]
    x = make((5, 16), torch.float32)
    for e in [0, 1, 2, 3, 0.5, -0.5, -1, -2, 2.5, -3.3, float("inf"), float("nan"), True]:
        for dtype in (torch.float32, torch.bfloat16, torch.float64):
            check(pow_, torch.pow, x.to(dtype), e)
    i = make((5, 16), torch.int64)
    for e in [0, 1, 2, 3, 7, 0.5, -1.5]:
        check(pow_, torch.pow, i, e)
    check(pow_, torch.pow, make((3, 4), torch.bool), 2)  # promotes to int64
    check(pow_, torch.pow, 2, make((4,), torch.int32, "exponent"))
    check(pow_, torch.pow, -1, torch.tensor([-3, -2, 0, 5], device=DEVICE))  # negative integer powers
    check(pow_, torch.pow, torch.tensor([1, -1, 2, 0], device=DEVICE), torch.tensor([-3, -3, -1, 0], device=DEVICE))
    check(pow_, torch.pow, 2.5, make((4, 5), torch.float16))
    check(pow_, torch.pow, torch.tensor([-0.0, -float("inf"), 0.0], device=DEVICE), 0.5)
    raises_like_aten(torch.pow, i, -1)  # integers to negative integer powers
    raises_like_aten(torch.pow, make((3,), torch.float16), 1e6)  # exponent overflows half


def test_float64_scalars_are_exact():
    # A Python float beside float64 tensors keeps its 53 bits (a float32 scalar would be off by ~1e-8).
    x = make((9,), torch.float64)
    exact = [lambda t: t + 0.1, lambda t: t * (1 / 3), lambda t: torch.clamp(t, 0.1, 0.7),
             lambda t: t.masked_fill(t > 0, 0.1), lambda t: torch.full_like(t, 0.1), lambda t: t < 0.1 + 1e-12,
             lambda t: torch.where(t > 0, t, 0.1)]
    # fused multiply-adds and libm calls round differently in the last bit
    close = [lambda t: torch.add(t, 0.1, alpha=0.3), lambda t: torch.pow(t.abs(), 1.1),
             lambda t: torch.lerp(t, t.flip(0), 0.3), lambda t: torch.addcmul(t, t, t, value=0.1)]
    for fn in exact + close:
        ref = fn(to_reference(x))
        with served():
            res = fn(x)
        torch.testing.assert_close(res, ref.to(res.device), equal_nan=True, rtol=0 if fn in exact else 1e-14, atol=0)


def test_bitwise_and_shift_rules():
    i8 = make((3, 5), torch.int8)
    u8 = make((3, 5), torch.uint8)
    left, right = OPS[-2], OPS[-1]
    counts = torch.tensor([-1, 0, 1, 7, 8, 9, 64], device=DEVICE)
    check(left, torch.bitwise_left_shift, torch.full((7,), -3, device=DEVICE), counts)
    check(right, torch.bitwise_right_shift, torch.full((7,), -3, device=DEVICE), counts)
    check(left, torch.bitwise_left_shift, u8, 9)
    check(right, torch.bitwise_right_shift, i8, 9)
    check(left, lambda a, b: a << b, i8, 2, served_as="__lshift__")
    check(right, lambda a, b: a >> b, u8, 1, served_as="__rshift__")
    check(OPS[-5], torch.bitwise_and, make((4,), torch.bool), 1)  # promotes to int64
    for fn in (torch.bitwise_and, torch.bitwise_left_shift):
        raises_like_aten(fn, make((3,), torch.float32), make((3,), torch.float32))


def test_shift_in_place_operators():
    x = make((4, 4), torch.int32)
    ref = to_reference(x)
    ref <<= 3
    ref >>= 1
    with served("__ilshift__", "__irshift__"):
        x <<= 3
        x >>= 1
    assert_equal(x, ref.to(x.device))


def test_gcd_lcm_edges(gcd_knobs):
    a = torch.tensor([0, 0, 12, -12, 7, -2**63, 2**40], device=DEVICE)
    b = torch.tensor([0, 5, 18, 18, -21, 0, 2**20 * 3], device=DEVICE)
    check(OPS[24], torch.gcd, a, b)
    check(OPS[25], torch.lcm, a[:5], b[:5])


def test_maximum_nan_propagation():
    a = torch.tensor([float("nan"), 1.0, float("nan"), -float("inf"), 2.0], device=DEVICE)
    b = torch.tensor([1.0, float("nan"), float("nan"), 3.0, float("inf")], device=DEVICE)
    for op in OPS[11:15]:
        check(op, op.fn, a, b)


def test_comparisons_with_scalars_across_categories():
    i = make((4, 6), torch.int32)
    for op in OPS[26:32]:
        check(op, op.fn, i, 1.5)  # compared as floats
        check(op, op.fn, make((4, 6), torch.uint8), -1)
        check(op, op.fn, make((4, 6), torch.bool), 0.5)
        check(op, op.fn, make((4, 6), torch.float16), make((1, 6), torch.bfloat16))


def test_comparison_in_place_keeps_dtype():
    x = make((3, 4), torch.float32)
    ref = to_reference(x).lt_(0.5)
    with served("lt_"):
        x.lt_(0.5)
    assert_equal(x, ref.to(x.device))


def test_heaviside_nextafter_fallbacks():
    h = make((4,), torch.float16)
    with served():  # half nextafter is computed by ATen: correct, not ours
        assert_equal(torch.nextafter(h, h + 1), torch.nextafter(to_reference(h), to_reference(h) + 1).to(DEVICE))
    raises_like_aten(torch.heaviside, make((3,), torch.float32), make((3,), torch.float64))
    raises_like_aten(torch.hypot, make((3,), torch.int32), make((3,), torch.int32))
    raises_like_aten(torch.gcd, make((3,), torch.float32), make((3,), torch.float32))


def test_polar():
    polar = Op("polar", torch.polar, [torch.float32, torch.float64])
    for dtype in polar.dtypes:
        magnitude = make((3, 5), dtype, "positive")
        angle = make((5,), dtype)
        check(polar, torch.polar, magnitude, angle)
        out = torch.empty(0, dtype=torch.complex64 if dtype is torch.float32 else torch.complex128, device=DEVICE)
        check(polar, lambda a, b: torch.polar(a, b, out=out), magnitude, angle)
        # a strided out=, and non-finite values (a complex64 result is written as one word per element)
        out = torch.empty(5, 3, dtype=out.dtype, device=DEVICE).t()
        res = check(polar, lambda a, b: torch.polar(a, b, out=out), magnitude, angle)
        assert res is out and out.stride() == (1, 3)
        special = torch.tensor(SPECIALS, device=DEVICE, dtype=dtype)
        check(polar, torch.polar, special.abs().repeat(len(SPECIALS)), special.repeat_interleave(len(SPECIALS)))
    raises_like_aten(torch.polar, make((3,), torch.float32), make((3,), torch.float64))


def test_unsupported_dtypes_fall_back():
    c = torch.randn(5, dtype=torch.complex64, device=DEVICE)
    u16 = torch.arange(5, device=DEVICE).to(torch.uint16)
    for fn in (lambda: c + c, lambda: c * 2, lambda: c == c, lambda: torch.div(c, 2), lambda: u16 == u16,
               lambda: u16 & u16):
        try:
            expected = fn()
        except NotImplementedError:  # ATen has no kernel for it on this device (CUDA: uint16 bitwise_and)
            raises_like_aten(fn)
            continue
        with served():
            assert_equal(fn(), expected)


def test_int64_index_path():
    # Offsets computed in int64 (as for tensors past 2**31 elements) give the same results.
    from flag_gems import elementwise

    x = make((3, 40), torch.float32)
    y = make((40,), torch.int32, "nonzero")
    expected = [torch.remainder(x, y), torch.gcd(y, y.flip(0)), torch.pow(x, 2)]
    old = elementwise._force_int64
    elementwise._force_int64 = True
    try:
        with served("remainder", "gcd", "pow"):
            res = [torch.remainder(x, y), torch.gcd(y, y.flip(0)), torch.pow(x, 2)]
    finally:
        elementwise._force_int64 = old
    for r, e in zip(res, expected):
        assert_close(r, e.to(r.device), r.dtype, equal_nan=True)


def test_every_overload_declared_is_valid():
    from gems_pointwise import registered_binary

    names = [impl.aten for impl in registered_binary.ops()]
    assert len(names) == len(set(names))
    info = next(f for f in flag_gems.families() if f["name"] == "pointwise")
    assert not [n for n in info["skipped"] if n in names]
