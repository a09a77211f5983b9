"""Serving ops on one thread only, for ``use_gems()`` blocks: entered and left in microseconds.

Registering a kernel with the dispatcher costs about 5 us an overload, so serving ~650 overloads for a
block and giving them back took 4-8 ms a block. Here the backend-key kernels are registered once, at the
dispatcher's CustomRNGKeyId functionality key: it sits between the backend kernels and autograd, and no
tensor carries it (only random ops given a custom generator do), so a kernel there runs only while a thread
includes the key in its dispatch set. Entering a block includes it, leaving excludes it; every other op
falls through the key to ATen. The set registered there stays until a block asks for another one.

Ops reach these kernels for tensors of every backend: a call without a tensor on gems' device goes on to
ATen below the key. Overloads served on the Autograd key (a few composite ops) are registered per block,
as ``enable()`` registers everything. The key is thread-local (as ``torch.autocast``'s state): other threads
keep ATen's kernels, autograd's own threads inherit the block's state for the graphs it runs.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from operator import attrgetter

import torch
from torch.library import fallthrough_kernel

from flag_gems import aten_names, registry
from flag_gems.runtime import device

_KEY_NAME = "CustomRNGKeyId"
KEY = torch._C._parse_dispatch_key(_KEY_NAME)
_KEYSET = torch._C.DispatchKeySet(KEY)


class _Set:
    """The entries registered at ``KEY`` (of the selection ``source``), their ``record`` setting, the
    registration handles, and the selection's Autograd-key entries."""

    __slots__ = ("source", "entries", "others", "record", "handle", "fallthrough", "replay")

    def __init__(self) -> None:
        self.source: dict | None = None
        self.entries: dict[str, registry.Entry] = {}
        self.others: dict[str, registry.Entry] = {}
        self.record: bool | None = None
        self.handle = None
        self.fallthrough = None
        self.replay: registry.Replays | None = None


_registered = _Set()


@functools.cache
def _below(name: str) -> Callable:
    """The overload called again with ``KEY`` left out: ATen's kernel for whichever backend the tensors have.
    A wrapped number (a Python scalar ATen made a 0-d tensor) reaches Python as a number; the overload's
    Tensor slot takes it as a 0-d tensor again."""
    overload = aten_names.resolve(name)
    slots = registry.tensor_slots(name)

    def below(*args, **kwargs):
        args = registry.wrap_numbers(args, slots)
        with torch._C._ExcludeDispatchKeyGuard(_KEYSET):
            return overload(*args, **kwargs)

    return below


def _never(_) -> bool:
    return False


def _on_device_only(fn: Callable, below: Callable) -> Callable:
    # Tensors of another backend (CPU tensors beside a GPU) go on to ATen's kernel for them.
    name = device.name
    # Tensor.is_cuda (or its backend's kin) is cheaper than building .device: most calls' first argument
    # is a tensor on gems' device, and they go straight to the kernel.
    on_device = attrgetter(f"is_{name}") if hasattr(torch.Tensor, f"is_{name}") else _never
    tensor = torch.Tensor

    def scoped(*args, **kwargs):
        if args and isinstance(args[0], tensor) and on_device(args[0]):
            return fn(*args, **kwargs)
        dev = registry.first_tensor_device(args, kwargs)
        if dev is None or dev.type == name:
            return fn(*args, **kwargs)
        return below(*args, **kwargs)

    return scoped


def _kernel_for(entry: registry.Entry, record: bool) -> Callable:
    """What ``KEY`` holds for ``entry``: registry's wrapper, on a GPU behind the check of the tensors' device."""
    fn = registry.wrapper_for(entry, record)
    return fn if device.interpreter else _on_device_only(fn, _below(entry.name))


_shadowed_names: list[str] | None = None


