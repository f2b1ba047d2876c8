"""Convolutions XLA:CPU runs 20-100x slower than torch, computed another way: small inputs as a matrix product of
patches, depthwise convolutions as a sum of shifted slices.

Small inputs. XLA's algebraic simplifier swaps the operands of an ungrouped convolution whose kernel has more
spatial elements than its input (``SwapConvolutionOperandsIfBeneficial``: a 3x3 kernel over a 2x2 feature map, as
in the last stage of a ResNet or DenseNet at 64x64). On a GPU the swap is switched off; on a CPU it is not, and
Eigen runs the swapped form (batch and features exchanged, the input as the window) very slowly: 1.4 s against
torch's 0.07 s for 32 rows of ResNet-18's 512-channel 3x3 convolutions at 2x2, and the same again for the
gradient, where the convolution of the cotangent with the reversed kernel is swapped too (it also is for a
strided convolution whose *output* is smaller than its kernel). No XLA flag turns the swap off on its own.
``needs_patches`` mirrors XLA's test, for a convolution and for the one JAX's transpose rule makes of it; where
either is swapped, ``patch_convolution`` computes the same sums as a ``dot_general`` of the zero-padded, dilated
input's patches (one strided slice per kernel offset, stacked) with the kernel as a (C_out, C_in, K) matrix.

Depthwise convolutions (one input channel per group: MobileNet, EfficientNet, ConvNeXt) run through Eigen's
grouped convolution at a fraction of a GFLOP/s; ``depthwise_convolution`` is a sum of K products of a strided
slice with a per-channel weight, which XLA fuses into one elementwise loop.

Both are exact up to float32 summation order, and every op in them is linear in the input (slices, pads,
products with a weight, sums), so DeepLIFT's multipliers are unchanged; the kernel, a weight, stays a constant
operand.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import jax.numpy as jnp
from jax import lax


def _swapped_by_xla(
    sizes: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[tuple[int, int]],
    base_dilation: Sequence[int],
    window_dilation: Sequence[int],
) -> bool:
    """XLA's ``SwapConvolutionOperandsIfBeneficial`` test for an ungrouped convolution (xla/service/
    conv_operand_swapper.cc): swapped when the kernel's spatial product exceeds the input's, not counting
    dimensions that are pure contractions (kernel as wide as the unpadded input) or group dimensions."""
    kernel_product = swapped_product = 1
    for size, k, stride, (low, high), base, window in zip(sizes, kernel, strides, pads, base_dilation, window_dilation):
        plain = low == 0 and high == 0 and window == 1
        group_dim = plain and base == k and stride == k - 1
        contraction = plain and size == k and base == 1 and stride == 1
        if group_dim or contraction:
            continue
        kernel_product *= k
        full_padding = size == 1 and stride == 1 and window == 1 and low == high == k - 1
        swapped_product *= k if full_padding else size
    return kernel_product > swapped_product


def _output_sizes(sizes, kernel, strides, pads, base_dilation, window_dilation) -> list[int]:
    out = []
    for size, k, stride, (low, high), base, window in zip(sizes, kernel, strides, pads, base_dilation, window_dilation):
        dilated = (size - 1) * base + 1 + low + high
        out.append(max(0, (dilated - ((k - 1) * window + 1)) // stride + 1))
    return out


def needs_patches(
    sizes: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[tuple[int, int]],
    base_dilation: Sequence[int],
    window_dilation: Sequence[int],
    groups: int,
) -> bool:
    """Whether XLA would swap this convolution's operands, or those of the convolution JAX's transpose rule makes
    for its gradient with respect to the input (its input: the cotangent, of the output's size, dilated by the
    strides; padded so that it covers the input again)."""
    if groups != 1 or math.prod(kernel) == 1:
        return False
    if _swapped_by_xla(sizes, kernel, strides, pads, base_dilation, window_dilation):
        return True
    out = _output_sizes(sizes, kernel, strides, pads, base_dilation, window_dilation)
    transposed_pads = []
    for size, k, stride, (low, _), base, window, o in zip(
        sizes, kernel, strides, pads, base_dilation, window_dilation, out
    ):
        dilated_kernel = (k - 1) * window + 1
        before = dilated_kernel - low - 1
        after = ((size - 1) * base + 1) + dilated_kernel - 1 - ((o - 1) * stride + 1) - before
        transposed_pads.append((before, after))
    return _swapped_by_xla(out, kernel, base_dilation, transposed_pads, strides, window_dilation)


def _padded(x, pads, base_dilation):
    """The input zero-padded (negative widths crop) and dilated by ``base_dilation`` (a transposed convolution)."""
    config = [(0, 0, 0), (0, 0, 0)] + [(lo, hi, b - 1) for (lo, hi), b in zip(pads, base_dilation)]
    return lax.pad(x, jnp.zeros((), x.dtype), config)


def _windows(padded, kernel, strides, window_dilation):
    """For each kernel offset (row-major), the strided slice of ``padded`` its output positions read: (N, C, *out)."""
    out = [
        max(0, (size - ((k - 1) * d + 1)) // s + 1)
        for size, k, s, d in zip(padded.shape[2:], kernel, strides, window_dilation)
    ]
    for offset in itertools.product(*(range(k) for k in kernel)):
        start = [o * d for o, d in zip(offset, window_dilation)]
        limit = [b + (size - 1) * s + 1 for b, size, s in zip(start, out, strides)]
        yield lax.slice(padded, (0, 0, *start), (*padded.shape[:2], *limit), (1, 1, *strides))


def patch_convolution(x, weight, strides, pads, base_dilation, window_dilation):
    """``lax.conv_general_dilated`` (NC*spatial inputs, OI*spatial kernel, one group) as patches @ kernel.

    The input is padded (and dilated, for a transposed convolution) by ``lax.pad``; each kernel offset's
    strided slice is one column block of the patch matrix."""
    padded = _padded(x, pads, base_dilation)
    columns = list(_windows(padded, weight.shape[2:], strides, window_dilation))
    patches = jnp.stack(columns, axis=2)  # (N, C_in, K, *out)
    matrix = jnp.reshape(weight.astype(x.dtype), weight.shape[:2] + (-1,))  # (C_out, C_in, K), offsets row-major
    y = lax.dot_general(patches, matrix, (((1, 2), (1, 2)), ((), ())))  # (N, *out, C_out)
    return jnp.moveaxis(y, -1, 1)


def is_depthwise(weight_shape: Sequence[int], groups: int) -> bool:
    """One input channel per group (C_in == groups), any number of output channels per group."""
    return groups > 1 and weight_shape[1] == 1 and weight_shape[0] % groups == 0


def depthwise_convolution(x, weight, strides, pads, base_dilation, window_dilation):
    """A depthwise convolution (``is_depthwise``) as a sum over kernel offsets of each offset's strided slice of
    the padded input times that offset's per-channel weight: elementwise work XLA fuses into one loop, where its
    grouped convolution runs 20-100x slower on a CPU (5x5 over 32 rows of 240 channels at 4x4: 45 ms against 2
    ms; the gradients likewise). Output channel o reads input channel o // (C_out / C_in), as torch's do."""
    groups = x.shape[1]
    multiplier = weight.shape[0] // groups
    padded = _padded(x, pads, base_dilation)
    if multiplier > 1:
        padded = jnp.repeat(padded, multiplier, axis=1)
    n = weight.ndim - 2
    taps = jnp.reshape(weight.astype(x.dtype), (weight.shape[0], -1))  # (C_out, K), offsets row-major
    y = None
    for k, window in enumerate(_windows(padded, weight.shape[2:], strides, window_dilation)):
        term = window * jnp.reshape(taps[:, k], (-1,) + (1,) * n)
        y = term if y is None else y + term
    return y
