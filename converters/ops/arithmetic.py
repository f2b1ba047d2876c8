"""Elementwise arithmetic: add, sub, mul, div, neg (tensor-tensor and tensor-scalar)."""

from __future__ import annotations

import jax.numpy as jnp

from converters.registry import register


@register("aten.add.Tensor", "aten.add.Scalar")
def add(a, b, *, alpha=1):
    return a + (b if alpha == 1 else alpha * b)


@register("aten.sub.Tensor", "aten.sub.Scalar")
def sub(a, b, *, alpha=1):
    return a - (b if alpha == 1 else alpha * b)


@register("aten.rsub.Tensor", "aten.rsub.Scalar")
def rsub(a, b, *, alpha=1):
    return b - (a if alpha == 1 else alpha * a)


@register("aten.mul.Tensor", "aten.mul.Scalar")
def mul(a, b):
    return a * b


@register("aten.div.Tensor", "aten.div.Scalar")
def div(a, b):
    return jnp.true_divide(a, b)


@register("aten.div.Tensor_mode", "aten.div.Scalar_mode")
def div_mode(a, b, *, rounding_mode=None):
    if rounding_mode is None:
        return jnp.true_divide(a, b)
    if rounding_mode == "floor":
        return jnp.floor_divide(a, b)
    if rounding_mode == "trunc":
        return jnp.trunc(jnp.true_divide(a, b)).astype(jnp.result_type(a, b))
    raise ValueError(f"div: unknown rounding_mode {rounding_mode!r}")


@register("aten.neg")
def neg(a):
    return -a
