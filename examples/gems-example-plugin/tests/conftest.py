"""Fixtures of the example family's tests: nothing is served between tests."""

import pytest

import flag_gems  # first: switches Triton's interpreter on where there is no GPU


@pytest.fixture(autouse=True)
def _gems_off_between_tests():
    flag_gems.disable()
    yield
    flag_gems.disable()