def _shadowed() -> list[str]:
    """The ATen overloads with a kernel of their own for gems' device and a composite one (CompositeExplicit-
    Autograd, its NonFunctional kind, or CompositeImplicitAutograd). The dispatcher puts the composite kernel at
    ``KEY`` too, ahead of the fallthrough, so inside a block such an op would run its composite kernel rather
    than its device kernel (not always alike: ATen's composite mse_loss warns of a resized output). Those not
    served fall through ``KEY``."""
    global _shadowed_names
    if _shadowed_names is None:
        has = torch._C._dispatch_has_kernel_for_dispatch_key
        composite = ("CompositeExplicitAutograd", "CompositeExplicitAutogradNonFunctional",
                     "CompositeImplicitAutograd")
        _shadowed_names = [name[len("aten::"):] for name in torch._C._dispatch_get_all_op_names()
                           if name.startswith("aten::") and has(name, device.dispatch_key)
                           and any(has(name, key) for key in composite)]
    return _shadowed_names


def _register(source: dict[str, registry.Entry], record: bool) -> None:
    """Make the backend-key entries of ``source`` the set registered at ``KEY`` (nothing done when they already
    are: a selection's entries are one dict, kept by the caller while the plugins found do not change)."""
    if _registered.handle is not None and _registered.source is source and _registered.record == record:
        return
    entries = {n: e for n, e in source.items() if not e.autograd}
    _reset_handles()
    if _registered.fallthrough is None:
        _registered.fallthrough = torch._C._dispatch_library("IMPL", "_", _KEY_NAME, __file__, 0)
        _registered.fallthrough.fallback_fallthrough()
    handle = torch._C._dispatch_library("IMPL", "aten", "", __file__, 0)
    replay = registry.Replays(record)
    for name, entry in entries.items():
        handle.impl(name, KEY, _kernel_for(entry, record), False)
        replay.install(entry, _KEY_NAME)
    for name in _shadowed():
        if name not in entries:
            # A fallthrough of its own: the call stays in the dispatcher (a Python kernel going below ``KEY``
            # cost a decoding step's rotary cat 15 us a call on an H100).
            handle.impl(name, KEY, fallthrough_kernel, False)
    _registered.source, _registered.entries, _registered.record, _registered.handle = source, entries, record, handle
    _registered.replay = replay
    _registered.others = {n: e for n, e in source.items() if e.autograd}


def _reset_handles() -> None:
    if _registered.replay is not None:
        _registered.replay.reset()
        _registered.replay = None
    if _registered.handle is not None:
        _registered.handle.reset()
        _registered.handle = None


def prepare(entries: dict[str, registry.Entry], record: bool) -> None:
    """Make ``entries`` what a thread including ``KEY`` serves: their backend-key overloads registered at
    ``KEY`` (kept when already so), the others registered as ``enable()`` does (``registry.apply``)."""
    _register(entries, record)
    registry.apply(_registered.others, record)


def include() -> bool:
    """Serve the prepared set on this thread from now on; returns whether it already was, for ``restore``."""
    included = torch._C._dispatch_tls_is_dispatch_key_included(KEY)
    torch._C._dispatch_tls_set_dispatch_key_included(KEY, True)
    return included


def restore(included: bool) -> None:
    """Set this thread back to serving the prepared set or not (``included``: what ``include`` returned)."""
    torch._C._dispatch_tls_set_dispatch_key_included(KEY, included)


def forget() -> None:
    """Give back what ``KEY`` holds (``disable()``): the dispatcher then has ATen's kernels alone."""
    _reset_handles()
    if _registered.fallthrough is not None:
        _registered.fallthrough.reset()
    _registered.__init__()


def active() -> bool:
    """Whether this thread serves the registered set now."""
    return torch._C._dispatch_tls_is_dispatch_key_included(KEY)


def served() -> dict[str, registry.Entry]:
    """Every overload this thread is served now: ``enable()``'s, or a block's."""
    found = registry.served()
    if active():
        found.update(_registered.entries)
    return found


def entry(name: str) -> registry.Entry | None:
    """The entry serving ``name`` on this thread now, or None."""
    if active():
        found = _registered.entries.get(name)
        if found is not None:
            return found
    return registry.served_entry(name)


def _promote(promoted: registry.Entry) -> None:
    # A lazy entry's function was imported at its first call: register the imported function in place of
    # the importing one, as registry does for what enable() serves.
    if _registered.entries.get(promoted.name) is not promoted:
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="(?s).*Overriding a previously registered kernel")
        _registered.handle.impl(promoted.name, KEY, _kernel_for(promoted, _registered.record), False)
        _registered.replay.install(promoted, _KEY_NAME)


registry.promotion_hooks.append(_promote)
