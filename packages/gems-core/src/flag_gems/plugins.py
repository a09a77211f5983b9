"""Finding families: entry points in the group ``flag_gems.plugins``, loaded at ``enable()`` time.

A family that fails to import or returns something that is not a ``Family`` is skipped whole; an op
declaration that is invalid (no such ATen overload, a CompositeImplicitAutograd op on the backend
key, a non-callable) is skipped alone. Each is reported with a warning that names the plugin, and
everything else loads.
"""

from __future__ import annotations

import importlib.metadata
import operator
import re
import warnings
from dataclasses import dataclass, field

import pluggy

from flag_gems import aten_names, hookspecs
from flag_gems.spec import Family, OpImpl


class PluginWarning(UserWarning):
    """A plugin, or one of its declarations, was skipped."""


@dataclass
class FamilyInfo:
    """What discovery learned about one plugin."""

    name: str
    version: str = ""
    distribution: str = ""
    ops: dict[str, OpImpl] = field(default_factory=dict)
    fused: dict = field(default_factory=dict)
    priority: int = 0
    error: str | None = None
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def loaded(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "distribution": self.distribution,
                "ops": sorted(self.ops), "fused": sorted(self.fused), "error": self.error,
                "skipped": dict(self.skipped)}


_families: dict[str, FamilyInfo] | None = None
_extra_modules: list[tuple[str, object]] = []


def _warn(plugin: str, message: str) -> None:
    warnings.warn(f"flag_gems plugin {plugin!r}: {message}", PluginWarning, stacklevel=4)


def _core_version() -> str:
    from flag_gems import __version__

    return __version__


def _entry_point_modules():
    """(name, distribution, module or exception) for every installed plugin."""
    for ep in sorted(importlib.metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else ""
        try:
            yield ep.name, dist_name, ep.load()
        except Exception as exc:  # a broken plugin must not take the others down
            yield ep.name, dist_name, exc


def _check_op(op) -> str | None:
    """Why ``op`` cannot be served, or None."""
    if not isinstance(op, OpImpl):
        return f"expected an OpImpl, got {type(op).__name__}"
    if not callable(op.fn):
        return "its implementation is not callable"
    if aten_names.resolve(op.aten) is None:
        return "ATen has no such overload"
    if not op.autograd and aten_names.is_composite_implicit(op.aten):
        return ("it is CompositeImplicitAutograd: serving it below autograd would break gradients; "
                "declare it with autograd=True and a differentiable implementation")
    return None


def _load_family(name: str, dist: str, module) -> FamilyInfo | None:
    info = FamilyInfo(name=name, distribution=dist)
    if isinstance(module, Exception):
        info.error = f"failed to import: {type(module).__name__}: {module}"
        _warn(name, info.error)
        return info
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    try:
        manager.register(module, name=name)
        results = manager.hook.gems_family()
        if not results:
            return None  # the plugin declined to load (returned None), e.g. on hardware it does not support
        if len(results) != 1 or not isinstance(results[0], Family):
            raise TypeError(f"gems_family() must return one flag_gems.Family, got {results!r}")
        family = results[0]
        info.name, info.version, info.priority = family.name, family.version, family.priority
        info.fused = dict(family.fused)
        _check_core_version(family)
        ops = family.ops() if callable(family.ops) else family.ops
        for op in ops:
            problem = _check_op(op)
            label = getattr(op, "aten", repr(op))
            if problem is not None:
                info.skipped[label] = problem
                _warn(name, f"skipping {label}: {problem}")
            else:
                info.ops[aten_names.canonical(op.aten)] = op
    except Exception as exc:
        info.error = f"{type(exc).__name__}: {exc}"
        info.ops.clear()
        info.fused.clear()
        _warn(name, f"failed to load: {info.error}")
    return info


def _check_core_version(family: Family) -> None:
    if family.requires_core and not _satisfies(_core_version(), family.requires_core):
        raise RuntimeError(f"needs gems-core {family.requires_core}, but gems-core {_core_version()} is installed")


_PLAIN_VERSION = re.compile(r"\d+(?:\.\d+)*")
_PLAIN_CLAUSE = re.compile(r"\s*(>=|<=|==|!=|>|<)\s*(\d+(?:\.\d+)*)\s*")
_COMPARE = {">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne, ">": operator.gt,
            "<": operator.lt}


def _satisfies(version: str, specifier: str) -> bool:
    """Whether ``version`` meets ``specifier`` (PEP 440). Comparisons of plain release numbers, as every
    family writes them (">=0.1,<0.2"), are decided here; anything else by ``packaging``, whose import
    costs about 10 ms of ``enable()``."""
    clauses = [_PLAIN_CLAUSE.fullmatch(clause) for clause in specifier.split(",")]
    if _PLAIN_VERSION.fullmatch(version) and all(clauses):
        have = _release(version)
        return all(_COMPARE[m[1]](*_padded(have, _release(m[2]))) for m in clauses)
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        return version in SpecifierSet(specifier)
    except InvalidSpecifier as exc:
        raise ValueError(f"invalid requires_core {specifier!r}") from exc


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _padded(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    # PEP 440 compares release numbers as if padded with zeros: 0.1 == 0.1.0.
    size = max(len(a), len(b))
    return a + (0,) * (size - len(a)), b + (0,) * (size - len(b))


def add_module(name: str, module) -> None:
    """Load ``module`` as a plugin besides the installed ones (for tests and notebooks)."""
    _extra_modules.append((name, module))
    refresh()


def remove_module(name: str) -> None:
    """Forget a plugin added with ``add_module``."""
    _extra_modules[:] = [(n, m) for n, m in _extra_modules if n != name]
    refresh()


def refresh() -> None:
    """Forget what was discovered; the next query looks at the installed plugins again."""
    global _families
    _families = None


def discover() -> dict[str, FamilyInfo]:
    """All plugins, by family name, loading each once per process (until ``refresh``)."""
    global _families
    if _families is None:
        found: dict[str, FamilyInfo] = {}
        sources = list(_entry_point_modules()) + [(n, "", m) for n, m in _extra_modules]
        for ep_name, dist, module in sources:
            info = _load_family(ep_name, dist, module)
            if info is None:
                continue
            if info.name in found:
                _warn(ep_name, f"a family named {info.name!r} is already loaded; keeping the first")
                continue
            found[info.name] = info
        _families = found
    return _families
