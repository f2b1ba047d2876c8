"""Tensors made inside the graph: constants, dtype casts, metadata asserts."""

from __future__ import annotations

import jax.numpy as jnp

from converters.ops.dtypes import to_jax_dtype
from converters.registry import register


def _dtype(dtype, default=jnp.float32):
    return to_jax_dtype(dtype) or default


@register("aten.ones")
def ones(size, *, dtype=None, **_):
    return jnp.ones(tuple(size), _dtype(dtype))


@register("aten.zeros")
def zeros(size, *, dtype=None, **_):
    return jnp.zeros(tuple(size), _dtype(dtype))


@register("aten.full")
def full(size, fill_value, *, dtype=None, **_):
    default = jnp.float32 if isinstance(fill_value, float) else jnp.int64
    return jnp.full(tuple(size), fill_value, _dtype(dtype, default))


@register("aten.linspace")
def linspace(start, end, steps, *, dtype=None, **_):
    return jnp.linspace(start, end, steps, dtype=_dtype(dtype))


@register("aten.scalar_tensor")
def scalar_tensor(value, *, dtype=None, **_):
    return jnp.asarray(value, _dtype(dtype))


@register("aten.ones_like")
def ones_like(x, *, dtype=None, **_):
    return jnp.ones_like(x, dtype=to_jax_dtype(dtype))


@register("aten.zeros_like")
def zeros_like(x, *, dtype=None, **_):
    return jnp.zeros_like(x, dtype=to_jax_dtype(dtype))


@register("aten.zero")
def zero(x):
    """``x.zero_()`` once functionalised (torchvision's Swin V2 zeroes the key third of its qkv bias this way)."""
    return jnp.zeros_like(x)


@register("aten.to.dtype", "aten._to_copy", "aten.to.dtype_layout")
def to_dtype(x, dtype=None, *args, **kwargs):
    dtype = kwargs.get("dtype", dtype)
    return x if dtype is None or not hasattr(dtype, "is_floating_point") else x.astype(to_jax_dtype(dtype))


@register("aten._assert_tensor_metadata", "aten._assert_scalar", "aten.sym_constrain_range_for_size")
def no_op(*args, **kwargs):
    return None
