"""The hook specifications a family implements (pluggy project name ``flag_gems``).

A family is a module named by an entry point in the group ``flag_gems.plugins``::

    [project.entry-points."flag_gems.plugins"]
    blas = "gems_blas.plugin"

and that module defines ``@flag_gems.hookimpl def gems_family() -> flag_gems.Family``.
"""

from __future__ import annotations

import pluggy

PROJECT = "flag_gems"
ENTRY_POINT_GROUP = "flag_gems.plugins"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def gems_family():
    """Called once per process, when ``enable()`` (or an introspection call) first discovers plugins.

    Return a :class:`flag_gems.Family`: the family's name and version, the ATen overloads it serves
    (``OpImpl`` items, or a callable returning them) and its public fused functions. Importing Triton
    kernels may happen here or inside the ``ops`` callable; registering anything with torch must not.
    Return None to decline loading (for instance on hardware the family does not support).
    """
