"""Coverage: which ATen ops a program calls, which of them ran on gems, and why the others did not.

    report = flag_gems.coverage.report(model, x)   # runs model(x) under gems
    print(report)                                  # a table
    report.as_dict()                               # {"mm": {"calls": 4, "gems": 4, ...}, ...}

    with flag_gems.coverage.collect() as report:   # any block of code
        model(x).sum().backward()
    print(report)

Two observers run while the block runs, neither changing what runs or what it computes:
- a ``TorchDispatchMode`` counts every ATen call that reaches the backend (the level gems kernels
  are registered on), and whether gems served it; a served call during which the kernel handed the
  case back to ATen (``flag_gems.aten_kernel``, seen through ``recording.CallCounter``) counts as a
  fallback;
- a ``TorchFunctionMode`` counts the calls of CompositeImplicitAutograd ops (``linear``,
  ``scaled_dot_product_attention``, ``rms_norm``, ...): ATen decomposes them above the backend into
  the ops the first observer sees, unless a family serves them on the Autograd key.

Calls that gems kernels make themselves (inside a family's module or core's launch machinery) are
not the program's calls and are not counted.

Each op gets a reason for its calls that ran on ATen:
``not implemented`` (no installed family declares it), ``fallback`` (served, but the gems kernel
handed the case back), ``excluded`` (declared, but left out by the selection given to ``enable`` or
``use_gems``), ``composite`` (decomposed by ATen into other ops, listed on their own), ``view``
(a view or alias: no data is computed).
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from flag_gems import aten_names, plugins, recording, registry, scoped

NOT_IMPLEMENTED = "not implemented"
FALLBACK = "fallback"
EXCLUDED = "excluded"
COMPOSITE = "composite"
VIEW = "view"
#: Reasons whose calls are not computations of their own: left out of the totals.
_NOT_COMPUTED = (COMPOSITE, VIEW)

# Core modules that run programs and models: their ATen calls are the program's. Every other core
# module's calls are part of running a gems kernel.
_PROGRAM_MODULES = ("flag_gems.demo", "flag_gems.cli")


@dataclass
class OpCoverage:
    """The calls of one ATen op: how many, how many ran on gems, and why the rest ran on ATen."""

    op: str
    calls: int = 0
    gems: int = 0
    family: str | None = None
    reasons: Counter = field(default_factory=Counter)

    @property
    def aten(self) -> int:
        """Calls that ran on ATen."""
        return self.calls - self.gems

    @property
    def status(self) -> str:
        """"gems" (every call), "partial" (some calls) or "aten" (none ran on gems)."""
        if self.gems == self.calls:
            return "gems"
        return "partial" if self.gems else "aten"

    @property
    def reason(self) -> str | None:
        """Why calls ran on ATen (the most frequent reason), or None when all ran on gems."""
        return self.reasons.most_common(1)[0][0] if self.reasons else None

    def as_dict(self) -> dict:
        """{"calls", "gems", "aten", "status", "family", "reasons"}."""
        return {"calls": self.calls, "gems": self.gems, "aten": self.aten, "status": self.status,
                "family": self.family, "reasons": dict(self.reasons)}


class Report:
    """Per-op coverage of one run; filled in while :func:`collect` runs, complete when it exits."""

    def __init__(self) -> None:
        self.ops: dict[str, OpCoverage] = {}
        #: What the callable given to :func:`report` returned.
        self.result = None

    def _row(self, op: str) -> OpCoverage:
        row = self.ops.get(op)
        if row is None:
            row = self.ops[op] = OpCoverage(op)
        return row

    def __iter__(self) -> Iterator[OpCoverage]:
        return iter(self.ops.values())

    def __getitem__(self, op: str) -> OpCoverage:
        return self.ops[aten_names.canonical(op)]

    def __contains__(self, op: str) -> bool:
        return aten_names.canonical(op) in self.ops

    def on_gems(self) -> list[str]:
        """Ops with at least one call computed by a gems kernel."""
        return sorted(r.op for r in self if r.gems)

    def on_aten(self, reason: str | None = None) -> list[str]:
        """Computing ops with calls that ran on ATen (for ``reason`` only, if given)."""
        return sorted(r.op for r in self if r.aten and (reason in r.reasons if reason
                                                         else r.reason not in _NOT_COMPUTED))

    def ran_on_gems(self, name: str) -> bool:
        """True when ``name`` (an overload or a base name) was called and ran on gems at least once."""
        return any(r.gems for r in self if aten_names.matches(r.op, [name]))

    def by_family(self) -> dict[str, int]:
        """Calls computed on gems, per family."""
        calls: Counter = Counter()
        for r in self:
            if r.gems:
                calls[r.family] += r.gems
        return dict(calls)

    def totals(self) -> tuple[int, int]:
        """(calls computed on gems, calls of computing ops): views and composites left out."""
        rows = [r for r in self if r.reason not in _NOT_COMPUTED]
        return sum(r.gems for r in rows), sum(r.calls for r in rows)

    def as_dict(self) -> dict:
        """Op name -> {"calls", "gems", "aten", "status", "family", "reasons"}."""
        return {op: row.as_dict() for op, row in sorted(self.ops.items())}

    def table(self) -> str:
        """A printable table: ops that ran on gems, then those that ran on ATen, grouped by reason."""
        gems_calls, calls = self.totals()
        share = f" ({100 * gems_calls / calls:.0f}%)" if calls else ""
        lines = [f"flag_gems coverage: {calls} ATen calls to {sum(1 for r in self if r.reason not in _NOT_COMPUTED)}"
                 f" ops, {gems_calls}{share} computed on gems"]
        rows = [r for r in self if r.reason not in _NOT_COMPUTED]
        rows.sort(key=lambda r: (r.status == "aten", r.reason or "", -r.calls, r.op))
        if rows:
            width = max(len("op"), *(len(r.op) for r in rows))
            lines.append(f"  {'op':<{width}}  {'calls':>6}  {'gems':>6}  {'ATen':>6}  {'family':<12}  why ATen")
            for r in rows:
                why = ", ".join(f"{reason} x{n}" if len(r.reasons) > 1 else reason for reason, n in r.reasons.items())
                lines.append(f"  {r.op:<{width}}  {r.calls:>6}  {r.gems:>6}  {r.aten:>6}  {r.family or '-':<12}  {why}")
        for reason, label in ((COMPOSITE, "composite, decomposed by ATen into the ops above"),
                              (VIEW, "views and aliases, no data computed")):
            named = sorted((r for r in self if r.reason == reason), key=lambda r: (-r.calls, r.op))
            if named:
                lines.append(f"  {label}: " + ", ".join(f"{r.op} x{r.calls}" for r in named))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        gems_calls, calls = self.totals()
        return f"<coverage.Report {len(self.ops)} ops, {gems_calls}/{calls} calls on gems>"


# -- what is known about an op, once per op ------------------------------------------------------------
# Ops that only relabel their input's memory, though their schema does not say so.
_VIEW_LIKE = {"_unsafe_view", "lift_fresh"}


def _returns_alias(schema) -> bool:
    return any(r.alias_info is not None and not r.alias_info.is_write for r in schema.returns)


def _returns_tensor(schema) -> bool:
    return any(r.type.isSubtypeOf(torch._C.TensorType.get()) for r in schema.returns)


@dataclass(frozen=True)
class _OpInfo:
    name: str
    view: bool
    composite: bool


@functools.cache
def _op_info(func) -> _OpInfo:
    schema = func._schema
    namespace, _, base = schema.name.partition("::")
    name = aten_names.canonical(f"{base}.{schema.overload_name}" if schema.overload_name else base)
    if namespace != "aten":
        return _OpInfo(f"{namespace}::{name}", _returns_alias(schema), False)
    view = _returns_alias(schema) or base in _VIEW_LIKE
    # CompositeImplicitAutograd unless a backend registers a kernel of its own for it.
    composite = aten_names.is_composite_implicit(name) and not any(
        torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), key) for key in ("CPU", "CUDA"))
    return _OpInfo(name, view, composite)


@functools.cache
def _composite_overloads(name: str) -> tuple[str, ...]:
    """For a torch function named ``name``: the functional overloads of the ATen op of that name when
    all are CompositeImplicitAutograd and compute a new tensor (views like ``reshape`` are left out)."""
    if not aten_names.overload_packet_exists(name):
        return ()
    packet = getattr(torch.ops.aten, name)
    functional = []
    for overload in packet.overloads():
        schema = getattr(packet, overload)._schema
        if any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments):
            continue  # out= and in-place overloads
        full = aten_names.canonical(f"{name}.{overload}")
        try:
            if not aten_names.is_composite_implicit(full):
                return ()
        except RuntimeError:  # an overload that exists for TorchScript only
            continue
        if _returns_alias(schema) or not _returns_tensor(schema):
            return ()
        functional.append(full)
    return tuple(functional)


def _module_root(fn) -> str | None:
    while isinstance(fn, functools.partial):
        fn = fn.func
    root = (getattr(fn, "__module__", None) or "").partition(".")[0]
    return None if not root or root in ("torch", "flag_gems") or root in sys.stdlib_module_names else root


def _family_roots() -> frozenset:
    """Top-level modules holding the installed families' code."""
    roots = {"triton"}
    for info in plugins.discover().values():
        for fn in [*(op.fn for op in info.ops.values()), *info.fused.values()]:
            root = _module_root(fn)
            if root:
                roots.add(root)
    return frozenset(roots)


