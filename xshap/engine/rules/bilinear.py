"""Products of two input-dependent tensors: the two-player Shapley split, exact for bilinear ops.

For y = a * b (or a @ b, any bilinear op B):
    Delta y = B(Delta a, (b + b_r) / 2) + B((a + a_r) / 2, Delta b)
so the multipliers are m_a = (b + b_r) / 2 and m_b = (a + a_r) / 2, and completeness is exact.
"""

from __future__ import annotations

from collections.abc import Callable

import jax

from xshap.engine.rules import Paired, bind, bind_both, rule


def bilinear(op: Callable, a: Paired, b: Paired) -> Paired:
    """``op(a, b)`` for a bilinear ``op``, with the two-player Shapley multipliers."""

    @jax.custom_jvp
    def product(ax, ar, bx, br):
        return op(ax, bx)

    @product.defjvp
    def product_jvp(primals, tangents):
        ax, ar, bx, br = primals
        dax, _, dbx, _ = tangents
        return op(ax, bx), op(dax, (bx + br) / 2) + op((ax + ar) / 2, dbx)

    return Paired(product(a.x, a.r, b.x, b.r), op(a.r, b.r))


@rule("mul", "dot_general")
def product(eqn, args):
    a, b = args[0], args[1]
    if isinstance(a, Paired) and isinstance(b, Paired):
        return [bilinear(lambda u, v: bind(eqn, [u, v])[0], a, b)]
    return bind_both(eqn, args)  # one operand is a constant: linear
