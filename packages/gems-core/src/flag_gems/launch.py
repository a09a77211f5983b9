"""Launching a jitted kernel with as little host work per call as possible.

On the GPU the first launch of a kernel for a given specialisation goes through Triton's
``kernel[grid](...)``, which compiles (or loads from Triton's disk cache); the compiled kernel is then
kept and later launches call its launcher directly. Triton specialises a kernel on its integer
arguments equal to 1 or divisible by 16 and on 16-byte aligned pointers, so the caller passes that
specialisation as part of the cache key. On the interpreter every launch goes through Triton.
"""

from __future__ import annotations

import torch

from flag_gems.runtime import device

# triton.knobs.runtime, bound when the first Launcher is made: ``import flag_gems`` leaves Triton
# unimported, so that an application pays for it only once kernels are needed.
_runtime_knobs = None

if device.interpreter:
    _raw_stream = _current_device = None
else:
    # A launch asks for the current device's current stream: two C calls, no Python frame.
    _raw_stream = torch._C._cuda_getCurrentRawStream
    _current_device = torch._C._cuda_getDevice


_I32 = range(-(2**31), 2**31)
_Tensor = torch.Tensor


def specialization(args) -> tuple:
    """What Triton compiles a kernel for, given the arguments: each tensor's dtype and 16-byte
    alignment, each integer's width and whether it equals 1 or divides by 16, other values' types."""
    # One expression per argument: this runs on every launch that has no cheaper key.
    return tuple([((a == 1) + 16 * (a % 16 == 0) if a in _I32 else ("i64", a % 16 == 0)) if type(a) is int
                  else (a.dtype, a.data_ptr() & 15 == 0) if isinstance(a, _Tensor)
                  else type(a) for a in args])


def aligned(*groups) -> bool:
    """Whether every tensor in ``groups`` starts at a 16-byte aligned address, the pointer property
    Triton specialises on: then a launch's key need not name each pointer."""
    ptrs = 0
    for group in groups:
        for t in group:
            ptrs |= t.data_ptr()
    return ptrs & 15 == 0


def _bind_triton() -> None:
    global _runtime_knobs
    import triton

    _runtime_knobs = triton.knobs.runtime


class Launcher:
    """Launches one jitted kernel with fixed constexprs and launch options."""

    __slots__ = ("kernel", "constexprs", "options", "_compiled", "_direct", "_per_device")

    def __init__(self, kernel, constexprs: dict, **options) -> None:
        if _runtime_knobs is None:
            _bind_triton()
        self.kernel = kernel
        # The direct path passes the constexprs after the runtime arguments, in the kernel's order.
        self.constexprs = _in_signature_order(kernel, constexprs)
        self.options = options
        self._compiled: dict[tuple, tuple] = {}
        self._direct = not device.interpreter
        self._per_device = self._direct and device.device_count() > 1

    def __call__(self, grid: tuple, args: list, spec_key: tuple | None = None) -> None:
        """Launch on ``grid`` (1 to 3 sizes) with the kernel's non-constexpr ``args`` in order."""
        if spec_key is not None and self.launch_addresses(grid, args, spec_key, tensors=True):
            return
        if recording:
            taint_recording("launched through Triton's own path")
        kernel = self.kernel[grid](*args, **self.constexprs, **self.options)
        if self._direct and spec_key is not None:
            pointers = tuple([i for i, a in enumerate(args) if isinstance(a, _Tensor)])
            # A compiled kernel is loaded into one device's context: with several GPUs, kept by device.
            key = (_current_device(), *spec_key) if self._per_device else spec_key
            self._compiled[key] = (*_direct_call(kernel, tuple(self.constexprs.values())), pointers,
                                   _replay_facts(kernel, len(args)))

    def launch_addresses(self, grid: tuple, addresses: list, spec_key: tuple, tensors: bool = False) -> bool:
        """The direct launch of a kernel compiled for ``spec_key``, with ``addresses``: its arguments with each
        tensor given as its ``data_ptr()`` (None stays Triton's null pointer), or with ``tensors``, as given.
        False when there is none to take (on the interpreter, before the first launch for ``spec_key``, or
        while a profiler's launch hook is installed): nothing is launched, and the caller launches through
        ``__call__`` instead. One Python frame from the caller to Triton's C launcher: this runs every call."""
        if not self._direct:
            return False
        index = _current_device()
        compiled = self._compiled.get((index, *spec_key) if self._per_device else spec_key)
        if compiled is None:
            return False
        hooks = _runtime_knobs.launch_enter_hook  # a profiler's hook must see each launch, through Triton
        if getattr(hooks, "calls", hooks) and not (recording and hooks.calls == _SPY_ONLY):
            return False
        launch, function, head, tail, pointers, facts = compiled
        if tensors:
            # Tensors travel as their addresses: Triton's launcher would ask each for data_ptr() and then
            # the driver whether it is a device pointer (the dispatcher already put them there). A launch key
            # fixes which arguments are tensors; None is Triton's null pointer. The caller's list stays.
            addresses = [*addresses]
            for i in pointers:
                a = addresses[i]
                if a is not None:
                    addresses[i] = a.data_ptr()
        size = len(grid)
        launch(grid[0], grid[1] if size > 1 else 1, grid[2] if size > 2 else 1, _raw_stream(index), function,
               *head, *addresses, *tail)
        if recording:
            _report(function, grid, facts, addresses)
        return True


