"""The one place that talks to ``torch.library``: serving overloads, and calling ATen's own kernels.

Overloads are registered with the dispatcher in batches, one registration handle per batch: resetting
a handle gives ATen back the kernels of every overload in it exactly, in one call. Changing what is
served (``use_gems`` with a subset, ``disable``) touches only the overloads that change; a batch that
loses some of its overloads is reset and its others registered again.

The dispatcher's own cost is the floor here: about 3.5 µs to register a Python kernel for one overload
and 0.4 µs to reset it (torch 2.11-2.13, measured on CPU), so serving 650 overloads takes about 2.5 ms.
"""

from __future__ import annotations

import functools
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from flag_gems import aten_names, launch, native, recording
from flag_gems.runtime import device
from flag_gems.spec import lazy

_KEYS = {key: getattr(torch._C.DispatchKey, key) for key in (device.dispatch_key, device.autograd_key)}
_KEYSETS = {key: torch._C.DispatchKeySet(value) for key, value in _KEYS.items()}
# ATen's kernels, captured before we first served each overload: (name, key) -> kernel.
_aten_kernels: dict[tuple[str, str], object] = {}
_served: dict[str, _Registration] = {}
_batches: list[_Batch] = []
_inside_kernel = threading.local()


@dataclass(frozen=True)
class Entry:
    """An overload to serve: by which family, with which callable, on which key."""

    name: str
    family: str
    fn: Callable
    autograd: bool = False
    replay: bool = True

    @property
    def key(self) -> str:
        return device.autograd_key if self.autograd else device.dispatch_key


class _Batch:
    """One dispatcher registration handle and the overloads registered through it, all with the same
    ``record`` setting."""

    __slots__ = ("handle", "record", "names", "replay")

    def __init__(self, record: bool) -> None:
        # The dispatcher's own handle, without torch.library.Library's Python bookkeeping.
        self.handle = torch._C._dispatch_library("IMPL", "aten", "", __file__, 0)
        self.record = record
        self.names: set[str] = set()
        self.replay = Replays(record)

    def reset(self) -> None:
        self.replay.reset()
        self.handle.reset()


class Replays:
    """The replaying kernels (``flag_gems.native``) put in front of one registration's Python kernels, by
    dispatch key. None where calls are recorded (they must reach Python, where they are counted) or run on
    the interpreter."""

    __slots__ = ("_handles",)

    def __init__(self, record: bool) -> None:
        self._handles: dict[str, native.Handle] | None = None if record or device.interpreter else {}

    def install(self, entry: Entry, key: str | None = None) -> None:
        """Replay ``entry``'s calls at ``key`` (its own key by default), unless it declared replay=False."""
        if self._handles is None or not entry.replay:
            return
        key = key or entry.key
        handle = self._handles.get(key)
        if handle is None:
            handle = self._handles[key] = native.Handle(key)
        handle.install(entry.name)

    def reset(self) -> None:
        for handle in (self._handles or {}).values():
            handle.reset()
        if self._handles:
            self._handles.clear()


class _Registration:
    """A served overload: its entry and the batch holding its kernel."""

    __slots__ = ("entry", "batch")

    def __init__(self, entry: Entry, batch: _Batch) -> None:
        self.entry = entry
        self.batch = batch


def _capture_aten_kernel(name: str, key: str):
    slot = (name, key)
    kernel = _aten_kernels.get(slot)
    if kernel is None:
        if name in _served and _served[name].entry.key == key:
            raise RuntimeError(f"ATen's kernel for {name} was not captured before gems served it")
        kernel = torch._C._dispatch_get_computed_kernel_for_dispatch_key(f"aten::{name}", getattr(
            torch._C.DispatchKey, key))
        _aten_kernels[slot] = kernel
    return kernel


