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

    gaps, scales = jax.vmap(one_pair)(tuple(jnp.asarray(b) for b in background))
    found = []
    for key in sorted(gaps, key=lambda k: deeplift.program.eqns.index(producer[k]) if k in producer else -1):
        gap, scale = float(np.max(gaps[key])), float(np.max(scales[key]))
        if gap > rtol * max(1.0, scale) and key in producer:
            eqn = producer[key]
            found.append(LocalGap(eqn.scope, eqn.name, gap, scale))
    return found
