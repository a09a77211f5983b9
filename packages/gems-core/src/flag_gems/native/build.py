"""Building ``replay.cpp`` against the running torch, once per machine: the library is kept on disk beside
the generated kernels (``GEMS_CACHE_DIR``, else ``~/.cache/flag_gems``), named by a hash of its source, of
torch's version and of Python's, and loaded from there by every later process.

The build runs the C++ compiler that Triton already needs for its own launchers, with torch's headers and
libraries: no build tool beyond it, no download. Several processes building at once each write a file of
their own and rename it into place, so none ever loads a half-written library.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import torch

from flag_gems.elementwise.codegen import cache_root

NAME = "_gems_replay"
SOURCE = Path(__file__).with_name("replay.cpp")


def _compiler() -> str:
    for candidate in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if candidate and shutil.which(candidate):
            return candidate
    raise RuntimeError("no C++ compiler found (set CXX)")


def _library_path() -> Path:
    digest = hashlib.sha256()
    digest.update(SOURCE.read_bytes())
    digest.update(f"{torch.__version__} {sys.version} {torch._C._GLIBCXX_USE_CXX11_ABI}".encode())
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    return cache_root() / "native" / digest.hexdigest()[:16] / f"{NAME}{suffix}"


def _compile(target: Path) -> None:
    torch_dir = Path(torch.__file__).parent
    include, lib = torch_dir / "include", torch_dir / "lib"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    command = [
        _compiler(), "-O2", "-std=c++20", "-shared", "-fPIC", "-fvisibility=hidden", "-w",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
        "-I", str(include), "-I", str(include / "torch" / "csrc" / "api" / "include"),
        "-I", sysconfig.get_paths()["include"],
        str(SOURCE), "-o", str(partial),
        "-L", str(lib), "-lc10", "-ltorch", "-ltorch_cpu", "-ltorch_python", f"-Wl,-rpath,{lib}",
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"building {SOURCE.name} failed:\n{done.stderr[-2000:]}")
    os.replace(partial, target)


def load():
    """The compiled module, built first if this machine has none for this torch."""
    path = _library_path()
    if not path.exists():
        _compile(path)
    spec = importlib.util.spec_from_file_location(NAME, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
