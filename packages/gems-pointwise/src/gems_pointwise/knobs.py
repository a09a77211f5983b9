"""Choices between kernel variants that only timing on the GPU settles (``tuning/ab_pointwise.py`` times
them against ATen). Launchers read them at every call, and setting one forgets the calls core replays from
C++, so a change applies to the next call; the defaults are what the library ships with."""

from __future__ import annotations

import dataclasses

from flag_gems import native


@dataclasses.dataclass
class Knobs:
    """The knobs of the pointwise family."""

    def __setattr__(self, name, value) -> None:
        object.__setattr__(self, name, value)
        native.clear()  # a replayed call keeps the kernel the knob chose when it was recorded

    #: silu, sigmoid and silu_backward with results rounded to a half type divide with Triton's ``/``
    #: (div.full.f32: within 2 ulp over the whole float32 range, subnormals kept, no branch) instead of the
    #: IEEE division (div.rn.f32), which branches to a slow path for subnormal or extreme operands, as in
    #: silu_ applied again and again to one tensor, whose values decay to subnormals. 2 float32 ulp are
    #: 2**-16 of a bfloat16 ulp (2**-13 of a float16 one): the half-type result moves only where the exact
    #: value lies that close to a rounding midpoint, and then by one ulp. On an H100, silu of bfloat16
    #: zeros (what the benchmark's repeated silu_ leaves) took 94.0 instead of 143.2 us (ATen 134.7);
    #: normal inputs run at the copy ceiling either way (benchmark/results/2026-11-27-h100-4/logs/).
    half_approx_division: bool = True
    #: softplus with a half-type result as ``max(z, 0) + log1p(e**-|z|)`` (z = beta x): ex2.approx and a
    #: polynomial for log1p on [0, 1] in place of libdevice's expf, log1pf and an IEEE division; within
    #: 2e-6 of float32's result before the rounding to the half type (thresholds up to 88, where ATen's exp
    #: does not overflow, and beta within 2**-126..2**126; others keep the float32 kernel). H100, (16384,
    #: 4096): bfloat16 133.5 -> 93.9 us, float16 129.1 -> 93.7 (the copy ceiling; ATen 131-133).
    half_fast_softplus: bool = True
    #: pow with a half-type result: exponents known on the host (a fractional scalar exponent, a finite
    #: positive scalar base) pick a kernel without the per-element tests that do not apply. Same formulas
    #: and special cases as before, but for 2**(y log2|x|), squared from 2**(y log2|x| / 2) so that
    #: bfloat16's subnormal results are kept. H100, (16384, 4096) bfloat16: x ** 2.5 115.9 -> 94.0 us,
    #: 2 ** x 119.3 -> 94.2 (float16 alike; ATen 200 and 400-424).
    half_fast_pow: bool = True
    #: erfc with a half-type result as ``t 2**(P(t) - x**2 log2(e))``, t = 1 / (1 + |x| / 2) (below 1/4:
    #: 1 - erf by its series): one rcp.approx, one ex2.approx and a polynomial in place of libdevice's erfcf;
    #: within 3e-6 relative up to 4 and 1e-5 beyond, where only bfloat16's results are not 0. H100, (16384,
    #: 4096): bfloat16 120.2 -> 94.0 us, float16 119.6 -> 94.2 (ATen 122-124).
    half_fast_erfc: bool = True
    #: digamma with a half-type result: the reflection's pi / tan(pi x) from Taylor polynomials of cos and
    #: sin on the exact reduced argument and one rcp.approx (libdevice's cospi, sinpi and a division before),
    #: and the asymptotic series stopped at w**-8 (below 8e-9 left out at w >= 4); bfloat16 results take
    #: lg2.approx's log too (float16's need the accurate one near digamma's zeros). H100, (16384, 4096):
    #: bfloat16 332.4 -> 176.5 us, float16 327.2 -> 212.9 (ATen 792-793).
    half_fast_digamma: bool = True
    #: lgamma with a bfloat16 result: (1 - x) (x - 2) times a fit near 1 and 2, elsewhere a shift to 8 and
    #: Stirling's series with lg2.approx's logs, the reflection's sine from a polynomial (libdevice's
    #: lgammaf before). float16 results keep lgammaf (see ``unary.lgamma``). H100, bfloat16 (16384, 4096):
    #: 326.5 -> 204.8 us (ATen 326.8).
    half_fast_lgamma: bool = True
    #: floor division (div rounding_mode="floor", floor_divide) of half-type tensors on the GPU: in blocks
    #: whose quotients are below 2**14 (bfloat16; float16 2**11), where the remainder already comes from the
    #: quotient, ATen's (x - fmod) / y is exactly the corrected trunc(x / y): its IEEE division and floor
    #: are left out, the result identical. H100, (16384, 4096): bfloat16 219.7 -> 144.6 us, float16 234.0 ->
    #: 164.9 (ATen 281 and 272).
    half_exact_floor_div: bool = True
    #: asinh with a half-type result: the polynomial below 0.75 of degree 4 in x**2 instead of 6 (within
    #: 4e-7 relative of asinh; the log above is lg2.approx's either way). On an H100, (16384, 4096):
    #: bfloat16 108.0 -> 104.4 us, float16 106.1 -> 104.3.
    half_short_asinh: bool = True
    #: acosh with a half-type result: sqrt(2 t) times a cubic fit in t = x - 1 below 1.25, above
    #: log(x + sqrt(x**2 - 1)) with lg2.approx (libdevice's acoshf: an IEEE division and log1pf). On an
    #: H100, (16384, 4096): bfloat16 103.6 -> 93.7 us, float16 103.0 -> 93.6 (the copy ceiling).
    half_fast_acosh: bool = True
    #: atanh with a half-type result: x + x**3 Q(x**2) below 1/2, above a difference of two lg2.approx
    #: (libdevice's atanhf: an IEEE division and log1pf). On an H100, (16384, 4096): bfloat16 132.0 -> 93.7
    #: us, float16 102.0 -> 93.6 (the copy ceiling).
    half_fast_atanh: bool = True
    #: logit (with and without eps) with a half-type result: 2 atanh(2 x - 1) by the fit of atanh on
    #: [1/4, 3/4], elsewhere a difference of two lg2.approx (ATen's log of an IEEE quotient before). On an
    #: H100, (16384, 4096): bfloat16 108.4 -> 94.8 us, float16 107.6 -> 94.1; with eps 117.0 -> 102.1 and
    #: 114.8 -> 99.7.
    half_fast_logit: bool = True
    #: elu and celu with a half-type result: expm1 as Taylor's polynomial below 1/2 in magnitude, above
    #: ex2.approx less 1 (libdevice's expm1f before). On an H100, elu (16384, 4096): bfloat16 104.6 -> 94.6
    #: us, float16 101.8 -> 94.7.
    half_fast_elu: bool = True
    #: log_sigmoid forward with a half-type result: e**-|x| from ex2.approx (subnormals kept) and a
    #: polynomial log1p on [0, 1] (libdevice's expf and log1pf before). On an H100, (16384, 4096): bfloat16
    #: 104.4 -> 94.2 us, float16 104.5 -> 94.7.
    half_fast_log_sigmoid: bool = True
    #: lgamma with a bfloat16 result (with half_fast_lgamma on): shorter fits for bfloat16's precision, the
    #: fit near 1 and 2 of degree 5 for 8, a shift to 7 for 8, Stirling's series to w**-3 for w**-5. On an
    #: H100, bfloat16 (16384, 4096): 205.5 -> 194.9 us.
    half_short_lgamma: bool = True
    #: gcd and lcm (integers of 32 bits and fewer, and the blocks of int64 that narrow to int32, see
    #: ``gcd64_narrow_blocks``): steps of the binary GCD between two checks of whether every lane of a block
    #: is done. A check is a reduction over the block; extra steps cost nothing in lanes already done.
    #: H100, 64M elements in [1, 10000): int32 gcd 648.8 -> 417.9 us with the three knobs below on (ATen
    #: 892.8); lcm (in [1, 1000)) 632.3 -> 439.1 with ``lcm_inverse_division`` too (ATen 802.0).
    gcd_steps_per_check: int = 4
    #: gcd and lcm: the count of trailing zeros from one ``bfind`` of v & -v on the GPU, in place of v & -v's
    #: float32 exponent (a conversion, a shift and a subtraction).
    gcd_ctz_bfind: bool = True
    #: gcd and lcm: binary GCD steps without the test of |u - v| == 0 and its select (the pair then settles
    #: at (0, g) instead of (g, g), and the larger half is taken at the end), the trailing zeros taken from
    #: u - v (no second absolute value) and left modulo the type's width, as shifts take them (the float32
    #: exponent then needs an addition, no subtraction). sm_90 SASS: 9 instructions a step for 11.7 (int32).
    gcd_lean_steps: bool = True
    #: lcm: x / gcd, an exact quotient, as (x >> twos) times the inverse of gcd's odd part modulo 2**bits
    #: (Newton's iteration, multiplications only) in place of an integer division.
    lcm_inverse_division: bool = True
    #: gcd and lcm of int64: a block whose operands are all below 2**31 in magnitude computes the gcd in
    #: int32 with the knobs above (lcm's quotient too, exact there; its product stays in int64), others in
    #: int64 with the knobs below. int64 in the 64-bit loop ran at 0.60-0.87x of ATen (H100).
    gcd64_narrow_blocks: bool = True
    #: gcd of int64, blocks that do not narrow: steps per check, lean steps and bfind as above (H100, 64M
    #: elements in [1, 10000) in the 64-bit loop: 1400.9 us as before, 1284.2 with 4 lean steps, 1682.2
    #: with bfind, whose 64-bit form is slower).
    gcd64_steps_per_check: int = 4
    gcd64_lean_steps: bool = True
    gcd64_ctz_bfind: bool = False
    #: lcm of int64, blocks that do not narrow (bfind as ``gcd64_ctz_bfind``): H100, [1, 1000) in the 64-bit
    #: loop: 1667.4 us as before, 1322.4 with the inverse alone, 1425.5 with 4 lean steps too.
    lcm64_steps_per_check: int = 2
    lcm64_lean_steps: bool = False
    lcm64_inverse_division: bool = True


#: The knobs every launcher reads.
KNOBS = Knobs()
