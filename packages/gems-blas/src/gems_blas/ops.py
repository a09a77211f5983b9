"""The ATen overloads this family serves.

Each overload is declared only where the running torch has it and does not implement it by
decomposition (CompositeImplicitAutograd ops such as ``outer`` or ``matmul`` reach the ops below).
Implementations are named, not imported: a kernel module (and Triton) loads at its first op's call.
"""

from __future__ import annotations

from flag_gems import OpImpl, aten_names, lazy


def _servable(name: str) -> bool:
    return aten_names.resolve(name) is not None and not aten_names.is_composite_implicit(name)


def _fn(target: str) -> lazy:
    # Named, not imported: the kernel module (and Triton) loads at the op's first call.
    return lazy(f"gems_blas.{target}")


def ops() -> list[OpImpl]:
    table = {
        "mm": "mm:mm", "mm.out": "mm:mm_out",
        "addmm": "addmm:addmm", "addmm.out": "addmm:addmm_out", "addmm_": "addmm:addmm_",
        "bmm": "bmm:bmm", "bmm.out": "bmm:bmm_out",
        "baddbmm": "bmm:baddbmm", "baddbmm.out": "bmm:baddbmm_out", "baddbmm_": "bmm:baddbmm_",
        "addbmm": "bmm:addbmm", "addbmm.out": "bmm:addbmm_out", "addbmm_": "bmm:addbmm_",
        "mv": "mv:mv", "mv.out": "mv:mv_out",
        "addmv": "mv:addmv", "addmv.out": "mv:addmv_out", "addmv_": "mv:addmv_",
        "dot": "dot:dot", "dot.out": "dot:dot_out", "vdot": "dot:vdot", "vdot.out": "dot:vdot_out",
        "addr": "addr:addr", "addr.out": "addr:addr_out", "addr_": "addr:addr_",
    }
    return [OpImpl(name, _fn(target)) for name, target in table.items() if _servable(name)]
