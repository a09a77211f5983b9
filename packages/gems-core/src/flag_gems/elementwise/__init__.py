"""``pointwise_dynamic``: turn a jitted scalar function into an elementwise op over tensors.

    @pointwise_dynamic(promotion_methods=[(0, 1, "DEFAULT")])
    @triton.jit
    def add(x, y):
        return x + y

``add(a, b)`` broadcasts, promotes, allocates the output with ATen's strides and launches a kernel
generated for the operands' coalesced rank. Per call the work is: classify the arguments into a
signature key, look up the ready plan for it, and launch; promotion and code generation happen once
per signature.

A constexpr parameter of the scalar function is fixed when the op is declared, never per call:
``constexprs={"HALF": True}`` in the decorator, or ``op.bind("name", HALF=True)`` for a second op on the
same function. The generated kernel passes it on as a constexpr, so Triton specialises on its value.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

from flag_gems.elementwise import shapes
from flag_gems.elementwise.codegen import Pattern, load_kernel
from flag_gems.launch import Launcher, specialization
from flag_gems.outputs import check_no_partial_overlap, resize_output
from flag_gems.promotion import promote, promotion_kind
from flag_gems.runtime import device

_TL_DTYPES = {
    torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32", torch.float64: "float64",
    torch.int8: "int8", torch.int16: "int16", torch.int32: "int32", torch.int64: "int64",
    torch.uint8: "uint8", torch.bool: "int1",
}
_INT32_LIMIT = 2**31 - 1
_MAX_FLAT_SIZES = 1024
_empty_like = torch.empty_like
_Tensor = torch.Tensor
_DENSE = torch.contiguous_format
_MAX_LAYOUTS = 1024
_serial = itertools.count()


def _tl_dtype(dtype: torch.dtype):
    import triton.language as tl

    name = _TL_DTYPES.get(dtype)
    if name is None:
        raise NotImplementedError(f"pointwise_dynamic does not handle {dtype}")
    return getattr(tl, name)


def _opmath(dtype: torch.dtype) -> torch.dtype:
    # Half types compute in float32: what ATen does on the GPU, and what the interpreter needs for bf16.
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def next_power_of_2(n: int) -> int:
    # Plain Python: triton.next_power_of_2 is a constexpr function, costly to call on the host.
    return 1 << (n - 1).bit_length() if n > 1 else 1


def block_size(n: int) -> tuple[int, int]:
    """(BLOCK, num_warps) for ``n`` elements."""
    if device.interpreter:
        # Each interpreted program costs milliseconds: few, large programs.
        return min(next_power_of_2(n), 16384), 4
    # On an H100/H200, 1024 elements and 4 warps per program reach ATen's speed and the copy ceiling
    # for fp32 and bf16 alike (scripts/tune_pointwise_blocks.py); smaller inputs get one program.
    if n <= 1024:
        return max(next_power_of_2(n), 128), 4
    return 1024, 4


class _Plan:
    """Everything a call signature decides once: dtypes, operand kinds and compiled launchers."""

    __slots__ = ("out_dtypes", "compute", "kinds", "tensor_pos", "tensor_pick", "pointer_pos", "int_pos", "convert",
                 "converts", "like_first", "flat_pattern", "launchers", "flat_launchers", "flat_sizes", "layouts")

    def __init__(self, out_dtypes, compute, kinds, convert, num_outputs, int_pos, bound):
        self.out_dtypes = out_dtypes
        self.compute = compute
        self.kinds = kinds
        self.tensor_pos = [i for i, k in enumerate(kinds) if k in "tr"]
        # None when every argument is a tensor operand: the call's arguments are its tensors; a slice when
        # the tensors lead the arguments (a tensor and its scalars), cheaper than picking them one by one.
        self.tensor_pick = None if len(self.tensor_pos) == len(kinds) else self.tensor_pos
        if self.tensor_pick and self.tensor_pos == list(range(len(self.tensor_pos))):
            self.tensor_pick = slice(len(self.tensor_pos))
        # Where a launch's arguments (operands, outputs, then integers) hold tensors.
        self.pointer_pos = (*self.tensor_pos, *range(len(kinds), len(kinds) + num_outputs))
        # Scalars reach the kernel as arguments, which Triton specialises when they are integers: the
        # positions of those (a signature fixes each scalar's type once converted).
        self.int_pos = int_pos
        # Per argument: how its value reaches the kernel (None: as it is).
        self.convert = convert
        self.converts = any(c is not None for c in convert)
        # Whether the one output has the first operand's dtype (set by the op once it knows the operands).
        self.like_first = False
        self.flat_pattern = Pattern(kinds, num_outputs, 0, bound)
        self.launchers: dict[tuple, Launcher] = {}
        self.flat_launchers: dict[tuple, Launcher] = {}
        # Flat calls: element count -> (grid, launcher, Triton's specialisation of the count).
        self.flat_sizes: dict[int, tuple] = {}
        # Strided calls: (shape, strides) of every operand -> _Layout.
        self.layouts: dict[tuple, _Layout] = {}


class _Layout:
    """What a strided call decides from its operands' shapes and strides alone, kept per layout:
    the output's shape and strides, the coalesced sizes and strides, and the launcher."""

    __slots__ = ("shape", "out_strides", "n", "tail", "spec", "grid", "launcher")

    def __init__(self, shape, out_strides, n, tail, grid, launcher):
        self.shape = shape
        self.out_strides = out_strides
        self.n = n
        self.tail = tail  # the kernel's arguments after the operands: n, sizes, strides
        self.spec = ("a16", specialization(tail))
        self.grid = grid
        self.launcher = launcher


