"""Max / min reductions and max pooling: shap's rule, written once for every selecting reduction.

For y = max over a window of z, with y_x on the input and y_r on the reference:
    Delta y = [max(y_x, y_r) - y_r]  +  [y_x - max(y_x, y_r)]
The first part (>= 0) goes to the argmax of the input window, the second (<= 0) to the argmax of the
reference window, each divided by that element's Delta z. Where that Delta z is 0 the part is 0 too, so
the rule is complete. "The value of a tangent at the argmax" is the JVP of the reduction itself (ties are
split evenly by JAX), so the rule needs no index bookkeeping and covers reduce_max, reduce_window_max
(every max pooling) and their min counterparts alike.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from xshap.rules import Paired, bind, bind_both, operand, rule
from xshap.rules.threshold import difference


def _select_rule(eqn, z: Paired, others: list, pick) -> Paired:
    def reduce(u):
        return bind(eqn, [u, *others])[0]

    @jax.custom_jvp
    def selected(zx, zr):
        return reduce(zx)

    @selected.defjvp
    def selected_jvp(primals, tangents):
        zx, zr = primals
        dz, _ = tangents
        yx, yr = reduce(zx), reduce(zr)
        both = pick(yx, yr)
        delta = difference(zx, zr)
        # tangent and Delta z at the input's selected element, and at the reference's
        at_x = jax.jvp(reduce, (zx,), (dz,))[1]
        delta_at_x = jax.jvp(reduce, (zx,), (delta,))[1]
        at_r = jax.jvp(reduce, (zr,), (dz,))[1]
        delta_at_r = jax.jvp(reduce, (zr,), (delta,))[1]
        coefficient_x = _ratio(difference(both, yr), delta_at_x)
        coefficient_r = _ratio(difference(yx, both), delta_at_r)
        return yx, coefficient_x * at_x + coefficient_r * at_r

    return Paired(selected(z.x, z.r), reduce(z.r))


def _ratio(part, delta):
    zero = delta == 0
    return jnp.where(zero, 0.0, part / jnp.where(zero, 1.0, delta))


@rule("reduce_max", "reduce_window_max")
def maximum(eqn, args):
    return _reduce(eqn, args, jnp.maximum)


@rule("reduce_min", "reduce_window_min")
def minimum(eqn, args):
    return _reduce(eqn, args, jnp.minimum)


def _reduce(eqn, args, pick):
    z, *others = args
    if not isinstance(z, Paired):
        return bind_both(eqn, args)
    if any(isinstance(o, Paired) for o in others):  # e.g. an input-dependent init value
        from xshap.errors import NoRuleError

        raise NoRuleError([(eqn.name, eqn.scope, "an input-dependent initial value")])
    return [_select_rule(eqn, z, [operand(o) for o in others], pick)]
