"""The convolutions computed another way than ``lax.conv_general_dilated`` (converters/ops/conv_patches.py), and
eval-mode BatchNorm folded into the convolution before it (converters/fold.py): the same values and gradients as
lax's convolution or torch's forward, and no folding where it would not be exact.

The patch and depthwise forms are checked in JAX alone (no export): values and input gradients against lax's
convolution over strides, paddings (negative too), dilations and a transposed convolution's base dilation. The
folding is checked through the converter on models whose BatchNorms have non-trivial running statistics and
affine parameters, against torch's forward (node by node: the conversion check).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch import nn

import converters
from converters.fold import foldable_pairs
from converters.graph import GraphFunction
from converters.ops.conv_patches import depthwise_convolution, needs_patches, patch_convolution


def _lax(x, w, strides, pads, base, window, groups=1):
    n = len(strides)
    spatial = "DHW"[-n:]
    numbers = (f"NC{spatial}", f"OI{spatial}", f"NC{spatial}")
    return jax.lax.conv_general_dilated(x, w, strides, pads, base, window, numbers, feature_group_count=groups)


# (input spatial, kernel, strides, pads, base dilation, window dilation)
PATCH_CASES = [
    ((2, 2), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), (1, 1)),  # ResNet-18's last stage at 64x64
    ((4, 4), (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), (1, 1)),  # strided: output smaller than the kernel
    ((3, 5), (3, 2), (2, 2), ((2, -1), (1, 1)), (2, 1), (2, 1)),  # uneven and negative pads, both dilations
]


@pytest.mark.parametrize("case", PATCH_CASES, ids=[str(c[0]) + str(c[1]) for c in PATCH_CASES])
def test_patch_convolution_matches_lax(case):
    sizes, kernel, strides, pads, base, window = case
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((3, 5, *sizes)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((4, 5, *kernel)), jnp.float32)
    _same_values_and_gradients(
        lambda v: _lax(v, w, strides, pads, base, window),
        lambda v: patch_convolution(v, w, strides, pads, base, window),
        x,
    )


def _same_values_and_gradients(reference, rewritten, x):
    """Values and input gradients (a random cotangent) of two functions of ``x`` alike, each jitted once."""

    def both(fn):
        def run(v, cotangent):
            y, vjp = jax.vjp(fn, v)
            return y, vjp(cotangent)[0]

        return jax.jit(run)

    shape = jax.eval_shape(reference, x).shape
    cotangent = jnp.asarray(np.random.default_rng(2).standard_normal(shape), jnp.float32)
    expected, expected_grad = both(reference)(x, cotangent)
    got, got_grad = both(rewritten)(x, cotangent)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_grad, expected_grad, rtol=1e-5, atol=1e-5)


def test_needs_patches_only_where_xla_swaps():
    one = ((1, 1), (1, 1))
    assert needs_patches((2, 2), (3, 3), (1, 1), one, (1, 1), (1, 1), 1)  # kernel larger than the input
    assert needs_patches((4, 4), (3, 3), (2, 2), one, (1, 1), (1, 1), 1)  # its gradient's convolution is
    assert not needs_patches((16, 16), (3, 3), (1, 1), one, (1, 1), (1, 1), 1)
    assert not needs_patches((2, 2), (1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1), (1, 1), 1)  # 1x1: a matmul
    assert not needs_patches((2, 2), (3, 3), (1, 1), one, (1, 1), (1, 1), 2)  # grouped: not swapped


@pytest.mark.parametrize(
    "multiplier,strides,pads,window", [(1, (1, 1), ((1, 1), (1, 1)), (1, 1)), (2, (2, 1), ((2, 1), (0, 2)), (1, 2))]
)
def test_depthwise_convolution_matches_lax(multiplier, strides, pads, window):
    rng = np.random.default_rng(1)
    groups = 6
    x = jnp.asarray(rng.standard_normal((2, groups, 7, 6)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((groups * multiplier, 1, 3, 3)), jnp.float32)
    base = (1, 1)
    _same_values_and_gradients(
        lambda v: _lax(v, w, strides, pads, base, window, groups),
        lambda v: depthwise_convolution(v, w, strides, pads, base, window),
        x,
    )


# -- BatchNorm folding ----------------------------------------------------------------------------------------
def _randomized(bn: nn.BatchNorm2d, seed: int) -> nn.BatchNorm2d:
    """Running statistics and affine parameters far from a fresh BatchNorm's identity."""
    generator = torch.Generator().manual_seed(seed)
    n = bn.num_features
    with torch.no_grad():
        if bn.track_running_stats:
            bn.running_mean.copy_(2.0 * torch.randn(n, generator=generator))
            bn.running_var.copy_(0.05 + 3.0 * torch.rand(n, generator=generator))
        if bn.affine:
            bn.weight.copy_(torch.randn(n, generator=generator))
            bn.bias.copy_(torch.randn(n, generator=generator))
    return bn


