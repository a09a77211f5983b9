"""The ``flag-gems`` command (also ``python -m flag_gems``).

    python -m flag_gems [list] [--ops] [--json]    families, versions, served op counts, load errors
    python -m flag_gems demo [--steps N] [...]     a transformer block on gems, checked against ATen
    python -m flag_gems coverage -- python script.py args
    python -m flag_gems coverage -m module args    a program run under the coverage report
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
import warnings
from collections.abc import Sequence

import torch

import flag_gems
from flag_gems import api, native, plugins
from flag_gems.runtime import device

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def _where() -> str:
    import triton

    place = "cpu (Triton interpreter)" if device.interpreter else f"{device.name} ({device.vendor_name})"
    return f"flag_gems {flag_gems.__version__} on {place}, torch {torch.__version__}, triton {triton.__version__}"


def _families_served() -> tuple[list[dict], dict[str, str], list[str]]:
    """Every family found, what ``enable()`` would serve (op -> family), and the warnings raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = api.families()
        loaded = [f["name"] for f in found if f["error"] is None]
        served: dict[str, str] = {}
        if loaded:
            with api.use_gems(families=loaded):
                served = api.registered_ops()
    notes = [str(w.message) for w in caught if not issubclass(w.category, plugins.PluginWarning)
             or "served by several families" in str(w.message)]
    return found, served, notes


