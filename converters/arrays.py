"""Host values onto the device without compiling a program for each shape.

In JAX 0.10 ``jnp.asarray`` (and ``jnp.array``) of a numpy array outside a trace goes through ``lax.stage``, which
compiles a small XLA program per shape and dtype: about 0.1 s each on CPU, so seconds for a model with many weight
shapes. ``jax.device_put`` copies the same values with the same dtype canonicalisation (float64 -> float32 unless
x64 is enabled) and compiles nothing.
"""

from __future__ import annotations

import jax
import numpy as np


def to_device(value) -> jax.Array:
    """``value`` (a numpy array, scalar or nested list) as a JAX array on the default device; a JAX array as it is."""
    if isinstance(value, jax.Array):
        return value
    return jax.device_put(np.asarray(value))
