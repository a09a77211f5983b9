"""Test plugins. They stay dormant (decline to load) unless GEMS_TEST_PLUGINS=1, so that installing
them for the test suite changes nothing for other tests."""

import os


def active() -> bool:
    return os.environ.get("GEMS_TEST_PLUGINS") == "1"
