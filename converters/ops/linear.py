"""Matrix products: linear, addmm, mm, bmm, matmul."""

from __future__ import annotations

import jax.numpy as jnp

from converters.registry import register


@register("aten.linear")
def linear(x, weight, bias=None):
    y = jnp.matmul(x, weight.T)
    return y if bias is None else y + bias


@register("aten.addmm", "aten.baddbmm")
def addmm(bias, a, b, *, beta=1, alpha=1):
    product = jnp.matmul(a, b)
    if alpha != 1:
        product = alpha * product
    if beta == 0:  # torch ignores the bias then (even NaN/Inf in it)
        return product
    return product + (bias if beta == 1 else beta * bias)


@register("aten.mm", "aten.bmm", "aten.matmul")
def matmul(a, b):
    return jnp.matmul(a, b)
