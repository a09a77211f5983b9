"""The ATen overloads this family serves: the union of its declaration modules."""

from __future__ import annotations

from flag_gems import OpImpl


def ops() -> list[OpImpl]:
    from gems_pointwise import registered_binary, registered_unary

    return [*registered_unary.ops(), *registered_binary.ops()]


def fused() -> dict:
    from gems_pointwise import registered_binary, registered_unary

    return {**registered_unary.fused(), **registered_binary.fused()}
