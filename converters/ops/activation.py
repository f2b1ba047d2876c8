"""Elementwise activations, written with jax.nn so that native JAX code and converted code look alike."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from converters.registry import register


@register("aten.relu", "aten.relu_")
def relu(x):
    return jax.nn.relu(x)


@register("aten.sigmoid", "aten.sigmoid_")
def sigmoid(x):
    return jax.nn.sigmoid(x)


@register("aten.tanh", "aten.tanh_")
def tanh(x):
    return jnp.tanh(x)


@register("aten.softplus")
def softplus(x, beta=1.0, threshold=20.0):
    scaled = x * beta
    # torch reverts to the identity where beta * x > threshold, for numerical stability.
    return jnp.where(scaled > threshold, x, jax.nn.softplus(scaled) / beta)


@register("aten.elu", "aten.elu_")
def elu(x, alpha=1.0, scale=1.0, input_scale=1.0):
    negative = alpha * jnp.expm1(jnp.minimum(x, 0.0) * input_scale)
    return scale * jnp.where(x > 0, x, negative)


@register("aten.leaky_relu", "aten.leaky_relu_")
def leaky_relu(x, negative_slope=0.01):
    return jnp.where(x > 0, x, x * negative_slope)


@register("aten.dropout", "aten.feature_dropout", "aten.alpha_dropout", "aten.feature_alpha_dropout")
def dropout(x, p=0.5, train=False):
    if train:
        raise ValueError("dropout in training mode cannot be explained: put the model in eval mode")
    return x
