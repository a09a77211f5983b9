"""The ATen overloads this family serves: the union of its declaration modules.

Declarations name their kernels ("module:attribute") rather than import them: enabling the family
imports no kernel module and no Triton; each module loads at the first call of one of its ops.
"""

from __future__ import annotations

from collections.abc import Callable

from flag_gems import OpImpl, lazy


class made_lazily(lazy):
    """``make(f)`` for the function ``f`` at ``target`` ("module:attribute"), made at the op's first
    call: the op's wrapper (dtype checks, ATen fallback) is built once its kernel module is imported."""

    def __init__(self, target: str, make: Callable[[Callable], Callable]) -> None:
        super().__init__(target)
        self.make = make

    def load(self) -> Callable:
        if self.loaded is None:
            self.loaded = self.make(lazy(self.target).load())
        return self.loaded


def ops() -> list[OpImpl]:
    from gems_pointwise import registered_binary, registered_unary

    return [*registered_unary.ops(), *registered_binary.ops()]


def fused() -> dict:
    from gems_pointwise import registered_binary, registered_unary

    return {**registered_unary.fused(), **registered_binary.fused()}
