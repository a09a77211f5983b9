"""Test settings shared by the test modules (set from the command line by conftest.py).

Test modules import this module rather than ``conftest``: several conftest files can be collected in
one run (tests/, benchmark/, a plugin's own tests), and only one module can be named ``conftest``.
"""

from __future__ import annotations

import torch

#: --mode quick: a smaller sweep of shapes and dtypes.
QUICK = False
#: --ref cpu: references are computed on CPU.
REF_ON_CPU = False


def to_reference(t, upcast: bool = False):
    """A reference copy of ``t``: on CPU with ``--ref cpu``, in float64 with ``upcast``."""
    if not isinstance(t, torch.Tensor):
        return t
    ref = t.detach().to("cpu") if REF_ON_CPU else t.detach().clone()
    if upcast and ref.is_floating_point():
        ref = ref.to(torch.float64)
    return ref.requires_grad_(t.requires_grad)
