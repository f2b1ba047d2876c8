"""-inf in attention masks: equal infinities on the input and the reference differ by nothing.

A key-padding or causal mask puts -inf into the attention scores of the input and of every reference
alike. Differences of -inf - -inf must count as 0, not NaN, in every rule, or one masked score poisons
every attribution.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import xshap


def _assert_complete(values, outputs, expected):
    assert np.all(np.isfinite(values))
    gaps = values.reshape(values.shape[0], -1, values.shape[-1]).sum(axis=1) - (outputs - expected)
    assert np.all(np.abs(gaps) <= 1e-4 * np.maximum(1.0, np.maximum(np.abs(outputs), np.abs(expected)))), gaps


class PaddedAttention(torch.nn.Module):
    """Multi-head attention whose last two keys are padding (a boolean key_padding_mask -> -inf)."""

    def __init__(self, need_weights: bool):
        super().__init__()
        self.need_weights = need_weights
        self.project = torch.nn.Linear(4, 16)
        self.attention = torch.nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = torch.nn.Linear(16, 2)
        padding = torch.zeros(1, 6, dtype=torch.bool)
        padding[0, 4:] = True
        self.register_buffer("padding", padding)

    def forward(self, x):
        h = self.project(x)
        mask = self.padding.expand(x.shape[0], -1)
        attended, _ = self.attention(h, h, h, key_padding_mask=mask, need_weights=self.need_weights)
        return self.head(attended.mean(dim=1))


class MaskedEncoder(torch.nn.Module):
    """torch's TransformerEncoderLayer with a float causal mask full of -inf."""

    def __init__(self):
        super().__init__()
        self.project = torch.nn.Linear(4, 16)
        self.encoder = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.head = torch.nn.Linear(16, 2)
        self.register_buffer("causal", torch.nn.Transformer.generate_square_subsequent_mask(6))

    def forward(self, x):
        return self.head(self.encoder(self.project(x), src_mask=self.causal).mean(dim=1))


@pytest.mark.parametrize(
    "make",
    [lambda: PaddedAttention(True), lambda: PaddedAttention(False), MaskedEncoder],
    ids=["weights", "fast", "causal"],
)
def test_masked_attention_is_finite_and_complete(make):
    torch.manual_seed(0)
    model = make().eval()
    background, X = torch.randn(8, 6, 4), torch.randn(3, 6, 4)
    explainer = xshap.DeepExplainer(model, background)
    values = explainer.shap_values(X)
    outputs = model(X).detach().numpy()
    np.testing.assert_allclose(explainer.explain(X).outputs, outputs, rtol=1e-5, atol=1e-5)
    _assert_complete(values, outputs, model(background).detach().numpy().mean(axis=0))


def test_jax_masked_softmax_and_max_over_minus_infinity():
    keep = jnp.array([True, True, True, False, False])

    def model(x):
        scores = jnp.where(keep, x * x - x, -jnp.inf)
        weights = jax.nn.softmax(scores, axis=-1)
        return jnp.stack([(weights * x).sum(-1), scores.max(-1)], axis=-1)

    rng = np.random.default_rng(0)
    background = rng.normal(size=(8, 5)).astype(np.float32)
    X = rng.normal(size=(4, 5)).astype(np.float32)
    values = xshap.DeepExplainer(model, background).shap_values(X)
    _assert_complete(values, np.asarray(model(X)), np.asarray(model(background)).mean(axis=0))
    assert np.all(values[:, 3:] == 0)  # masked features reach no output