class AtenKernel:
    """Calls ATen's own kernel for an overload, bypassing gems: the way a kernel hands a case back.

    Calling it never reaches our kernel again, so a fallback cannot recurse (rule 3 of dispatch).
    A wrapped number (ATen's 0-d tensor for a Python scalar) reaches Python as a plain number, and
    ATen's boxed kernel wants a tensor in that slot: it gets a 0-d tensor again, of a dtype that
    keeps the promotion ATen would have done.
    """

    __slots__ = ("name", "key", "_kernel", "_keyset", "_tensor_slots")

    def __init__(self, name: str, autograd: bool = False) -> None:
        self.name = aten_names.canonical(name)
        self.key = device.autograd_key if autograd else device.dispatch_key
        self._kernel = None
        self._keyset = _KEYSETS[self.key]
        # Read from the schema at the first call: families make hundreds of these at enable().
        self._tensor_slots: tuple[int, ...] = ()

    def __call__(self, *args, **kwargs):
        if recording.active:
            recording.note_fallback(self.name)
        return self.call_quietly(*args, **kwargs)

    def call_quietly(self, *args, **kwargs):
        """The same call, not counted as a fallback (for calls gems never took)."""
        kernel = self._kernel
        if launch.recording:
            launch.taint_recording("called ATen's own kernel")
        if kernel is None:
            self._tensor_slots = tensor_slots(self.name)
            kernel = self._kernel = _capture_aten_kernel(self.name, self.key)
        return kernel.call_boxed(self._keyset, *wrap_numbers(args, self._tensor_slots), **kwargs)

    def decomposed(self, *args, quietly: bool = False, **kwargs):
        """The same call (``quietly``: not counted as a fallback), with the ops that ATen's kernel calls in
        turn reaching gems again: a composite kernel's decomposition. On the interpreter a call into ATen
        from a gems kernel is otherwise kept from gems (``_reentry_guarded``)."""
        call = self.call_quietly if quietly else self
        if not device.interpreter:
            return call(*args, **kwargs)
        inside = getattr(_inside_kernel, "active", False)
        _inside_kernel.active = False
        try:
            return call(*args, **kwargs)
        finally:
            _inside_kernel.active = inside


def tensor_slots(name: str) -> tuple[int, ...]:
    """Positions of the overload's positional Tensor arguments."""
    overload = aten_names.resolve(name)
    if overload is None:
        return ()
    slots = []
    for i, arg in enumerate(a for a in overload._schema.arguments if not a.kwarg_only):
        kind = arg.type
        if isinstance(kind, torch._C.OptionalType):
            kind = kind.getElementType()
        if isinstance(kind, torch._C.TensorType):
            slots.append(i)
    return tuple(slots)


def wrap_numbers(args: tuple, slots: tuple[int, ...]) -> tuple:
    """``args`` with the numbers in Tensor ``slots`` (wrapped numbers, which reach Python as numbers) made 0-d
    CPU tensors again, of a dtype that keeps ATen's promotion (``args`` itself when there is none)."""
    if not any(i < len(args) and isinstance(args[i], (bool, int, float)) for i in slots):
        return args
    from flag_gems.promotion import promote

    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    wrapped = list(args)
    for i in slots:
        if i < len(args) and isinstance(args[i], (bool, int, float)):
            value = args[i]
            dtype = promote(*tensors, value)[1] if tensors and isinstance(value, float) else None
            wrapped[i] = torch.tensor(value, dtype=dtype, device="cpu")
    return tuple(wrapped)


@functools.cache
def aten_kernel(name: str, autograd: bool = False) -> AtenKernel:
    """ATen's kernel for ``name`` on the device's backend key (or its Autograd key)."""
    return AtenKernel(name, autograd)


# Overload -> (entry, record, whether its function was imported, callable): use_gems() in a loop
# registers the same callables again; a lazy function's is made again once it has been imported.
_wrappers: dict[str, tuple[Entry, bool, bool, Callable]] = {}


def wrapper_for(entry: Entry, record: bool) -> Callable:
    """The callable handed to the dispatcher: the family's function, plus only what this run needs.
    Made (and ATen's kernel captured) before the overload is first served."""
    cached = _wrappers.get(entry.name)
    imported = not (isinstance(entry.fn, lazy) and entry.fn.loaded is None)
    if cached is not None and cached[1] == record and cached[2] == imported and same_entry(cached[0], entry):
        return cached[3]
    _capture_aten_kernel(entry.name, entry.key)
    wrapper = _wrap(entry, record)
    _wrappers[entry.name] = (entry, record, imported, wrapper)
    return wrapper


def _wrap(entry: Entry, record: bool) -> Callable:
    fn = entry.fn
    if isinstance(fn, lazy):
        # Imported by an earlier call: served without the indirection; otherwise the first call imports
        # it and puts the imported function in the dispatcher in place of this one.
        fn = fn.loaded if fn.loaded is not None else _promoted_on_first_call(entry, fn)
    if device.device_count() > 1:
        fn = _on_tensor_device(fn)
    if record:
        fn = _recorded(fn, entry.name, entry.family)
    if device.interpreter:
        # Outermost: the interpreter's own calls go to ATen unrecorded, as if gems were not there.
        fn = _reentry_guarded(fn, aten_kernel(entry.name, entry.autograd))
    return fn


