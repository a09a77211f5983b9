"""enable / disable / use_gems and introspection: what is served, by which family."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from flag_gems import aten_names, plugins, recording, registry, scoped


@dataclass(frozen=True)
class _Config:
    families: tuple[str, ...] | None
    include: tuple[str, ...] | None
    exclude: tuple[str, ...]
    record: bool
    path: str | None


_current: _Config | None = None
_warned_conflicts: set[tuple[str, ...]] = set()


def _names(value: Iterable[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    return tuple(value)


# Selection -> (the plugins it was worked out from, its entries): use_gems() in a loop decides once.
_entries_cache: dict[tuple, tuple[dict, dict[str, registry.Entry]]] = {}


def _entries(config: _Config) -> dict[str, registry.Entry]:
    """The overloads a config serves, kept per selection until the plugins found change."""
    found = plugins.discover()
    key = (config.families, config.include, config.exclude)
    cached = _entries_cache.get(key)
    if cached is not None and cached[0] is found:
        return cached[1]
    entries = _select(config, found)
    _entries_cache[key] = (found, entries)
    return entries


def _select(config: _Config, found: dict[str, plugins.FamilyInfo]) -> dict[str, registry.Entry]:
    """The overloads a config serves. Of two families serving one overload, the higher ``priority``
    wins, then the family whose name sorts first; a warning names both."""
    loaded = {name: info for name, info in found.items() if info.loaded}
    if config.families is not None:
        unknown = [f for f in config.families if f not in found]
        if unknown:
            raise ValueError(f"unknown flag_gems families {unknown}; installed: {sorted(found)}")
        loaded = {name: loaded[name] for name in config.families if name in loaded}
    if not found:
        warnings.warn("no flag_gems family is installed: nothing is served "
                      "(install gems-pointwise, gems-reduction, gems-blas, gems-norm or a plugin)",
                      UserWarning, stacklevel=5)
    claims: dict[str, list[plugins.FamilyInfo]] = {}
    for info in loaded.values():
        for name in info.ops:
            claims.setdefault(name, []).append(info)
    entries = {}
    for name, infos in sorted(claims.items()):
        if config.include is not None and not aten_names.matches(name, config.include):
            continue
        if aten_names.matches(name, config.exclude):
            continue
        infos.sort(key=lambda i: (-i.priority, i.name))
        winner = infos[0]
        if len(infos) > 1:
            _warn_conflict(name, infos)
        op = winner.ops[name]
        entries[name] = registry.Entry(name, winner.name, op.fn, op.autograd, op.replay)
    return entries


def _warn_conflict(name: str, infos: Sequence[plugins.FamilyInfo]) -> None:
    key = (name, *(i.name for i in infos))
    if key not in _warned_conflicts:
        _warned_conflicts.add(key)
        others = ", ".join(i.name for i in infos[1:])
        warnings.warn(f"flag_gems: {name} is served by several families; using {infos[0].name!r} "
                      f"over {others} (higher priority, then name order)", plugins.PluginWarning, stacklevel=5)


def _apply(config: _Config | None) -> None:
    global _current
    if config is None:
        registry.apply({}, record=False)
        recording.set_record(False)
        recording.detach_files()
    else:
        registry.apply(_entries(config), record=config.record)
        recording.set_record(config.record)
        recording.detach_files(keep=config.path)
        if config.path:
            recording.attach_file(config.path)
    _current = config


def enable(families: Sequence[str] | None = None, unused: Sequence[str] | None = None,
           record: bool = False, path: str | None = None, **_compat) -> None:
    """Serve ATen ops with the kernels of the installed families (or of ``families`` only).

    ``unused`` names ATen overloads ("add.Tensor") or base names ("add") to leave to ATen.
    ``record=True`` logs every served call through the ``flag_gems`` logger, and to ``path`` if given.
    """
    _apply(_Config(_names(families), None, _names(unused) or (), record, path))


def disable() -> None:
    """Give every overload back to ATen, also those use_gems blocks left registered for their next entry."""
    _apply(None)
    if not _scopes:
        scoped.forget()


# use_gems blocks open through ``scoped`` (outside any enable()), innermost last.
_scopes: list[_Config] = []


@contextlib.contextmanager
def use_gems(families: Sequence[str] | None = None, include: Sequence[str] | None = None,
             exclude: Sequence[str] | None = None, record: bool = False) -> Iterator[None]:
    """Serve ops with gems inside the block; on exit (also on an exception) restore exactly what
    was served before, whether that was nothing, ``enable()``'s set, or an outer ``use_gems``.

    Outside ``enable()`` the block serves this thread only, and entering and leaving it costs microseconds
    once a block with the same selection has run (``scoped``); under ``enable()`` it changes what every
    thread is served, at the dispatcher's registration cost."""
    config = _Config(_names(families), _names(include), _names(exclude) or (), record, None)
    if _current is not None and not _scopes:
        yield from _global_block(config)
        return
    yield from _scoped_block(config)


def _global_block(config: _Config) -> Iterator[None]:
    previous = _current
    _apply(config)
    try:
        yield
    finally:
        _apply(previous)


def _scoped_block(config: _Config) -> Iterator[None]:
    global _current
    previous = _current
    _serve_scoped(config)
    was_included = scoped.include()
    _scopes.append(config)
    _current = config
    try:
        yield
    finally:
        scoped.restore(was_included)
        _scopes.pop()
        _current = previous
        if previous is None:
            registry.apply({}, record=False)
            recording.set_record(False)
        else:
            _serve_scoped(previous)


def _serve_scoped(config: _Config) -> None:
    scoped.prepare(_entries(config), config.record)
    recording.set_record(config.record)
    recording.detach_files()


def is_enabled() -> bool:
    return _current is not None


def families() -> list[dict]:
    """Every family found: name, version, distribution, ops declared, fused functions, load error."""
    return [info.as_dict() for info in plugins.discover().values()]


def registered_ops() -> dict[str, str]:
    """The ATen overloads served right now (on this thread), each with the family serving it."""
    return {name: entry.family for name, entry in sorted(scoped.served().items())}
