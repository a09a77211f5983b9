"""Binary, ternary, comparison and conversion ops, and fused public functions, served by this family."""

from __future__ import annotations

from flag_gems import OpImpl


def ops() -> list[OpImpl]:
    return []


def fused() -> dict:
    return {}
