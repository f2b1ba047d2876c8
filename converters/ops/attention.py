"""Attention: aten.scaled_dot_product_attention.

nn.MultiheadAttention and nn.TransformerEncoderLayer export (eval mode, ``run_decompositions({})``) to
linear / view / transpose / bmm / softmax ops, with one ``scaled_dot_product_attention`` when the attention
weights are not needed (``need_weights=False``, and always inside TransformerEncoderLayer). The fused
``_native_multi_head_attention`` / ``_transformer_encoder_layer_fwd`` fast paths are not taken by export.

The attention is written out as matmuls, a scale, a mask and ``jax.nn.softmax`` so that the DeepLIFT side
sees ordinary primitives. Masked-out scores (boolean and causal masks, -inf entries of additive masks) are set
to the lowest finite value by a selection on the mask alone rather than by adding -inf, so that no inf - inf
appears in differences from a reference; rows with every key masked give zeros, as torch's safe softmax does.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from converters.registry import register


@register("aten.scaled_dot_product_attention")
def scaled_dot_product_attention(
    query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, *, scale=None, enable_gqa=False
):
    if dropout_p > 0:
        raise ValueError("attention dropout cannot be explained: put the model in eval mode")
    if enable_gqa and key.shape[-3] != query.shape[-3]:  # grouped-query attention: share each key/value head
        repeats = query.shape[-3] // key.shape[-3]
        key = jnp.repeat(key, repeats, axis=-3)
        value = jnp.repeat(value, repeats, axis=-3)
    if scale is None:
        scale = 1.0 / math.sqrt(query.shape[-1])
    scores = jnp.matmul(query, jnp.swapaxes(key, -2, -1)) * scale  # (..., L, S)
    lowest = jnp.finfo(scores.dtype).min
    allowed = None
    if is_causal:
        length, source = scores.shape[-2], scores.shape[-1]
        allowed = jnp.tril(jnp.ones((length, source), dtype=bool))
    if attn_mask is not None and attn_mask.dtype == jnp.bool_:
        allowed = attn_mask if allowed is None else allowed & attn_mask
    if allowed is not None:
        scores = jnp.where(allowed, scores, lowest)
    if attn_mask is not None and attn_mask.dtype != jnp.bool_:
        # An additive mask: its -inf entries (nn.MultiheadAttention's key_padding_mask) select the lowest finite
        # value instead, so that the same softmax results without -inf in the explained values.
        blocked = attn_mask == -jnp.inf
        scores = jnp.where(blocked, lowest, scores + jnp.where(blocked, 0, attn_mask).astype(scores.dtype))
    weights = jax.nn.softmax(scores, axis=-1)
    if attn_mask is not None:
        # Safe softmax: a row with no key to attend to is all zeros, not NaN or uniform. The test reads the mask
        # only (scores are finite), so the selection does not depend on the explained inputs.
        if attn_mask.dtype == jnp.bool_:
            empty = ~jnp.any(allowed, axis=-1, keepdims=True)
        else:
            empty = jnp.all(attn_mask == -jnp.inf, axis=-1, keepdims=True)
        weights = jnp.where(empty, jnp.zeros((), weights.dtype), weights)
    return jnp.matmul(weights, value)