# -- the observers ------------------------------------------------------------------------------------
class _Collector:
    """State shared by the two observers of one :func:`collect` block."""

    def __init__(self, report: Report, counter: recording.CallCounter) -> None:
        self.report = report
        self.counter = counter
        self.internal = _family_roots()
        # Each declared op with the family that would serve it (as api resolves conflicts).
        self.declared: dict[str, str] = {}
        for info in sorted(plugins.discover().values(), key=lambda i: (-i.priority, i.name)):
            if info.loaded:
                for name in info.ops:
                    self.declared.setdefault(name, info.name)
        # Depth of composite calls counted by the function observer: composite calls among their parts
        # (seen only where autograd is off) are not counted again.
        self.composite_depth = 0

    def called_by_gems(self) -> bool:
        """True when the op being observed was called by gems code rather than by the program.

        The first frame up the stack outside torch and this module decides: one in a family's modules
        or in core's kernel machinery is gems code.
        """
        frame = sys._getframe(1).f_back  # the caller of the observer
        while frame is not None:
            module = frame.f_globals.get("__name__", "")
            root = module.partition(".")[0]
            if root != "torch" and module != __name__:
                return root in self.internal or (root == "flag_gems" and module not in _PROGRAM_MODULES)
            frame = frame.f_back
        return False

    def count(self, name: str, family: str | None, reason: str | None = None) -> None:
        """One call of ``name``: computed on gems when ``reason`` is None, else on ATen for ``reason``."""
        row = self.report._row(name)
        row.calls += 1
        row.family = family or row.family
        if reason is None:
            row.gems += 1
        else:
            row.reasons[reason] += 1

    def count_unserved(self, name: str, view: bool) -> None:
        family = self.declared.get(name)
        self.count(name, family, EXCLUDED if family else VIEW if view else NOT_IMPLEMENTED)

    def run_served(self, entry: registry.Entry, func, args, kwargs):
        """Call a served op and note whether its kernel handed the call back to ATen.

        Served calls of the same op made while the kernel runs (the interpreter's own ATen calls, say)
        are counted served and handed back alike; only fallbacks beyond those are this call's.
        """
        name, served, fallbacks = entry.name, self.counter.served, self.counter.fallbacks
        served_before, fallbacks_before = served.get(name, 0), fallbacks.get(name, 0)
        out = func(*args, **kwargs)
        nested = max(served.get(name, 0) - served_before - 1, 0)
        fell_back = fallbacks.get(name, 0) - fallbacks_before > nested
        self.count(name, entry.family, FALLBACK if fell_back else None)
        return out


