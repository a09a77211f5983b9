"""A family that fails to import."""

from gems_test_plugins import active

if active():
    raise ImportError("this plugin is broken on purpose")

import flag_gems  # noqa: E402


@flag_gems.hookimpl
def gems_family():
    return None
