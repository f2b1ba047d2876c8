"""Shape ops: views, permutations, squeezing, concatenation, slicing, copies."""

from __future__ import annotations

import jax.numpy as jnp

from converters.registry import register

_INT64_MAX = 9223372036854775807


@register("aten.view", "aten.reshape", "aten._unsafe_view")
def reshape(x, shape):
    return jnp.reshape(x, tuple(shape))


@register("aten.flatten.using_ints")
def flatten(x, start_dim=0, end_dim=-1):
    if x.ndim == 0:
        return jnp.reshape(x, (1,))
    start, end = start_dim % x.ndim, end_dim % x.ndim
    merged = 1
    for size in x.shape[start : end + 1]:
        merged *= size
    return jnp.reshape(x, x.shape[:start] + (merged,) + x.shape[end + 1 :])


@register("aten.unflatten.int")
def unflatten(x, dim, sizes):
    dim = dim % x.ndim
    sizes = list(sizes)
    if -1 in sizes:
        known = 1
        for size in sizes:
            if size != -1:
                known *= size
        sizes[sizes.index(-1)] = x.shape[dim] // known
    return jnp.reshape(x, x.shape[:dim] + tuple(sizes) + x.shape[dim + 1 :])


@register("aten.permute")
def permute(x, dims):
    return jnp.transpose(x, tuple(d % x.ndim for d in dims))


@register("aten.transpose.int")
def transpose(x, dim0, dim1):
    return jnp.swapaxes(x, dim0, dim1)


@register("aten.t")
def t(x):
    return x.T if x.ndim == 2 else x


@register("aten.squeeze.default")
def squeeze_all(x):
    return jnp.squeeze(x)


@register("aten.squeeze.dim")
def squeeze_dim(x, dim):
    return squeeze_dims(x, [dim])


@register("aten.squeeze.dims")
def squeeze_dims(x, dims):
    if x.ndim == 0:
        return x
    axes = tuple(sorted({d % x.ndim for d in dims if x.shape[d % x.ndim] == 1}))
    return jnp.squeeze(x, axis=axes) if axes else x


@register("aten.unsqueeze")
def unsqueeze(x, dim):
    return jnp.expand_dims(x, dim % (x.ndim + 1))


@register("aten.cat", "aten.concat", "aten.concatenate")
def cat(tensors, dim=0):
    # torch.cat skips empty 1-D tensors (legacy behaviour); do the same.
    kept = [t for t in tensors if not (t.ndim == 1 and t.shape[0] == 0)]
    return jnp.concatenate(kept, axis=dim)


@register("aten.slice.Tensor")
def slice_(x, dim=0, start=None, end=None, step=1):
    dim = dim % x.ndim
    size = x.shape[dim]
    start = 0 if start is None else start
    end = size if end is None or end >= _INT64_MAX else end
    index = [slice(None)] * x.ndim
    index[dim] = slice(start, end, step)
    return x[tuple(index)]


@register("aten.select.int")
def select(x, dim, index):
    return jnp.take(x, index, axis=dim % x.ndim)


@register("aten.clone", "aten.contiguous", "aten.alias", "aten.detach", "aten.lift_fresh_copy")
def identity(x, *args, **kwargs):
    return x
