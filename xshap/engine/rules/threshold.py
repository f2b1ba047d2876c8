"""The |Delta in| below which a rule falls back to the derivative, scaled to the dtype."""

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


def small_difference(delta, *magnitudes):
    """True where ``delta`` is too small for a difference quotient to be meaningful.

    The quotient (f(z) - f(z_r)) / (z - z_r) carries a rounding error of about eps * |f| / |delta|;
    below sqrt(eps) * (1 + |z| + |z_r|) that error would exceed sqrt(eps), so the derivative at the
    midpoint is used instead (its error in Delta f is second order in delta).
    """
    eps = jnp.finfo(delta.dtype).eps
    scale = 1.0
    for magnitude in magnitudes:
        scale = scale + jnp.abs(magnitude)
    return jnp.abs(delta) <= jnp.sqrt(eps) * scale


def safe_divide(numerator, denominator, small):
    """numerator / denominator where not ``small`` (0 there; the caller substitutes the derivative)."""
    return numerator / jnp.where(small, jnp.ones_like(denominator), denominator)
