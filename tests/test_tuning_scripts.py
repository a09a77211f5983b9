"""The families' variant-timing scripts (``packages/*/tuning/ab_*.py``) run end to end on tiny shapes, so
that they still work when the GPU time comes to use them."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = sorted(ROOT.glob("packages/*/tuning/ab_*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_smoke_mode_runs(script):
    done = subprocess.run([sys.executable, str(script), "--smoke"], capture_output=True, text=True, timeout=600,
                          cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    text = done.stdout.lower()  # each script marks a candidate whose result differs from ATen's
    assert not any(mark in text for mark in ("mismatch", "wrong:", "wrong result:")), done.stdout[-2000:]
