"""First-call latency: the first call of an op in a fresh process, with a cold on-disk cache (fresh
TRITON_CACHE_DIR and GEMS_CACHE_DIR) and with a warm one (a second fresh process on the same dirs).

Targets (issue 8, H100): with a warm cache the first call within 50 ms; with a cold cache what
Triton's compilation costs and nothing more (no autotuning sweep). Each process also times the second
call, a call at a never-seen shape, and ATen's first call of the same op afterwards, for comparison.
"""

from __future__ import annotations

import os
import tempfile

import pytest

from benchmark.fresh_process import run_fresh
from benchmark.harness import verdict

FAMILY = "first_call"
WARM_TARGET_MS = 50.0
OPS = {  # the most telling first: a pointwise op, a matmul (no autotuning wait), a reduction, a norm
    "add": ["add.Tensor"], "mm": ["mm"], "softmax": ["_softmax"], "rms_norm": ["rms_norm", "_fused_rms_norm"],
    "layer_norm": ["layer_norm", "native_layer_norm"], "silu": ["silu"], "sum": ["sum"],
    "cross_entropy": ["cross_entropy_loss", "_log_softmax", "nll_loss_forward"],
}
QUICK_OPS = ("add",)


def _compiled_kernels(cache_dir: str) -> int:
    """Kernels Triton compiled into ``cache_dir`` (one binary each)."""
    return sum(1 for _, _, files in os.walk(cache_dir) for f in files if f.endswith((".cubin", ".hsaco")))


@pytest.mark.parametrize("op", list(OPS))
def test_first_call(op, bench):
    if bench.quick and op not in QUICK_OPS:
        pytest.skip("the smoke pass runs one op")
    bench.check_budget()
    if not bench.session.serves(OPS[op]):
        bench.metric("first_call", op, {}, status="skip", reason="not served by any installed family")
    extra = ["--tiny"] if bench.quick else []
    with tempfile.TemporaryDirectory(prefix="gems-first-call-") as root:
        env = dict(os.environ, TRITON_CACHE_DIR=os.path.join(root, "triton"),
                   GEMS_CACHE_DIR=os.path.join(root, "gems"))
        try:
            cold = run_fresh("first-call", op, *extra, env=env)
            compiled = _compiled_kernels(env["TRITON_CACHE_DIR"])
            warm = run_fresh("first-call", op, *extra, env=env)
        except Exception as exc:
            bench.metric("first_call", op, {}, status="error", reason=f"{type(exc).__name__}: {exc}"[:500])
    values = {"cold_ms": cold["first_ms"], "warm_ms": warm["first_ms"], "second_ms": warm["second_ms"],
              "new_shape_warm_ms": warm["new_shape_ms"], "aten_first_ms": warm["aten_first_ms"],
              "kernels_compiled": compiled, "import_and_enable_s": warm["import_and_enable_s"]}
    ok = cold["matches_aten"] and warm["matches_aten"]
    reason = None if ok else f"gems' result differs from ATen's (relative error {cold['relative_error']:.3g})"
    bench.metric("first_call", op, values, status="ok" if ok else "fail", reason=reason,
                 targets={"warm_ms": WARM_TARGET_MS},
                 verdicts={"warm_ms": verdict(warm["first_ms"], WARM_TARGET_MS)})
