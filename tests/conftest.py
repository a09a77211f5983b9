"""Shared test options and fixtures.

--ref cpu      compute references on CPU (in float64 where the test asks for it)
--mode quick   a smaller sweep of shapes and dtypes (what CI runs)
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")

import gems_test_settings as settings  # noqa: E402

import flag_gems  # noqa: E402  (switches the interpreter on before any family imports triton kernels)

DEVICE = flag_gems.device
# Tests create their tensors on the device gems serves (the GPU, or the CPU on the interpreter).
torch.set_default_device(DEVICE)


def pytest_addoption(parser):
    group = parser.getgroup("flag_gems")
    group.addoption("--ref", default="device", choices=["device", "cpu"],
                    help="where references are computed: on the test device or on CPU")
    group.addoption("--mode", default="normal", choices=["normal", "quick"],
                    help="quick: a smaller sweep of shapes and dtypes")


def pytest_configure(config):
    settings.REF_ON_CPU = config.getoption("--ref") == "cpu"
    settings.QUICK = config.getoption("--mode") == "quick"


@pytest.fixture
def quick() -> bool:
    return settings.QUICK


@pytest.fixture(autouse=True)
def _gems_off_between_tests():
    """Every test starts and ends with nothing served, so tests cannot leak state into each other."""
    flag_gems.disable()
    yield
    flag_gems.disable()
