"""Exact interventional Shapley values by brute force (<= 8 features): DeepSHAP equals them where it is known
to be exact (linear models, additive per-feature nets) and, as documented, not where features interact."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import xshap


def exact_shapley(f, x: np.ndarray, background: np.ndarray) -> np.ndarray:
    """phi_i = sum_S |S|!(n-|S|-1)!/n! [v(S + i) - v(S)], v(S) = mean_r f(x_S, r_rest): (N, n) for one output."""
    n_rows, n = x.shape
    weights = {k: math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n) for k in range(n)}
    values = {}
    for mask in itertools.product([False, True], repeat=n):
        chosen = np.array(mask)
        mixed = np.where(chosen[None, None, :], x[:, None, :], background[None, :, :])  # (N, B, n)
        values[mask] = f(mixed.reshape(-1, n)).reshape(n_rows, len(background)).mean(axis=1)
    phi = np.zeros((n_rows, n))
    for mask, v in values.items():
        for i in range(n):
            if not mask[i]:
                with_i = tuple(True if j == i else m for j, m in enumerate(mask))
                phi[:, i] += weights[sum(mask)] * (values[with_i] - v)
    return phi


def torch_f(model):
    def f(rows):
        with torch.no_grad():
            return model(torch.from_numpy(rows.astype(np.float64))).numpy()[:, 0]

    return f


class Additive(torch.nn.Module):
    """f(x) = sum_i g_i(x_i), each g_i its own little ReLU/Tanh net: no interactions."""

    def __init__(self, n: int, hidden: int = 5):
        super().__init__()
        self.inner = torch.nn.Conv1d(n, n * hidden, 1, groups=n)
        self.act = torch.nn.Tanh()
        self.mid = torch.nn.Conv1d(n * hidden, n * hidden, 1, groups=n)
        self.relu = torch.nn.ReLU()
        self.outer = torch.nn.Conv1d(n * hidden, n, 1, groups=n)

    def forward(self, x):
        h = self.relu(self.mid(self.act(self.inner(x[:, :, None]))))
        return self.outer(h)[:, :, 0].sum(dim=1, keepdim=True)


@pytest.fixture
def x64():
    import jax

    with jax.enable_x64(True):  # restored on exit: x64 is global JAX state
        yield


@pytest.mark.parametrize("n", [3, 6, 8])
def test_additive_nets_are_exact(n, x64):
    torch.manual_seed(n)
    model = Additive(n).double().eval()
    rng = np.random.default_rng(n)
    background, X = rng.normal(size=(7, n)), rng.normal(size=(4, n)) * 2
    exact = exact_shapley(torch_f(model), X, background)
    phi = xshap.DeepExplainer(model, background).shap_values(X)[..., 0]
    np.testing.assert_allclose(phi, exact, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("n", [4, 8])
def test_linear_models_are_exact(n, x64):
    torch.manual_seed(10 + n)
    model = torch.nn.Sequential(torch.nn.Linear(n, 5), torch.nn.Linear(5, 1)).double().eval()
    rng = np.random.default_rng(n)
    background, X = rng.normal(size=(6, n)), rng.normal(size=(3, n))
    exact = exact_shapley(torch_f(model), X, background)
    np.testing.assert_allclose(
        xshap.DeepExplainer(model, background).shap_values(X)[..., 0], exact, rtol=1e-9, atol=1e-9
    )


def test_interactions_are_not_exact_documented_example(x64):
    """relu(x1 + x2) at x = (2, -1) against 0: Shapley gives (1.5, -0.5), DeepLIFT's Rescale (2, -1). Both add
    up to f(x) - f(r) = 1: DeepSHAP is complete, but it is not the Shapley value once features interact."""

    class Sum(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(2, 1, bias=False)
            self.fc.weight.data = torch.ones(1, 2, dtype=torch.float64)
            self.relu = torch.nn.ReLU()

        def forward(self, x):
            return self.relu(self.fc(x))

    model = Sum().double().eval()
    x, r = np.array([[2.0, -1.0]]), np.zeros((1, 2))
    np.testing.assert_allclose(exact_shapley(torch_f(model), x, r), [[1.5, -0.5]])
    np.testing.assert_allclose(xshap.DeepLift(model, r).shap_values(x)[..., 0], [[2.0, -1.0]])


def test_random_interacting_nets_are_complete_but_not_exact(x64):
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1)).double().eval()
    rng = np.random.default_rng(3)
    background, X = rng.normal(size=(5, 6)), rng.normal(size=(4, 6))
    exact = exact_shapley(torch_f(model), X, background)
    phi = xshap.DeepExplainer(model, background).shap_values(X)[..., 0]
    np.testing.assert_allclose(phi.sum(axis=1), exact.sum(axis=1), rtol=1e-9)  # both complete
    assert np.max(np.abs(phi - exact)) > 1e-3  # but different: DeepSHAP approximates Shapley here
