"""A family with invalid declarations besides one valid op: those are skipped, the valid op loads."""

import flag_gems

from gems_test_plugins import active


def _expm1(x):
    return flag_gems.aten_kernel("expm1")(x)


@flag_gems.hookimpl
def gems_family():
    if not active():
        return None
    return flag_gems.Family(name="test_invalid", version="0.0.1", ops=[
        flag_gems.OpImpl("no_such_op_anywhere", _expm1),
        flag_gems.OpImpl("square", _expm1),  # CompositeImplicitAutograd: refused on the backend key
        flag_gems.OpImpl("expm1_", "not callable"),
        flag_gems.OpImpl("expm1", _expm1),
    ])
