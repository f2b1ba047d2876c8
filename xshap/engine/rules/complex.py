"""The magnitude of a complex value: |z| = sqrt(re(z)^2 + im(z)^2), the 2-norm of its two real parts.

A spectral model's |FFT(x)| is treated exactly as the 2-norm of a real vector (how the converter writes torch's
``abs`` of a complex tensor, and vector norms): the parts are linear in z, each square gets its exact product
multiplier (re_x + re_r), the sum is linear and the square root is rescaled (its infinite slope at 0 kept out).
Complete, with real multipliers for the real inputs. (The other complex ops either are linear, see
``linear.py``, or are rescaled in units with a complex multiplier, see ``rescale.py``.)
"""

from __future__ import annotations

import jax.numpy as jnp

from xshap.engine.rules import Paired, bind_both, rule
from xshap.engine.rules.bilinear import bilinear
from xshap.engine.rules.rescale import rescale


def _sqrt(s):
    return (jnp.sqrt(s),)


@rule("abs")
def magnitude(eqn, args):
    (z,) = args
    if not isinstance(z, Paired):
        return bind_both(eqn, args)
    if not jnp.iscomplexobj(z.x):  # a real abs outside a unit (analysis puts every one in a unit)
        (x,) = rescale(lambda u: (jnp.abs(u),), z.x, z.r)
        return [Paired(x, jnp.abs(z.r))]
    parts = [Paired(jnp.real(z.x), jnp.real(z.r)), Paired(jnp.imag(z.x), jnp.imag(z.r))]
    squares = [bilinear(jnp.multiply, p, p) for p in parts]
    total = Paired(squares[0].x + squares[1].x, squares[0].r + squares[1].r)
    (x,) = rescale(_sqrt, total.x, total.r)
    return [Paired(x, jnp.sqrt(total.r))]
