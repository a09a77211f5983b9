"""Entry point of the norm family (group ``flag_gems.plugins``)."""

import flag_gems
from gems_norm import __version__


def _ops():
    from gems_norm.ops import ops

    return ops()


@flag_gems.hookimpl
def gems_family():
    from gems_norm.ops import fused

    return flag_gems.Family(name="norm", version=__version__, ops=_ops, fused=fused(),
                            requires_core=">=0.1,<0.2",
                            description="layer, RMS, group, batch, instance and weight normalisation")