def _list(args: argparse.Namespace) -> int:
    found, served, notes = _families_served()
    counts: dict[str, int] = {}
    for family in served.values():
        counts[family] = counts.get(family, 0) + 1
    if args.json:
        for f in found:
            f["served"] = sorted(op for op, family in served.items() if family == f["name"])
        print(json.dumps({"core": flag_gems.__version__, "device": device.name, "interpreter": device.interpreter,
                          "families": found}, indent=2))
        return 0
    print(_where())
    print(f"replayed launches: {native.status()}")
    if not found:
        print("no family is installed: install gems-pointwise, gems-reduction, gems-blas, gems-norm or a plugin")
        return 0
    header = ("family", "version", "distribution", "served", "declared", "fused", "status")
    rows = []
    for f in found:
        status = "ok" if f["error"] is None else f"error: {f['error']}"
        if f["skipped"]:
            status += f" ({len(f['skipped'])} declarations skipped)"
        rows.append((f["name"], f["version"] or "-", f["distribution"] or "-", str(counts.get(f["name"], 0)),
                     str(len(f["ops"])), str(len(f["fused"])), status))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [c.rjust(w) if i in (3, 4, 5) else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        print("  ".join([*cells, row[-1]]))
    print(f"{len(served)} ATen overloads served in all")
    for f in found:
        for op, why in sorted(f["skipped"].items()):
            print(f"  {f['name']}: skipped {op}: {why}")
        if args.ops and f["error"] is None:
            ops = sorted(op for op, family in served.items() if family == f["name"])
            print(f"  {f['name']} serves: {', '.join(ops) or '-'}")
            if f["fused"]:
                print(f"  {f['name']} fused functions: {', '.join('flag_gems.' + n for n in f['fused'])}")
    for note in notes:
        print(f"note: {note}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from flag_gems import demo

    config = demo.default_config(args.style)
    for name in ("dim", "heads", "hidden", "seq", "batch"):
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    if config.dim % config.heads:
        print(f"--dim ({config.dim}) must be a multiple of --heads ({config.heads})", file=sys.stderr)
        return 2
    print(_where())
    ok = demo.run_demo(config, _DTYPES[args.dtype] if args.dtype else None, steps=args.steps)
    return 0 if ok else 1


_COVERAGE_VALUE_OPTIONS = ("--families", "--exclude", "--json")


def _split_coverage_argv(argv: Sequence[str]) -> tuple[list[str], str | None, list[str]]:
    """(coverage's own options, module or None, the program's command line) for ``coverage ...``.

    The program's arguments are not parsed here: everything after ``--``, after ``-m module`` or
    from the first word that is not an option belongs to the program.
    """
    argv = list(argv)
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return argv[:i], None, argv[i + 1:]
        if arg == "-m" and i + 1 < len(argv):
            return argv[:i], argv[i + 1], argv[i + 2:]
        if not arg.startswith("-"):
            return argv[:i], None, argv[i:]
        i += 2 if arg in _COVERAGE_VALUE_OPTIONS else 1
    return argv, None, []


def _program(command: Sequence[str], module: str | None) -> tuple[str, str | None, list[str]]:
    """("module" | "path", target, sys.argv for it) for ``-m module args`` or ``[python] script.py args``."""
    command = list(command)
    if module is not None:
        return "module", module, [module, *command]
    if command and os.path.basename(command[0]).startswith("python"):
        command = command[1:]
        if len(command) >= 2 and command[0] == "-m":
            return "module", command[1], [command[1], *command[2:]]
    if not command:
        return "path", None, []
    return "path", command[0], command


def _coverage(args: argparse.Namespace) -> int:
    from flag_gems import coverage

    kind, target, argv = _program(args.command, args.module)
    if target is None:
        print("coverage: give a program: coverage -- python script.py args, or coverage -m module args",
              file=sys.stderr)
        return 2
    families = args.families.split(",") if args.families else None
    exclude = args.exclude.split(",") if args.exclude else None
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = argv
    code = 0
    try:
        with coverage.collect(families=families, exclude=exclude) as report:
            try:
                if kind == "module":
                    sys.path.insert(0, os.getcwd())
                    runpy.run_module(target, run_name="__main__", alter_sys=True)
                else:
                    sys.path.insert(0, os.path.dirname(os.path.abspath(target)))
                    runpy.run_path(target, run_name="__main__")
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    print(report.table(), file=sys.stderr if args.stderr else sys.stdout)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report.as_dict(), f, indent=2)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m flag_gems", description="flag_gems: Triton kernels for ATen ops")
    commands = parser.add_subparsers(dest="cmd")

    listing = commands.add_parser("list", help="families, versions, served op counts and load errors (default)")
    listing.add_argument("--ops", action="store_true", help="also list every served op and fused function")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(run=_list)

    demo = commands.add_parser("demo", help="a transformer block forward and backward on gems, checked against ATen")
    demo.add_argument("--steps", type=int, default=3, help="timed steps after the checked one (default 3)")
    demo.add_argument("--style", choices=["llama", "bert"], default="llama",
                      help="llama: RMSNorm, causal attention, SwiGLU; bert: LayerNorm, attention, GELU")
    demo.add_argument("--dtype", choices=sorted(_DTYPES), help="default: float32 on the interpreter, else bfloat16")
    for name in ("dim", "heads", "hidden", "seq", "batch"):
        demo.add_argument(f"--{name}", type=int, help=f"block {name} (default: tiny on the interpreter)")
    demo.set_defaults(run=_demo)

    cov = commands.add_parser("coverage", help="run a program under the coverage report and print it",
                              usage="python -m flag_gems coverage [options] (-m module | -- [python] script.py) [args]")
    cov.add_argument("-m", dest="module", metavar="MODULE", help="run a module, as python -m does")
    cov.add_argument("--families", help="comma-separated families to serve (default: every installed family)")
    cov.add_argument("--exclude", help="comma-separated ATen ops to leave to ATen")
    cov.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")
    cov.add_argument("--stderr", action="store_true", help="print the report to stderr")
    cov.set_defaults(run=_coverage, command=[])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``flag-gems`` and ``python -m flag_gems``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if not argv or argv[0] not in ("list", "demo", "coverage", "-h", "--help"):
        argv = ["list", *argv]
    if argv[0] == "coverage":
        options, module, command = _split_coverage_argv(argv[1:])
        args = parser.parse_args(["coverage", *options])
        args.module, args.command = module or args.module, command
    else:
        args = parser.parse_args(argv)
    return args.run(args)


__all__ = ["main"]