class _DispatchObserver(TorchDispatchMode):
    """Counts the ATen calls that reach the backend, where gems kernels are registered."""

    def __init__(self, collector: _Collector) -> None:
        super().__init__()
        self.collector = collector

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        # First, so that the cache keeps ``func`` alive: torch's dispatcher holds a borrowed reference
        # to the OpOverload it hands to modes, which must not be freed if the packet's cached overload
        # is ever replaced.
        info = _op_info(func)
        collector = self.collector
        if collector.called_by_gems():
            return func(*args, **kwargs)
        if info.composite:
            # Reached only where autograd is off (inference mode): ATen decomposes the op here. The
            # decomposition runs under this observer, so that its parts are counted too.
            if not collector.composite_depth:
                collector.count(info.name, None, COMPOSITE)
            with self:
                return func.decompose(*args, **kwargs)
        entry = scoped.entry(info.name)
        if entry is not None and not entry.autograd:
            return collector.run_served(entry, func, args, kwargs)
        collector.count_unserved(info.name, info.view)
        return func(*args, **kwargs)


class _FunctionObserver(TorchFunctionMode):
    """Counts calls of CompositeImplicitAutograd ops, which never reach the backend as themselves."""

    def __init__(self, collector: _Collector) -> None:
        super().__init__()
        self.collector = collector

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        overloads = _composite_overloads(getattr(func, "__name__", ""))
        collector = self.collector
        if not overloads or collector.called_by_gems():
            return func(*args, **kwargs)
        # A family may serve the op on the Autograd key, which inference mode skips.
        if not torch.is_inference_mode_enabled():
            entry = next((e for e in map(scoped.entry, overloads) if e is not None and e.autograd), None)
            if entry is not None:
                return collector.run_served(entry, func, args, kwargs)
        collector.count(func.__name__, collector.declared.get(overloads[0]), COMPOSITE)
        collector.composite_depth += 1
        try:
            return func(*args, **kwargs)
        finally:
            collector.composite_depth -= 1


