"""A family with invalid declarations besides one valid op: those are skipped, the valid op loads."""

import flag_gems
from gems_test_plugins import active


def _bessel_j0(x):
    return flag_gems.aten_kernel("special_bessel_j0")(x)


@flag_gems.hookimpl
def gems_family():
    if not active():
        return None
    return flag_gems.Family(name="test_invalid", version="0.0.1", ops=[
        flag_gems.OpImpl("no_such_op_anywhere", _bessel_j0),
        flag_gems.OpImpl("square", _bessel_j0),  # CompositeImplicitAutograd: refused on the backend key
        flag_gems.OpImpl("special_bessel_j1", "not callable"),
        flag_gems.OpImpl("special_bessel_j0", _bessel_j0),
    ])
