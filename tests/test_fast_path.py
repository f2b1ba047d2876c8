"""The explainer's fast path (vmapped pairs, one VJP per output, padded chunks, sharding) equals the plain
definition phi_o(x) = mean_r (x - r) * m_o(x, r), computed one pair and one output at a time."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch

import xshap


def _plain_deepshap(explainer: xshap.DeepExplainer, X: np.ndarray) -> np.ndarray:
    """(N, n_out, *row): one jax.grad per (row, background row, output), no vmap, no chunks."""
    deeplift, params = explainer._deeplift, explainer.model.params
    background = np.asarray(explainer.background[0])
    values = np.zeros((len(X), explainer.n_outputs, *X.shape[1:]), np.float64)
    for i, x in enumerate(X):
        for r in background:
            for o in range(explainer.n_outputs):
                grad = jax.grad(lambda row, r=r, o=o: deeplift.paired(params, (row,), (jnp.asarray(r),))[o])(
                    jnp.asarray(x)
                )
                values[i, o] += np.asarray((x - r) * grad, np.float64) / len(background)
    return values


def test_fast_path_equals_the_plain_definition():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv1d(2, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool1d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(12, 6),
        torch.nn.Softmax(dim=1),
        torch.nn.Linear(6, 3),
    ).eval()
    background, X = torch.randn(4, 2, 6), 2 * torch.randn(5, 2, 6)
    explainer = xshap.DeepExplainer(model, background, batch_size=2)  # 3 chunks, the last one padded
    fast = explainer.explain(X).values[0]
    plain = _plain_deepshap(explainer, X.numpy())
    assert np.max(np.abs(fast - plain)) <= 1e-6 * np.max(np.abs(plain))
