"""Plugin discovery with real installed plugins (tests/plugins/gems-test-plugins), run in fresh
processes so that the test plugins wake up (GEMS_TEST_PLUGINS=1) without touching other tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import flag_gems
from flag_gems import plugins


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "GEMS_TEST_PLUGINS": "1", **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env,
                          capture_output=True, text=True, timeout=300)


def discovery_report() -> tuple[dict, str]:
    proc = run_python("""
        import json, warnings, flag_gems
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            flag_gems.enable()
        print(json.dumps({"families": {f["name"]: f for f in flag_gems.families()},
                          "served": flag_gems.registered_ops(),
                          "warnings": [str(w.message) for w in caught]}))
    """)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


@pytest.fixture(scope="module")
def report():
    return discovery_report()[0]


def test_good_plugin_loads_with_version_distribution_and_ops(report):
    good = report["families"]["test_good"]
    assert good["version"] == "1.2.3"
    assert good["distribution"] == "gems-test-plugins"
    assert good["ops"] == ["special_entr"] and good["fused"] == ["test_twice"]
    assert good["error"] is None


def test_broken_plugin_is_reported_by_name_and_others_load(report):
    assert "broken on purpose" in report["families"]["test_broken"]["error"]
    assert any("test_broken" in w for w in report["warnings"])
    assert report["served"]["special_bessel_j0"] == "test_invalid"


def test_invalid_declarations_are_skipped_with_reasons(report):
    skipped = report["families"]["test_invalid"]["skipped"]
    assert "no such overload" in skipped["no_such_op_anywhere"]
    assert "CompositeImplicitAutograd" in skipped["square"]
    assert "not callable" in skipped["special_bessel_j1"]
    assert "square" not in report["served"]
    for name in ("no_such_op_anywhere", "square", "special_bessel_j1"):
        assert any("test_invalid" in w and name in w for w in report["warnings"])


def test_incompatible_core_version_is_refused_clearly(report):
    assert "needs gems-core >=99" in report["families"]["test_old"]["error"]


def test_conflict_is_resolved_by_priority_then_name_with_a_warning(report):
    assert report["served"]["special_entr"] == "test_conflict"
    assert any("special_entr is served by several families" in w for w in report["warnings"])


def test_families_subset_serves_only_those():
    proc = run_python("""
        import json, warnings, flag_gems
        warnings.simplefilter("ignore")
        flag_gems.enable(families=["test_good"])
        print(json.dumps(flag_gems.registered_ops()))
    """)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"special_entr": "test_good"}


def test_fused_functions_are_reachable_as_attributes():
    proc = run_python("""
        import warnings, flag_gems
        warnings.simplefilter("ignore")
        print(flag_gems.test_twice(21))
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "42"


def test_dormant_test_plugins_change_nothing_here():
    assert not any(f["name"].startswith("test_") for f in flag_gems.families())


def test_unknown_family_is_an_error():
    with pytest.raises(ValueError, match="unknown flag_gems families"):
        flag_gems.enable(families=["no_such_family"])


def test_no_family_installed_serves_nothing_and_says_so(monkeypatch):
    monkeypatch.setattr(plugins, "_entry_point_modules", lambda: iter(()))
    plugins.refresh()
    try:
        with pytest.warns(UserWarning, match="no flag_gems family is installed"):
            flag_gems.enable()
        assert flag_gems.registered_ops() == {}
    finally:
        monkeypatch.undo()
        plugins.refresh()


def test_a_plugin_module_added_by_hand_is_loaded_and_removed():
    import types

    module = types.ModuleType("by_hand")

    @flag_gems.hookimpl
    def gems_family():
        return flag_gems.Family(name="by_hand", version="0", ops=[flag_gems.OpImpl("special_entr", lambda x: x)])

    module.gems_family = gems_family
    plugins.add_module("by_hand", module)
    try:
        assert "by_hand" in {f["name"] for f in flag_gems.families()}
    finally:
        plugins.remove_module("by_hand")
    assert "by_hand" not in {f["name"] for f in flag_gems.families()}


def test_a_lazy_op_imports_its_module_at_the_first_call(tmp_path, monkeypatch):
    import types

    import torch

    (tmp_path / "lazy_kernels_for_test.py").write_text(
        "import sys\nimport torch\n\n"
        "callers = []\n\n"
        "def special_entr(x):\n"
        "    callers.append(sys._getframe(1).f_code.co_name)\n"
        "    return torch.full_like(x, 7.0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = types.ModuleType("lazy_family")

    @flag_gems.hookimpl
    def gems_family():
        return flag_gems.Family(name="lazy_family", version="0", ops=[
            flag_gems.OpImpl("special_entr", flag_gems.lazy("lazy_kernels_for_test:special_entr"))])

    module.gems_family = gems_family
    plugins.add_module("lazy_family", module)
    x = torch.rand(4)
    try:
        with flag_gems.use_gems(families=["lazy_family"]):
            assert "lazy_kernels_for_test" not in sys.modules
            assert torch.special.entr(x).tolist() == [7.0] * 4
            assert "lazy_kernels_for_test" in sys.modules
            # The first call came through the import; from the second on, the dispatcher calls the
            # imported function (within core's own wrappers, where a run needs them), not the lazy one.
            assert torch.special.entr(x).tolist() == [7.0] * 4
            callers = sys.modules["lazy_kernels_for_test"].callers
            assert callers[1] != callers[0] and callers[1] != "__call__"
        assert torch.special.entr(x).tolist() != [7.0] * 4
        with flag_gems.use_gems(families=["lazy_family"]):  # served again, now without the indirection
            assert torch.special.entr(x).tolist() == [7.0] * 4
    finally:
        plugins.remove_module("lazy_family")
        sys.modules.pop("lazy_kernels_for_test", None)


def test_enabling_the_families_imports_none_of_their_kernel_modules():
    # Kernel modules import Triton and decorate their kernels: that cost waits for an op's first call.
    proc = run_python("""
        import json, sys, flag_gems
        flag_gems.enable(families=["pointwise", "reduction", "blas", "norm"])
        imported = [name for name, module in sys.modules.items()
                    if name.partition(".")[0] in ("gems_pointwise", "gems_reduction", "gems_blas", "gems_norm")
                    and "triton" in vars(module)]
        print(json.dumps({"kernel_modules": imported, "served": len(flag_gems.registered_ops())}))
    """, GEMS_TEST_PLUGINS="0")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["kernel_modules"] == [] and report["served"] > 500


def test_lazy_wants_module_and_attribute():
    with pytest.raises(ValueError, match="module:attribute"):
        flag_gems.lazy("just_a_module")


@pytest.mark.parametrize("version, specifier", [
    ("0.1.0", ">=0.1,<0.2"), ("0.2.0", ">=0.1,<0.2"), ("0.1", "==0.1.0"), ("0.1.0", "!=0.1"), ("0.1.0", ">0.1"),
    ("0.1.0", "<=0.1"), ("0.1.0", " >= 0.1 , < 0.2 "), ("1.0.0", "~=0.9"), ("0.1.0rc1", ">=0.1"),
    ("0.1.0", ">=0.1.0.dev0"),
])
def test_core_version_check_agrees_with_packaging(version, specifier):
    from packaging.specifiers import SpecifierSet

    assert plugins._satisfies(version, specifier) == (version in SpecifierSet(specifier))


def test_an_invalid_core_specifier_is_an_error():
    with pytest.raises(ValueError, match="invalid requires_core"):
        plugins._satisfies("0.1.0", "at least 0.1")
