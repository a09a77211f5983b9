"""The command line: ``python -m flag_gems`` list / demo / coverage."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types

import pytest
import torch

import flag_gems
from flag_gems import cli, plugins
from flag_gems.runtime import device

pytestmark = pytest.mark.filterwarnings("ignore::flag_gems.plugins.PluginWarning")


def _served_counts() -> dict[str, int]:
    with flag_gems.use_gems():
        served = flag_gems.registered_ops()
    counts: dict[str, int] = {}
    for family in served.values():
        counts[family] = counts.get(family, 0) + 1
    return counts


def test_list_shows_every_family_with_version_and_served_count(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"flag_gems {flag_gems.__version__} on ")
    counts = _served_counts()
    lines = out.splitlines()
    for family in flag_gems.families():
        row = next(line.split() for line in lines if line.startswith(family["name"] + " "))
        assert row[1] == family["version"] and row[2] == family["distribution"]
        assert int(row[3]) == counts.get(family["name"], 0)
        assert int(row[4]) == len(family["ops"])
    assert f"{sum(counts.values())} ATen overloads served in all" in out
    expected = "replayed launches: on" if not device.interpreter else "replayed launches: off (kernels run on"
    assert lines[1].startswith(expected)


def test_list_json_names_served_ops(capsys):
    assert cli.main(["list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["core"] == flag_gems.__version__ and data["device"] == flag_gems.device
    with flag_gems.use_gems():
        served = flag_gems.registered_ops()
    for family in data["families"]:
        assert family["served"] == sorted(op for op, f in served.items() if f == family["name"])


@pytest.fixture
def broken_plugin():
    plugins.add_module("cli_broken", ImportError("broken on purpose"))
    yield
    plugins.remove_module("cli_broken")


def test_list_reports_load_errors_and_still_lists_the_rest(capsys, broken_plugin):
    assert cli.main(["list", "--ops"]) == 0
    out = capsys.readouterr().out
    assert "cli_broken" in out and "error: failed to import: ImportError: broken on purpose" in out
    for family in flag_gems.families():
        if family["error"] is None and family["ops"]:
            assert f"{family['name']} serves: " in out


def test_demo_runs_checks_and_reports(capsys):
    assert cli.main(["demo", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "flag_gems demo: llama-style block" in out
    assert "against ATen:" in out and ": OK" in out
    assert "flag_gems coverage:" in out and "scaled_dot_product_attention" in out


def _wrong_silu(x):
    return torch.neg(x)


@pytest.fixture
def wrong_family():
    module = types.ModuleType("cli_wrong")
    module.gems_family = flag_gems.hookimpl(lambda: flag_gems.Family(
        name="cli_wrong", version="0.0.1", priority=100, ops=[flag_gems.OpImpl("silu", _wrong_silu)]))
    plugins.add_module("cli_wrong", module)
    yield
    plugins.remove_module("cli_wrong")


@pytest.mark.parametrize("enabled", [False, True])
def test_demo_fails_when_gems_differs_from_aten(capsys, wrong_family, enabled):
    if enabled:  # the reference must still run on ATen
        flag_gems.enable()
    assert cli.main(["demo", "--steps", "0", "--dim", "16", "--heads", "2", "--hidden", "16"]) == 1
    assert "MISMATCH" in capsys.readouterr().out


SCRIPT = """
import sys
import torch

print("argv", sys.argv[1:])
x = torch.randn(8)
(x.abs() + 1).sum()
sys.exit(3)
"""


def test_coverage_of_a_script_keeps_its_arguments_and_exit_code(tmp_path, capsys):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    report = tmp_path / "report.json"
    assert cli.main(["coverage", "--json", str(report), "--", "python", str(script), "--flag", "x"]) == 3
    out = capsys.readouterr().out
    assert "argv ['--flag', 'x']" in out and "flag_gems coverage:" in out
    data = json.loads(report.read_text())
    assert data["add.Tensor"]["calls"] == 1 and data["sum"]["calls"] == 1
    with flag_gems.use_gems():
        served = flag_gems.registered_ops()
    assert (data["abs"]["gems"] == 1) == ("abs" in served)


def test_coverage_of_a_module(tmp_path, capsys, monkeypatch):
    (tmp_path / "covered_sample_module.py").write_text(textwrap.dedent(SCRIPT).replace("sys.exit(3)", ""))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cli.main(["coverage", "-m", "covered_sample_module", "--help"]) == 0
    out = capsys.readouterr().out
    assert "argv ['--help']" in out and "add.Tensor" in out


def test_coverage_without_a_program_is_a_usage_error(capsys):
    assert cli.main(["coverage"]) == 2
    assert "give a program" in capsys.readouterr().err


def test_python_dash_m_flag_gems():
    proc = subprocess.run([sys.executable, "-m", "flag_gems"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "ATen overloads served in all" in proc.stdout
