"""torch dtype -> JAX dtype."""

from __future__ import annotations

import jax.numpy as jnp
import torch

_DTYPES = {
    torch.float16: jnp.float16,
    torch.bfloat16: jnp.bfloat16,
    torch.float32: jnp.float32,
    torch.float64: jnp.float64,
    torch.complex64: jnp.complex64,
    torch.complex128: jnp.complex128,
    torch.int8: jnp.int8,
    torch.int16: jnp.int16,
    torch.int32: jnp.int32,
    torch.int64: jnp.int64,
    torch.uint8: jnp.uint8,
    torch.bool: jnp.bool_,
}


def to_jax_dtype(dtype: torch.dtype | None):
    """The JAX dtype for a torch dtype (None stays None: 'keep the default')."""
    if dtype is None:
        return None
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise TypeError(f"torch dtype {dtype} has no JAX counterpart in xshap") from None
