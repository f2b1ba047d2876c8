"""Reductions: mean, sum, prod, max / min (values and indices), amax / amin, argmax / argmin, var / std,
logsumexp, all / any.

Written with plain jnp reductions (reduce_sum, reduce_max, ...) so that the DeepLIFT rules see the usual
primitives. torch's ``dim`` argument may be an int, a list of ints, an empty list or None; an empty list and
None both mean "every axis".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from converters.ops.dtypes import to_jax_dtype
from converters.registry import register


def _dtype(dtype):
    """The JAX dtype for a torch dtype kwarg, canonical (int64 -> int32 while x64 is off); None stays None."""
    dtype = to_jax_dtype(dtype)
    return None if dtype is None else jax.dtypes.canonicalize_dtype(dtype)


def _axes(x, dim) -> tuple[int, ...] | None:
    """torch's ``dim`` as a tuple of non-negative axes; None for "reduce every axis"."""
    if dim is None or x.ndim == 0:
        return None
    dims = [dim] if isinstance(dim, int) else list(dim)
    if not dims:
        return None
    return tuple(sorted({d % x.ndim for d in dims}))


def _axis(x, dim: int) -> int | None:
    """A single torch dim as an axis (None for a 0-d tensor, where torch accepts dim 0 or -1)."""
    return None if x.ndim == 0 else dim % x.ndim


def _cast(x, dtype):
    dtype = _dtype(dtype)
    return x if dtype is None else x.astype(dtype)


# -- sums and means ------------------------------------------------------------------------------------


@register("aten.sum.dim_IntList")
def sum_dim(x, dim=None, keepdim=False, *, dtype=None):
    return jnp.sum(_cast(x, dtype), axis=_axes(x, dim), keepdims=keepdim)


@register("aten.sum.default")
def sum_all(x, *, dtype=None):
    return jnp.sum(_cast(x, dtype))


@register("aten.mean.dim")
def mean_dim(x, dim=None, keepdim=False, *, dtype=None):
    return jnp.mean(_cast(x, dtype), axis=_axes(x, dim), keepdims=keepdim)


@register("aten.mean.default")
def mean_all(x, *, dtype=None):
    return jnp.mean(_cast(x, dtype))


@register("aten.prod.dim_int")
def prod_dim(x, dim, keepdim=False, *, dtype=None):
    return jnp.prod(_cast(x, dtype), axis=_axis(x, dim), keepdims=keepdim)


@register("aten.prod.default")
def prod_all(x, *, dtype=None):
    return jnp.prod(_cast(x, dtype))


@register("aten.logsumexp")
def logsumexp(x, dim=None, keepdim=False):
    return jax.scipy.special.logsumexp(x, axis=_axes(x, dim), keepdims=keepdim)


# -- max / min -------------------------------------------------------------------------------------------


@register("aten.max.dim")
def max_dim(x, dim, keepdim=False):
    axis = _axis(x, dim)
    return jnp.max(x, axis=axis, keepdims=keepdim), _argreduce(jnp.argmax, x, axis, keepdim)


@register("aten.min.dim")
def min_dim(x, dim, keepdim=False):
    axis = _axis(x, dim)
    return jnp.min(x, axis=axis, keepdims=keepdim), _argreduce(jnp.argmin, x, axis, keepdim)


@register("aten.max.default")
def max_all(x):
    return jnp.max(x)


@register("aten.min.default")
def min_all(x):
    return jnp.min(x)


@register("aten.amax")
def amax(x, dim=(), keepdim=False):
    return jnp.max(x, axis=_axes(x, dim), keepdims=keepdim)


@register("aten.amin")
def amin(x, dim=(), keepdim=False):
    return jnp.min(x, axis=_axes(x, dim), keepdims=keepdim)


def _argreduce(fn, x, axis, keepdim):
    if axis is None:  # whole tensor: the index into the flattened tensor, as torch gives it
        index = fn(jnp.reshape(x, (-1,)))
        return jnp.reshape(index, (1,) * x.ndim) if keepdim else index
    return fn(x, axis=axis, keepdims=keepdim)


@register("aten.argmax")
def argmax(x, dim=None, keepdim=False):
    return _argreduce(jnp.argmax, x, None if dim is None else _axis(x, dim), keepdim)


@register("aten.argmin")
def argmin(x, dim=None, keepdim=False):
    return _argreduce(jnp.argmin, x, None if dim is None else _axis(x, dim), keepdim)


# -- variance and standard deviation ----------------------------------------------------------------------
# torch's overloads: .default(x, unbiased=True), .dim(x, dim, unbiased=True, keepdim=False) and
# .correction(x, dim=None, *, correction=None, keepdim=False), correction None meaning 1.


def _ddof(unbiased=True, correction=None):
    if correction is not None:
        return correction
    return 1 if unbiased else 0


@register("aten.var.default")
def var_default(x, unbiased=True):
    return jnp.var(x, ddof=_ddof(unbiased))


@register("aten.var.dim")
def var_dim(x, dim=None, unbiased=True, keepdim=False):
    return jnp.var(x, axis=_axes(x, dim), ddof=_ddof(unbiased), keepdims=keepdim)


@register("aten.var.correction")
def var_correction(x, dim=None, *, correction=None, keepdim=False):
    return jnp.var(x, axis=_axes(x, dim), ddof=_ddof(correction=correction), keepdims=keepdim)


@register("aten.std.default")
def std_default(x, unbiased=True):
    return jnp.std(x, ddof=_ddof(unbiased))


@register("aten.std.dim")
def std_dim(x, dim=None, unbiased=True, keepdim=False):
    return jnp.std(x, axis=_axes(x, dim), ddof=_ddof(unbiased), keepdims=keepdim)


@register("aten.std.correction")
def std_correction(x, dim=None, *, correction=None, keepdim=False):
    return jnp.std(x, axis=_axes(x, dim), ddof=_ddof(correction=correction), keepdims=keepdim)


@register("aten.var_mean.dim")
def var_mean_dim(x, dim=None, unbiased=True, keepdim=False):
    return var_dim(x, dim, unbiased, keepdim), mean_dim(x, dim, keepdim)


@register("aten.var_mean.correction")
def var_mean_correction(x, dim=None, *, correction=None, keepdim=False):
    return var_correction(x, dim, correction=correction, keepdim=keepdim), mean_dim(x, dim, keepdim)


@register("aten.std_mean.dim")
def std_mean_dim(x, dim=None, unbiased=True, keepdim=False):
    return std_dim(x, dim, unbiased, keepdim), mean_dim(x, dim, keepdim)


@register("aten.std_mean.correction")
def std_mean_correction(x, dim=None, *, correction=None, keepdim=False):
    return std_correction(x, dim, correction=correction, keepdim=keepdim), mean_dim(x, dim, keepdim)


# -- boolean reductions --------------------------------------------------------------------------------------


@register("aten.all")
def all_(x, dim=None, keepdim=False):
    return jnp.all(x, axis=_axes(x, dim), keepdims=keepdim)


@register("aten.any")
def any_(x, dim=None, keepdim=False):
    return jnp.any(x, axis=_axes(x, dim), keepdims=keepdim)
