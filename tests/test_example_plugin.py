"""The outside plugin of examples/gems-example-plugin, seen from flag_gems: found through its entry
point, serving an op none of the project's families serves, publishing its fused function.

Its own accuracy tests live in examples/gems-example-plugin/tests.
"""

from __future__ import annotations

import importlib.metadata

import pytest
import torch

import flag_gems
from flag_gems import coverage

pytest.importorskip("gems_example_plugin", reason="examples/gems-example-plugin is not installed")

OUR_FAMILIES = ("pointwise", "reduction", "blas", "norm")


def _example() -> dict:
    return next(f for f in flag_gems.families() if f["name"] == "example")


def test_found_through_its_entry_point():
    entry = next(ep for ep in importlib.metadata.entry_points(group="flag_gems.plugins") if ep.name == "example")
    assert entry.value == "gems_example_plugin.plugin"
    family = _example()
    assert family["error"] is None and family["skipped"] == {}
    assert family["version"] == "0.1.0" and family["distribution"] == "gems-example-plugin"
    assert family["ops"] == ["special_erfcx", "special_erfcx.out"] and family["fused"] == ["rope"]


def test_serves_an_op_none_of_our_families_serves():
    ours = [f for f in flag_gems.families() if f["name"] in OUR_FAMILIES]
    assert all("special_erfcx" not in f["ops"] for f in ours)
    flag_gems.enable()
    assert flag_gems.registered_ops()["special_erfcx"] == "example"


def test_coverage_attributes_its_calls_to_it():
    x = torch.randn(16, device=flag_gems.device, dtype=torch.float64)
    report = coverage.report(torch.special.erfcx, x)
    assert report["special_erfcx"].family == "example" and report["special_erfcx"].status == "gems"
    torch.testing.assert_close(report.result, torch.special.erfcx(x))


def test_fused_function_is_reachable_from_flag_gems():
    from gems_example_plugin.rope import rope

    assert flag_gems.rope is rope


def test_left_out_when_not_selected():
    flag_gems.enable(families=[f["name"] for f in flag_gems.families() if f["name"] != "example"])
    assert "special_erfcx" not in flag_gems.registered_ops()
