"""The Rescale rule: m = (f(z) - f(z_r)) / (z - z_r) for an elementwise function of one varying input.

For a complex z (a spectrum) the same quotient is a complex number with m * Delta z = Delta f exactly, so the
rule stays complete; the derivatives w.r.t. the real inputs that it feeds are real all the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from xshap.engine.rules.threshold import difference, frozen, safe_divide, unresolved

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
        z_small = unresolved(delta, jnp.where(stuck, 0, zx), jnp.where(stuck, 0, zr))
        midpoint = jnp.where(stuck, 0, zx / 2 + zr / 2)  # halves first: no overflow near the float maximum
        slopes = _slopes(lambda z: tuple(f(z, *consts)), midpoint, delta)
        multipliers = []
        for a, b, slope in zip(yx, yr, slopes):
            change = difference(a, b)
            # the quotient needs both differences resolved: Delta f lost in the rounding of f (a sigmoid at
            # 1e-6 from 0.5) makes it noise even where Delta z is clean; the midpoint derivative is then exact
            small = z_small | unresolved(change, jnp.where(stuck, 0, a), jnp.where(stuck, 0, b))
            quotient = safe_divide(change, delta, small)
            multipliers.append(jnp.where(stuck, 0, jnp.where(small, _finite_slope(slope, a, b, delta), quotient)))
        return yx, tuple(m * dz for m in multipliers)

    return unit(zx, zr, tuple(consts))


def _slopes(fn, midpoint, delta) -> tuple:
    """The derivative of each output at the midpoint, for the small-difference fallback. A function of a complex
    z need not be analytic (``sign``, a ``conj`` inside a unit): its derivative depends on the direction, so
    it is taken along the change itself, d f(mid)[Delta z] / Delta z (along 1 where Delta z is 0); for real z
    that is the ordinary derivative."""
    if not jnp.iscomplexobj(midpoint):
        return jax.jvp(fn, (midpoint,), (jnp.ones_like(midpoint),))[1]
    direction = jnp.where(delta == 0, jnp.ones_like(delta), delta)
    return tuple(along / direction for along in jax.jvp(fn, (midpoint,), (direction,))[1])


def _finite_slope(slope, yx, yr, delta):
    """The derivative where it is finite. Where it is not (sqrt at 0, on the input and the reference
    alike), the difference quotient if Delta z is not 0, else 0: with Delta z = 0 any finite multiplier
    keeps completeness, and an infinite one would turn 0 * inf into NaN in the backward pass."""
    quotient = difference(yx, yr) / jnp.where(delta == 0, 1, delta)
    fallback = jnp.where((delta != 0) & jnp.isfinite(quotient), quotient, 0)
    return jnp.where(jnp.isfinite(slope), slope, fallback)


SHAP_THRESHOLD = 1e-6  # shap's nonlinear_1d: |Delta in| below this takes the module's plain gradient


def rescale_1d(f: UnaryFn, zx: jax.Array, zr: jax.Array, consts: Sequence = (), threshold: float = SHAP_THRESHOLD):
    """shap's ``nonlinear_1d`` over a whole module: output i is credited to input i alone.

    m_i = Delta y_i / Delta z_i, and where |Delta z_i| < ``threshold`` the module's ordinary derivative
    (its full Jacobian, as shap's fallback to ``grad_input``). Complete for the module's own output
    change, but for a non-elementwise module (nn.Softmax) not the same split as the complete rules:
    that is the rule difference ``rules="shap"`` reproduces.
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
        small = jnp.abs(delta) < threshold
        _, exact = jax.jvp(lambda z: tuple(f(z, *consts)), (zx,), (jnp.where(small, dz, 0),))
        rescaled = jnp.where(small, 0, dz)
        tangent = tuple(safe_divide(difference(a, b), delta, small) * rescaled + e for a, b, e in zip(yx, yr, exact))
        return yx, tangent

    return unit(zx, zr, tuple(consts))