def _promoted_on_first_call(entry: Entry, fn: lazy) -> Callable:
    def first_call(*args, **kwargs):
        loaded = fn.load()
        _promote(entry)
        return loaded(*args, **kwargs)

    return first_call


def _promote(entry: Entry) -> None:
    """Register ``entry``'s wrapper again, now that its function is imported: later calls skip the lazy
    indirection (one Python frame a call). The new kernel joins the entry's batch, so that resetting the
    batch removes both."""
    registration = _served.get(entry.name)
    if registration is None or registration.entry is not entry:
        for hook in promotion_hooks:  # served some other way (a use_gems block's), or no longer served
            hook(entry)
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="(?s).*Overriding a previously registered kernel")
        registration.batch.handle.impl(entry.name, _KEYS[entry.key], wrapper_for(entry, registration.batch.record),
                                       False)
        registration.batch.replay.install(entry)


def _reentry_guarded(fn: Callable, fallback: AtenKernel) -> Callable:
    # The interpreter itself calls ATen ops on CPU (empty, copy_, ...) while a kernel runs; those calls
    # must reach ATen, not us again (INTERPRETER trap 4).
    def guarded(*args, **kwargs):
        if getattr(_inside_kernel, "active", False):
            return fallback.call_quietly(*args, **kwargs)
        _inside_kernel.active = True
        try:
            return fn(*args, **kwargs)
        finally:
            _inside_kernel.active = False

    return guarded


def first_tensor_device(args, kwargs):
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value.device
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], torch.Tensor):
            return value[0].device
    return None


def _on_tensor_device(fn: Callable) -> Callable:
    # Triton launches on the current device; a tensor on cuda:1 needs cuda:1 current (rule 4).
    def on_device(*args, **kwargs):
        dev = first_tensor_device(args, kwargs)
        if dev is None or dev.type != "cuda" or dev.index == torch.cuda.current_device():
            return fn(*args, **kwargs)
        with torch.cuda.device(dev):
            return fn(*args, **kwargs)

    return on_device


def _recorded(fn: Callable, name: str, family: str) -> Callable:
    def recorded(*args, **kwargs):
        recording.note_served(name, family)
        return fn(*args, **kwargs)

    return recorded


def _register(entries: list[Entry], record: bool) -> None:
    """Serve ``entries`` (none of them served now) through one new batch."""
    if not entries:
        return
    batch = _Batch(record)
    _batches.append(batch)
    impl, names = batch.handle.impl, batch.names
    backend, autograd = _KEYS[device.dispatch_key], _KEYS[device.autograd_key]
    try:
        for entry in entries:
            name = entry.name
            # The key as the enum: pybind would convert a string on every call (about 1.8 µs).
            impl(name, autograd if entry.autograd else backend, wrapper_for(entry, record), False)
            names.add(name)
            _served[name] = _Registration(entry, batch)
            batch.replay.install(entry)
    except BaseException:
        for name in names:
            del _served[name]
        batch.reset()
        _batches.remove(batch)
        raise


def _release(names) -> None:
    """Give ``names`` back to ATen; the other overloads of their batches stay served."""
    leaving = set(names)
    for batch in [b for b in _batches if not b.names.isdisjoint(leaving)]:
        survivors = [_served[name].entry for name in batch.names - leaving]
        for name in batch.names:
            del _served[name]
        batch.reset()
        _batches.remove(batch)
        _register(survivors, batch.record)


def apply(entries: dict[str, Entry], record: bool) -> None:
    """Serve exactly ``entries`` (name -> Entry) from now on; every other overload goes back to ATen."""
    leaving = [name for name, reg in _served.items()
               if reg.batch.record != record or not same_entry(reg.entry, entries.get(name))]
    with warnings.catch_warnings():
        # torch warns once that a kernel is overridden: that is the point of this module.
        warnings.filterwarnings("ignore", message="(?s).*Overriding a previously registered kernel")
        if leaving:
            _release(leaving)
        _register([entry for name, entry in entries.items() if name not in _served], record)


def same_entry(entry: Entry, other: Entry | None) -> bool:
    return entry is other or entry == other


def served() -> dict[str, Entry]:
    """The overloads served right now by registration (``enable()``; use_gems blocks: see ``scoped``)."""
    return {name: reg.entry for name, reg in _served.items()}


def served_entry(name: str) -> Entry | None:
    """The registered entry serving ``name``, or None."""
    registration = _served.get(name)
    return None if registration is None else registration.entry


#: Called with a lazy entry whose function was imported by its first call, where registry did not register
#: the entry itself (``scoped``'s registrations).
promotion_hooks: list[Callable[[Entry], None]] = []