def _serving(families, include, exclude):
    """Serve the block with recording on: the given selection, else what is enabled now, else everything."""
    from flag_gems import api

    current = api._current
    if (families, include, exclude) == (None, None, None) and current is not None:
        families, include, exclude = current.families, current.include, current.exclude
    return api.use_gems(families=families, include=include, exclude=exclude, record=True)


@contextlib.contextmanager
def collect(families: Sequence[str] | None = None, include: Sequence[str] | None = None,
            exclude: Sequence[str] | None = None) -> Iterator[Report]:
    """Run the block under gems and yield a :class:`Report`, complete when the block exits.

    The block runs with ``use_gems(families, include, exclude)``; given no selection, with what
    ``enable`` serves now, or with every family when gems is off. Afterwards what was served before
    is served again. What runs and what it computes do not change.
    """
    report = Report()
    with recording.CallCounter() as counter, _serving(families, include, exclude):
        collector = _Collector(report, counter)
        with _FunctionObserver(collector), _DispatchObserver(collector):
            yield report


def report(fn: Callable, *args, **kwargs) -> Report:
    """Run ``fn(*args, **kwargs)`` under gems and return its :class:`Report` (``report.result`` holds
    what ``fn`` returned). Use :func:`collect` to choose families or exclusions."""
    with collect() as rep:
        rep.result = fn(*args, **kwargs)
    return rep


__all__ = ["COMPOSITE", "EXCLUDED", "FALLBACK", "NOT_IMPLEMENTED", "VIEW", "OpCoverage", "Report", "collect", "report"]
