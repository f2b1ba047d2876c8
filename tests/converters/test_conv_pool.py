"""Forward checks of convolutions and pooling: nn modules and torch.nn.functional, many argument combinations.

A conversion check costs an export and a compilation per op, so each case puts a group of related
configurations side by side in one model (a branch each, which saves exports); ``validate`` still checks every
branch's nodes on their own scale (max |diff| / max |torch| per node), indices exactly.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import converters
from tests.converters.helpers import assert_converts

# inputs: (rows, channels, *spatial), a few rows so that the batch-of-one graph is mapped over rows
SHAPES = {1: (3, 4, 13), 2: (3, 4, 9, 10), 3: (2, 4, 6, 7, 5)}


def _input(n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*SHAPES[n], generator=generator)


class Functional(nn.Module):
    """``fn(self, x)``, with weights for functional convolutions (groups=2 on 4 input channels)."""

    def __init__(self, fn, n: int):
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


class Branches(nn.Module):
    """Every branch applied to the input, outputs flattened and concatenated."""

    def __init__(self, branches: dict, n: int):
        super().__init__()
        self.branches = nn.ModuleDict(
            {
                name.replace(".", "_"): b if isinstance(b, nn.Module) else Functional(b, n)
                for name, b in branches.items()
            }
        )

    def forward(self, x):
        return torch.cat([branch(x).flatten(1) for branch in self.branches.values()], dim=1)


def _rowwise(fn):
    """``fn`` on unbatched (C, *spatial) rows, one at a time."""
    return lambda m, x: torch.stack([fn(m, row) for row in x])


# -- convolutions ----------------------------------------------------------------------------------------------

CONVS = {
    "conv1d": (
        1,
        lambda: {
            "dilation_groups": nn.Conv1d(4, 6, 3, dilation=2, groups=2),
            "same_even_dilated": nn.Conv1d(4, 6, 4, padding="same", dilation=3),
            "F.conv1d_same_groups": lambda m, x: F.conv1d(x, m.weight, m.bias, padding="same", groups=2),
        },
    ),
    "conv2d": (
        2,
        lambda: {
            "stride_pad": nn.Conv2d(4, 6, 3, stride=2, padding=1),
            "tuples": nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)),
            "groups_pad_dilation": nn.Conv2d(4, 8, 3, groups=2, padding=2, dilation=2),
            "same_even_dilated_groups": nn.Conv2d(4, 6, (4, 2), padding="same", dilation=(2, 3), groups=2),
            "valid_no_bias": nn.Conv2d(4, 6, 3, padding="valid", bias=False),
            "reflect": nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"),
        },
    ),
    "conv2d_functional": (
        2,
        lambda: {
            "F.conv2d": lambda m, x: F.conv2d(x, m.weight, m.bias, stride=2, padding=1, groups=2),
            "F.conv2d_unbatched": _rowwise(lambda m, row: F.conv2d(row, m.weight, m.bias, groups=2)),
            "torch.convolution": lambda m, x: torch.convolution(
                x, m.weight, m.bias, [1, 2], [1, 0], [1, 1], False, [0, 0], 2
            ),
        },
    ),
    "conv3d": (
        3,
        lambda: {
            "stride_pad_groups": nn.Conv3d(4, 6, (3, 2, 3), stride=(2, 1, 2), padding=(1, 0, 1), groups=2),
            "same_dilated": nn.Conv3d(4, 6, 3, padding="same", dilation=(1, 2, 1)),
            "transpose_stride_pad_outpad": nn.ConvTranspose3d(4, 6, 3, stride=2, padding=1, output_padding=(1, 0, 1)),
        },
    ),
    "conv_transpose1d": (
        1,
        lambda: {
            "all": nn.ConvTranspose1d(4, 6, 4, stride=3, padding=2, output_padding=1, groups=2, dilation=2),
            "F.conv_transpose1d": lambda m, x: F.conv_transpose1d(x, m.weight_t, stride=2, padding=1, output_padding=1),
        },
    ),
    "conv_transpose2d": (
        2,
        lambda: {
            "stride_pad_outpad": nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1),
            "tuples_groups_dilation": nn.ConvTranspose2d(
                4, 6, (3, 2), stride=(2, 3), padding=(2, 1), output_padding=(0, 1), groups=2, dilation=(2, 2)
            ),
            "large_padding_no_bias": nn.ConvTranspose2d(4, 6, 3, padding=3, bias=False),
            "torch.convolution_transposed": lambda m, x: torch.convolution(
                x, m.weight_t, None, [2, 2], [1, 1], [1, 1], True, [1, 0], 1
            ),
        },
    ),
}


@pytest.mark.parametrize("name", list(CONVS))
def test_convolutions(name):
    n, make = CONVS[name]
    torch.manual_seed(0)
    assert_converts(Branches(make(), n), _input(n))


# -- pooling ---------------------------------------------------------------------------------------------------

POOLS = {
    "max_pool1d": (
        1,
        lambda: {
            "stride_pad_ceil": nn.MaxPool1d(3, stride=2, padding=1, ceil_mode=True),
            "dilation": nn.MaxPool1d(3, stride=1, dilation=2),
            "indices_stride_pad_dilation_ceil": WithIndices(
                nn.MaxPool1d(3, stride=2, padding=1, dilation=2, ceil_mode=True, return_indices=True)
            ),
        },
    ),
    "max_pool2d": (
        2,
        lambda: {
            "tuples": nn.MaxPool2d((3, 2), stride=(2, 1), padding=(1, 0)),
            "dilation_ceil": nn.MaxPool2d(3, stride=2, padding=1, dilation=2, ceil_mode=True),
            "F.max_pool2d_no_stride": lambda m, x: F.max_pool2d(x, (2, 3)),
            "F.max_pool2d_unbatched": _rowwise(lambda m, row: F.max_pool2d(row, 3, stride=2, padding=1)),
        },
    ),
    "max_pool2d_with_indices": (
        2,
        lambda: {
            "tiling": WithIndices(nn.MaxPool2d(2, return_indices=True)),
            "pad_dilation_ceil": WithIndices(
                nn.MaxPool2d(3, stride=2, padding=1, dilation=2, ceil_mode=True, return_indices=True)
            ),
        },
    ),
    "max_pool3d": (
        3,
        lambda: {
            "stride_pad_ceil": nn.MaxPool3d(3, stride=2, padding=1, ceil_mode=True),
            "indices_pad": WithIndices(nn.MaxPool3d((2, 3, 2), stride=2, padding=1, return_indices=True)),
        },
    ),
    "avg_pool1d": (
        1,
        lambda: {
            "pad_exclude_ceil": nn.AvgPool1d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
            "pad_include_ceil": nn.AvgPool1d(4, stride=3, padding=2, ceil_mode=True),
        },
    ),
    "avg_pool2d": (
        2,
        lambda: {
            "pad_exclude": nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
            "ceil_include": nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True),
            "ceil_exclude_tuples": nn.AvgPool2d(
                (3, 2), stride=(2, 3), padding=(1, 1), ceil_mode=True, count_include_pad=False
            ),
            "divisor_override": nn.AvgPool2d(3, stride=2, padding=1, divisor_override=5),
            "F.avg_pool2d": lambda m, x: F.avg_pool2d(x, 2, ceil_mode=True, divisor_override=3),
        },
    ),
    "adaptive_1d": (
        1,
        lambda: {
            "avg_uneven": nn.AdaptiveAvgPool1d(5),
            "avg_larger": nn.AdaptiveAvgPool1d(17),
            "max_indices": WithIndices(nn.AdaptiveMaxPool1d(4, return_indices=True)),
        },
    ),
    "adaptive_avg_pool2d": (
        2,
        lambda: {
            "global": nn.AdaptiveAvgPool2d(1),
            "even": nn.AdaptiveAvgPool2d((3, 5)),
            "uneven": nn.AdaptiveAvgPool2d((4, 3)),
            "F.none": lambda m, x: F.adaptive_avg_pool2d(x, (None, 5)),
        },
    ),
    "adaptive_max_pool2d": (
        2,
        lambda: {
            "global": nn.AdaptiveMaxPool2d(1),
            "indices_even": WithIndices(nn.AdaptiveMaxPool2d((3, 2), return_indices=True)),
            "F.indices_uneven": lambda m, x: WithIndices(
                lambda h: F.adaptive_max_pool2d(h, (2, 3), return_indices=True)
            )(x),
        },
    ),
    "pool3d": (
        3,
        lambda: {
            "avg_pad_exclude_ceil": nn.AvgPool3d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
            "adaptive_avg_uneven": nn.AdaptiveAvgPool3d((4, 3, 2)),
            "adaptive_max_indices": WithIndices(nn.AdaptiveMaxPool3d((4, 1, 1), return_indices=True)),
        },
    ),
}


@pytest.mark.parametrize("name", list(POOLS))
def test_pooling(name):
    n, make = POOLS[name]
    assert_converts(Branches(make(), n), _input(n))


def test_small_cnn_and_primitives_for_deeplift():
    """Convolutions and poolings in a row, as a small CNN uses them. In its JAX function, kernels stay the
    second operand of conv_general_dilated; max pooling is reduce_window_max and average pooling
    reduce_window_sum, with no input-dependent selection; unused indices are not computed."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(4, 8, 3, padding="same"),
        nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1, groups=2),
        nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
        nn.AdaptiveMaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 3),
    )
    x = _input(2)
    converted = assert_converts(model, x)
    jaxpr = jax.make_jaxpr(lambda params, row: converted.graph(params, row[None]))(converted.params, np.asarray(x[0]))
    eqns = jaxpr.jaxpr.eqns
    names = [eqn.primitive.name for eqn in eqns]
    assert {"conv_general_dilated", "reduce_window_max", "reduce_window_sum"} <= set(names)
    assert "select_n" not in names and "argmax" not in names
    conv = eqns[names.index("conv_general_dilated")]
    assert conv.invars[1] in jaxpr.jaxpr.invars[: len(converted.params)]  # the weight itself


