"""Measurements that need a fresh Python process; the benchmarks run this file as a subprocess.

    python fresh_process.py import              import torch, then import flag_gems and enable()
    python fresh_process.py first-call OP        the first calls of OP under gems, then ATen's
    python fresh_process.py serving-paths        µs a call of tiny ops: ATen, enable(), a use_gems() block

Each prints one JSON object on its last line. Nothing of flag_gems is imported before it is timed.
``run_fresh`` is the parent's side.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def _clock() -> float:
    return time.perf_counter()


def _watch_side_effects() -> dict:
    """Record subprocesses started and sockets connected from now on."""
    import socket
    import subprocess

    seen: dict = {"subprocesses": [], "connections": []}
    popen_init = subprocess.Popen.__init__
    connect = socket.socket.connect

    def recording_popen(self, args, *a, **kw):
        seen["subprocesses"].append(args if isinstance(args, str) else " ".join(map(str, args)))
        return popen_init(self, args, *a, **kw)

    def recording_connect(self, address):
        seen["connections"].append(str(address))
        return connect(self, address)

    subprocess.Popen.__init__ = recording_popen
    socket.socket.connect = recording_connect
    return seen


def measure_import() -> dict:
    """Seconds to import torch, then flag_gems, then enable every family; and what that touched."""
    t0 = _clock()
    import torch

    t1 = _clock()
    seen = _watch_side_effects()
    import flag_gems

    t2 = _clock()
    cuda_after_import = torch.cuda.is_initialized()
    flag_gems.enable()
    t3 = _clock()
    return {
        "import_torch_s": t1 - t0, "import_flag_gems_s": t2 - t1, "enable_s": t3 - t2, "beyond_torch_s": t3 - t1,
        "cuda_initialized_by_import": cuda_after_import, "cuda_initialized_by_enable": torch.cuda.is_initialized(),
        "served_ops": len(flag_gems.registered_ops()), "subprocesses": seen["subprocesses"],
        "connections": seen["connections"],
    }


def _inputs(op: str, device: str, tiny: bool):
    """(call, args at a first shape, args at a never-seen second shape) for ``op``."""
    import torch
    import torch.nn.functional as F

    bf16 = torch.bfloat16

    def x(*shape):
        return torch.randn(*shape, device=device, dtype=bf16)

    rows = [(32, 48), (24, 40)] if tiny else [(4096, 4096), (1000, 3000)]
    (m1, n1), (m2, n2) = rows
    table = {
        "add": (torch.add, lambda m, n: (x(m, n), x(m, n))),
        "silu": (F.silu, lambda m, n: (x(m, n),)),
        "sum": (lambda t: torch.sum(t, dim=-1), lambda m, n: (x(m, n),)),
        "softmax": (lambda t: torch.softmax(t, dim=-1), lambda m, n: (x(m, n),)),
        "layer_norm": (lambda t, w, b: F.layer_norm(t, (t.shape[-1],), w, b),
                       lambda m, n: (x(m, n), x(n), x(n))),
        "rms_norm": (lambda t, w: F.rms_norm(t, (t.shape[-1],), w, 1e-6), lambda m, n: (x(m, n), x(n))),
        "mm": (torch.mm, lambda m, n: (x(m, n) * 0.05, x(n, m) * 0.05)),
        "cross_entropy": (F.cross_entropy, lambda m, n: (x(m, n), torch.randint(0, n, (m,), device=device))),
    }
    call, make = table[op]
    return call, make(m1, n1), make(m2, n2)


def measure_first_call(op: str, tiny: bool) -> dict:
    """Milliseconds of the first and second gems call of ``op``, of a call at a never-seen shape, and
    of ATen's first call of the same op afterwards (gems off)."""
    t0 = _clock()
    import torch

    t1 = _clock()
    import flag_gems

    flag_gems.enable()
    t2 = _clock()
    device = flag_gems.device

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    torch.ones(1, device=device).add_(1)  # the device context, which is not gems' cost
    call, args, new_args = _inputs(op, device, tiny)
    sync()

    def timed(fn, a):
        start = _clock()
        out = fn(*a)
        sync()
        return out, (_clock() - start) * 1e3

    out, first = timed(call, args)
    _, second = timed(call, args)
    _, new_shape = timed(call, new_args)
    flag_gems.disable()
    ref, aten_first = timed(call, args)
    err = float((out.float() - ref.float()).norm() / ref.float().norm().clamp_min(1e-30))
    return {"op": op, "import_torch_s": t1 - t0, "import_and_enable_s": t2 - t1, "first_ms": first,
            "second_ms": second, "new_shape_ms": new_shape, "aten_first_ms": aten_first,
            "relative_error": err, "matches_aten": err < 2e-2}


def measure_serving_paths(calls: int) -> dict:
    """µs a call of a tiny add, in-place add_ and fill_ (1024 bf16 elements): ATen's; under ``enable()`` in
    a process where nothing else was served before; inside ``use_gems()`` blocks (a dispatch key of their
    own); and under ``enable()`` again after those blocks. Both ways of serving call the same kernels."""
    import torch

    import flag_gems

    device = flag_gems.device
    x = torch.randn(1024, device=device, dtype=torch.bfloat16)
    y = torch.randn(1024, device=device, dtype=torch.bfloat16)
    ops = {"add": lambda: torch.add(x, y), "add_": lambda: x.add_(y), "fill_": lambda: x.fill_(0.5)}

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def per_call_us(fn) -> float:
        for _ in range(max(calls // 10, 10)):
            fn()
        best = float("inf")
        for _ in range(3):
            sync()
            start = _clock()
            for _ in range(calls):
                fn()
            sync()
            best = min(best, (_clock() - start) / calls * 1e6)
        return best

    def row(label: str) -> dict:
        return {f"{label}_{name}_us": per_call_us(fn) for name, fn in ops.items()}

    result = row("aten")
    flag_gems.enable()
    result.update(row("enable"))
    flag_gems.disable()
    with flag_gems.use_gems():
        result.update(row("block"))
    flag_gems.enable()
    result.update(row("enable_after_blocks"))
    flag_gems.disable()
    return result


def run_fresh(*args: str, timeout: float = 300, env: dict | None = None) -> dict:
    """Run this file in a new interpreter with ``args`` and return its JSON result (the parent's side)."""
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        # The exception's last line and the innermost frame that raised it.
        err = [t for t in proc.stderr.strip().splitlines() if t.strip()]
        frames = [t.strip() for t in err if t.strip().startswith("File ")]
        where = f" ({frames[-1]})" if frames else ""
        raise RuntimeError(f"a fresh process exited with {proc.returncode}: {err[-1] if err else ''}{where}"[:600])
    return json.loads(lines[-1])


def main(argv: list[str]) -> int:
    what = argv[1] if len(argv) > 1 else ""
    tiny = "--tiny" in argv
    if what == "import":
        result = measure_import()
    elif what == "first-call" and len(argv) > 2:
        result = measure_first_call(argv[2], tiny)
    elif what == "serving-paths":
        result = measure_serving_paths(20 if tiny else 4000)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
