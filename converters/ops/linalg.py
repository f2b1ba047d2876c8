"""Vector and matrix norms: ``linalg_vector_norm`` (what ``torch.norm``, ``x.norm``, ``F.normalize`` and
``torch.linalg.vector_norm`` export to), ``linalg_norm``, ``linalg_matrix_norm``, ``frobenius_norm``, the legacy
``norm`` overloads (in programs saved by older torch versions) and ``renorm``.

Written as plain elementwise maps and reductions so that DeepLIFT sees ops it has complete rules for: the 2-norm
is ``sqrt(sum(x^2))`` (square and sqrt are elementwise units, the sum is linear; the rescale rule keeps sqrt's
infinite slope at 0 out of the multipliers), the p-norm ``sum(|x|^p)^(1/p)``, the inf-norms a max / min of
``|x|``. The spectral matrix norms (ord 2, -2, 'nuc') take singular values, for which DeepLIFT has no rule: they
convert, and xshap refuses to explain through them (``NoRuleError``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from converters.ops.complex import magnitude, squared_magnitude
from converters.ops.dtypes import to_jax_dtype
from converters.registry import register


def _axes(x, dim) -> tuple[int, ...]:
    """torch's ``dim`` as a tuple of axes; None or an empty list mean every axis."""
    if dim is None:
        return tuple(range(x.ndim))
    dims = [dim] if isinstance(dim, int) else list(dim)
    return tuple(sorted({d % x.ndim for d in dims})) if dims else tuple(range(x.ndim))


def _cast(x, dtype):
    """``x`` in the torch ``dtype`` argument's type (canonical: float64 is float32 while x64 is off)."""
    dtype = to_jax_dtype(dtype)
    return x if dtype is None else x.astype(jax.dtypes.canonicalize_dtype(dtype))


def vector_norm(x, ord=2, axes: tuple[int, ...] | None = None, keepdim: bool = False):
    """The ``ord``-norm of ``x`` over ``axes`` (every axis when None), for real and complex ``x``."""
    axes = tuple(range(x.ndim)) if axes is None else axes
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(jnp.float32)
    ord = float(ord)
    if ord == 2:
        return jnp.sqrt(jnp.sum(squared_magnitude(x), axis=axes, keepdims=keepdim))
    size = magnitude(x)
    if ord == math.inf:
        return jnp.max(size, axis=axes, keepdims=keepdim)
    if ord == -math.inf:
        return jnp.min(size, axis=axes, keepdims=keepdim)
    if ord == 0:  # the number of non-zero entries
        return jnp.sum((size != 0).astype(size.dtype), axis=axes, keepdims=keepdim)
    if ord == 1:
        return jnp.sum(size, axis=axes, keepdims=keepdim)
    return jnp.power(jnp.sum(jnp.power(size, ord), axis=axes, keepdims=keepdim), 1.0 / ord)


def matrix_norm(x, ord="fro", dim=(-2, -1), keepdim: bool = False):
    """The matrix norm over the two axes ``dim`` (rows, columns), as torch.linalg.matrix_norm defines it."""
    rows, cols = (d % x.ndim for d in dim)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(jnp.float32)
    if ord == "fro":
        return vector_norm(x, 2, tuple(sorted((rows, cols))), keepdim)
    if ord in ("nuc", 2, -2):
        singular = jnp.linalg.svd(jnp.moveaxis(x, (rows, cols), (-2, -1)), compute_uv=False)
        reduce = {"nuc": jnp.sum, 2: jnp.max, -2: jnp.min}[ord]
        out = reduce(singular, axis=-1)
        return jnp.expand_dims(out, tuple(sorted((rows, cols)))) if keepdim else out
    if ord not in (1, -1, math.inf, -math.inf):
        raise ValueError(f"matrix_norm: unsupported ord {ord!r}")
    # ord +-1: max / min over columns of the column sums; ord +-inf: over rows of the row sums
    summed, picked = (rows, cols) if abs(ord) == 1 else (cols, rows)
    sums = jnp.sum(magnitude(x), axis=summed, keepdims=True)
    out = (jnp.max if ord > 0 else jnp.min)(sums, axis=picked, keepdims=True)
    return out if keepdim else jnp.squeeze(out, axis=(rows, cols))


@register("aten.linalg_vector_norm")
def linalg_vector_norm(x, ord=2, dim=None, keepdim=False, *, dtype=None):
    x = _cast(x, dtype)
    return vector_norm(x, ord, _axes(x, dim), keepdim)


@register("aten.linalg_matrix_norm")
def linalg_matrix_norm(x, ord="fro", dim=(-2, -1), keepdim=False, *, dtype=None):
    return matrix_norm(_cast(x, dtype), ord, dim, keepdim)


@register("aten.linalg_norm")
def linalg_norm(x, ord=None, dim=None, keepdim=False, *, dtype=None):
    """A vector norm over one axis, a matrix norm over two; with no ``dim``, the 2-norm of every entry
    (``ord`` None) or the norm of a 1-D (vector) or 2-D (matrix) ``x``."""
    x = _cast(x, dtype)
    if dim is None:
        if ord is None:
            return vector_norm(x, 2, None, keepdim)
        dim = list(range(x.ndim))
    dims = [dim] if isinstance(dim, int) else list(dim)
    if len(dims) == 1:
        return vector_norm(x, 2 if ord is None else ord, _axes(x, dims), keepdim)
    if len(dims) == 2:
        return matrix_norm(x, "fro" if ord is None else ord, dims, keepdim)
    raise ValueError(f"linalg_norm: dim must have one or two axes, got {dims}")


@register("aten.frobenius_norm")
def frobenius_norm(x, dim, keepdim=False):
    return vector_norm(x, 2, _axes(x, dim), keepdim)


@register("aten.norm")
def norm(x, p=2, dim=None, keepdim=False, *, dtype=None):
    """The legacy ``aten.norm`` overloads (Scalar, ScalarOpt_dim, ScalarOpt_dtype, ScalarOpt_dim_dtype): a vector
    norm over ``dim`` (every axis by default); ``p`` None means 2."""
    x = _cast(x, dtype)
    return vector_norm(x, 2 if p is None else p, _axes(x, dim), keepdim)


@register("aten.renorm")
def renorm(x, p, dim, maxnorm):
    """Each slice along ``dim`` whose p-norm exceeds ``maxnorm`` scaled down to it (torch's 1e-7 included)."""
    axis = dim % x.ndim
    norms = vector_norm(x, p, tuple(a for a in range(x.ndim) if a != axis), keepdim=True)
    factor = jnp.where(norms > maxnorm, maxnorm / (norms + 1e-7), jnp.ones_like(norms))
    return x * factor
