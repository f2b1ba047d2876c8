"""Acceptance tests on native Flax (nnx) models: a CNN and a transformer block, explained directly.

Every model is built with ``nnx.Rngs(0)`` and explained with ``xshap.DeepExplainer(model, background)``;
f(x) and E f are computed by calling the model itself, never taken from the explainer. Checked:
completeness of every output in float32 (1e-4 relative) and float64 (1e-9 relative), finite values (also
for explained rows equal to background rows), and exact values where the rules fix them: one Rescale per
elementwise unit (GELU, SiLU, ReLU) and exact Shapley values for an additive model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import xshap

N_BACKGROUND = 12
RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-9}
DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]

ACTIVATIONS = {
    "gelu_tanh": lambda z: jax.nn.gelu(z, approximate=True),
    "gelu_exact": lambda z: jax.nn.gelu(z, approximate=False),
    "silu": jax.nn.silu,
    "relu": nnx.relu,
}


def _x64(dtype):
    """The context in which a model of ``dtype`` is built and explained."""
    return jax.enable_x64(np.dtype(dtype) == np.float64)


def _data(shape, dtype, seed, n_explained=4):
    """(background, X): X's last row is a copy of background row 0 (no NaN from zero differences)."""
    rng = np.random.default_rng(seed)
    background = rng.normal(size=(N_BACKGROUND, *shape)).astype(dtype)
    X = (1.5 * rng.normal(size=(n_explained, *shape))).astype(dtype)
    X[-1] = background[0]
    return background, X


def _explain_and_check_complete(model, background, X, rtol=None):
    """shap_values of ``model`` with completeness and finiteness checked; returns (values, relative gaps,
    explainer)."""
    dtype = np.dtype(X.dtype)
    rtol = RTOL[dtype] if rtol is None else rtol
    explainer = xshap.DeepExplainer(model, background)
    values = explainer.shap_values(X, check_additivity=False)
    both = np.asarray(jax.jit(lambda rows: model(rows))(np.concatenate([X, background])))  # the model itself
    out, expected = both[: len(X)], both[len(X) :].mean(axis=0)
    n, n_out = out.shape
    assert values.shape == (*X.shape, n_out)
    assert values.dtype == dtype and out.dtype == dtype
    assert np.all(np.isfinite(values)), f"non-finite attributions at {np.argwhere(~np.isfinite(values))[:5]}"
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(expected))
    np.testing.assert_allclose(explainer.expected_value, expected, rtol=RTOL[dtype], atol=RTOL[dtype])
    gaps = values.reshape(n, -1, n_out).sum(axis=1) - (out - expected)
    scale = np.maximum(1.0, np.maximum(np.abs(out), np.abs(expected)))
    relative = np.abs(gaps) / scale
    assert np.all(relative <= rtol), (
        f"incomplete: max relative gap {relative.max():.3e} > {rtol:.0e} (row, output) "
        f"{np.unravel_index(relative.argmax(), relative.shape)}; gaps {gaps}"
    )
    return values, relative, explainer


