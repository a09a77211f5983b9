"""Options and fixtures of the benchmark suite (README.md in this folder tells how to run it).

    pytest benchmark/test_norm_perf.py -s                        kernel time (device events, median)
    pytest benchmark -s --bench-mode operator                    time per call as a user pays it
    pytest benchmark --bench-mode quick                          smoke pass (CI; automatic without a GPU)
    pytest tests benchmark --mode quick                          the same, beside the accuracy tests

``--mode`` belongs to tests/conftest.py; when it is defined and says ``quick``, this suite runs its
smoke pass too. ``GEMS_BENCH_QUICK=1`` does the same.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

import flag_gems  # noqa: E402,F401  (switches the interpreter on before any kernel is decorated)

HERE = os.path.dirname(os.path.abspath(__file__))
if os.path.dirname(HERE) not in sys.path:
    sys.path.insert(0, os.path.dirname(HERE))  # the repository root, for "import benchmark" in any import mode
from benchmark import harness, records  # noqa: E402

_SESSION = pytest.StashKey[harness.Session]()


def pytest_addoption(parser):
    group = parser.getgroup("gems-bench", "flag_gems benchmarks")
    group.addoption("--bench-mode", choices=("kernel", "operator", "quick"), default=None,
                    help="kernel: device time (do_bench median); operator: µs per call over many calls "
                         "with one synchronize; quick: one tiny call per case (default: kernel on a GPU, "
                         "quick without one)")
    group.addoption("--bench-shapes", choices=("all", "large", "small"), default="all",
                    help="large: realistic LLM/vision sizes; small: sizes where host time dominates")
    group.addoption("--bench-dtypes", default="", help="comma-separated subset, e.g. bf16,fp32")
    group.addoption("--bench-ops", default="", help="comma-separated case names to run (default: all)")
    group.addoption("--bench-record", default="", help="append one JSON line per result to this file")
    group.addoption("--bench-resume", action="store_true",
                    help="skip points already in --bench-record; a point that was running when an earlier "
                         "process died is recorded as a crash and skipped")
    group.addoption("--bench-budget", type=float, default=0.0,
                    help="seconds for this process; later points are skipped once spent (0: no limit)")
    group.addoption("--bench-point-limit", type=float, default=60.0,
                    help="seconds after which a point still running is stopped and reported (0: none)")
    group.addoption("--bench-warmup", type=float, default=25.0, help="do_bench warm-up per point, ms")
    group.addoption("--bench-rep", type=float, default=100.0, help="do_bench repetition time per point, ms")


def _option(config, name: str, default):
    # Defaults also when this conftest was found late (pytest run from the root without naming benchmark/).
    value = config.getoption(name, default=default)
    return default if value is None else value


def _settings(config) -> harness.Settings:
    mode = _option(config, "--bench-mode", "kernel")
    if (mode == "quick" or config.getoption("--mode", default="normal") == "quick"
            or os.environ.get("GEMS_BENCH_QUICK", "0") == "1" or not harness.ON_GPU):
        mode = "quick"
    dtypes = tuple(harness.DTYPES_BY_NAME[d.strip()] for d in _option(config, "--bench-dtypes", "").split(",")
                   if d.strip())
    ops = tuple(o.strip() for o in _option(config, "--bench-ops", "").split(",") if o.strip())
    return harness.Settings(mode=mode, shapes=_option(config, "--bench-shapes", "all"), dtypes=dtypes, ops=ops,
                            record=_option(config, "--bench-record", ""),
                            budget_s=_option(config, "--bench-budget", 0.0),
                            point_limit_s=0.0 if mode == "quick" else _option(config, "--bench-point-limit", 60.0),
                            warmup_ms=_option(config, "--bench-warmup", 25.0),
                            rep_ms=_option(config, "--bench-rep", 100.0))


def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config):
    settings = _settings(config)
    config.stash[_SESSION] = harness.Session(settings)
    if settings.record and _option(config, "--bench-resume", False) and not _is_worker(config):
        _record_crashes(settings)


def _read_records(path: str) -> list[dict]:
    """Case, metric and start records already in ``path`` (none when it does not exist yet)."""
    if not path or not os.path.exists(path):
        return []
    with open(path) as f:
        lines = f.read().splitlines()
    found = []
    for text in lines:
        try:
            found.append(json.loads(text))
        except json.JSONDecodeError:
            continue  # a line cut short by a killed process
    return found


def _record_crashes(settings: harness.Settings) -> None:
    """Record the points that killed an earlier process (started, never finished), so that the
    resumed run skips them."""
    found = records.crashes(_read_records(settings.record))
    with open(settings.record, "a") as f:
        for record in found:
            f.write(json.dumps(record) + "\n")
            harness.emit(records.line(record))


def pytest_generate_tests(metafunc):
    if "point" not in metafunc.fixturenames:
        return
    settings = metafunc.config.stash[_SESSION].settings
    family = metafunc.module.FAMILY
    found = harness.points(family, metafunc.module.CASES, settings)
    metafunc.parametrize("point", found, ids=[p.id for p in found])


def _point_record_id(item, mode: str):
    callspec = getattr(item, "callspec", None)
    point = callspec.params.get("point") if callspec is not None else None
    return f"{point.family}/{point.id}/{mode}" if point is not None else None


def _ours(item) -> bool:
    return str(item.fspath).startswith(HERE + os.sep)


def pytest_collection_modifyitems(config, items):
    settings = config.stash[_SESSION].settings
    if config.pluginmanager.hasplugin("benchmark") and not settings.quick:
        # pytest-benchmark times gems' calls with a clock that waits for the device first.
        for item in filter(_ours, items):
            item.add_marker(pytest.mark.benchmark(timer=harness.synchronized_clock,
                                                  group=getattr(item.module, "FAMILY", "flag_gems")))
    if not (settings.record and _option(config, "--bench-resume", False)):
        return
    done = {r.get("id") for r in _read_records(settings.record) if r.get("kind") in ("case", "metric")}
    keep, drop = [], []
    for item in items:
        (drop if _ours(item) and _point_record_id(item, settings.mode) in done else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def bench(request) -> harness.Runner:
    """Runs benchmark points and records metrics for the calling test."""
    session = request.config.stash[_SESSION]

    def pytest_benchmark_fixture():
        if not request.config.pluginmanager.hasplugin("benchmark"):
            return None
        try:
            return request.getfixturevalue("benchmark")
        except (Exception, pytest.skip.Exception):
            return None

    return harness.Runner(session, request.node, pytest_benchmark_fixture)


@pytest.fixture(autouse=True)
def _gems_off_around_each_benchmark():
    """Every benchmark starts and ends with nothing served."""
    flag_gems.disable()
    yield
    flag_gems.disable()


def pytest_report_header(config):
    session = config.stash.get(_SESSION, None)
    if session is None:
        return None
    s = session.settings
    return f"flag_gems benchmark: mode={s.mode} shapes={s.shapes} device={harness.DEVICE}" + (
        f" budget={s.budget_s:.0f}s" if s.budget_s else "")


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config, machine_info):
    """pytest-benchmark's files carry the card, driver and versions too."""
    session = config.stash.get(_SESSION, None)
    if session is not None:
        machine_info["flag_gems"] = session.env()


def pytest_runtest_logreport(report):
    if report.when != "call":
        return
    for name, value in getattr(report, "user_properties", ()):
        if name == "bench" and isinstance(value, dict):
            _collected.append(value)


_collected: list[dict] = []


def pytest_terminal_summary(terminalreporter, config):
    if _is_worker(config) or not _collected:
        return
    write = terminalreporter.write_line
    terminalreporter.section("flag_gems benchmark summary")
    for text in records.summary_lines(_collected):
        write(text)
