"""Source of the Triton kernels that ``pointwise_dynamic`` wraps around a scalar function.

One kernel source per (rank, operand pattern): rank 0 is the flat kernel for operands that share one
dense layout, rank r >= 1 walks r coalesced dimensions with per-operand strides. Sources are written
once to a disk cache and imported from there (Triton needs a file to read a kernel's source).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

CODEGEN_VERSION = "2"


@dataclass(frozen=True)
class Pattern:
    """What a generated kernel looks like.

    ``operands``: for each argument of the scalar function, "t" (a tensor loaded and cast to a
    compute dtype), "r" (a tensor loaded raw), "s" (a scalar cast to a compute dtype) or "v" (a value
    passed as it is). ``num_outputs`` outputs; ``rank`` 0 means flat. ``bound``: the scalar function's
    constexpr parameters fixed by the op, as (position among its parameters, name); the kernel takes
    each as a constexpr ``K_<name>`` and passes it on, so Triton specialises on its value.
    """

    operands: tuple[str, ...]
    num_outputs: int
    rank: int
    bound: tuple[tuple[int, str], ...] = ()


def cache_root() -> Path:
    """Where flag_gems keeps what it generates: ``GEMS_CACHE_DIR``, else ``~/.cache/flag_gems``."""
    return Path(os.environ.get("GEMS_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "flag_gems"))


def cache_dir() -> Path:
    return cache_root() / "pointwise" / f"v{CODEGEN_VERSION}"


def _tensor_args(pattern: Pattern) -> list[int]:
    return [i for i, kind in enumerate(pattern.operands) if kind in "tr"]


def source(pattern: Pattern) -> str:
    r = pattern.rank
    tensors = _tensor_args(pattern)
    params = [f"a{i}" for i in range(len(pattern.operands))]
    params += [f"out{j}" for j in range(pattern.num_outputs)]
    params += ["n"] + [f"size{d}" for d in range(r)]
    operand_names = [f"a{i}" for i in tensors] + [f"out{j}" for j in range(pattern.num_outputs)]
    for name in operand_names:
        params += [f"{name}_stride{d}" for d in range(r)]
    params += [f"CT{i}: tl.constexpr" for i in range(len(pattern.operands))]
    params += ["BLOCK: tl.constexpr", "INT64: tl.constexpr"]
    params += [f"K_{name}: tl.constexpr" for _, name in pattern.bound]
    scalars = [f'"a{i}"' for i, kind in enumerate(pattern.operands) if kind in "sv"]

    lines = [
        "import triton",
        "import triton.language as tl",
        "",
        "",
        f"@triton.jit(do_not_specialize=[{', '.join(scalars)}])",
        f"def kernel({', '.join(params)}):",
        "    pid = tl.program_id(0)",
        "    if INT64:",
        "        pid = pid.to(tl.int64)",
        "    idx = pid * BLOCK + tl.arange(0, BLOCK)",
        "    mask = idx < n",
    ]
    if r >= 1:
        lines.append("    rem = idx")
        for d in range(r - 1, 0, -1):
            lines.append(f"    i{d} = rem % size{d}")
            lines.append(f"    rem = rem // size{d}")
        lines.append("    i0 = rem")

    def offset(name: str) -> str:
        if r == 0:
            return "idx"
        return " + ".join(f"i{d} * {name}_stride{d}" for d in range(r))

    args = []
    for i, kind in enumerate(pattern.operands):
        if kind == "t":
            lines.append(f"    x{i} = tl.load(a{i} + ({offset(f'a{i}')}), mask=mask).to(CT{i})")
        elif kind == "r":
            lines.append(f"    x{i} = tl.load(a{i} + ({offset(f'a{i}')}), mask=mask)")
        elif kind == "s":
            lines.append(f"    x{i} = tl.cast(a{i}, CT{i})")
        else:
            lines.append(f"    x{i} = a{i}")
        args.append(f"x{i}")
    for position, name in pattern.bound:
        args.insert(position, f"K_{name}")
    results = [f"r{j}" for j in range(pattern.num_outputs)]
    lines.append(f"    {', '.join(results)} = _fn({', '.join(args)})")
    for j in range(pattern.num_outputs):
        lines.append(f"    tl.store(out{j} + ({offset(f'out{j}')}), r{j}.to(out{j}.dtype.element_ty), mask=mask)")
    return "\n".join(lines) + "\n"


def _write_once(path: Path, text: str) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written under a temporary name and renamed: processes sharing the cache never see half a file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def load_kernel(pattern: Pattern, fn, tag: str):
    """The generated kernel for ``pattern`` around the jitted scalar function ``fn``.

    Each (function, pattern) gets its own module object, so that ``_fn`` names the right function.
    """
    text = source(pattern)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = cache_dir() / f"pw_{digest}.py"
    _write_once(path, text)
    module_name = f"flag_gems._generated.{tag}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    module._fn = fn
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module.kernel
