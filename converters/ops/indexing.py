"""Indexing with integer tensors: index_select, gather, take_along_dim, embedding, advanced indexing
(aten.index.Tensor), and the functional scatters torch.export makes of in-place assignments (index_put,
select_scatter, slice_scatter, scatter, scatter_add).

Gathers go through jnp.take / jnp.take_along_axis (the gather primitive), scatters through ``.at[...]``.
Integer indices are int32 in JAX (x64 off); negative indices count from the end, as in torch.
"""

from __future__ import annotations

import jax.numpy as jnp

from converters.registry import register

_INT64_MAX = 9223372036854775807


def _is_bool(index) -> bool:
    return index is not None and index.dtype == jnp.bool_


@register("aten.index_select")
def index_select(x, dim, index):
    if x.ndim == 0:
        return jnp.reshape(x, (1,) * index.ndim)
    return jnp.take(x, jnp.reshape(index, (-1,)), axis=dim % x.ndim)


@register("aten.gather")
def gather(x, dim, index, *, sparse_grad=False):
    if x.ndim == 0:
        return jnp.broadcast_to(x, index.shape)
    dim = dim % x.ndim
    # torch lets index be smaller than x along the other axes: only that corner of x is read.
    corner = tuple(slice(None) if d == dim else slice(0, index.shape[d]) for d in range(x.ndim))
    return jnp.take_along_axis(x[corner], index, axis=dim)


@register("aten.take_along_dim")
def take_along_dim(x, indices, dim=None):
    if dim is None:
        return jnp.take_along_axis(jnp.reshape(x, (-1,)), jnp.reshape(indices, (-1,)), axis=0)
    dim = dim % x.ndim
    # x and indices broadcast against each other along every axis but dim
    others = jnp.broadcast_shapes(
        tuple(1 if d == dim else n for d, n in enumerate(x.shape)),
        tuple(1 if d == dim else n for d, n in enumerate(indices.shape)),
    )
    x = jnp.broadcast_to(x, others[:dim] + (x.shape[dim],) + others[dim + 1 :])
    indices = jnp.broadcast_to(indices, others[:dim] + (indices.shape[dim],) + others[dim + 1 :])
    return jnp.take_along_axis(x, indices, axis=dim)


@register("aten.embedding")
def embedding(weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    # padding_idx only stops the gradient of that row in torch; the forward is a plain lookup.
    return jnp.take(weight, indices, axis=0)


def _index_tuple(x, indices, op: str):
    if any(_is_bool(i) for i in indices):
        raise NotImplementedError(
            f"{op} with a boolean mask gives a data-dependent shape, which a JAX function cannot have; "
            "use torch.where / masked_fill instead"
        )
    return tuple(slice(None) if i is None else i for i in indices)


@register("aten.index.Tensor")
def index(x, indices):
    indices = list(indices)
    given = [k for k, i in enumerate(indices) if i is not None]
    if len(given) == 1 and not _is_bool(indices[given[0]]):
        # one index tensor: its axes replace axis k, as jnp.take does
        return jnp.take(x, indices[given[0]], axis=given[0])
    # several: numpy's advanced-indexing rules are torch's (index axes in place when the index tensors
    # are adjacent, in front otherwise)
    return x[_index_tuple(x, indices, "aten.index.Tensor")]


@register("aten.index_put")
def index_put(x, indices, values, accumulate=False):
    indices = list(indices)
    given = [k for k, i in enumerate(indices) if i is not None]
    if len(given) == 1 and _is_bool(indices[given[0]]) and values.size == 1:
        # x[mask] = value (one value): a select, with no data-dependent shape
        k, mask = given[0], indices[given[0]]
        mask = jnp.reshape(mask, (1,) * k + mask.shape + (1,) * (x.ndim - k - mask.ndim))
        value = jnp.reshape(values, ()).astype(x.dtype)
        return jnp.where(mask, x + value if accumulate else value, x)
    where = x.at[_index_tuple(x, indices, "aten.index_put")]
    values = values.astype(x.dtype)
    return where.add(values) if accumulate else where.set(values)


@register("aten.select_scatter")
def select_scatter(x, src, dim, index):
    dim = dim % x.ndim
    return x.at[(slice(None),) * dim + (index,)].set(src.astype(x.dtype))


@register("aten.slice_scatter")
def slice_scatter(x, src, dim=0, start=None, end=None, step=1):
    dim = dim % x.ndim
    start = 0 if start is None else start
    end = x.shape[dim] if end is None or end >= _INT64_MAX else end
    return x.at[(slice(None),) * dim + (slice(start, end, step),)].set(src.astype(x.dtype))


def _scatter_where(index, dim):
    """The full index tuple of torch's scatter: index along dim, the position itself along the others."""
    grids = jnp.indices(index.shape, sparse=True)
    return tuple(index if d == dim else grids[d] for d in range(index.ndim))


def _scatter_src(src, index):
    if jnp.ndim(src) == 0:
        return src
    return src[tuple(slice(0, n) for n in index.shape)]


@register("aten.scatter.src", "aten.scatter.value")
def scatter(x, dim, index, src):
    src = _scatter_src(jnp.asarray(src), index)
    return x.at[_scatter_where(index, dim % x.ndim)].set(src.astype(x.dtype))


@register("aten.scatter_add")
def scatter_add(x, dim, index, src):
    src = _scatter_src(src, index)
    return x.at[_scatter_where(index, dim % x.ndim)].add(src.astype(x.dtype))
