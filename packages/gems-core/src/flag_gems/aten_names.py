"""ATen overload names: resolving them, matching user patterns, and the CompositeImplicitAutograd check."""

from __future__ import annotations

import functools

import torch


def split(name: str) -> tuple[str, str]:
    """("add", "Tensor") for "add.Tensor"; ("abs", "default") for "abs"."""
    base, _, overload = name.partition(".")
    return base, overload or "default"


def canonical(name: str) -> str:
    """The name as ATen's registration API spells it: "abs" for the default overload."""
    base, overload = split(name)
    return base if overload == "default" else f"{base}.{overload}"


def overload_packet_exists(base: str) -> bool:
    try:
        getattr(torch.ops.aten, base)
    except (AttributeError, RuntimeError):
        return False
    return True


def resolve(name: str):
    """The ``torch._ops.OpOverload`` for an ATen overload name, or None when ATen has no such overload."""
    base, overload = split(name)
    try:
        return getattr(getattr(torch.ops.aten, base), overload)
    except (AttributeError, RuntimeError):
        return None


@functools.cache
def is_composite_implicit(name: str) -> bool:
    """True when serving the overload on the backend key would change how autograd sees it (rule 2).

    That is a CompositeImplicitAutograd overload for which ATen has no kernel of its own on the device's
    backend key: a kernel registered there would take the decomposition's place under autograd. Where
    ATen already has a backend kernel beside the decomposition (``silu_backward``), replacing that kernel
    changes nothing for autograd. Asked (and cached) before gems registers anything for the overload.
    """
    from flag_gems.runtime import device

    # Keys as enums: pybind converts a string key on every call, which costs more than the lookup.
    keys = torch._C.DispatchKey
    qualified = f"aten::{canonical(name)}"
    if not torch._C._dispatch_has_kernel_for_dispatch_key(qualified, keys.CompositeImplicitAutograd):
        return False
    return not torch._C._dispatch_has_kernel_for_dispatch_key(qualified, getattr(keys, device.dispatch_key))


def matches(name: str, patterns) -> bool:
    """Whether ``name`` is named by one of ``patterns``: an exact overload or a base name for all overloads."""
    base, _ = split(name)
    full = canonical(name)
    return any(p == full or p == base or canonical(p) == full for p in patterns)
