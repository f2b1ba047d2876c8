"""Complex tensors: views between real pairs and complex values, parts, conjugates, magnitude and phase.

What spectral models do between an FFT and its inverse (``view_as_real``, ``.real`` / ``.imag``, which torch
exports as ``view_as_real`` + ``select``, ``torch.complex``, ``polar``, ``abs`` of a spectrum). The magnitude of a
complex value is written as ``sqrt(re^2 + im^2)`` over the real and imaginary parts, so DeepLIFT sees two real
parts (linear), squares, a sum and a square root, each with a complete rule, instead of a complex ``abs``
whose complex-valued difference quotient means nothing for a real result.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from converters.registry import register


def is_complex(x) -> bool:
    return jnp.iscomplexobj(x)


def squared_magnitude(x):
    """|x|^2: x^2 for real x, re^2 + im^2 for complex x (real in either case)."""
    if is_complex(x):
        return jnp.square(jnp.real(x)) + jnp.square(jnp.imag(x))
    return jnp.square(x)


def magnitude(x):
    """|x|, elementwise; for complex x through its real and imaginary parts (see the module docstring)."""
    return jnp.sqrt(squared_magnitude(x)) if is_complex(x) else jnp.abs(x)


@register("aten.abs")
def abs_(x):
    return magnitude(x)


@register("aten.view_as_real")
def view_as_real(x):
    return jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1)


@register("aten.view_as_complex")
def view_as_complex(x):
    return lax.complex(x[..., 0], x[..., 1])


@register("aten.complex")
def complex_(real, imag):
    real, imag = jnp.broadcast_arrays(real, imag)
    return lax.complex(real, imag)


@register("aten.polar")
def polar(abs, angle):
    return complex_(abs * jnp.cos(angle), abs * jnp.sin(angle))


@register("aten.real")
def real(x):
    return jnp.real(x)


@register("aten.imag")
def imag(x):
    return jnp.imag(x)


@register("aten.angle")
def angle(x):
    """The phase; torch gives real inputs 0 (or pi where negative, NaN stays NaN)."""
    if is_complex(x):
        return jnp.arctan2(jnp.imag(x), jnp.real(x))
    x = x if jnp.issubdtype(x.dtype, jnp.inexact) else x.astype(jnp.float32)
    return jnp.where(jnp.isnan(x), x, jnp.where(x < 0, jnp.pi, 0.0).astype(x.dtype))


@register("aten._conj", "aten.conj", "aten.conj_physical", "aten._conj_physical")
def conj(x):
    return jnp.conj(x) if is_complex(x) else x


@register("aten.resolve_conj", "aten.resolve_neg")
def resolve(x):
    """Materialise a lazy conjugate / negation: the values are already what they mean in JAX."""
    return x
