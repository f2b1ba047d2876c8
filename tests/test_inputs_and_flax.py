"""Several inputs, native Flax models, and torch/JAX agreement on the same weights."""

from __future__ import annotations

import jax
import numpy as np
import torch
from flax import nnx

import xshap


class TwoInputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(3, 4)
        self.b = torch.nn.Linear(5, 4)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x, y):
        return self.head(torch.relu(self.a(x)) * torch.sigmoid(self.b(y)))


def test_several_inputs_give_a_list_in_shap_layout_and_are_complete():
    torch.manual_seed(0)
    model = TwoInputs().eval()
    background = [torch.randn(12, 3), torch.randn(12, 5)]
    X = [torch.randn(4, 3), torch.randn(4, 5)]
    explainer = xshap.DeepExplainer(model, background)
    values = explainer.shap_values(X)
    assert isinstance(values, list) and [v.shape for v in values] == [(4, 3, 2), (4, 5, 2)]
    out = model(*X).detach().numpy()
    expected = model(*background).detach().numpy().mean(axis=0)
    gaps = values[0].sum(axis=1) + values[1].sum(axis=1) - (out - expected)
    assert np.max(np.abs(gaps)) <= 1e-4 * max(1.0, np.max(np.abs(out)))


class FlaxMLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(16, 32, rngs=rngs)
        self.l2 = nnx.Linear(32, 32, rngs=rngs)
        self.l3 = nnx.Linear(32, 1, rngs=rngs)

    def __call__(self, x):
        h = nnx.relu(self.l1(x))
        h = nnx.relu(self.l2(h))
        return self.l3(h)


def test_flax_model_is_explained_natively_and_equals_the_torch_twin():
    flax_model = FlaxMLP(nnx.Rngs(0))
    rng = np.random.default_rng(0)
    background = rng.normal(size=(20, 16)).astype(np.float32)
    X = rng.normal(size=(5, 16)).astype(np.float32) * 2

    flax_values = xshap.DeepExplainer(flax_model, background).shap_values(X)
    out = np.asarray(flax_model(X))
    expected = np.asarray(flax_model(background)).mean(axis=0)
    assert np.max(np.abs(flax_values.sum(axis=1) - (out - expected))) <= 1e-4 * max(1.0, np.max(np.abs(out)))

    twin = torch.nn.Sequential(
        torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1)
    ).eval()
    with torch.no_grad():
        for layer, source in zip([twin[0], twin[2], twin[4]], [flax_model.l1, flax_model.l2, flax_model.l3]):
            layer.weight.copy_(torch.from_numpy(np.asarray(source.kernel.value).T.copy()))
            layer.bias.copy_(torch.from_numpy(np.asarray(source.bias.value).copy()))
    torch_values = xshap.DeepExplainer(twin, torch.from_numpy(background)).shap_values(torch.from_numpy(X))
    np.testing.assert_allclose(torch_values, flax_values, rtol=1e-4, atol=1e-4 * np.max(np.abs(flax_values)))


def test_jitted_jax_function_works():
    w = np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2)

    @jax.jit
    def model(x):
        return jax.nn.softplus(x @ w)

    background = np.zeros((4, 3), np.float32)
    values = xshap.DeepExplainer(model, background).shap_values(np.ones((2, 3), np.float32))
    gaps = values.sum(axis=1) - (np.asarray(model(np.ones((2, 3), np.float32))) - np.asarray(model(background)).mean(0))
    assert np.max(np.abs(gaps)) < 1e-5
