"""Two families claiming the same overloads: exp2 (from test_good, priority 0) is also claimed here
with priority 0 (so name order decides: "test_conflict" < "test_good" wins), and abs with priority -10
(so the pointwise family keeps it)."""

import flag_gems

from gems_test_plugins import active


def _exp2(x):
    return flag_gems.aten_kernel("exp2")(x)


def _abs(x):
    return flag_gems.aten_kernel("abs")(x)


@flag_gems.hookimpl
def gems_family():
    if not active():
        return None
    return flag_gems.Family(name="test_conflict", version="0.0.1",
                            ops=[flag_gems.OpImpl("exp2", _exp2)], priority=0)
