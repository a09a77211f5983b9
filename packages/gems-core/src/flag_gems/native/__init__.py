"""Replayed launches: a served op's later calls skip Python altogether.

A Python kernel of ours costs a call from the dispatcher into Python, the kernel's own Python and Triton's
launcher: on an H100 about twice ATen's whole host time for a tiny add. ``replay.cpp`` puts a C++ kernel in
front of the Python one. The first call of a signature runs the Python kernel and watches it (see the
C++ file's header); when what it did was Triton launches on the call's tensors, on fresh outputs and on memory
it allocated for itself, later calls of that signature allocate that memory and launch the kernels from C++.

Functional, in-place and ``out=`` overloads are replayed (not ones returning views or lists), only on a GPU,
and only while calls are not recorded (``record=True`` counts every call in Python). ``GEMS_REPLAY=0`` turns
replay off; a machine where the module cannot be built warns once and serves every call through Python.
"""

from __future__ import annotations

import os
import warnings

from flag_gems import launch
from flag_gems.runtime import device

_module = None
_tried = False
_why_off = ""


def module():
    """The compiled replay module, built at the first use on this machine; None where replay is off."""
    global _module, _tried, _why_off
    if _tried:
        return _module
    _tried = True
    if device.interpreter or device.name != "cuda":
        _why_off = f"not built for {device.name}"
        return None
    if os.environ.get("GEMS_REPLAY", "1") == "0":
        _why_off = "GEMS_REPLAY=0"
        return None
    try:
        loaded = _load()
        if not loaded.launch_available():
            raise RuntimeError("the CUDA driver library was not found")
        _module = loaded
    except Exception as error:  # a machine without a compiler still serves every op, through Python
        _why_off = str(error).splitlines()[0]
        warnings.warn(f"flag_gems: replayed launches are off ({error})", RuntimeWarning, stacklevel=2)
    return _module


def status() -> str:
    """"on", or "off" and why (building the module first where it may be built)."""
    if device.interpreter:
        return "off (kernels run on Triton's interpreter)"
    return "on" if module() is not None else f"off ({_why_off})"


def _load():
    from flag_gems.native import build

    loaded = build.load()
    loaded.set_hooks(lambda: launch.begin_recording(loaded), launch.end_recording)
    return loaded


def use_test_launcher(launcher) -> None:
    """Tests without a GPU: replay calls on CPU tensors, launching through ``launcher(function, grid,
    parameters)`` (the kernel's parameters as integers, then the scratch pointer); None ends it. Builds the
    module where the running device never would."""
    global _module, _tried
    if _module is None:
        _module, _tried = _load(), True
    _module.set_test_launcher(launcher)


class Handle:
    """The replaying kernels put in front of one registration handle's Python kernels, at one key."""

    __slots__ = ("key", "_library")

    def __init__(self, key: str) -> None:
        self.key = key
        self._library = None

    def install(self, name: str) -> bool:
        """Replay ``name``'s calls, in front of the kernel registered for it at this key now."""
        replay = module()
        if replay is None:
            return False
        if self._library is None:
            self._library = replay.Library(self.key)
        return self._library.install(name)

    def reset(self) -> None:
        if self._library is not None:
            self._library.reset()
            self._library = None


def clear() -> None:
    """Forget every plan, and the counts ``stats`` gives (after a change to a setting that Python kernels read
    when they plan a call)."""
    if _module is not None:
        _module.clear()


def stats() -> dict[str, tuple[int, int, int, str]]:
    """Per op: (calls replayed, signatures with a plan, signatures given up on, why the latest recording made
    no plan)."""
    return {} if _module is None else dict(_module.stats())


def set_enabled(on: bool) -> None:
    """Replay calls (the default) or send every call to Python; the plans are kept."""
    if _module is not None:
        _module.set_enabled(on)


_function_ops: dict[str, tuple] = {}  # "namespace::name" -> (the op, its replaying kernels)
_function_libraries: dict[str, object] = {}


def function_op(namespace: str, schema: str, fn, fake):
    """``fn`` as the dispatcher op ``namespace::name`` (``schema`` names it), with a replaying kernel in front
    where replay is on: a public function that calls the op when it needs no autograd node skips Python for a
    signature's later calls, as served ATen ops do. ``fn`` runs for the device's tensors and CPU tensors and
    may do anything a Python kernel does (calls that cannot be replayed run in Python); ``fake`` gives the
    results' shapes and dtypes without computing them (meta tensors, ``torch.compile``'s tracing, to which the
    op is opaque). Defined once a process; returns the op (an ``OpOverload``)."""
    import torch

    name = schema.split("(", 1)[0]
    qualified = f"{namespace}::{name}"
    found = _function_ops.get(qualified)
    if found is None:
        library = _function_libraries.get(namespace)
        if library is None:
            library = _function_libraries[namespace] = torch.library.Library(namespace, "DEF")
        library.define(schema)
        for key in dict.fromkeys((device.dispatch_key, "CPU")):
            library.impl(name, fn, key)
        torch.library.register_fake(qualified, fake, lib=library)
        handle = Handle(device.dispatch_key)
        handle.install(qualified)
        found = _function_ops[qualified] = (getattr(getattr(torch.ops, namespace), name).default, handle)
    return found[0]
