"""More activations: gelu, silu, mish, the hard* family, prelu, selu, celu, threshold, clamp, softmax.

Every one is written with plain elementwise jax.numpy / jax.nn / lax ops (and softmax / log_softmax with
jax.nn), so that the DeepLIFT rules see ordinary primitives. relu, sigmoid, tanh, softplus, elu,
leaky_relu and dropout live in ``activation.py``. Softsign needs no entry: torch exports it as abs / add / div.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from converters.ops.dtypes import to_jax_dtype
from converters.registry import register

# torch's SELU constants (torch/nn/functional.py, aten/src/ATen/native/Activation.cpp).
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


@register("aten.gelu", "aten.gelu_")
def gelu(x, approximate="none"):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: unknown approximate={approximate!r}")
    return jax.nn.gelu(x, approximate=approximate == "tanh")


@register("aten.silu", "aten.silu_")
def silu(x):
    return x * jax.nn.sigmoid(x)


@register("aten.mish", "aten.mish_")
def mish(x):
    return x * jnp.tanh(jax.nn.softplus(x))


@register("aten.hardtanh", "aten.hardtanh_")
def hardtanh(x, min_val=-1.0, max_val=1.0):
    return jnp.clip(x, min_val, max_val)


@register("aten.relu6", "aten.relu6_")
def relu6(x):
    return jnp.clip(x, 0.0, 6.0)


@register("aten.hardswish", "aten.hardswish_")
def hardswish(x):
    return x * jnp.clip(x + 3.0, 0.0, 6.0) / 6.0


@register("aten.hardsigmoid", "aten.hardsigmoid_")
def hardsigmoid(x):
    return jnp.clip(x + 3.0, 0.0, 6.0) / 6.0


@register("aten.log_sigmoid")
def log_sigmoid(x):
    return jax.nn.log_sigmoid(x)


@register("aten.log_sigmoid_forward")
def log_sigmoid_forward(x):
    # (output, buffer): the buffer is scratch space for the backward pass, never read by a forward graph.
    return jax.nn.log_sigmoid(x), jnp.zeros_like(x)


@register("aten.prelu")
def prelu(x, weight):
    """PReLU: one slope, or one per channel (axis 1 of the input)."""
    if weight.size != 1 and x.ndim >= 2:
        weight = jnp.reshape(weight, (1, -1) + (1,) * (x.ndim - 2))
    elif weight.size == 1:
        weight = jnp.reshape(weight, ())
    return jnp.where(x > 0, x, weight * x)


@register("aten._prelu_kernel")
def prelu_kernel(x, weight):
    # The weight arrives already shaped to broadcast against x.
    return jnp.where(x > 0, x, weight * x)


@register("aten.selu", "aten.selu_")
def selu(x):
    return _SELU_SCALE * jnp.where(x > 0, x, _SELU_ALPHA * jnp.expm1(jnp.minimum(x, 0.0)))


@register("aten.celu", "aten.celu_")
def celu(x, alpha=1.0):
    return jnp.where(x > 0, x, alpha * jnp.expm1(jnp.minimum(x, 0.0) / alpha))


@register("aten.threshold", "aten.threshold_")
def threshold(x, threshold, value):
    return jnp.where(x > threshold, x, jnp.asarray(value, x.dtype))


@register("aten.clamp", "aten.clamp_", "aten.clip", "aten.clip_")
def clamp(x, min=None, max=None):
    """clamp with scalar or tensor bounds, either of which may be None; like torch, max wins if min > max."""
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given")
    return jnp.clip(x, min, max)


@register("aten.clamp_min", "aten.clamp_min_")
def clamp_min(x, min):
    return jnp.clip(x, min, None)


@register("aten.clamp_max", "aten.clamp_max_")
def clamp_max(x, max):
    return jnp.clip(x, None, max)


def _cast(x, dtype):
    jax_dtype = to_jax_dtype(dtype)
    return x if jax_dtype is None else x.astype(jax_dtype)


def _half_to_float(x, half_to_float: bool):
    return x.astype(jnp.float32) if half_to_float and x.dtype in (jnp.float16, jnp.bfloat16) else x


@register("aten.softmax.int")
def softmax(x, dim, dtype=None):
    return jax.nn.softmax(_cast(x, dtype), axis=dim)


@register("aten._softmax")
def softmax_internal(x, dim, half_to_float=False):
    return jax.nn.softmax(_half_to_float(x, half_to_float), axis=dim)


@register("aten.log_softmax.int")
def log_softmax(x, dim, dtype=None):
    return jax.nn.log_softmax(_cast(x, dtype), axis=dim)


@register("aten._log_softmax")
def log_softmax_internal(x, dim, half_to_float=False):
    return jax.nn.log_softmax(_half_to_float(x, half_to_float), axis=dim)
