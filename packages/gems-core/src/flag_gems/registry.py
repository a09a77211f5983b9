"""The one place that talks to ``torch.library``: serving overloads, and calling ATen's own kernels.

Each served overload gets a Library of its own, so that changing what is served (``use_gems`` with a
subset, ``disable``) touches only the overloads that change, and destroying a Library gives ATen its
kernel back exactly.
"""

from __future__ import annotations

import functools
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from flag_gems import aten_names, recording
from flag_gems.runtime import device

_KEYSETS = {key: torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key))
            for key in (device.dispatch_key, device.autograd_key)}
# ATen's kernels, captured before we first served each overload: (name, key) -> kernel.
_aten_kernels: dict[tuple[str, str], object] = {}
_served: dict[str, _Registration] = {}
_inside_kernel = threading.local()


@dataclass(frozen=True)
class Entry:
    """An overload to serve: by which family, with which callable, on which key."""

    name: str
    family: str
    fn: Callable
    autograd: bool = False

    @property
    def key(self) -> str:
        return device.autograd_key if self.autograd else device.dispatch_key


@dataclass
class _Registration:
    entry: Entry
    record: bool
    library: object  # the dispatcher's registration handle; reset() gives ATen its kernel back


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
        self._tensor_slots = _tensor_slots(self.name)

    def __call__(self, *args, **kwargs):
        if recording.active:
            recording.note_fallback(self.name)
        return self.call_quietly(*args, **kwargs)

    def call_quietly(self, *args, **kwargs):
        """The same call, not counted as a fallback (for calls gems never took)."""
        kernel = self._kernel
        if kernel is None:
            kernel = self._kernel = _capture_aten_kernel(self.name, self.key)
        for i in self._tensor_slots:
            if i < len(args) and isinstance(args[i], (bool, int, float)):
                args = _wrap_numbers(args, self._tensor_slots)
                break
        return kernel.call_boxed(self._keyset, *args, **kwargs)


def _tensor_slots(name: str) -> tuple[int, ...]:
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


def _wrap_numbers(args: tuple, slots: tuple[int, ...]) -> tuple:
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


_wrappers: dict[tuple[Entry, bool], Callable] = {}


def _wrapped(entry: Entry, record: bool) -> Callable:
    """The callable handed to torch.library: the family's function, plus only what this run needs
    (made once per entry: use_gems() in a loop registers the same callables again)."""
    wrapper = _wrappers.get((entry, record))
    if wrapper is None:
        wrapper = _wrappers[(entry, record)] = _wrap(entry, record)
    return wrapper


def _wrap(entry: Entry, record: bool) -> Callable:
    fn = entry.fn
    if device.device_count() > 1:
        fn = _on_tensor_device(fn)
    if record:
        fn = _recorded(fn, entry.name, entry.family)
    if device.interpreter:
        # Outermost: the interpreter's own calls go to ATen unrecorded, as if gems were not there.
        fn = _reentry_guarded(fn, aten_kernel(entry.name, entry.autograd))
    return fn


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


def _first_tensor_device(args, kwargs):
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value.device
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], torch.Tensor):
            return value[0].device
    return None


def _on_tensor_device(fn: Callable) -> Callable:
    # Triton launches on the current device; a tensor on cuda:1 needs cuda:1 current (rule 4).
    def on_device(*args, **kwargs):
        dev = _first_tensor_device(args, kwargs)
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


def _register(entry: Entry, record: bool) -> _Registration:
    _capture_aten_kernel(entry.name, entry.key)
    # The dispatcher's own registration handle, without torch.library.Library's Python bookkeeping:
    # a third of the cost, which use_gems() pays for every overload it serves.
    library = torch._C._dispatch_library("IMPL", "aten", "", __file__, 0)
    library.impl(entry.name, entry.key, _wrapped(entry, record), False)
    return _Registration(entry, record, library)


def apply(entries: dict[str, Entry], record: bool) -> None:
    """Serve exactly ``entries`` (name -> Entry) from now on; every other overload goes back to ATen."""
    for name in [n for n in _served if n not in entries]:
        _served.pop(name).library.reset()
    with warnings.catch_warnings():
        # torch warns once that a kernel is overridden: that is the point of this module.
        warnings.filterwarnings("ignore", message="(?s).*Overriding a previously registered kernel")
        for name, entry in entries.items():
            current = _served.get(name)
            if current is not None and current.entry == entry and current.record == record:
                continue
            if current is not None:
                _served.pop(name).library.reset()
            _served[name] = _register(entry, record)


def served() -> dict[str, Entry]:
    """The overloads served right now."""
    return {name: reg.entry for name, reg in _served.items()}
