"""The RevealCancel rule (Shrikumar et al. 2017, sec. 3.5.3) for a nonlinearity fed by a linear layer.

The change of the nonlinearity's input z = W a + b splits into its positive and negative terms,
Delta z+ = sum of the positive w_ij Delta a_j and Delta z- = sum of the negative ones
(= W+ Delta a+ + W- Delta a-  and  W+ Delta a- + W- Delta a+, with W+/- and Delta a+/- the parts of each sign).
Each part gets its own multiplier, the average of its effect added first and added last:

  Delta y+ = 1/2 (f(z_r + Dz+) - f(z_r)) + 1/2 (f(z_x) - f(z_r + Dz-)),   m+ = Delta y+ / Dz+
  Delta y- = 1/2 (f(z_r + Dz-) - f(z_r)) + 1/2 (f(z_x) - f(z_r + Dz+)),   m- = Delta y- / Dz-

so Delta y+ + Delta y- = f(z_x) - f(z_r): complete. The multiplier of input a_j is m+ w_ij where
w_ij Delta a_j > 0 and m- w_ij where it is < 0. Positive and negative terms that cancel in z are no
longer hidden from each other (Rescale sees only their sum): min(a, b) = a - relu(a - b) at a=3, b=1
against 0 gives a and b 0.5 each under RevealCancel, 0 and 1 under Rescale.

Applied where the unit's input is a dot_general or convolution of ONE input-dependent operand by a
constant weight, plus constant biases; any other nonlinearity keeps the Rescale rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from xshap.engine.program import Const, Eqn, Program
from xshap.engine.rules import Paired, bind
from xshap.engine.rules.threshold import difference, safe_divide, unresolved

LINEAR_LAYERS = ("dot_general", "conv_general_dilated")


@dataclass(frozen=True)
class LinearSource:
    """z = linear(a, W) (+ constants): the equation, which operand is the input a, which the weight."""

    eqn: Eqn
    input_position: int
    weight_position: int


def find_linear_source(root: int, producer: dict[int, Eqn], varying: set[int]) -> LinearSource | None:
    """The linear layer that computes ``root`` up to added constants, if there is one."""
    value = root
    for _ in range(8):  # a few bias adds at most
        eqn = producer.get(value)
        if eqn is None:
            return None
        varying_in = [i for i, a in enumerate(eqn.inputs) if isinstance(a, int) and a in varying]
        if eqn.name == "add" and len(varying_in) == 1:
            value = eqn.inputs[varying_in[0]]
            continue
        if eqn.name in LINEAR_LAYERS and len(varying_in) == 1 and len(eqn.inputs) == 2:
            position = varying_in[0]
            return LinearSource(eqn, position, 1 - position)
        return None
    return None


def _apply(source: LinearSource, a, weight):
    args = [None, None]
    args[source.input_position], args[source.weight_position] = a, weight
    return bind(source.eqn, args)[0]


def reveal_cancel(run, source: LinearSource, a: Paired, weight, root: Paired, consts: list) -> tuple:
    """The unit's outputs on the input, as a custom_jvp whose tangent is RevealCancel's multipliers times the
    tangent of the linear layer's input ``a``; ``run(z, *consts)`` evaluates the unit's float outputs."""
    weight = weight.value if isinstance(weight, Const) else weight
    w_pos, w_neg = jnp.maximum(weight, 0), jnp.minimum(weight, 0)

    def split(da, sign_of):
        """(Dz+, Dz-) for the changes ``da`` of a, the sign of each term read from ``sign_of``."""
        up, down = jnp.where(sign_of > 0, da, 0), jnp.where(sign_of < 0, da, 0)
        return _apply(source, up, w_pos) + _apply(source, down, w_neg), _apply(source, down, w_pos) + _apply(
            source, up, w_neg
        )

    @jax.custom_jvp
    def unit(ax, ar, zx, zr, consts):
        return tuple(run(zx, *consts))

    @unit.defjvp
    def unit_jvp(primals, tangents):
        ax, ar, zx, zr, consts = primals
        da_tangent = tangents[0]
        delta_a = difference(ax, ar)
        dz_pos, dz_neg = split(delta_a, delta_a)
        yx, yr = tuple(run(zx, *consts)), tuple(run(zr, *consts))
        y_pos_only, y_neg_only = tuple(run(zr + dz_pos, *consts)), tuple(run(zr + dz_neg, *consts))
        small_pos = unresolved(dz_pos, zx, zr)
        small_neg = unresolved(dz_neg, zx, zr)
        _, slopes = jax.jvp(lambda z: tuple(run(z, *consts)), ((zx + zr) / 2,), (jnp.ones_like(zx),))
        t_pos, t_neg = split(da_tangent, delta_a)
        out_tangents = []
        for x_val, r_val, pos_only, neg_only, slope in zip(yx, yr, y_pos_only, y_neg_only, slopes):
            gain_pos = 0.5 * (difference(pos_only, r_val) + difference(x_val, neg_only))
            gain_neg = 0.5 * (difference(neg_only, r_val) + difference(x_val, pos_only))
            m_pos = jnp.where(small_pos, slope, safe_divide(gain_pos, dz_pos, small_pos))
            m_neg = jnp.where(small_neg, slope, safe_divide(gain_neg, dz_neg, small_neg))
            out_tangents.append(m_pos * t_pos + m_neg * t_neg)
        return yx, tuple(out_tangents)

    return unit(a.x, a.r, root.x, root.r, tuple(consts))


def producers(program: Program) -> dict[int, Eqn]:
    """Value -> the equation that computes it."""
    return {out: eqn for eqn in program.eqns for out in eqn.outputs}