def _as_kernel_scalar(value):
    value = value.item() if isinstance(value, torch.Tensor) else value
    # Booleans travel as integers: Triton's interpreter cannot hold a Python bool as int1.
    return int(value) if type(value) is bool else value


class PointwiseDynamic:
    """An elementwise op generated from a jitted scalar function (see module docstring)."""

    def __init__(self, fn, is_tensor, dtypes, promotion_methods, output_dtypes, num_outputs, constexprs=None,
                 name=None):
        self.fn = fn
        self.__name__ = name or getattr(fn, "__name__", "pointwise")
        self.__doc__ = getattr(fn, "__doc__", None)
        self._declared = {"is_tensor": is_tensor, "dtypes": dtypes, "promotion_methods": promotion_methods,
                          "output_dtypes": output_dtypes, "num_outputs": num_outputs}
        self.constexprs = dict(constexprs or {})
        unknown = [c for c in self.constexprs if c not in fn.arg_names]
        if unknown:
            raise ValueError(f"{self.__name__}: constexprs {unknown} are not parameters of {fn.arg_names}")
        # The bound parameters leave the op's arguments; the kernels take them as constexprs K_<name>.
        self._bound = tuple([(i, a) for i, a in enumerate(fn.arg_names) if a in self.constexprs])
        self._bound_values = {f"K_{a}": self.constexprs[a] for _, a in self._bound}
        self.arg_names = [a for a in fn.arg_names if a not in self.constexprs]
        nargs = self._nargs = len(self.arg_names)
        self.is_tensor = list(is_tensor) if is_tensor is not None else [True] * nargs
        if len(self.is_tensor) != nargs:
            raise ValueError(f"{self.__name__}: is_tensor has {len(self.is_tensor)} items for {nargs} arguments")
        self.dtypes = list(dtypes) if dtypes is not None else [None] * nargs
        if num_outputs is None:
            num_outputs = len(output_dtypes) if output_dtypes else max(len(promotion_methods or ()), 1)
        self.num_outputs = num_outputs
        self.output_dtypes = list(output_dtypes) if output_dtypes else [None] * num_outputs
        methods = list(promotion_methods or ())
        if any(d is None for d in self.output_dtypes) and not methods:
            raise ValueError(f"{self.__name__}: promotion_methods is required unless output_dtypes fixes "
                             "every output, e.g. promotion_methods=[(0, 'DEFAULT')]")
        if len(methods) == 1 and num_outputs > 1:
            methods = methods * num_outputs
        self.promotion = []
        for method in methods:
            *positions, kind = method
            self.promotion.append((tuple(positions), promotion_kind(kind)))
        self.promoted_args = {p for positions, _ in self.promotion for p in positions}
        self._out_names = [f"out{j}" for j in range(num_outputs)]
        self._no_outs = [None] * num_outputs
        self._plans: dict[tuple, _Plan] = {}
        self._kernels: dict[Pattern, object] = {}
        self._tag = f"{self.__name__}_{next(_serial)}"

    def bind(self, name: str, /, **constexprs) -> PointwiseDynamic:
        """A new op named ``name``: this one's declaration and scalar function, with ``constexprs`` fixed
        on top of (or instead of) this op's."""
        return PointwiseDynamic(self.fn, **self._declared, constexprs={**self.constexprs, **constexprs}, name=name)

    # -- per call ---------------------------------------------------------------------------------
    def __call__(self, *args, out0=None, **kwargs):
        # ``out0`` is a parameter so that passing it builds no keyword dict; an output passed as None is
        # no output, and such a call takes the plain call's plan and path.
        outs = no_outs = self._no_outs
        if kwargs:
            args, outs = self._given_outputs(args, out0, kwargs)
        elif out0 is not None:
            outs = [out0] + no_outs[1:]
        if len(args) != self._nargs:
            raise TypeError(f"{self.__name__}() takes {self._nargs} arguments, got {len(args)}")
        # The signature: dtypes (0-d tensors rank below others in promotion, and a CPU one beside GPU
        # tensors is a scalar), Python types of the other arguments, and the dtypes of given outputs.
        key = tuple([(a.dtype if a.ndim else (a.dtype, a.is_cpu)) if isinstance(a, _Tensor) else type(a)
                     for a in args])
        given = outs is not no_outs
        if given:
            key += tuple([o.dtype if o is not None else None for o in outs])
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._make_plan(args, outs)
        # The call's run, here rather than in a method of its own: one Python frame less per call.
        values = [a if c is None else c(a) for a, c in zip(args, plan.convert)] if plan.converts else args
        pick = plan.tensor_pick
        tensors = args if pick is None else args[pick] if type(pick) is slice else [args[i] for i in pick]
        if not tensors:
            raise TypeError(f"{self.__name__}() needs at least one tensor argument")
        first = tensors[0]
        flat = first.is_contiguous()
        if flat and len(tensors) > 1:
            shape = first.shape
            for t in tensors[1:]:
                if t.shape != shape or not t.is_contiguous():
                    flat = False
                    break
        if given:
            for o in outs:
                if o is not None:
                    check_no_partial_overlap(o, tensors)
            if flat:
                shape = first.shape
                flat = all(o is None or (o.shape == shape and o.is_contiguous()) for o in outs)
        if flat:
            # Every operand shares one dense layout, so one index walks them all.
            # New outputs like the first operand, contiguous: empty_like parses fewer arguments than empty.
            n = first.numel()
            if self.num_outputs == 1:
                out = outs[0]
                if out is None:
                    # A dense vector's strides are the contiguous ones: then the output is empty_like's
                    # own, and keyword arguments cost more to parse than the allocation's other work.
                    out = (_empty_like(first) if plan.like_first and n > 1 and first.ndim == 1
                           else _empty_like(first, dtype=plan.out_dtypes[0], memory_format=_DENSE))
                results = (out,)
            else:
                results = tuple([o if o is not None else _empty_like(first, dtype=dt, memory_format=_DENSE)
                                 for o, dt in zip(outs, plan.out_dtypes)])
            if n:
                sized = plan.flat_sizes.get(n)
                if sized is None or _force_int64:
                    sized = self._flat_size(plan, n)
                grid, launcher, fixed = sized
                launch_args = [*values, *results, n]
        else:
            results, layout = self._strided(plan, args, tensors, outs)
            n = layout.n
            if n:
                grid, launcher, fixed = layout.grid, layout.launcher, layout.spec
                launch_args = [*values, *results, *layout.tail]
        if n and device.interpreter:
            launcher(grid, launch_args)
        elif n:
            # The compiled kernel takes tensors as their addresses, read once here. With every one 16-byte
            # aligned and no integer scalar (the common case), the launch's key is what the plan or layout
            # fixed; otherwise _launch_spec works it out.
            addresses = [*launch_args]
            ptrs = 0
            for i in plan.pointer_pos:
                p = addresses[i] = launch_args[i].data_ptr()
                ptrs |= p
            spec = (_launch_spec(plan, fixed, values, tensors, outs, launch_args) if ptrs & 15 or plan.int_pos
                    else fixed)
            if not launcher.launch_addresses(grid, addresses, spec):
                launcher(grid, launch_args, spec)
        return results[0] if self.num_outputs == 1 else results

    def _given_outputs(self, args, out0, kwargs) -> tuple:
        """(args, outs) of a call given keyword arguments (outputs among them); outs all None is no output."""
        outs = [out0] + [kwargs.pop(name, None) for name in self._out_names[1:]]
        if kwargs:
            args = self._bind(args, kwargs)
        if all(o is None for o in outs):
            outs = self._no_outs
        return args, outs

    def _bind(self, args, kwargs):
        values = list(args) + [None] * (len(self.arg_names) - len(args))
        for name, value in kwargs.items():
            if name not in self.arg_names:
                raise TypeError(f"{self.__name__}() got an unexpected keyword argument {name!r}")
            values[self.arg_names.index(name)] = value
        return tuple(values)

    def _make_plan(self, args, outs) -> _Plan:
        kinds, convert = [], []
        for i, (a, tensor_slot) in enumerate(zip(args, self.is_tensor)):
            is_operand = isinstance(a, torch.Tensor) and not (a.dim() == 0 and a.device.type != device.name)
            if tensor_slot and is_operand:
                kinds.append("t" if i in self.promoted_args else "r")
                convert.append(None)
                continue
            kinds.append("s" if tensor_slot and i in self.promoted_args else "v")
            declared = self.dtypes[i]
            if isinstance(a, torch.Tensor) or type(a) is bool:
                convert.append(_as_kernel_scalar)
            elif declared is not None and a is not None and declared is not type(a):
                convert.append(declared)
            else:
                convert.append(None)
        out_dtypes, compute = [], None
        for j in range(self.num_outputs):
            fixed = self.output_dtypes[j]
            if fixed is not None and (j >= len(self.promotion)):
                out_dtypes.append(fixed)
                continue
            positions, kind = self.promotion[j]
            computation, result = promote(*[args[p] for p in positions], kind=kind)
            out_dtypes.append(fixed if fixed is not None else result)
            if compute is None:
                compute = _opmath(computation)
        for j, o in enumerate(outs):
            if o is not None and not torch.can_cast(out_dtypes[j], o.dtype):
                raise RuntimeError(f"result type {_type_name(out_dtypes[j])} can't be cast to the desired "
                                   f"output type {_type_name(o.dtype)}")
        compute_dtypes = []
        for i, kind in enumerate(kinds):
            if kind in "ts":
                compute_dtypes.append(_tl_dtype(compute if compute is not None else _opmath(_dtype_of(args[i]))))
            else:
                compute_dtypes.append(None)
        int_pos = [i for i, (a, c, kind) in enumerate(zip(args, convert, kinds))
                   if kind in "sv" and type(a if c is None else c(a)) is int]
        plan = _Plan(out_dtypes, compute_dtypes, tuple(kinds), convert, self.num_outputs, int_pos, self._bound)
        if plan.tensor_pos and self.num_outputs == 1:
            plan.like_first = out_dtypes[0] == args[plan.tensor_pos[0]].dtype
        return plan

    def _kernel(self, pattern: Pattern):
        kernel = self._kernels.get(pattern)
        if kernel is None:
            kernel = self._kernels[pattern] = load_kernel(pattern, self.fn, self._tag)
        return kernel

    def _flat_size(self, plan: _Plan, n: int) -> tuple:
        """(grid, launcher, specialisation of n) of the flat kernel for ``n`` elements, kept per plan."""
        int64 = n > _INT32_LIMIT or _force_int64
        block, warps = block_size(n)
        launcher = plan.flat_launchers.get((block, int64))
        if launcher is None:
            launcher = plan.flat_launchers[(block, int64)] = self._launcher(plan, plan.flat_pattern, block, warps,
                                                                            int64)
        sized = (((n + block - 1) // block, 1, 1), launcher, ("a16", n % 16 == 0, n == 1))
        if not _force_int64:  # a forced int64 launch is for tests, never kept
            if len(plan.flat_sizes) >= _MAX_FLAT_SIZES:  # sizes that keep changing: keep the cache bounded
                plan.flat_sizes.clear()
            plan.flat_sizes[n] = sized
        return sized

    def _launcher(self, plan: _Plan, pattern: Pattern, block: int, warps: int, int64: bool) -> Launcher:
        constexprs = {f"CT{i}": ct for i, ct in enumerate(plan.compute)}
        constexprs.update(BLOCK=block, INT64=int64, **self._bound_values)
        # libdevice would flush denormal inputs to zero by default; ATen does not.
        options = {} if device.interpreter else {"enable_reflect_ftz": False}
        return Launcher(self._kernel(pattern), constexprs, num_warps=warps, **options)

    def _strided(self, plan: _Plan, args, tensors, outs) -> tuple:
        """The outputs of a call whose operands do not share one dense layout, and its layout."""
        given = outs is not self._no_outs
        key = tuple([(t.shape, t.stride()) for t in tensors])
        if given:
            key += tuple([(o.shape, o.stride()) if o is not None else None for o in outs])
        layout = plan.layouts.get(key) if not _force_int64 else None
        if layout is None:
            layout, reusable = self._layout(plan, args, tensors, outs)
            if reusable and not _force_int64:
                if len(plan.layouts) >= _MAX_LAYOUTS:  # shapes that keep changing (a growing cache)
                    plan.layouts.clear()
                plan.layouts[key] = layout
        # new_empty takes the first operand's device without building a torch.device: the cheapest
        # allocation Python has on the GPU.
        first = tensors[0]
        results = []
        for o, dt in zip(outs, plan.out_dtypes):
            if o is None:
                o = (first.new_empty(layout.shape, dtype=dt) if layout.out_strides is None
                     else first.new_empty_strided(layout.shape, layout.out_strides, dtype=dt))
            results.append(o)
        return tuple(results), layout

    def _layout(self, plan: _Plan, args, tensors, outs) -> tuple[_Layout, bool]:
        """The layout of a strided call, and whether later calls with the same operand shapes and
        strides may reuse it (not when a given output had to be resized)."""
        shape = shapes.broadcast_shape([t.shape for t in tensors])
        for o, a in itertools.product(outs, args):
            if o is not None and o is a and tuple(o.shape) != shape:
                raise RuntimeError(f"output with shape {list(o.shape)} doesn't match the broadcast shape {list(shape)}")
        given = [o for o in outs if o is not None]
        reusable = True
        for o in given:
            if tuple(o.shape) != shape:
                reusable = False
            resize_output(o, shape)
            if not o.is_contiguous() and torch._debug_has_internal_overlap(o) == 1:
                raise RuntimeError("unsupported operation: more than one element of the written-to tensor "
                                   "refers to a single memory location. Please clone() the tensor before "
                                   "performing the operation.")
        in_strides = [shapes.broadcast_strides(t, shape) for t in tensors]
        given_strides = [list(o.stride()) for o in given]
        perm = shapes.memory_order(shape, given_strides + in_strides)
        new_strides = shapes.output_strides(shape, perm)
        fresh_strides = new_strides or shapes.contiguous_strides(shape)  # of the outputs allocated here
        out_strides = [list(o.stride()) if o is not None else fresh_strides for o in outs]
        n = 1
        for s in shape:
            n *= s
        tail, grid, launcher = [n], None, None
        if n:
            sizes, strides = shapes.coalesce(shape, perm, in_strides + out_strides)
            if len(sizes) <= 1 and all(not s or s[0] == 1 for s in strides):
                pattern, sizes, strides = plan.flat_pattern, (), ()
            else:
                pattern = Pattern(plan.kinds, self.num_outputs, len(sizes), self._bound)
            reach = n
            if sizes:
                reach = max([n] + [shapes.max_offset(sizes, s) for s in strides])
            int64 = reach > _INT32_LIMIT or _force_int64
            block, warps = block_size(n)
            lkey = (pattern, block, int64)
            launcher = plan.launchers.get(lkey)
            if launcher is None:
                launcher = plan.launchers[lkey] = self._launcher(plan, pattern, block, warps, int64)
            tail += sizes
            for operand in strides:
                tail += operand
            grid = ((n + block - 1) // block, 1, 1)
        return _Layout(shape, new_strides, n, tail, grid, launcher), reusable


def _launch_spec(plan: _Plan, fixed: tuple, values, tensors, given, launch_args) -> tuple:
    """The launch's key in its Launcher: with every pointer 16-byte aligned (the common case) the part
    the call's plan or layout fixed plus the integer scalars; otherwise Triton's specialisation of
    every argument. (The plan already fixes every dtype and value type.) Outputs allocated here start a
    block of the caching allocator, aligned: only operands and ``given`` outputs are looked at."""
    ptrs = 0  # aligned(...), inlined
    for t in tensors:
        ptrs |= t.data_ptr()
    for t in given:
        if t is not None:
            ptrs |= t.data_ptr()
    if ptrs & 15:
        return specialization(launch_args)
    if not plan.int_pos:
        return fixed
    # Triton compiles an integer argument equal to 1 as a constant, and marks one divisible by 16.
    return (*fixed, *[(v == 1, v % 16 == 0, -(2**31) <= v < 2**31) for v in [values[i] for i in plan.int_pos]])


_force_int64 = False


def _dtype_of(value) -> torch.dtype:
    if isinstance(value, torch.Tensor):
        return value.dtype
    return {bool: torch.bool, int: torch.int64, float: torch.get_default_dtype()}.get(type(value), torch.float32)


def _type_name(dtype: torch.dtype) -> str:
    return {torch.float32: "Float", torch.float64: "Double", torch.float16: "Half", torch.bfloat16: "BFloat16",
            torch.int64: "Long", torch.int32: "Int", torch.int16: "Short", torch.int8: "Char",
            torch.uint8: "Byte", torch.bool: "Bool"}.get(dtype, str(dtype))


def pointwise_dynamic(fn=None, *, is_tensor: Sequence[bool] | None = None, dtypes=None,
                      promotion_methods=None, output_dtypes=None, num_outputs: int | None = None,
                      constexprs: dict | None = None):
    """Decorate a ``@triton.jit`` scalar function into an elementwise op (see module docstring).

    ``promotion_methods``: one ``(arg positions..., kind)`` per output, kind a name of
    ``ELEMENTWISE_TYPE_PROMOTION_KIND``; required unless ``output_dtypes`` fixes every output.
    ``is_tensor``/``dtypes`` describe non-tensor arguments; ``out0=``, ``out1=`` give outputs.
    ``constexprs``: values of constexpr parameters of the scalar function, which the op's callers then
    leave out (``is_tensor`` and ``dtypes`` describe the other arguments only); see also ``bind``.
    """

    def wrap(jit_fn):
        return PointwiseDynamic(jit_fn, is_tensor, dtypes, promotion_methods, output_dtypes, num_outputs,
                                constexprs)

    return wrap(fn) if fn is not None else wrap


__all__ = ["pointwise_dynamic", "PointwiseDynamic", "block_size"]
