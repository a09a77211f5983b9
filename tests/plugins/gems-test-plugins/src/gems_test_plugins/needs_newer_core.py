"""A family that needs a gems-core version that does not exist: refused with a clear message."""

import flag_gems
from gems_test_plugins import active


@flag_gems.hookimpl
def gems_family():
    if not active():
        return None
    return flag_gems.Family(name="test_old", version="9.0", ops=[], requires_core=">=99")