# -- the CNN ---------------------------------------------------------------------------------------------
class ConvBlock(nnx.Module):
    """Conv followed by ReLU: an activation-bearing sub-module (called twice in the reuse variant)."""

    def __init__(self, channels, *, dtype, rngs):
        self.conv = nnx.Conv(channels, channels, (3, 3), padding="SAME", dtype=dtype, param_dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return nnx.relu(self.conv(x))


def _set_batch_norm_statistics(bn: nnx.BatchNorm, seed: int) -> None:
    """Non-trivial running statistics, scale (some negative) and bias, so BatchNorm is not the identity."""
    rng = np.random.default_rng(seed)
    size = bn.mean[...].shape
    dtype = bn.mean[...].dtype
    bn.mean[...] = jnp.asarray(0.5 * rng.normal(size=size), dtype)
    bn.var[...] = jnp.asarray(rng.uniform(0.3, 2.0, size=size), dtype)
    bn.scale[...] = jnp.asarray(rng.uniform(0.5, 1.5, size=size) * rng.choice([-1.0, 1.0], size=size), dtype)
    bn.bias[...] = jnp.asarray(0.3 * rng.normal(size=size), dtype)


class FlaxCNN(nnx.Module):
    """NHWC 8x8x3 -> Conv -> BatchNorm (eval) -> ReLU -> residual [Conv -> ReLU] -> max pool -> avg pool ->
    mean over H, W -> Linear(3). ``reuse``: the residual block (one Conv, one ReLU) is applied twice."""

    def __init__(self, *, dtype=jnp.float32, reuse=False, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=dtype, rngs=rngs)
        self.conv1 = nnx.Conv(3, 8, (3, 3), padding="SAME", **kw)
        self.bn = nnx.BatchNorm(8, use_running_average=True, **kw)
        self.block = ConvBlock(8, dtype=dtype, rngs=rngs)
        self.head = nnx.Linear(8, 3, **kw)
        self.reuse = reuse
        _set_batch_norm_statistics(self.bn, seed=1)

    def __call__(self, x):
        h = nnx.relu(self.bn(self.conv1(x)))
        h = h + self.block(h)
        if self.reuse:
            h = h + self.block(h)  # the same Conv and ReLU objects, a second call site
        h = nnx.max_pool(h, (3, 3), strides=(2, 2), padding="SAME")  # overlapping windows, -inf padding
        h = nnx.avg_pool(h, (2, 2), strides=(2, 2))
        return self.head(jnp.mean(h, axis=(1, 2)))


@pytest.mark.parametrize(
    "reuse, dtype",
    [
        pytest.param(False, np.float32, id="cnn-float32"),
        pytest.param(True, np.float32, id="cnn_reused_block-float32"),
        pytest.param(True, np.float64, id="cnn_reused_block-float64"),  # a superset of the plain CNN
    ],
)
def test_flax_cnn_is_complete_and_finite(reuse, dtype):
    with _x64(dtype):
        model = FlaxCNN(dtype=dtype, reuse=reuse, rngs=nnx.Rngs(0))
        background, X = _data((8, 8, 3), dtype, seed=10)
        _explain_and_check_complete(model, background, X)


class ConvBNReLU(nnx.Module):
    """Conv -> BatchNorm (eval) -> ReLU -> mean over H, W -> Linear: linear after its only nonlinearity."""

    def __init__(self, *, dtype, rngs):
        kw = dict(dtype=dtype, param_dtype=dtype, rngs=rngs)
        self.conv = nnx.Conv(3, 6, (3, 3), padding="SAME", **kw)
        self.bn = nnx.BatchNorm(6, use_running_average=True, **kw)
        self.head = nnx.Linear(6, 3, **kw)
        _set_batch_norm_statistics(self.bn, seed=2)

    def pre_activation(self, x):
        return self.bn(self.conv(x))

    def tail(self, h):
        return self.head(jnp.mean(h, axis=(1, 2)))

    def __call__(self, x):
        return self.tail(nnx.relu(self.pre_activation(x)))


def test_conv_batchnorm_relu_gets_exactly_one_rescale_per_unit():
    """phi = mean_r (x - r) * A^T (m * g): A the affine Conv+BN map, m = Delta relu / Delta z (relu' where
    Delta z = 0), g the gradient of the linear tail; computed with plain JAX autodiff, not xshap's rules."""
    with jax.enable_x64(True):
        model = ConvBNReLU(dtype=jnp.float64, rngs=nnx.Rngs(0))
        background, X = _data((6, 6, 3), np.float64, seed=11)
        values, _, _ = _explain_and_check_complete(model, background, X)

        @jax.jit
        def deeplift_by_hand(x, r):
            zx, zr = model.pre_activation(x), model.pre_activation(r)  # (N, H, W, C), (B, H, W, C)
            dz = zx[:, None] - zr[None]
            quotient = (nnx.relu(zx)[:, None] - nnx.relu(zr)[None]) / jnp.where(dz == 0, 1.0, dz)
            m = jnp.where(dz == 0, (zx[:, None] > 0).astype(dz.dtype), quotient)  # (N, B, H, W, C)
            g = jax.jacrev(lambda h: model.tail(h[None])[0])(jnp.zeros(zx.shape[1:], zx.dtype))  # (3, H, W, C)
            v = m[:, :, None] * g[None, None]  # (N, B, 3, H, W, C)
            _, pullback = jax.vjp(model.pre_activation, jnp.zeros((v[..., 0, 0, 0].size, *x.shape[1:]), x.dtype))
            (multiplier,) = pullback(v.reshape(-1, *zx.shape[1:]))  # A^T (m * g), per pair and output
            multiplier = multiplier.reshape(*v.shape[:3], *x.shape[1:])
            phi = ((x[:, None] - r[None])[:, :, None] * multiplier).mean(axis=1)  # (N, 3, H, W, C_in)
            return jnp.moveaxis(phi, 1, -1)

        expected = np.asarray(deeplift_by_hand(jnp.asarray(X), jnp.asarray(background)))
    assert np.max(np.abs(expected)) > 1e-3  # not vacuous
    np.testing.assert_allclose(values, expected, rtol=0, atol=1e-9 * 10 * max(1.0, np.max(np.abs(expected))))


# -- the transformer block -------------------------------------------------------------------------------
L, D = 6, 16


class MLP(nnx.Module):
    """Linear -> act (GELU / SiLU) -> Linear -> ReLU -> Linear."""

    def __init__(self, d, hidden, activation, *, dtype, rngs):
        kw = dict(dtype=dtype, param_dtype=dtype, rngs=rngs)
        self.fc1 = nnx.Linear(d, hidden, **kw)
        self.fc2 = nnx.Linear(hidden, hidden, **kw)
        self.fc3 = nnx.Linear(hidden, d, **kw)
        self.activation = ACTIVATIONS[activation]

    def __call__(self, x):
        return self.fc3(nnx.relu(self.fc2(self.activation(self.fc1(x)))))


class HandAttention(nnx.Module):
    """Single-head attention written out: q/k/v Linear, einsum scores, causal -inf mask, softmax, weights @ v."""

    def __init__(self, d, *, dtype, rngs):
        kw = dict(dtype=dtype, param_dtype=dtype, rngs=rngs)
        self.q, self.k, self.v, self.o = (nnx.Linear(d, d, **kw) for _ in range(4))

    def __call__(self, x):
        q, k, v = self.q(x), self.k(x), self.v(x)
        scores = jnp.einsum("bld,bmd->blm", q, k) / np.sqrt(x.shape[-1])
        causal = np.tril(np.ones((x.shape[1], x.shape[1]), bool))
        scores = jnp.where(causal, scores, -jnp.inf)
        weights = jax.nn.softmax(scores, axis=-1)
        return self.o(weights @ v)


class TransformerBlock(nnx.Module):
    """Pre-LN block on (L, D) tokens: x + attn(LN(x)), h + MLP(LN(h)), mean over tokens, Linear(2).
    ``reuse``: the same MLP (and LayerNorm) is applied twice."""

    def __init__(self, *, activation="gelu_tanh", attention="mha", reuse=False, dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=dtype, rngs=rngs)
        if attention == "mha":
            self.attn = nnx.MultiHeadAttention(num_heads=2, in_features=D, qkv_features=D, decode=False, **kw)
        else:
            self.attn = HandAttention(D, dtype=dtype, rngs=rngs)
        self.ln1 = nnx.LayerNorm(D, **kw)
        self.ln2 = nnx.LayerNorm(D, **kw)
        self.mlp = MLP(D, 24, activation, dtype=dtype, rngs=rngs)
        self.head = nnx.Linear(D, 2, **kw)
        self.reuse = reuse
        rng = np.random.default_rng(3)  # LayerNorm scale and bias away from their (1, 0) initial values
        for ln in (self.ln1, self.ln2):
            ln.scale[...] = jnp.asarray(rng.uniform(0.5, 1.5, size=D), dtype)
            ln.bias[...] = jnp.asarray(0.2 * rng.normal(size=D), dtype)

    def __call__(self, x):
        h = x + self.attn(self.ln1(x))
        h = h + self.mlp(self.ln2(h))
        if self.reuse:
            h = h + self.mlp(self.ln2(h))  # the same MLP object, a second call site
        return self.head(jnp.mean(h, axis=1))


F32, F64 = np.float32, np.float64
TRANSFORMERS = [
    pytest.param(dict(activation="gelu_exact"), F32, id="mha_gelu_exact-float32"),
    pytest.param(dict(activation="gelu_tanh", reuse=True), F32, id="mha_gelu_tanh_reused_mlp-float32"),
    pytest.param(dict(activation="silu", attention="hand"), F32, id="hand_causal_silu-float32"),
    # flax's MultiHeadAttention computes its softmax in float32 whatever the dtype (see the test below), so
    # the float64 block uses the hand-written attention, float64 throughout
    pytest.param(
        dict(activation="gelu_exact", attention="hand", reuse=True), F64, id="hand_causal_gelu_exact_reused_mlp-float64"
    ),
]


@pytest.mark.parametrize("config, dtype", TRANSFORMERS)
def test_flax_transformer_block_is_complete_and_finite(config, dtype):
    with _x64(dtype):
        model = TransformerBlock(dtype=dtype, rngs=nnx.Rngs(0), **config)
        background, X = _data((L, D), dtype, seed=20)
        _explain_and_check_complete(model, background, X)


def test_float64_multihead_attention_with_its_float32_softmax_is_not_reported_as_an_xshap_bug():
    """flax 0.12's dot-product attention casts the logits to float32 for the softmax even in a float64
    model (convert_element_type f64 -> f32 before reduce_max/exp/div, back to f64 after): gaps of float32
    size (~1e-8 relative here) are the model's precision, not an xshap error. The attributions must be as
    complete as that precision allows, and shap_values must not raise XShapIncompleteError ("a bug in
    xshap") over them."""
    with jax.enable_x64(True):
        model = TransformerBlock(dtype=jnp.float64, activation="gelu_exact", rngs=nnx.Rngs(0))
        background, X = _data((L, D), F64, seed=20)
        _, _, explainer = _explain_and_check_complete(model, background, X, rtol=1e-6)  # float32-size gaps
        values = explainer.shap_values(X)  # default check_additivity=True
        assert values.dtype == np.float64


def test_flax_transformer_with_an_all_zero_background_is_complete():
    """A zero background (shap's usual baseline) puts LayerNorm's variance at 0 on the reference, so its
    1/sqrt(var + eps) is ~1000 there and ~1 on the input. The bilinear split then gives attributions of
    ~500 that cancel to ~1: exact in float64, and in float32 complete up to the rounding of those terms,
    which xshap's tolerance counts (16 eps * sum|phi|) instead of calling it a bug."""
    model = TransformerBlock(activation="gelu_tanh", attention="hand", reuse=True, rngs=nnx.Rngs(0))
    _, X = _data((L, D), F32, seed=20)
    attribution = xshap.DeepExplainer(model, np.zeros((8, L, D), F32)).explain(X)  # raises if incomplete
    out = np.asarray(model(X))
    mass = np.abs(attribution.values[0]).reshape(len(X), 2, -1).sum(axis=2)
    assert np.all(np.isfinite(attribution.values[0]))
    assert np.max(mass) > 10 * np.max(np.abs(out))  # the cancelling terms are really there
    rounding = 16 * np.finfo(np.float32).eps * mass
    assert np.all(np.abs(attribution.gaps) <= 1e-4 * np.maximum(1.0, np.abs(out)) + rounding)
    with jax.enable_x64(True):
        model64 = TransformerBlock(
            activation="gelu_tanh", attention="hand", reuse=True, dtype=jnp.float64, rngs=nnx.Rngs(0)
        )
        _explain_and_check_complete(model64, np.zeros((8, L, D)), X.astype(np.float64))


class NormalisedTokens(nnx.Module):
    """Tokens L2-normalised (x / (||x|| + eps), as in cosine-similarity attention) -> Linear -> ReLU ->
    mean over tokens -> Linear(2)."""

    def __init__(self, *, rngs):
        self.mix = nnx.Linear(D, D, rngs=rngs)
        self.head = nnx.Linear(D, 2, rngs=rngs)

    def __call__(self, x):
        unit = x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + 1e-6)
        return self.head(jnp.mean(nnx.relu(self.mix(unit)), axis=1))


