"""Entry point of the reduction family (group ``flag_gems.plugins``)."""

import flag_gems
from gems_reduction import __version__


def _ops():
    from gems_reduction.ops import ops

    return ops()


@flag_gems.hookimpl
def gems_family():
    from gems_reduction.ops import fused

    return flag_gems.Family(name="reduction", version=__version__, ops=_ops, fused=fused(),
                            requires_core=">=0.1,<0.2",
                            description="reductions, scans, softmax family, losses and sorting")
