"""The Rescale rule: m = (f(z) - f(z_r)) / (z - z_r) for an elementwise function of one varying input."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from xshap.rules.threshold import difference, frozen, safe_divide, small_difference

UnaryFn = Callable[..., Sequence[jax.Array]]  # f(z, *consts) -> tuple of arrays, elementwise in z


def rescale(f: UnaryFn, zx: jax.Array, zr: jax.Array, consts: Sequence = ()) -> tuple:
    """f(zx) as a custom_jvp whose tangent is the rescale multiplier times dz; one multiplier per output.

    ``f`` returns a tuple of float arrays of z's shape. ``consts`` are further arguments of ``f`` that do
    not depend on the explained inputs (passed explicitly so that tracers are never closed over).
    """

    @jax.custom_jvp
    def unit(zx, zr, consts):
        return tuple(f(zx, *consts))

    @unit.defjvp
    def unit_jvp(primals, tangents):
        zx, zr, consts = primals
        dz = tangents[0]
        yx, yr = tuple(f(zx, *consts)), tuple(f(zr, *consts))
        delta = difference(zx, zr)
        stuck = frozen(zx, zr)
        small = small_difference(delta, jnp.where(stuck, 0, zx), jnp.where(stuck, 0, zr))
        midpoint = jnp.where(stuck, 0, jnp.where(small, (zx + zr) / 2, zx))
        _, slopes = jax.jvp(lambda z: tuple(f(z, *consts)), (midpoint,), (jnp.ones_like(midpoint),))
        multipliers = [
            jnp.where(stuck, 0, jnp.where(small, s, safe_divide(difference(a, b), delta, small)))
            for a, b, s in zip(yx, yr, slopes)
        ]
        return yx, tuple(m * dz for m in multipliers)

    return unit(zx, zr, tuple(consts))
