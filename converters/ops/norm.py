"""Normalisations: batch norm (eval mode), layer norm, group norm, instance norm, RMS norm.

Written with plain mean / variance (mean of squared deviations) / rsqrt arithmetic rather than fused
primitives, so that the DeepLIFT rules see ordinary elementwise and reduction ops. Batch norm in eval mode
(and instance norm with running statistics) is affine with constant statistics:
``(x - running_mean) * (weight * rsqrt(running_var + eps)) + bias``.

The ``native_*`` variants return a tuple ``(out, mean, rstd)`` shaped as torch's meta functions shape them;
only ``out`` is ever used by the graphs xshap explains, the others are there so that ``getitem`` works.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from converters.registry import register


def _per_channel(value, ndim: int):
    """A (C,) vector shaped to broadcast along axis 1 of an ``ndim``-dimensional input."""
    value = jnp.asarray(value)
    if ndim < 2:
        return value
    return jnp.reshape(value, (1, -1) + (1,) * (ndim - 2))


def _affine(y, weight, bias, ndim: int):
    """Apply per-channel (axis 1) weight and bias, either of which may be None."""
    if weight is not None:
        y = y * _per_channel(weight, ndim)
    if bias is not None:
        y = y + _per_channel(bias, ndim)
    return y


def _moments(x, axes: tuple[int, ...]):
    """Mean and biased variance over ``axes`` (kept as size-one axes), as torch normalisations use them."""
    mean = jnp.mean(x, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
    return mean, var


def _compute_dtype(x):
    """Normalise half-precision inputs in float32, as torch does with its accumulation type."""
    return jnp.float32 if x.dtype in (jnp.float16, jnp.bfloat16) else x.dtype


# -- batch norm -------------------------------------------------------------------------------------------


def _batch_norm(x, weight, bias, running_mean, running_var, use_batch_stats: bool, eps: float):
    """Batch norm; returns (out, mean, rstd) with mean / rstd of shape (C,) for batch stats, (0,) otherwise."""
    dtype = x.dtype
    h = x.astype(_compute_dtype(x))
    if use_batch_stats or running_mean is None or running_var is None:
        # Statistics of the batch the graph sees: with xshap's one-row-at-a-time evaluation, that is one row.
        axes = tuple(i for i in range(h.ndim) if i != 1)
        mean, var = _moments(h, axes)
        rstd = lax.rsqrt(var + eps)
        out = _affine((h - mean) * rstd, weight, bias, h.ndim)
        return out.astype(dtype), jnp.reshape(mean, (-1,)), jnp.reshape(rstd, (-1,))
    # Eval mode: an affine map with constant statistics.
    scale = lax.rsqrt(jnp.asarray(running_var, h.dtype) + eps)
    if weight is not None:
        scale = scale * weight
    out = (h - _per_channel(jnp.asarray(running_mean, h.dtype), h.ndim)) * _per_channel(scale, h.ndim)
    if bias is not None:
        out = out + _per_channel(bias, h.ndim)
    empty = jnp.zeros((0,), h.dtype)
    return out.astype(dtype), empty, empty


@register("aten._native_batch_norm_legit_no_training")
def native_batch_norm_legit_no_training(x, weight, bias, running_mean, running_var, momentum, eps):
    return _batch_norm(x, weight, bias, running_mean, running_var, False, eps)


@register("aten._native_batch_norm_legit.default")
def native_batch_norm_legit(x, weight, bias, running_mean, running_var, training, momentum, eps):
    return _batch_norm(x, weight, bias, running_mean, running_var, training, eps)


@register("aten._native_batch_norm_legit.no_stats")
def native_batch_norm_legit_no_stats(x, weight, bias, training, momentum, eps):
    # track_running_stats=False: torch normalises with the statistics of the batch, even in eval mode.
    return _batch_norm(x, weight, bias, None, None, True, eps)


@register("aten.native_batch_norm")
def native_batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps):
    return _batch_norm(x, weight, bias, running_mean, running_var, training, eps)


@register("aten._batch_norm_no_update")
def batch_norm_no_update(x, weight, bias, running_mean, running_var, momentum, eps):
    out, mean, rstd = _batch_norm(x, weight, bias, running_mean, running_var, False, eps)
    return out, mean, rstd, jnp.zeros((0,), jnp.uint8)


@register("aten.batch_norm")
def batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps, cudnn_enabled=False):
    return _batch_norm(x, weight, bias, running_mean, running_var, training, eps)[0]


# -- layer norm / RMS norm --------------------------------------------------------------------------------


def _layer_norm(x, normalized_shape, weight, bias, eps):
    dtype = x.dtype
    h = x.astype(_compute_dtype(x))
    axes = tuple(range(h.ndim - len(normalized_shape), h.ndim))
    mean, var = _moments(h, axes)
    rstd = lax.rsqrt(var + eps)
    out = (h - mean) * rstd
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out.astype(dtype), mean, rstd


@register("aten.layer_norm")
def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
    return _layer_norm(x, normalized_shape, weight, bias, eps)[0]


@register("aten.native_layer_norm")
def native_layer_norm(x, normalized_shape, weight, bias, eps):
    return _layer_norm(x, normalized_shape, weight, bias, eps)


def _rms_norm(x, normalized_shape, weight, eps):
    dtype = x.dtype
    h = x.astype(_compute_dtype(x))
    if eps is None:
        eps = float(jnp.finfo(dtype).eps)
    axes = tuple(range(h.ndim - len(normalized_shape), h.ndim))
    rstd = lax.rsqrt(jnp.mean(jnp.square(h), axis=axes, keepdims=True) + eps)
    out = h * rstd
    if weight is not None:
        out = out * weight
    return out.astype(dtype), rstd


@register("aten.rms_norm")
def rms_norm(x, normalized_shape, weight=None, eps=None):
    return _rms_norm(x, normalized_shape, weight, eps)[0]


@register("aten._fused_rms_norm")
def fused_rms_norm(x, normalized_shape, weight=None, eps=None):
    return _rms_norm(x, normalized_shape, weight, eps)


# -- group norm / instance norm ---------------------------------------------------------------------------


def _group_norm(x, groups: int, weight, bias, eps):
    """Group norm over (N, C, *): statistics per row and group of C // groups channels (and all positions)."""
    dtype = x.dtype
    h = x.astype(_compute_dtype(x))
    n = h.shape[0]
    grouped = jnp.reshape(h, (n, groups, -1))
    mean, var = _moments(grouped, (2,))
    rstd = lax.rsqrt(var + eps)
    out = jnp.reshape((grouped - mean) * rstd, h.shape)
    out = _affine(out, weight, bias, h.ndim)
    return out.astype(dtype), jnp.reshape(mean, (n, groups)), jnp.reshape(rstd, (n, groups))


@register("aten.group_norm")
def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5, cudnn_enabled=True):
    return _group_norm(x, num_groups, weight, bias, eps)[0]


@register("aten.native_group_norm")
def native_group_norm(x, weight, bias, n, c, hxw, group, eps):
    return _group_norm(x, group, weight, bias, eps)


@register("aten.instance_norm")
def instance_norm(x, weight, bias, running_mean, running_var, use_input_stats, momentum, eps, cudnn_enabled=False):
    if not use_input_stats and running_mean is not None and running_var is not None:
        # Eval mode with tracked running statistics: the same affine map as eval-mode batch norm.
        return _batch_norm(x, weight, bias, running_mean, running_var, False, eps)[0]
    dtype = x.dtype
    h = x.astype(_compute_dtype(x))
    mean, var = _moments(h, tuple(range(2, h.ndim)))
    out = _affine((h - mean) * lax.rsqrt(var + eps), weight, bias, h.ndim)
    return out.astype(dtype)
