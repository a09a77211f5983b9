"""ATen overload names: resolving them, matching user patterns, and the CompositeImplicitAutograd check."""

from __future__ import annotations

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


def is_composite_implicit(name: str) -> bool:
    """True when ATen implements the overload by decomposition on the Autograd key (rule 2 of dispatch)."""
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"aten::{canonical(name)}", "CompositeImplicitAutograd")


def matches(name: str, patterns) -> bool:
    """Whether ``name`` is named by one of ``patterns``: an exact overload or a base name for all overloads."""
    base, _ = split(name)
    full = canonical(name)
    return any(p == full or p == base or canonical(p) == full for p in patterns)
