"""The ATen overloads this family serves: the union of its declaration modules.

Declarations name their kernels ("module:attribute") rather than import them: enabling the family
imports no kernel module and no Triton; each module loads at the first call of one of its ops.
"""

from __future__ import annotations

from flag_gems import OpImpl


def ops() -> list[OpImpl]:
    from gems_pointwise import registered_binary, registered_unary

    return [*registered_unary.ops(), *registered_binary.ops()]


def fused() -> dict:
    from gems_pointwise import registered_binary, registered_unary

    return {**registered_unary.fused(), **registered_binary.fused()}
