"""Forward checks of convolutions and pooling: nn modules and torch.nn.functional, many argument combinations."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from converters.export import capture
from converters.graph import GraphFunction
from tests.converters.helpers import assert_converts

# inputs: (rows, channels, *spatial), a few rows so that the batch-of-one graph is mapped over rows
SHAPES = {1: (3, 4, 13), 2: (3, 4, 9, 10), 3: (2, 4, 6, 7, 5)}


def _input(n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*SHAPES[n], generator=generator)


class Functional(nn.Module):
    """``fn(self, x)``, with a weight and a transposed-convolution weight for the functional calls."""

    def __init__(self, fn, n: int = 2):
        super().__init__()
        generator = torch.Generator().manual_seed(1)
        self.fn = fn
        self.weight = nn.Parameter(torch.randn(6, 2, *(3,) * n, generator=generator))
        self.weight_t = nn.Parameter(torch.randn(4, 3, *(3,) * n, generator=generator))
        self.bias = nn.Parameter(torch.randn(6, generator=generator))

    def forward(self, x):
        return self.fn(self, x)


class WithIndices(nn.Module):
    """A pooling that returns (values, indices): both, flattened side by side, indices as floats."""

    def __init__(self, pool):
        super().__init__()
        self.pool = pool

    def forward(self, x):
        values, indices = self.pool(x)
        return torch.cat([values.flatten(1), indices.flatten(1).to(values.dtype)], dim=1)


# -- convolutions ----------------------------------------------------------------------------------------------

CONVS = {
    "conv1d_stride_pad": (1, lambda: nn.Conv1d(4, 6, 3, stride=2, padding=1)),
    "conv1d_dilation_groups": (1, lambda: nn.Conv1d(4, 6, 3, dilation=2, groups=2)),
    "conv1d_same_even": (1, lambda: nn.Conv1d(4, 6, 4, padding="same", dilation=3)),
    "conv1d_valid_nobias": (1, lambda: nn.Conv1d(4, 6, 5, padding="valid", bias=False)),
    "conv2d_stride_pad": (2, lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1)),
    "conv2d_tuples": (2, lambda: nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2))),
    "conv2d_groups": (2, lambda: nn.Conv2d(4, 8, 3, groups=2, padding=2, dilation=2)),
    "conv2d_depthwise": (2, lambda: nn.Conv2d(4, 4, 3, groups=4, padding=1, bias=False)),
    "conv2d_same_even_dilated": (2, lambda: nn.Conv2d(4, 6, (4, 2), padding="same", dilation=(2, 3), groups=2)),
    "conv2d_valid": (2, lambda: nn.Conv2d(4, 6, 3, padding="valid")),
    "conv2d_reflect": (2, lambda: nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect")),
    "conv3d_stride_pad_groups": (3, lambda: nn.Conv3d(4, 6, (3, 2, 3), stride=(2, 1, 2), padding=(1, 0, 1), groups=2)),
    "conv3d_same": (3, lambda: nn.Conv3d(4, 6, 3, padding="same", dilation=(1, 2, 1))),
    "conv_transpose1d_all": (
        1,
        lambda: nn.ConvTranspose1d(4, 6, 4, stride=3, padding=2, output_padding=1, groups=2, dilation=2),
    ),
    "conv_transpose2d_stride_pad_outpad": (
        2,
        lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1),
    ),
    "conv_transpose2d_tuples_groups_dilation": (
        2,
        lambda: nn.ConvTranspose2d(
            4, 6, (3, 2), stride=(2, 3), padding=(2, 1), output_padding=(0, 1), groups=2, dilation=(2, 2)
        ),
    ),
    "conv_transpose2d_large_padding": (2, lambda: nn.ConvTranspose2d(4, 6, 3, padding=3, bias=False)),
    "conv_transpose3d": (3, lambda: nn.ConvTranspose3d(4, 6, 3, stride=2, padding=1, output_padding=(1, 0, 1))),
}


@pytest.mark.parametrize("name", list(CONVS))
def test_conv_modules(name):
    n, make = CONVS[name]
    torch.manual_seed(0)
    assert_converts(make(), _input(n))


CONV_FUNCTIONS = {
    "F.conv1d_same": (1, lambda m, x: F.conv1d(x, m.weight, m.bias, padding="same", groups=2)),
    "F.conv2d": (2, lambda m, x: F.conv2d(x, m.weight, m.bias, stride=2, padding=1, groups=2)),
    "F.conv2d_valid_no_bias": (2, lambda m, x: F.conv2d(x, m.weight, padding="valid", dilation=2, groups=2)),
    "F.conv2d_unbatched": (2, lambda m, x: torch.stack([F.conv2d(row, m.weight, m.bias, groups=2) for row in x])),
    "F.conv_transpose2d": (
        2,
        lambda m, x: F.conv_transpose2d(x, m.weight_t, m.bias[:3], stride=2, padding=1, dilation=2),
    ),
    "torch.convolution": (
        2,
        lambda m, x: torch.convolution(x, m.weight, m.bias, [1, 2], [1, 0], [1, 1], False, [0, 0], 2),
    ),
    "torch.convolution_transposed": (
        2,
        lambda m, x: torch.convolution(x, m.weight_t, None, [2, 2], [1, 1], [1, 1], True, [1, 0], 1),
    ),
}


@pytest.mark.parametrize("name", list(CONV_FUNCTIONS))
def test_conv_functional(name):
    n, fn = CONV_FUNCTIONS[name]
    assert_converts(Functional(fn, n), _input(n))


# -- pooling ---------------------------------------------------------------------------------------------------

POOLS = {
    "max_pool1d_stride_pad_ceil": (1, lambda: nn.MaxPool1d(3, stride=2, padding=1, ceil_mode=True)),
    "max_pool2d_tuples": (2, lambda: nn.MaxPool2d((3, 2), stride=(2, 1), padding=(1, 0))),
    "max_pool2d_ceil": (2, lambda: nn.MaxPool2d(2, ceil_mode=True)),
    "max_pool2d_dilation_ceil": (2, lambda: nn.MaxPool2d(3, stride=2, padding=1, dilation=2, ceil_mode=True)),
    "max_pool3d_stride_pad_ceil": (3, lambda: nn.MaxPool3d(3, stride=2, padding=1, ceil_mode=True)),
    "max_pool2d_indices": (2, lambda: WithIndices(nn.MaxPool2d(2, return_indices=True))),
    "max_pool2d_indices_pad_dilation_ceil": (
        2,
        lambda: WithIndices(nn.MaxPool2d(3, stride=2, padding=1, dilation=2, ceil_mode=True, return_indices=True)),
    ),
    "max_pool3d_indices": (3, lambda: WithIndices(nn.MaxPool3d((2, 3, 2), stride=2, padding=1, return_indices=True))),
    "avg_pool1d_pad_exclude_ceil": (
        1,
        lambda: nn.AvgPool1d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    ),
    "avg_pool1d_pad_include_ceil": (1, lambda: nn.AvgPool1d(4, stride=3, padding=2, ceil_mode=True)),
    "avg_pool2d_pad_include": (2, lambda: nn.AvgPool2d(3, stride=2, padding=1)),
    "avg_pool2d_pad_exclude": (2, lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)),
    "avg_pool2d_ceil_include": (2, lambda: nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True)),
    "avg_pool2d_ceil_exclude": (
        2,
        lambda: nn.AvgPool2d((3, 2), stride=(2, 3), padding=(1, 1), ceil_mode=True, count_include_pad=False),
    ),
    "avg_pool2d_divisor_override": (2, lambda: nn.AvgPool2d(3, stride=2, padding=1, divisor_override=5)),
    "avg_pool3d": (3, lambda: nn.AvgPool3d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    "adaptive_avg_pool1d_uneven": (1, lambda: nn.AdaptiveAvgPool1d(5)),
    "adaptive_avg_pool1d_larger": (1, lambda: nn.AdaptiveAvgPool1d(17)),
    "adaptive_avg_pool2d_global": (2, lambda: nn.AdaptiveAvgPool2d(1)),
    "adaptive_avg_pool2d_even": (2, lambda: nn.AdaptiveAvgPool2d((3, 5))),
    "adaptive_avg_pool2d_uneven": (2, lambda: nn.AdaptiveAvgPool2d((4, 3))),
    "adaptive_avg_pool2d_none": (2, lambda: nn.AdaptiveAvgPool2d((None, 7))),
    "adaptive_avg_pool3d": (3, lambda: nn.AdaptiveAvgPool3d((4, 3, 2))),
    "adaptive_max_pool1d": (1, lambda: nn.AdaptiveMaxPool1d(5)),
    "adaptive_max_pool2d_even": (2, lambda: nn.AdaptiveMaxPool2d((3, 5))),
    "adaptive_max_pool2d_uneven": (2, lambda: nn.AdaptiveMaxPool2d((4, 3))),
    "adaptive_max_pool2d_indices_even": (2, lambda: WithIndices(nn.AdaptiveMaxPool2d((3, 2), return_indices=True))),
    "adaptive_max_pool2d_indices_uneven": (2, lambda: WithIndices(nn.AdaptiveMaxPool2d((4, 6), return_indices=True))),
    "adaptive_max_pool3d_indices": (3, lambda: WithIndices(nn.AdaptiveMaxPool3d((4, 3, 2), return_indices=True))),
}


@pytest.mark.parametrize("name", list(POOLS))
def test_pool_modules(name):
    n, make = POOLS[name]
    assert_converts(make(), _input(n))


POOL_FUNCTIONS = {
    "F.max_pool2d_no_stride": (2, lambda m, x: F.max_pool2d(x, (2, 3))),
    "F.max_pool2d_unbatched": (2, lambda m, x: torch.stack([F.max_pool2d(row, 3, stride=2, padding=1) for row in x])),
    "F.max_pool2d_indices": (2, lambda m, x: WithIndices(lambda h: F.max_pool2d(h, 3, 2, 1, return_indices=True))(x)),
    "F.max_pool3d": (3, lambda m, x: F.max_pool3d(x, 2, stride=1, dilation=(1, 2, 1))),
    "F.avg_pool2d": (2, lambda m, x: F.avg_pool2d(x, 2, ceil_mode=True, divisor_override=3)),
    "F.adaptive_avg_pool2d": (2, lambda m, x: F.adaptive_avg_pool2d(x, (5, 4))),
    "F.adaptive_max_pool2d_indices": (
        2,
        lambda m, x: WithIndices(lambda h: F.adaptive_max_pool2d(h, (5, 4), return_indices=True))(x),
    ),
}


@pytest.mark.parametrize("name", list(POOL_FUNCTIONS))
def test_pool_functional(name):
    n, fn = POOL_FUNCTIONS[name]
    assert_converts(Functional(fn, n), _input(n))


def test_conv_pool_stack():
    """Convolutions and poolings in a row, as a small CNN uses them."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(4, 8, 3, padding="same"),
        nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1, groups=2),
        nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
        nn.AdaptiveAvgPool2d((3, 3)),
        nn.Flatten(),
        nn.Linear(36, 3),
    )
    assert_converts(model, _input(2))