def test_zero_padding_token_in_input_and_background_gives_no_nan():
    """A token that is zero in every explained and background row (padding) puts sqrt at 0 on both sides:
    Delta z = 0 there, and the attributions must stay finite (0 for that token) and complete."""
    model = NormalisedTokens(rngs=nnx.Rngs(0))
    background, X = _data((L, D), F32, seed=50)
    background[:, 0], X[:, 0] = 0.0, 0.0
    values, _, _ = _explain_and_check_complete(model, background, X)
    np.testing.assert_array_equal(values[:, 0], 0.0)


GROUPS = ["gelu_tanh", "gelu_exact", "silu", "relu"]  # 6 hidden units each
HIDDEN = 6 * len(GROUPS)


def _grouped_activation(z):
    return jnp.concatenate([ACTIVATIONS[a](z[..., 6 * i : 6 * i + 6]) for i, a in enumerate(GROUPS)], axis=-1)


class TokenMLP(nnx.Module):
    """Per-token Linear -> [GELU tanh | GELU erf | SiLU | ReLU] on four groups of hidden units -> Linear, mean
    over tokens, Linear(2): one nonlinear layer, then linear."""

    def __init__(self, *, dtype, rngs):
        kw = dict(dtype=dtype, param_dtype=dtype, rngs=rngs)
        self.fc1 = nnx.Linear(D, HIDDEN, **kw)
        self.fc2 = nnx.Linear(HIDDEN, D, **kw)
        self.head = nnx.Linear(D, 2, **kw)

    def __call__(self, x):
        return self.head(jnp.mean(self.fc2(_grouped_activation(self.fc1(x))), axis=1))


