"""Elementwise arithmetic: add, sub, mul, div, neg (tensor-tensor and tensor-scalar), and the fused forms
addcmul, addcdiv and lerp, written out as the products and sums they are."""

from __future__ import annotations

import jax.numpy as jnp

from converters.registry import register


@register("aten.add.Tensor", "aten.add.Scalar")
def add(a, b, *, alpha=1):
    return a + (b if alpha == 1 else alpha * b)


@register("aten.sub.Tensor", "aten.sub.Scalar")
def sub(a, b, *, alpha=1):
    return a - (b if alpha == 1 else alpha * b)


@register("aten.rsub.Tensor", "aten.rsub.Scalar")
def rsub(a, b, *, alpha=1):
    return b - (a if alpha == 1 else alpha * a)


@register("aten.mul.Tensor", "aten.mul.Scalar")
def mul(a, b):
    return a * b


@register("aten.div.Tensor", "aten.div.Scalar")
def div(a, b):
    return jnp.true_divide(a, b)


@register("aten.div.Tensor_mode", "aten.div.Scalar_mode")
def div_mode(a, b, *, rounding_mode=None):
    if rounding_mode is None:
        return jnp.true_divide(a, b)
    if rounding_mode == "floor":
        return jnp.floor_divide(a, b)
    if rounding_mode == "trunc":
        return jnp.trunc(jnp.true_divide(a, b)).astype(jnp.result_type(a, b))
    raise ValueError(f"div: unknown rounding_mode {rounding_mode!r}")


@register("aten.neg")
def neg(a):
    return -a


@register("aten.addcmul")
def addcmul(x, tensor1, tensor2, *, value=1):
    """x + value * tensor1 * tensor2 (ConvNeXt-V2's GlobalResponseNorm, optimisers' moment updates)."""
    return x + value * tensor1 * tensor2


@register("aten.addcdiv")
def addcdiv(x, tensor1, tensor2, *, value=1):
    return x + value * jnp.true_divide(tensor1, tensor2)


@register("aten.lerp.Scalar")
def lerp_scalar(start, end, weight):
    # torch's two-sided formula, which is exact at both ends; the branch is on a Python number
    if abs(weight) < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1 - weight)


@register("aten.lerp.Tensor")
def lerp_tensor(start, end, weight):
    """start + weight * (end - start). torch picks the form per element by |weight| < 0.5, which differs by a
    rounding only; one form keeps an input-dependent weight a plain product for DeepLIFT (no selection on it)."""
    return start + weight * (end - start)
