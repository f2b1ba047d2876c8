"""Which op broke completeness, if xshap's own sum ever fails (it never should: this names the culprit).

DeepLIFT's multipliers are locally complete: for every rule, sum(m * Delta in) = Delta out. So a forward-mode
derivative of the paired evaluation along Delta x = x - r carries, at every intermediate value, exactly that
value's own Delta (x - r), by induction over the program. The first value (in program order) where the
carried tangent differs from its Delta was produced by the rule that is not complete.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np


@dataclass(frozen=True)
class LocalGap:
    scope: str  # the JAX name scope: the torch module call ("layer" or "layer@k")
    primitive: str
    gap: float  # max |tangent - Delta| over the value's entries and the background rows
    scale: float  # max |Delta| there


def local_gaps(deeplift, params, x_rows: list, background: list, rtol: float = 1e-3) -> list[LocalGap]:
    """Every value whose carried tangent departs from its own Delta, in program order, for one explained row."""
    producer = {out: eqn for eqn in deeplift.program.eqns for out in eqn.outputs}

    def halves(rows, r_rows):
        record: dict = {}
        deeplift.paired(params, list(rows), list(r_rows), record=record)
        keys = sorted(k for k, v in record.items() if jnp.issubdtype(jnp.asarray(v.x).dtype, jnp.floating))
        return keys, {k: record[k].x for k in keys}, {k: record[k].r for k in keys}

    def one_pair(r_rows):
        x = tuple(jnp.asarray(a) for a in x_rows)
        _, x_half, r_half = halves(x, r_rows)
        tangent_in = tuple(a - r for a, r in zip(x, r_rows))
        _, tangents = jax.jvp(lambda rows: halves(rows, r_rows)[1], (x,), (tangent_in,))
        gaps = {k: jnp.max(jnp.abs(tangents[k] - (x_half[k] - r_half[k])), initial=0.0) for k in x_half}
        scales = {k: jnp.max(jnp.abs(x_half[k] - r_half[k]), initial=0.0) for k in x_half}
        return gaps, scales

    gaps, scales = jax.jit(jax.vmap(one_pair))(
        tuple(jax.device_put(np.asarray(b)) for b in background)
    )  # one program, not one per op
    found = []
    for key in sorted(gaps, key=lambda k: deeplift.program.eqns.index(producer[k]) if k in producer else -1):
        gap, scale = float(np.max(gaps[key])), float(np.max(scales[key]))
        if gap > rtol * scale and key in producer:  # relative: a floor of 1 hides culprits in small values
            eqn = producer[key]
            found.append(LocalGap(eqn.scope, eqn.name, gap, scale))
    return found


@dataclass(frozen=True)
class NonFiniteValue:
    """The first equation whose output holds a NaN or an infinity."""

    scope: str
    primitive: str
    what: str  # "value" (the function's own forward) or "multiplier" (a DeepLIFT tangent)


def first_nonfinite_value(program, flat_inputs: list) -> NonFiniteValue | None:
    """Evaluate ``program`` eagerly, equation by equation, on concrete inputs (weights first, then the rows, as
    ``program.inputs`` lists them); the first equation that makes a non-finite float value, or None."""
    from xshap.engine.program import Const
    from xshap.engine.rules import bind

    env = dict(program.consts)
    env.update(zip(program.inputs, flat_inputs))
    for eqn in program.eqns:
        outs = bind(eqn, [a if isinstance(a, Const) else env[a] for a in eqn.inputs])
        env.update(zip(eqn.outputs, outs))
        if any(_nonfinite(o) for o in outs):
            return NonFiniteValue(eqn.scope, eqn.name, "value")
    return None


def first_nonfinite_multiplier(deeplift, params, x_rows: list, background: list) -> NonFiniteValue | None:
    """The first value whose tangent along Delta x = x - r (its DeepLIFT change, carried by the multipliers) is
    NaN or infinite for some background row while the value itself is finite: the rule that overflowed."""

    def one_pair(r_rows):
        x = tuple(jnp.asarray(a) for a in x_rows)

        def halves(rows):
            record: dict = {}
            deeplift.paired(params, list(rows), list(r_rows), record=record)
            return {k: v.x for k, v in record.items() if jnp.issubdtype(jnp.asarray(v.x).dtype, jnp.inexact)}

        values, tangents = jax.jvp(halves, (x,), (tuple(a - r for a, r in zip(x, r_rows)),))
        return {k: jnp.all(jnp.isfinite(values[k])) & ~jnp.all(jnp.isfinite(tangents[k])) for k in values}

    broken = jax.jit(jax.vmap(one_pair))(tuple(jax.device_put(np.asarray(b)) for b in background))
    for eqn in deeplift.program.eqns:
        if any(bool(np.any(broken[o])) for o in eqn.outputs if o in broken):
            return NonFiniteValue(eqn.scope, eqn.name, "multiplier")
    return None


def _nonfinite(value) -> bool:
    array = jnp.asarray(value)
    return bool(jnp.issubdtype(array.dtype, jnp.inexact)) and not bool(jnp.all(jnp.isfinite(array)))
