"""Convolutions: conv1d/2d/3d, their transposes and aten.convolution, all as one lax.conv_general_dilated.

Torch tensors are channels-first (N, C, *spatial) with kernels (C_out, C_in / groups, *k), and transposed
kernels (C_in, C_out / groups, *k). The kernel, a weight, stays the second operand of the convolution.
A convolution whose input (or output) is smaller than its kernel is computed as a matrix product of patches
instead, and a depthwise convolution as a sum of shifted slices (``converters.ops.conv_patches``): XLA:CPU runs
both 20-100x slower than torch as ``lax.conv_general_dilated``.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from converters.ops.conv_patches import depthwise_convolution, is_depthwise, needs_patches, patch_convolution
from converters.registry import register

_SPATIAL = "DHW"


def _tuple(value, n: int, name: str) -> tuple[int, ...]:
    """torch's int-or-list arguments as an n-tuple (a single value is repeated)."""
    if isinstance(value, int):
        return (value,) * n
    value = tuple(int(v) for v in value)
    if len(value) == 1:
        return value * n
    if len(value) != n:
        raise ValueError(f"convolution: {name} {list(value)} does not fit {n} spatial dimension(s)")
    return value


def _dimension_numbers(n: int) -> tuple[str, str, str]:
    spatial = _SPATIAL[-n:]
    return f"NC{spatial}", f"OI{spatial}", f"NC{spatial}"


def _batched(x, n: int):
    """Torch also accepts unbatched (C, *spatial) inputs; give them a batch axis of one."""
    if x.ndim == n + 2:
        return x, False
    if x.ndim == n + 1:
        return x[None], True
    raise ValueError(f"convolution: expected a {n + 1}-D or {n + 2}-D input, got shape {tuple(x.shape)}")


def _add_bias(y, bias, n: int):
    if bias is None:
        return y
    return y + jnp.reshape(bias, (-1,) + (1,) * n).astype(y.dtype)


def _padding(padding, kernel, dilation, n: int) -> list[tuple[int, int]]:
    if isinstance(padding, str):
        if padding == "valid":
            return [(0, 0)] * n
        if padding == "same":
            # torch pads d * (k - 1) in total, the odd one out on the right
            total = [d * (k - 1) for k, d in zip(kernel, dilation)]
            return [(t // 2, t - t // 2) for t in total]
        raise ValueError(f"convolution: unknown padding {padding!r}")
    return [(p, p) for p in _tuple(padding, n, "padding")]


def _convolve(x, weight, strides, pads, lhs_dilation, rhs_dilation, groups: int):
    """One convolution of a batched NC* input with an OI* kernel: lax's; or, where XLA:CPU is slow, patches @ kernel
    (it would swap lax's operands) or a sum of shifted slices (a depthwise convolution): see
    ``converters.ops.conv_patches``."""
    weight = weight.astype(x.dtype)
    if is_depthwise(weight.shape, groups) and x.shape[1] == groups:
        return depthwise_convolution(x, weight, strides, pads, lhs_dilation, rhs_dilation)
    if needs_patches(x.shape[2:], weight.shape[2:], strides, pads, lhs_dilation, rhs_dilation, groups):
        return patch_convolution(x, weight, strides, pads, lhs_dilation, rhs_dilation)
    return lax.conv_general_dilated(
        x,
        weight,
        window_strides=strides,
        padding=pads,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=_dimension_numbers(len(strides)),
        feature_group_count=groups,
    )


def _conv(x, weight, bias, stride, padding, dilation, groups):
    n = weight.ndim - 2
    x, unbatched = _batched(x, n)
    stride = _tuple(stride, n, "stride")
    dilation = _tuple(dilation, n, "dilation")
    pads = _padding(padding, weight.shape[2:], dilation, n)
    y = _convolve(x, weight, stride, pads, (1,) * n, dilation, int(groups))
    y = _add_bias(y, bias, n)
    return y[0] if unbatched else y


def _conv_transpose(x, weight, bias, stride, padding, output_padding, groups, dilation):
    """The gradient of a convolution: dilate the input by the stride and convolve with the flipped kernel."""
    n = weight.ndim - 2
    x, unbatched = _batched(x, n)
    groups = int(groups)
    stride = _tuple(stride, n, "stride")
    padding = _tuple(padding, n, "padding")
    output_padding = _tuple(output_padding, n, "output_padding")
    dilation = _tuple(dilation, n, "dilation")
    kernel = weight.shape[2:]
    c_in, c_out_per_group = weight.shape[0], weight.shape[1]
    # (C_in, C_out/g, *k) -> (C_out, C_in/g, *k), spatially flipped
    w = jnp.reshape(weight, (groups, c_in // groups, c_out_per_group) + kernel)
    w = jnp.swapaxes(w, 1, 2)
    w = jnp.reshape(w, (groups * c_out_per_group, c_in // groups) + kernel)
    w = jnp.flip(w, axis=tuple(range(2, 2 + n)))
    pads = [(d * (k - 1) - p, d * (k - 1) - p + op) for k, d, p, op in zip(kernel, dilation, padding, output_padding)]
    y = _convolve(x, w, (1,) * n, pads, stride, dilation, groups)
    y = _add_bias(y, bias, n)
    return y[0] if unbatched else y


@register(
    "aten.conv1d.default",
    "aten.conv2d.default",
    "aten.conv3d.default",
    "aten.conv1d.padding",
    "aten.conv2d.padding",
    "aten.conv3d.padding",
)
def conv(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    # the .padding overloads take padding as a string ("valid" when left out), the .default ones as ints
    return _conv(x, weight, bias, stride, padding, dilation, groups)


@register(
    "aten.conv_transpose1d.default",
    "aten.conv_transpose2d.input",
    "aten.conv_transpose3d.input",
)
def conv_transpose(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    return _conv_transpose(x, weight, bias, stride, padding, output_padding, groups, dilation)


@register("aten.convolution.default", "aten._convolution.default")
def convolution(x, weight, bias, stride, padding, dilation, transposed, output_padding, groups, *flags):
    # aten._convolution adds benchmark/deterministic/cudnn flags after groups; they do not change the result
    if transposed:
        return _conv_transpose(x, weight, bias, stride, padding, output_padding, groups, dilation)
    return _conv(x, weight, bias, stride, padding, dilation, groups)