class Folds(nn.Module):
    """Conv-BN pairs that fold: biased and not, affine and not, strided, grouped, depthwise, a 7x7 stem, a 3x3
    on a 1x1 map (the patch form), and a BN with an odd eps."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 7, stride=2, padding=3, bias=False)
        self.bn0 = _randomized(nn.BatchNorm2d(8), 0)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.bn1 = _randomized(nn.BatchNorm2d(8, affine=False), 1)
        self.depthwise = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False)
        self.bn2 = _randomized(nn.BatchNorm2d(8, eps=1e-2), 2)
        self.small = nn.Conv2d(8, 4, 3, padding=1)
        self.bn3 = _randomized(nn.BatchNorm2d(4), 3)

    def forward(self, x):
        x = torch.relu(self.bn0(self.stem(x)))
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.depthwise(x)))  # 4x4 -> 2x2
        x = nn.functional.max_pool2d(x, 2)  # 1x1
        return self.bn3(self.small(x)).flatten(1)


class NoFolds(nn.Module):
    """BatchNorms that must not be folded: batch statistics (``track_running_stats=False``), a convolution whose
    output is also read by another op, a convolution whose weight is computed (not a lifted parameter), a
    BatchNorm that is not after a convolution."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.batch_stats = _randomized(nn.BatchNorm2d(4, track_running_stats=False), 4)
        self.shared = nn.Conv2d(4, 4, 3, padding=1)
        self.bn_shared = _randomized(nn.BatchNorm2d(4), 5)
        self.bn_dynamic = _randomized(nn.BatchNorm2d(4), 6)
        self.bn_plain = _randomized(nn.BatchNorm2d(4), 7)

    def forward(self, x):
        x = self.batch_stats(self.conv(x))
        y = self.shared(x)
        x = self.bn_shared(y) + y  # the convolution's output read twice
        x = self.bn_dynamic(nn.functional.conv2d(x, 2.0 * self.shared.weight, padding=1))  # a computed weight
        return self.bn_plain(x * 1.5).flatten(1)


def _torch(model, x):
    with torch.no_grad():
        return model(x).numpy()


def test_batch_norm_folded_exactly():
    model = Folds().eval()
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(8))
    converted = converters.from_torch(model, x)
    assert len(converted.graph.folded) == 4
    folded_ops = {converted.provenance[name].op for name in converted.graph.folded}
    assert folded_ops == {"aten._native_batch_norm_legit_no_training.default"}
    expected = _torch(model, x)
    got = np.asarray(jax.jit(converted.apply)(converted.params, jnp.asarray(x.numpy())))
    scale = np.abs(expected).max()
    assert np.abs(got - expected).max() <= 1e-5 * scale
    unfolded = GraphFunction(converted.capture, fold_batch_norm=False)
    assert not unfolded.folded and len(unfolded.steps) == len(converted.graph.steps) + 4
    report = converted.validate(x)
    assert report.ok and not report.rechecked, report

    # in float64 (as the float64 recheck and xshap's float64 twin run it), folded at float64's precision
    from xshap.explain.precision import precision

    with precision(True):
        params64 = {name: jnp.asarray(np.asarray(value), jnp.float64) for name, value in converted.params.items()}
        got64 = np.asarray(jax.jit(converted.apply)(params64, jnp.asarray(x.numpy(), jnp.float64)))
    with torch.no_grad():
        expected64 = model.double()(x.double()).numpy()
    model.float()
    assert np.abs(got64 - expected64).max() <= 1e-9 * np.abs(expected64).max()

    # a cut at a folded BatchNorm's input (the convolution's output) still exists: cuts use the exported graph
    from converters.interim import cut_at_layer

    cut = cut_at_layer(converted.graph, converted.provenance, "bn1")
    layer_input = jax.jit(cut.head)(converted.params, jnp.asarray(x[:1].numpy()))
    with torch.no_grad():
        expected_input = model.conv1(torch.relu(model.bn0(model.stem(x[:1])))).numpy()
    np.testing.assert_allclose(np.asarray(layer_input[0]), expected_input, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(jax.jit(cut.tail)(converted.params, *layer_input)), expected[:1], rtol=1e-4, atol=1e-5
    )


def test_batch_norm_not_folded_where_inexact():
    """On the graph itself: the converter refuses a model with batch statistics in eval mode before it runs."""
    from converters.export import capture

    model = NoFolds().eval()
    x = torch.randn(1, 3, 6, 6, generator=torch.Generator().manual_seed(9))
    captured = capture(model, [x])
    graph = GraphFunction(captured)
    assert graph.folded == {} and len(graph.steps) == len(graph.exported_steps)
    params = {
        name: jnp.asarray(t.detach().numpy()) for name, t in converters.export.weights_of(captured.program).items()
    }
    got = np.asarray(jax.jit(graph)(params, jnp.asarray(x.numpy())))
    np.testing.assert_allclose(got, _torch(model, x), rtol=1e-4, atol=1e-5)


class TrainModeBatchNorm(nn.Module):
    """A conv followed by a BatchNorm in training mode on copies of running statistics: batch statistics with
    running buffers given (``_native_batch_norm_legit``, not ``..._no_training``), and no state mutated."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = _randomized(nn.BatchNorm2d(4), 10)

    def forward(self, x):
        bn = self.bn
        mean, var = bn.running_mean.clone(), bn.running_var.clone()
        return nn.functional.batch_norm(self.conv(x), mean, var, bn.weight, bn.bias, training=True).flatten(1)


def test_train_mode_batch_norm_is_not_folded():
    from converters.export import capture

    model = TrainModeBatchNorm().eval()
    x = torch.randn(1, 3, 5, 5)
    captured = capture(model, [x])
    ops = {str(node.target) for node in captured.program.graph.nodes}
    assert "aten._native_batch_norm_legit_functional.default" in ops  # batch statistics, running buffers given
    weights = converters.export.weights_of(captured.program)
    assert foldable_pairs(captured.program.graph, set(captured.param_names), weights) == {}
