"""Entry point of the example family (group ``flag_gems.plugins``).

Importing this module stays cheap: core calls ``gems_family`` when it discovers plugins (at
``enable()`` or an introspection call), and the ATen kernels are imported only when core asks for
the op list.
"""

import flag_gems
from gems_example_plugin import __version__


def _ops():
    from gems_example_plugin.erfcx import ops

    return ops()


@flag_gems.hookimpl
def gems_family():
    from gems_example_plugin.rope import rope

    return flag_gems.Family(name="example", version=__version__, ops=_ops, fused={"rope": rope},
                            requires_core=">=0.1,<0.2", description="special_erfcx and a fused RoPE")
