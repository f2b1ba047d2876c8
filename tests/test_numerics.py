"""No NaN/Inf from 0/0 anywhere, and the Rescale threshold scales with the dtype (issue 6)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import xshap
from xshap.engine.rules.rescale import rescale
from xshap.engine.rules.threshold import unresolved


def _net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 8),
        torch.nn.Sigmoid(),
        torch.nn.Linear(8, 8),
        torch.nn.ELU(),
        torch.nn.Linear(8, 3),
        torch.nn.Softmax(dim=1),
    ).eval()


def _finite_and_complete(model, background, X):
    attribution = xshap.DeepExplainer(model, background).explain(X)  # raises if incomplete
    assert all(np.all(np.isfinite(v)) for v in attribution.values)
    assert np.all(np.abs(attribution.gaps) <= attribution.tolerance)
    return attribution


def test_inputs_equal_to_background_rows_and_duplicates():
    g = torch.Generator().manual_seed(0)
    background = torch.randn(6, 6, generator=g)
    background = torch.cat([background, background[:2]])  # duplicated background rows
    X = torch.cat([background[:3], background[:1], torch.randn(2, 6, generator=g)])  # rows equal to background rows
    attribution = _finite_and_complete(_net(), background, X)
    np.testing.assert_array_equal(attribution.values[0][0], attribution.values[0][3])  # duplicates: same values
    # one input equal to the whole background: nothing changes, every attribution is exactly 0
    constant = torch.zeros(4, 6)
    flat = _finite_and_complete(_net(), constant, constant[:2])
    assert np.all(flat.values[0] == 0)


def test_saturated_sigmoids_and_huge_logits():
    g = torch.Generator().manual_seed(1)
    background = torch.randn(5, 6, generator=g) * 1e3  # every sigmoid at 0 or 1
    X = torch.randn(3, 6, generator=g) * 1e3
    _finite_and_complete(_net(1), background, X)
    torch.manual_seed(2)
    logits = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Softmax(dim=1)).eval()
    with torch.no_grad():
        logits[0].weight.mul_(1e4)  # logits of ~1e4: softmax one-hot
    _finite_and_complete(logits, background / 1e3, X / 1e3)


def test_threshold_scales_with_the_dtype():
    z, zr = 1.0, 1.0 + 1e-5
    assert bool(unresolved(jnp.float32(zr - z), jnp.float32(z), jnp.float32(zr)))  # below sqrt(eps32) * 3
    with jax.enable_x64(True):
        assert not bool(unresolved(jnp.float64(zr - z), jnp.float64(z), jnp.float64(zr)))  # far above sqrt(eps64) * 3


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rescale_multiplier_is_continuous_across_the_threshold(dtype):
    """Just below the threshold the derivative is used, just above the quotient: both close to f'(z)."""
    with jax.enable_x64(dtype == "float64"):
        eps = float(np.finfo(dtype).eps)
        z = jnp.asarray(0.3, dtype=dtype)
        threshold = np.sqrt(eps) * (1 + 2 * 0.3)
        for delta in (0.5 * threshold, 2 * threshold):
            zr = z - jnp.asarray(delta, dtype=dtype)
            m = jax.grad(lambda zx, zr=zr: rescale(lambda u: (jnp.tanh(u),), zx, zr)[0])(z)
            assert np.isfinite(float(m))
            assert abs(float(m) - (1 - np.tanh(0.3) ** 2)) < 1e-2
