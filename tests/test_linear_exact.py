"""DeepSHAP on a linear model is exact: phi = (x - E[background]) * w, the exact Shapley values."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import torch

import xshap


def test_torch_linear_model_gives_exact_shapley_values():
    torch.manual_seed(1)
    model = torch.nn.Linear(7, 3).eval()
    background = torch.randn(20, 7)
    X = torch.randn(9, 7) * 3
    values = xshap.DeepExplainer(model, background).shap_values(X)  # (9, 7, 3)
    w = model.weight.detach().numpy()  # (3, 7)
    exact = (X.numpy() - background.numpy().mean(axis=0))[:, :, None] * w.T[None]
    np.testing.assert_allclose(values, exact, rtol=1e-5, atol=1e-5)


def test_jax_linear_function_gives_exact_shapley_values():
    rng = np.random.default_rng(2)
    w, b = rng.normal(size=(5, 2)).astype(np.float32), rng.normal(size=2).astype(np.float32)
    background = rng.normal(size=(30, 5)).astype(np.float32)
    X = rng.normal(size=(4, 5)).astype(np.float32)

    def model(x):
        return jnp.dot(x, w) + b

    values = xshap.DeepExplainer(model, background).shap_values(X)
    exact = (X - background.mean(axis=0))[:, :, None] * w[None]
    np.testing.assert_allclose(values, exact, rtol=1e-5, atol=1e-5)