# -- replayed launches (flag_gems.native) -----------------------------------------------------------------
#: How many threads record a call for replay now: while any does, launches report themselves (the module
#: keeps each report for the thread that made it).
recording = 0
_replay = None  # the compiled replay module, bound by begin_recording


def _spy(*_args) -> None:
    # In Triton's hook chain while recording: a launch through Triton's own path is one we cannot replay.
    _replay.taint("launched through Triton's own path")


_SPY_ONLY = [_spy]


def begin_recording(replay) -> None:
    """Called by the replay module before it runs a Python kernel it records (the GIL held)."""
    global recording, _replay
    _replay = replay
    recording += 1
    if _runtime_knobs is None:
        _bind_triton()
    _runtime_knobs.launch_enter_hook.add(_spy)


def end_recording() -> None:
    """Called by the replay module after the recorded kernel returned or raised (the GIL held)."""
    global recording
    recording -= 1
    if not recording:
        _runtime_knobs.launch_enter_hook.remove(_spy)


def taint_recording(why: str) -> None:
    """The call being recorded did work a replay would not repeat."""
    if _replay is not None:
        _replay.taint(why)


def _replay_facts(kernel, num_args: int) -> tuple | None:
    """What a replay of ``kernel`` needs beyond its arguments: (num_warps, num_ctas, shared memory), whether
    it launches in a mode of its own (cooperative, programmatic dependent, profiled), the global scratch
    memory each program takes (bytes, alignment: Hopper kernels build tensor descriptors there), and the
    types of its ``num_args`` runtime parameters as Triton's signature writes them."""
    signature = getattr(getattr(kernel, "src", None), "signature", None)
    if not isinstance(signature, dict):
        return None
    runner = kernel.run
    special = bool(getattr(runner, "launch_cooperative_grid", 1) or getattr(runner, "launch_pdl", 1)
                   or getattr(runner, "profile_scratch_size", 1))
    scratch = (getattr(runner, "global_scratch_size", 0), getattr(runner, "global_scratch_align", 1))
    types = [t if isinstance(t, str) else "unsupported" for t in list(signature.values())[:num_args]]
    return tuple(kernel.packed_metadata), special, scratch, types


def _report(function, grid, facts, addresses) -> None:
    if facts is None:
        _replay.taint("launched a kernel Triton describes in another way")
        return
    (warps, ctas, shared), special, (scratch, align), types = facts
    size = len(grid)
    _replay.record_launch(function, grid[0], grid[1] if size > 1 else 1, grid[2] if size > 2 else 1, warps, ctas,
                          shared, special, scratch, align, types, list(addresses))


def _direct_call(kernel, constexprs: tuple) -> tuple:
    """(launch, function, leading arguments, trailing arguments) of a compiled kernel.

    Triton's launcher object allocates scratch memory per launch when a kernel asks for it and then
    calls its C ``launch``; kernels that need none (nearly all) get that C function itself, one Python
    frame less per call. The leading arguments are what Triton's own ``run`` passes before the kernel's.
    """
    runner = kernel.run  # Triton's launcher object (a property that loads the kernel first)
    launcher = runner
    c_launch = getattr(launcher, "launch", None)
    no_scratch = (getattr(launcher, "global_scratch_size", 1) == 0
                  and getattr(launcher, "profile_scratch_size", 1) == 0)
    tail = (kernel.packed_metadata, None, None, None)  # metadata, launch metadata, enter and exit hooks
    if c_launch is not None and no_scratch:
        head = (launcher.launch_cooperative_grid, launcher.launch_pdl, None, None, *tail)
        return c_launch, kernel.function, head, constexprs
    return runner, kernel.function, tail, constexprs


_launchers: dict[tuple, Launcher] = {}


def shared_launcher(kernel, constexprs: dict, variant: tuple = (), **options) -> Launcher:
    """The process's one Launcher of ``kernel`` with these constexprs and launch options: the plans of
    every shape that needs the same compiled kernels share it, so a new shape skips Triton's launch path.

    ``variant`` keeps launchers apart for callers whose launch keys leave something out (a key made of
    the integers alone, with the tensor dtypes as the variant).
    """
    key = (kernel, *constexprs.items(), *options.items(), *variant)
    found = _launchers.get(key)
    if found is None:
        found = _launchers[key] = Launcher(kernel, constexprs, **options)
    return found


def launch(kernel, grid: tuple, *args, num_warps: int = 4, num_stages: int | None = None, **constexprs) -> None:
    """``kernel[grid](*args, **constexprs, num_warps=...)`` at a fraction of the host cost.

    ``args`` are the kernel's runtime arguments in order and ``constexprs`` its constexpr parameters,
    which must come after every runtime parameter in the kernel's signature. ``grid`` has 1 to 3 sizes.
    """
    options = {"num_warps": num_warps} if num_stages is None else {"num_warps": num_warps, "num_stages": num_stages}
    spec = None if device.interpreter else specialization(args)
    shared_launcher(kernel, constexprs, **options)(grid, list(args), spec)


def _in_signature_order(kernel, constexprs: dict) -> dict:
    """``constexprs`` ordered as the kernel's parameters, which must end with exactly them."""
    names = list(getattr(kernel, "arg_names", ()))
    if not names:
        return constexprs
    tail = names[len(names) - len(constexprs):] if constexprs else []
    if set(tail) != set(constexprs):
        raise TypeError(f"{getattr(kernel, '__name__', kernel)}: its parameters must end with the constexprs "
                        f"given by keyword ({sorted(constexprs)}); they are {names}")
    return {name: constexprs[name] for name in tail}
