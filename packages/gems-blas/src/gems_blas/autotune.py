"""Optional on-line tuning of matrix-product configurations, off by default.

With ``GEMS_BLAS_AUTOTUNE=1`` the first product of a shape this process has not planned times a few
candidate configurations (the heuristic's choice first) for at most ``GEMS_BLAS_AUTOTUNE_BUDGET``
seconds (default 5, compilation included) and keeps the fastest. Results go to a JSON file,
``GEMS_BLAS_AUTOTUNE_CACHE`` (default ``~/.cache/flag_gems/blas_autotune.json``), that processes share:
each writer merges its results into what the file holds under a lock and replaces the file atomically,
so readers never see a partial file. Shapes already in the file are never timed again.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from flag_gems.runtime import device
from gems_blas.heuristics import MatmulConfig

enabled: bool = os.environ.get("GEMS_BLAS_AUTOTUNE", "0") == "1" and not device.interpreter
budget_s: float = float(os.environ.get("GEMS_BLAS_AUTOTUNE_BUDGET", "5"))
_cache: dict | None = None


def cache_path() -> Path:
    """The shared cache file."""
    default = Path.home() / ".cache" / "flag_gems" / "blas_autotune.json"
    return Path(os.environ.get("GEMS_BLAS_AUTOTUNE_CACHE", default))


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _key(kind: str, dtype: torch.dtype, tf32: bool, dev: int, batch: int, m: int, n: int, k: int,
         a_row_major: bool, b_row_major: bool) -> str:
    name = torch.cuda.get_device_name(dev).replace(" ", "_")
    layout = ("n" if a_row_major else "t") + ("n" if b_row_major else "t")
    return f"{name}|{kind}|{str(dtype).split('.')[-1]}{'_tf32' if tf32 else ''}|{batch}x{m}x{n}x{k}|{layout}"


def tuned_config(kind, dtype, tf32, dev, batch, m, n, k, a_row_major, b_row_major) -> MatmulConfig | None:
    """The cached tuned configuration of a product, or None (always None unless tuning is on)."""
    global _cache
    if not enabled:
        return None
    if _cache is None:
        _cache = _read(cache_path())
    entry = _cache.get(_key(kind, dtype, tf32, dev, batch, m, n, k, a_row_major, b_row_major))
    return MatmulConfig.from_json(entry["config"]) if entry else None


def tune(key_args: tuple, candidates: list[MatmulConfig], time_ms: Callable[[MatmulConfig], float]) -> MatmulConfig:
    """Time ``candidates`` (the first is the fallback) within the time budget; record and return the fastest.

    ``key_args`` are the arguments of ``tuned_config``. A candidate that fails (too many resources for
    the device, say) is skipped. Nothing is timed while a CUDA graph is being captured.
    """
    if torch.cuda.is_current_stream_capturing():
        return candidates[0]
    deadline = time.monotonic() + budget_s
    best, best_ms = candidates[0], float("inf")
    for config in candidates:
        if time.monotonic() > deadline:
            break
        try:
            ms = time_ms(config)
        except Exception:  # a configuration this device cannot run is just not a candidate
            continue
        if ms < best_ms:
            best, best_ms = config, ms
    if best_ms < float("inf"):
        _record(_key(*key_args), {"config": best.to_json(), "ms": round(best_ms, 5)})
    return best


def _record(key: str, entry: dict) -> None:
    global _cache
    path = cache_path()
    merged = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path):
            merged = _read(path)
            merged[key] = entry
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(merged, f, indent=1, sort_keys=True)
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
    except OSError:
        merged = None  # an unwritable cache only costs other processes this result
    _cache = merged if merged is not None else {**(_cache or {}), key: entry}


class _locked:
    """An exclusive lock on ``<path>.lock`` while merging (where the platform has flock)."""

    def __init__(self, path: Path) -> None:
        self.lock_path = path.with_name(path.name + ".lock")
        self.fd = None

    def __enter__(self):
        self.fd = os.open(self.lock_path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            import fcntl

            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except ImportError:
            pass
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)  # closing releases the lock
