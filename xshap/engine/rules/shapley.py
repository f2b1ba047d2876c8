"""Two-input nonlinearities g(a, b) outside an elementwise unit, and division.

Two players: Delta z_a = 1/2 [g(a, b_r) - g(a_r, b_r) + g(a, b) - g(a_r, b)], m_a = Delta z_a / Delta a
(and symmetrically for b): the exact two-player Shapley split, complete by construction. With one
varying operand (a constant operand of another shape) this is the Rescale rule.
Division a / b is a * (1/b), with 1/b by Rescale and the product by the bilinear rule.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from xshap.engine.rules import Paired, bind, bind_both, operand, rule, x_half
from xshap.engine.rules.bilinear import bilinear
from xshap.engine.rules.rescale import rescale
from xshap.engine.rules.threshold import difference, safe_divide, unresolved


def _broadcast(value, shape):
    if isinstance(value, Paired):
        return Paired(jnp.broadcast_to(value.x, shape), jnp.broadcast_to(value.r, shape))
    return value


def _two_players(g, a: Paired, b: Paired) -> Paired:
    @jax.custom_jvp
    def pair(ax, ar, bx, br):
        return g(ax, bx)

    @pair.defjvp
    def pair_jvp(primals, tangents):
        ax, ar, bx, br = primals
        dax, _, dbx, _ = tangents
        g_xx, g_rr, g_xr, g_rx = g(ax, bx), g(ar, br), g(ax, br), g(ar, bx)
        delta_a, delta_b = difference(ax, ar), difference(bx, br)
        small_a, small_b = unresolved(delta_a, ax, ar), unresolved(delta_b, bx, br)
        mid_a, mid_b = (ax + ar) / 2, (bx + br) / 2
        ones = jnp.ones_like(mid_a)
        slope_a = (
            jax.jvp(lambda u: g(u, br), (mid_a,), (ones,))[1] + jax.jvp(lambda u: g(u, bx), (mid_a,), (ones,))[1]
        ) / 2
        slope_b = (
            jax.jvp(lambda v: g(ar, v), (mid_b,), (ones,))[1] + jax.jvp(lambda v: g(ax, v), (mid_b,), (ones,))[1]
        ) / 2
        share_a = ((g_xr - g_rr) + (g_xx - g_rx)) / 2
        share_b = ((g_rx - g_rr) + (g_xx - g_xr)) / 2
        # a share lost in the rounding of g is noise as a quotient (see xshap.engine.rules.threshold)
        small_a = small_a | unresolved(2 * share_a, g_xr, g_rr, g_xx, g_rx)
        small_b = small_b | unresolved(2 * share_b, g_rx, g_rr, g_xx, g_xr)
        m_a = jnp.where(small_a, slope_a, safe_divide(share_a, delta_a, small_a))
        m_b = jnp.where(small_b, slope_b, safe_divide(share_b, delta_b, small_b))
        return g_xx, m_a * dax + m_b * dbx

    return Paired(pair(a.x, a.r, b.x, b.r), g(a.r, b.r))


@rule("max", "min", "pow", "atan2", "rem", "nextafter")
def binary(eqn, args):
    out_shape = jnp.broadcast_shapes(*(jnp.shape(x_half(a)) for a in args))
    a, b = (_broadcast(v, out_shape) for v in args)
    if isinstance(a, Paired) and isinstance(b, Paired):
        return [_two_players(lambda u, v: bind(eqn, [u, v])[0], a, b)]
    # one varying operand that broadcasts against a constant: Rescale of g(., constant)
    varying_first = isinstance(a, Paired)
    z, const = (a, operand(b)) if varying_first else (b, operand(a))

    def g(u, c):
        return (bind(eqn, [u, c] if varying_first else [c, u])[0],)

    (x,) = rescale(g, z.x, z.r, (const,))
    return [Paired(x, g(z.r, const)[0])]


@rule("div")
def divide(eqn, args):
    numerator, denominator = args
    if not isinstance(denominator, Paired):
        return bind_both(eqn, args)  # division by a constant: linear

    def reciprocal(z):
        return (1 / z,)

    (inverse,) = rescale(reciprocal, denominator.x, denominator.r)
    inverse = Paired(inverse, 1 / denominator.r)
    if isinstance(numerator, Paired):
        return [bilinear(jnp.multiply, numerator, inverse)]
    return [Paired(operand(numerator) * inverse.x, operand(numerator) * inverse.r)]