def test_max_pool_indices_ties_nan_and_inf():
    """Ties go to the first maximum, NaN to the last NaN, an all -inf window to its first real element
    (on the dilation grid). Same branches and shapes as above, so the compiled ops are reused."""
    x = _input(2)
    x[:, 0] = -float("inf")  # every window all -inf
    x[:, 1] = 0.0  # ties everywhere
    x[0, 1, 4:, 5:] = 1.0
    x[:, 2, 0:4:3, 1:6:2] = float("nan")  # several NaNs in some windows
    x[1, 2, 5, 5] = float("nan")
    _, make_max = POOLS["max_pool2d_with_indices"]
    _, make_adaptive = POOLS["adaptive_max_pool2d"]
    model = Branches({**make_max(), **make_adaptive()}, 2).eval()
    converted = converters.from_torch(model, x)
    np.testing.assert_array_equal(np.asarray(converted(x)), model(x).numpy())
    assert converted.validate(x).ok


class _LpPools(nn.Module):
    """LP pooling is exported through its parts (pow, avg_pool, sign, relu): no op of its own."""

    def forward(self, x):
        one = nn.functional.lp_pool1d(x, 2.0, 3, stride=2)
        two = nn.functional.lp_pool2d(x.unsqueeze(1), 3.0, 2)
        return torch.cat([one.flatten(1), two.flatten(1)], dim=1)


def test_lp_pooling_converts_through_its_parts():
    torch.manual_seed(0)
    assert_converts(_LpPools().eval(), torch.randn(3, 4, 8).abs() + 0.1)  # odd p of a negative mean is NaN in torch
