"""Two families claiming one overload: special_entr (from test_good, priority 0) is also claimed here
with priority 0, so name order decides: "test_conflict" sorts before "test_good" and wins."""

import flag_gems
from gems_test_plugins import active


def _entr(x):
    return flag_gems.aten_kernel("special_entr")(x)


@flag_gems.hookimpl
def gems_family():
    if not active():
        return None
    return flag_gems.Family(name="test_conflict", version="0.0.1",
                            ops=[flag_gems.OpImpl("special_entr", _entr)], priority=0)