# -- what the DeepLIFT rules rely on, and torch's choice of index -----------------------------------------------


def test_primitives_for_deeplift():
    """Kernels stay the second operand of conv_general_dilated; max pooling is reduce_window_max and
    average pooling reduce_window_sum, neither selecting with an input-dependent mask."""
    model = nn.Sequential(nn.Conv2d(4, 4, 3), nn.MaxPool2d(2), nn.AvgPool2d(2, padding=1))
    x = _input(2)
    converted = assert_converts(model, x)
    jaxpr = jax.make_jaxpr(converted.row_function())(np.asarray(x[0]))
    names = [eqn.primitive.name for eqn in jaxpr.jaxpr.eqns]
    assert {"conv_general_dilated", "reduce_window_max", "reduce_window_sum"} <= set(names)
    assert "select_n" not in names and "argmax" not in names


def _graph_outputs(model, x):
    graph = GraphFunction(capture(model.eval(), [x]))
    return graph({}, np.asarray(x))


@pytest.mark.parametrize(
    "pool",
    [
        nn.MaxPool2d(2, stride=2, padding=1, return_indices=True),
        nn.MaxPool2d(2, stride=2, ceil_mode=True, return_indices=True),
        nn.AdaptiveMaxPool2d(3, return_indices=True),
    ],
    ids=["padded", "ceil", "adaptive"],
)
def test_max_pool_indices_ties_nan_and_inf(pool):
    """Ties go to the first maximum, NaN to the last NaN, an all -inf window to its first real element."""
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = float("nan")
    x[0, 0, 4, :] = x[0, 0, 3, 4] = -float("inf")
    x[0, 0, 2, 2] = x[0, 0, 2, 3] = 1.0
    values, indices = pool(x)
    jax_values, jax_indices = _graph_outputs(pool, x)
    np.testing.assert_array_equal(np.asarray(jax_values), values.numpy())
    np.testing.assert_array_equal(np.asarray(jax_indices), indices.numpy())
