"""flag_gems: Triton kernels served to PyTorch through ATen's dispatcher.

    import flag_gems
    flag_gems.enable()                    # every installed family
    flag_gems.enable(families=["blas"])   # a chosen subset
    with flag_gems.use_gems():            # temporarily
        ...
"""

from __future__ import annotations

import os

__version__ = "0.1.0"

# The device is decided first: without a GPU, Triton's interpreter must be on before any kernel
# module is imported, because @triton.jit reads the setting when it decorates.
from flag_gems.runtime import device as _device  # noqa: E402

if _device.interpreter:
    os.environ["TRITON_INTERPRET"] = "1"
    from flag_gems.runtime import interpreter as _interpreter

    _interpreter.install()

from flag_gems import runtime, testing  # noqa: E402
from flag_gems.api import disable, enable, families, is_enabled, registered_ops, use_gems  # noqa: E402
from flag_gems.elementwise import pointwise_dynamic  # noqa: E402
from flag_gems.hookspecs import hookimpl  # noqa: E402
from flag_gems.promotion import ELEMENTWISE_TYPE_PROMOTION_KIND, promote  # noqa: E402
from flag_gems.registry import aten_kernel  # noqa: E402
from flag_gems.spec import Family, OpImpl, lazy  # noqa: E402

device: str = _device.name
vendor_name: str = _device.vendor_name


def __getattr__(name: str):
    # Fused public functions (flag_gems.rms_norm, ...) come from the installed families.
    from flag_gems import plugins

    for info in plugins.discover().values():
        if name in info.fused:
            return info.fused[name]
    raise AttributeError(f"module 'flag_gems' has no attribute {name!r}")


__all__ = [
    "ELEMENTWISE_TYPE_PROMOTION_KIND", "Family", "OpImpl", "aten_kernel", "device", "disable", "enable",
    "families", "hookimpl", "is_enabled", "lazy", "pointwise_dynamic", "promote", "registered_ops", "runtime",
    "testing", "use_gems", "vendor_name",
]
