"""DeepLIFT rules on native JAX functions: completeness, the exact multipliers, no NaN from 0/0."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xshap
from xshap.engine.transform import deeplift


def multipliers(fn, x, r):
    prepared = deeplift(fn, x)
    return np.asarray(jax.jacrev(lambda xx: prepared.paired((), [xx], [r]))(x))


UNARY = {
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "softplus": jax.nn.softplus,
    "elu": jax.nn.elu,
    "leaky_relu": lambda z: jax.nn.leaky_relu(z, 0.1),
    "gelu_tanh": jax.nn.gelu,
    "gelu_exact": lambda z: jax.nn.gelu(z, approximate=False),
    "silu": jax.nn.silu,
    "hard_tanh": jax.nn.hard_tanh,
    "composite": lambda z: jnp.where(z > 0, z**2, jnp.expm1(z)) + jnp.sin(z) * 0.1,
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_elementwise_function_is_one_rescale_unit(name):
    f = UNARY[name]
    x = jnp.array([1.5, -2.0, 0.3, 4.0, -0.7])
    r = jnp.array([-1.0, 0.5, 0.3, 1.0, -3.0])
    m = multipliers(lambda z: f(z), x, r)
    # the unit's multiplier is exactly Delta f / Delta z (derivative where Delta z = 0)
    expected_diag = np.where(
        np.abs(np.asarray(x - r)) > 0,
        (np.asarray(f(x)) - np.asarray(f(r))) / np.where(x == r, 1, np.asarray(x - r)),
        np.asarray(jax.vmap(jax.grad(f))(x)),
    )
    np.testing.assert_allclose(np.diag(m), expected_diag, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(m - np.diag(np.diag(m)), 0.0, atol=0)


def _complete(fn, x, r, rtol=1e-5):
    m = multipliers(fn, x, r)
    phi = (np.asarray(x) - np.asarray(r)) * m
    total = phi.reshape(phi.shape[0], -1).sum(axis=1) if phi.ndim > 1 else phi.sum()
    expected = np.asarray(fn(x)) - np.asarray(fn(r))
    np.testing.assert_allclose(total, expected, rtol=rtol, atol=rtol * max(1.0, np.max(np.abs(expected))))
    return m


def test_bilinear_product_is_the_two_player_shapley_split():
    x, r = jnp.array([2.0, 3.0]), jnp.array([-1.0, 0.5])
    m = multipliers(lambda z: (z[0] * z[1])[None], x, r)
    # m_a = (b + b_r) / 2, m_b = (a + a_r) / 2
    np.testing.assert_allclose(m[0], [(3.0 + 0.5) / 2, (2.0 - 1.0) / 2], rtol=1e-6)


def test_division_by_an_input_dependent_tensor_is_complete():
    _complete(
        lambda z: jnp.stack([z[0] / (z[1] ** 2 + 1), z[2] / z[1]]),
        jnp.array([1.0, 2.0, -3.0]),
        jnp.array([0.5, -1.0, 1.0]),
    )


def test_two_input_nonlinearity_is_complete():
    _complete(
        lambda z: jnp.maximum(jnp.tanh(z[:2]), z[2:]),
        jnp.array([1.0, -2.0, 0.3, 0.1]),
        jnp.array([-1.0, 0.5, 2.0, -0.4]),
    )


def test_mlp_with_mixed_activations_is_complete():
    rng = np.random.default_rng(0)
    w1, w2 = rng.normal(size=(6, 8)).astype(np.float32), rng.normal(size=(8, 3)).astype(np.float32)

    def net(z):
        h = jax.nn.gelu(z @ w1)
        g = jax.nn.sigmoid(z @ w1[:, ::-1])
        return jax.nn.softplus((h * g) @ w2) - jax.nn.elu(h @ w2)

    _complete(
        net, jnp.asarray(rng.normal(size=6), jnp.float32), jnp.asarray(rng.normal(size=6), jnp.float32), rtol=1e-4
    )


def test_input_equal_to_reference_gives_zero_and_no_nan():
    x = jnp.array([0.0, 1.0, -2.0])
    m = multipliers(lambda z: jnp.stack([jax.nn.relu(z).sum(), (jax.nn.sigmoid(z) * z).sum()]), x, x)
    assert np.all(np.isfinite(m))


def test_missing_rules_are_listed_together():
    def fn(z):
        return jnp.stack([jnp.sort(z)[0], jnp.cumprod(z)[-1]])

    with pytest.raises(xshap.NoRuleError) as caught:
        deeplift(fn, jnp.ones(3))
    assert "sort" in str(caught.value) and "cumprod" in str(caught.value)
    assert len(caught.value.problems) == 2


def test_explainer_on_a_jax_function_with_several_outputs_is_complete():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(4, 2)).astype(np.float32)

    def model(x):
        return jax.nn.relu(x @ w) * jnp.tanh(x[:, :2])

    background = rng.normal(size=(10, 4)).astype(np.float32)
    X = rng.normal(size=(6, 4)).astype(np.float32)
    explainer = xshap.DeepExplainer(model, background)
    values = explainer.shap_values(X)
    assert values.shape == (6, 4, 2) and explainer.expected_value.shape == (2,)
    gaps = values.sum(axis=1) - (np.asarray(model(X)) - np.asarray(model(background)).mean(axis=0))
    assert np.max(np.abs(gaps)) < 1e-4


def _random(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


MAX_LIKE = {
    "max_pool_2x2": lambda z: jax.lax.reduce_window(z, -jnp.inf, jax.lax.max, (1, 2, 2), (1, 2, 2), "VALID").ravel(),
    "max_pool_overlapping_padded": lambda z: jax.lax.reduce_window(
        jax.nn.relu(z), -jnp.inf, jax.lax.max, (1, 3, 3), (1, 2, 2), ((0, 0), (1, 1), (1, 1))
    ).ravel(),
    "max_and_min_over_axes": lambda z: jnp.concatenate([jnp.max(z, axis=(1, 2)), jnp.min(z, axis=2).ravel()]),
    "softmax": lambda z: jax.nn.softmax(z.ravel())[:6],
    "log_softmax_axis": lambda z: jax.nn.log_softmax(z, axis=1).ravel()[:6],
}


@pytest.mark.parametrize("name", sorted(MAX_LIKE))
def test_max_pooling_reductions_and_softmax_are_complete(name):
    _complete(MAX_LIKE[name], _random((2, 6, 6), 0), _random((2, 6, 6), 1))


def test_max_rule_routes_to_the_argmax_of_input_and_reference():
    x, r = jnp.array([3.0, 1.0, 0.0]), jnp.array([0.0, 2.0, 0.5])
    m = multipliers(lambda z: jnp.max(z)[None], x, r)
    # Delta y = 1: [max(3, 2) - 2] = 1 to x's argmax (index 0), [3 - max(3, 2)] = 0 to r's argmax (index 1)
    phi = (np.asarray(x) - np.asarray(r)) * m[0]
    np.testing.assert_allclose(phi, [1.0, 0.0, 0.0], atol=1e-6)


def test_scan_is_unrolled_and_gated_recurrence_is_complete():
    w, u = _random((3, 4), 2), _random((4, 4), 3) * 0.5

    def rnn(x):
        def step(h, x_t):
            gate = jax.nn.sigmoid(x_t @ w)
            h = gate * h + (1 - gate) * jnp.tanh(x_t @ w + h @ u)
            return h, h.sum()

        h, ys = jax.lax.scan(step, jnp.zeros(4), x)
        return jnp.concatenate([h, ys])

    _complete(rnn, _random((5, 3), 4), _random((5, 3), 5), rtol=1e-4)


# -- complex intermediates (FFT convolutions, spectra) ----------------------------------------------------------
def _compiled_multipliers(fn, x, r):
    """``multipliers`` as one compiled program (xshap's XLA options): one compilation instead of one per op."""
    from xshap.explain.compiling import jit

    prepared = deeplift(fn, x)
    return np.asarray(jit(jax.jacrev(lambda xx, rr: prepared.paired((), [xx], [rr])))(x, r))


def _as_complex(v):
    return jax.lax.complex(v[0], v[1])


def test_complex_magnitude_is_the_norm_of_the_parts():
    """|z| = sqrt(re^2 + im^2): m_re = (re_x + re_r) / (|z_x| + |z_r|), and the same for im; against a zero
    reference (|0|, where sqrt's slope is infinite) finite and complete."""
    x, r = jnp.array([3.0, 4.0]), jnp.array([-1.0, 0.5])
    m = _compiled_multipliers(lambda v: jnp.abs(_as_complex(v))[None], x, r)[0]
    norm_x, norm_r = float(jnp.hypot(*x)), float(jnp.hypot(*r))
    np.testing.assert_allclose(m, (np.asarray(x) + np.asarray(r)) / (norm_x + norm_r), rtol=1e-6)
    zero = _compiled_multipliers(lambda v: jnp.abs(_as_complex(v))[None], x, jnp.zeros(2))[0]
    assert np.all(np.isfinite(zero))
    np.testing.assert_allclose(float(zero @ x), norm_x, rtol=1e-6)


def test_complex_unit_is_rescaled_by_the_complex_quotient():
    """Re(z^2) with z = x0 + i x1: the unit's multiplier is m = (z_x^2 - z_r^2) / (z_x - z_r) = z_x + z_r, so the
    multipliers of x0 and x1 are Re(m) and -Im(m): real, and complete."""
    x, r = jnp.array([1.5, -0.5]), jnp.array([0.2, 0.7])
    m = _compiled_multipliers(lambda v: jnp.real(_as_complex(v) ** 2)[None], x, r)[0]
    total = complex(*x) + complex(*r)
    np.testing.assert_allclose(m, [total.real, -total.imag], rtol=1e-6)


SPECTRAL = {
    "rfft_filter_irfft": lambda v: jnp.fft.irfft(jnp.fft.rfft(v, 16) * jnp.fft.rfft(jnp.arange(4.0), 16), 16)[:8],
    "two_spectra": lambda v: jnp.fft.irfft(jnp.fft.rfft(v) * jnp.fft.rfft(jnp.tanh(v[::-1])), 8),
    "power_spectrum": lambda v: jnp.abs(jnp.fft.rfft(v, norm="ortho")) ** 2,
    "holomorphic_unit": lambda v: jnp.real(jnp.exp(0.3 * jnp.fft.fft(v))) + jnp.imag(jnp.fft.fft(v) ** 3) / 20,
    "non_analytic_unit": lambda v: jnp.real(jnp.sign(jnp.fft.rfft(v)) * jnp.fft.rfft(v)),  # sign: z / |z|
    "fft2_phase": lambda v: jnp.angle(jnp.fft.fft2(v.reshape(2, 4)) + 1.0).ravel(),
}


def test_spectral_functions_are_complete_with_real_multipliers():
    x = jnp.array([0.5, -1.2, 2.0, 0.3, -0.7, 1.1, 0.0, -2.2])
    r = jnp.array([0.1, 0.4, -0.3, 0.3, 1.5, -0.2, 0.6, 0.0])
    for name, fn in SPECTRAL.items():
        m = _compiled_multipliers(fn, x, r)
        assert m.dtype == np.float32 and np.all(np.isfinite(m)), name
        total, expected = m @ np.asarray(x - r), np.asarray(fn(x)) - np.asarray(fn(r))
        np.testing.assert_allclose(
            total, expected, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(expected).max()), err_msg=name
        )
