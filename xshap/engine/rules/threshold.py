"""When a difference quotient is too imprecise to use, relative to the values' own scale (never to 1).

A rule's multiplier Delta f / Delta z is only as good as the two differences it divides. Each carries a
rounding error of about eps times the magnitude of the values it subtracts, so a difference is *resolved*
when it is well above that: |x - r| > sqrt(eps) * (|x| + |r|). Where Delta z or Delta f is not resolved, the
rules use the derivative at the midpoint instead (its error in Delta f is second order in Delta z, and it is
the limit the quotient would have in exact arithmetic).

The test is relative on purpose: an absolute floor (an earlier ``1 + |z| + |z_r|``) made every difference of
values below ~1e-3 "small", so a ReLU net fed inputs of 1e-4 took the derivative at the midpoint across its
kinks and was 68 % incomplete. A positively homogeneous net must give attributions that scale exactly with
its inputs; with relative tests every decision here is the same at 1e-8 as at 1e8.
"""

from __future__ import annotations

import jax.numpy as jnp


def difference(x, r):
    """x - r, with 0 where the two are equal: equal infinities (a -inf attention mask on the input and
    on the reference) differ by nothing, not by NaN."""
    return jnp.where(x == r, jnp.zeros_like(x), x - r)


def frozen(x, r):
    """True where x and r are the same infinity: no finite change of the input moves the value, so
    every multiplier through it is 0 (and its derivative, often NaN there, is never used)."""
    return (x == r) & ~jnp.isfinite(x)


def unresolved(delta, *magnitudes):
    """True where ``delta`` (a difference of values of the given magnitudes) is within sqrt(eps) of their
    rounding: sqrt(eps) * sum(|magnitude|), eps of ``delta``'s dtype. Exactly 0 is always unresolved."""
    eps = jnp.finfo(delta.dtype).eps
    scale = jnp.zeros_like(jnp.abs(delta))
    for magnitude in magnitudes:
        scale = scale + jnp.abs(magnitude)
    return jnp.abs(delta) <= jnp.sqrt(eps) * scale


def safe_divide(numerator, denominator, small):
    """numerator / denominator where not ``small`` (0 there; the caller substitutes the derivative)."""
    return numerator / jnp.where(small, jnp.ones_like(denominator), denominator)