def _as_float64(variable) -> np.ndarray:
    return np.asarray(variable[...], np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_token_mlp_activations_are_one_rescale_unit_each(dtype):
    """phi[l, i] = mean_r (x_li - r_li) sum_k W1[i, k] m_lk (W2 Wh)[k] / L with m = Delta act / Delta z:
    each activation, however many primitives it is made of, gets exactly one Rescale multiplier."""
    with _x64(dtype):
        model = TokenMLP(dtype=dtype, rngs=nnx.Rngs(0))
        background, X = _data((L, D), dtype, seed=30)
        values, _, _ = _explain_and_check_complete(model, background, X)

    w1, b1 = _as_float64(model.fc1.kernel), _as_float64(model.fc1.bias)
    tail = _as_float64(model.fc2.kernel) @ _as_float64(model.head.kernel) / L  # (HIDDEN, 2)
    with jax.enable_x64(True):
        zx = X.astype(np.float64) @ w1 + b1  # (N, L, HIDDEN)
        zr = background.astype(np.float64) @ w1 + b1  # (B, L, HIDDEN)
        dz = zx[:, None] - zr[None]
        slope = np.asarray(jax.jvp(_grouped_activation, (jnp.asarray(zx),), (jnp.ones_like(zx),))[1])
        quotient = (np.asarray(_grouped_activation(zx))[:, None] - np.asarray(_grouped_activation(zr))[None]) / (
            np.where(dz == 0, 1.0, dz)
        )
        m = np.where(dz == 0, slope[:, None], quotient)  # (N, B, L, HIDDEN)
    dx = X.astype(np.float64)[:, None] - background.astype(np.float64)[None]  # (N, B, L, D)
    expected = np.einsum("nbli,ik,nblk,ko->nlio", dx, w1, m, tail) / N_BACKGROUND
    atol = RTOL[np.dtype(dtype)] * 10 * max(1.0, np.max(np.abs(expected)))
    np.testing.assert_allclose(values, expected, rtol=0, atol=atol)


class AdditiveGelu(nnx.Module):
    """f(x) = head(mean_l gelu(a * x_l + b)): additive in the features, so its Shapley values are known."""

    def __init__(self, *, dtype, rngs):
        rng = np.random.default_rng(4)
        self.a = nnx.Param(jnp.asarray(rng.uniform(0.5, 2.0, size=D) * rng.choice([-1.0, 1.0], size=D), dtype))
        self.b = nnx.Param(jnp.asarray(0.5 * rng.normal(size=D), dtype))
        self.head = nnx.Linear(D, 2, dtype=dtype, param_dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return self.head(jnp.mean(jax.nn.gelu(x * self.a[...] + self.b[...], approximate=False), axis=1))


def test_additive_flax_model_gets_its_exact_shapley_values():
    """For an additive model, Shapley values against the background are (float64)
    phi[l, j, o] = Wh[j, o] / L * (gelu(a_j x_lj + b_j) - mean_r gelu(a_j r_lj + b_j))."""
    with jax.enable_x64(True):
        model = AdditiveGelu(dtype=jnp.float64, rngs=nnx.Rngs(0))
        background, X = _data((L, D), F64, seed=40)
        values, _, _ = _explain_and_check_complete(model, background, X)
    a, b, wh = _as_float64(model.a), _as_float64(model.b), _as_float64(model.head.kernel)
    with jax.enable_x64(True):
        gx = np.asarray(jax.nn.gelu(jnp.asarray(X, jnp.float64) * a + b, approximate=False))
        gr = np.asarray(jax.nn.gelu(jnp.asarray(background, jnp.float64) * a + b, approximate=False))
    expected = (gx - gr.mean(axis=0))[..., None] * wh[None, None] / L  # (N, L, D, 2)
    assert np.max(np.abs(expected)) > 1e-3  # not vacuous
    np.testing.assert_allclose(values, expected, rtol=0, atol=1e-9 * max(1.0, np.max(np.abs(expected))))
