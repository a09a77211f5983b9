"""Choices between kernel variants that only timing on the GPU settles (``tuning/ab_pointwise.py`` times
them against ATen). Launchers read them at every call, so a change applies to the next call; the defaults
are what the library ships with."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Knobs:
    """The knobs of the pointwise family."""

    #: silu, sigmoid and silu_backward with results rounded to a half type divide with Triton's ``/``
    #: (div.full.f32: within 2 ulp over the whole float32 range, subnormals kept, no branch) instead of the
    #: IEEE division (div.rn.f32), which branches to a slow path for subnormal or extreme operands, as in
    #: silu_ applied again and again to one tensor, whose values decay to subnormals. 2 float32 ulp are
    #: 2**-16 of a bfloat16 ulp (2**-13 of a float16 one): the half-type result moves only where the exact
    #: value lies that close to a rounding midpoint, and then by one ulp.
    half_approx_division: bool = False
    #: softplus with a half-type result as ``max(z, 0) + log1p(e**-|z|)`` (z = beta x): ex2.approx and a
    #: polynomial for log1p on [0, 1] in place of libdevice's expf, log1pf and an IEEE division; within
    #: 2e-6 of float32's result before the rounding to the half type (thresholds up to 88, where ATen's exp
    #: does not overflow, and beta within 2**-126..2**126; others keep the float32 kernel).
    half_fast_softplus: bool = False
    #: pow with a half-type result: exponents known on the host (a fractional scalar exponent, a finite
    #: positive scalar base) pick a kernel without the per-element tests that do not apply; two tensors
    #: test integrality by additions instead of roundings and apply pow's sign and special-value rules only
    #: in blocks holding a base <= 0, an infinity or NaN. Same formulas and special cases as before, but for
    #: 2**(y log2|x|), squared from 2**(y log2|x| / 2) so that bfloat16's subnormal results are kept.
    half_fast_pow: bool = False
    #: erfc with a half-type result as ``t 2**(P(t) - x**2 log2(e))``, t = 1 / (1 + |x| / 2) (below 1/4:
    #: 1 - erf by its series): one rcp.approx, one ex2.approx and a polynomial in place of libdevice's erfcf;
    #: within 3e-6 relative up to 4 and 1e-5 beyond, where only bfloat16's results are not 0.
    half_fast_erfc: bool = False


#: The knobs every launcher reads.
KNOBS = Knobs()
