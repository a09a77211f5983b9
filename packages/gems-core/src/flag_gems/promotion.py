"""Type promotion: PyTorch's own rules (torch._prims_common), exposed under FlagGems' names."""

from __future__ import annotations

import torch
from torch._prims_common import ELEMENTWISE_TYPE_PROMOTION_KIND, elementwise_dtypes

Kind = str | ELEMENTWISE_TYPE_PROMOTION_KIND


def promotion_kind(kind: Kind) -> ELEMENTWISE_TYPE_PROMOTION_KIND:
    """The enum member for a kind given by name ("DEFAULT") or as the member itself."""
    if isinstance(kind, ELEMENTWISE_TYPE_PROMOTION_KIND):
        return kind
    try:
        return ELEMENTWISE_TYPE_PROMOTION_KIND[kind]
    except KeyError:
        names = ", ".join(m.name for m in ELEMENTWISE_TYPE_PROMOTION_KIND)
        raise ValueError(f"unknown type promotion kind {kind!r}; expected one of {names}") from None


def promote(*args, kind: Kind = "DEFAULT") -> tuple[torch.dtype, torch.dtype]:
    """(computation dtype, result dtype) of an elementwise op over ``args``.

    Tensors, Python numbers and 0-d tensors (also CPU 0-d tensors beside GPU tensors) take part
    exactly as in ``torch._prims_common.elementwise_dtypes``; ``None`` arguments are ignored.
    """
    return elementwise_dtypes(*[a for a in args if a is not None], type_promotion_kind=promotion_kind(kind))


__all__ = ["ELEMENTWISE_TYPE_PROMOTION_KIND", "promote", "promotion_kind"]
