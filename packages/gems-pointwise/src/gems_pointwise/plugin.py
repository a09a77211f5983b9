"""Entry point of the pointwise family (group ``flag_gems.plugins``)."""

import flag_gems
from gems_pointwise import __version__


def _ops():
    from gems_pointwise.ops import ops

    return ops()


@flag_gems.hookimpl
def gems_family():
    from gems_pointwise.ops import fused

    return flag_gems.Family(name="pointwise", version=__version__, ops=_ops, fused=fused(),
                            requires_core=">=0.1,<0.2", description="elementwise ops")
