"""Entry point of the BLAS family (group ``flag_gems.plugins``)."""

import flag_gems
from gems_blas import __version__


def _ops():
    from gems_blas.ops import ops

    return ops()


@flag_gems.hookimpl
def gems_family():
    return flag_gems.Family(name="blas", version=__version__, ops=_ops, requires_core=">=0.1,<0.2",
                            description="matrix products")
