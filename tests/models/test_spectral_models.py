"""FFT convolutions (Hyena / long-conv / global-filter layers) and spectral magnitudes through xshap.

A long convolution computes y = irfft(rfft(u, 2L) * rfft(k, 2L))[:L]: linear in the signal u when the filter k
is a weight, bilinear when k is computed from the input too. Checked, against torch's own forward:
- the conversion (layer by layer) and completeness, in float32 and float64;
- with a weight filter plus a learned complex spectrum and no nonlinearity, the model is linear: DeepSHAP's values
  are exactly J (x - E[background]) with J torch's own Jacobian (so the FFT's linear rule, the complex product with
  a constant filter and the real parts are right, not only complete);
- with an input-dependent filter (a complex product of two input-dependent spectra): the attributions equal those
  of the same model written as a convolution in the time domain (a real bilinear product), which they must since
  the FFT is linear and the two-player split is the same on both sides;
- |rfft(x)| and |rfft(x)|^2 with zero rows in the background and among the explained rows (the magnitude at 0,
  where sqrt has an infinite slope): finite and complete.
"""

from __future__ import annotations

import copy

import jax
import numpy as np
import pytest
import torch
from torch import nn

import xshap
from tests.models.common import Lazy, completeness_gaps, scale, torch_f

L = 12  # signal length; the FFT is 2L long (a linear, not circular, convolution)


class LongConv(nn.Module):
    """proj -> FFT convolution with a filter -> (ReLU) -> head. ``filter``: "weight" (a parameter), "input" (tanh
    of a Linear of the input: a bilinear product), "complex" (a learned complex spectrum) or "weight+complex" (the
    sum of the first and the third)."""

    def __init__(self, filter: str = "weight", relu: bool = True, time_domain: bool = False):
        super().__init__()
        self.proj = nn.Linear(L, L)
        self.kernel = nn.Parameter(torch.randn(L) / L**0.5)
        self.spectrum = nn.Parameter(torch.randn(L + 1, dtype=torch.cfloat) / L**0.5)
        self.gate = nn.Linear(L, L)
        self.head = nn.Linear(L, 3)
        self.filter, self.relu, self.time_domain = filter, relu, time_domain
        n = 2 * L  # circulant of the zero-padded filter: index (t - s) mod 2L, the first L rows and columns
        self.register_buffer("circulant", ((torch.arange(n)[:, None] - torch.arange(n)[None, :]) % n)[:L, :L])

    def forward(self, x):
        u = self.proj(x)
        y = 0
        if "complex" in self.filter:
            y = torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * self.spectrum, n=2 * L, norm="ortho")[..., :L]
        if "weight" in self.filter or self.filter == "input":
            k = torch.tanh(self.gate(x)) if self.filter == "input" else self.kernel.expand_as(u)
            if self.time_domain:  # y_t = sum_s u_s k_(t - s): causal, only non-negative lags (zero padding)
                lags = torch.where(self.circulant < L, self.circulant, 0)
                taps = k[..., lags] * (self.circulant < L)
                y = y + torch.einsum("bs,bts->bt", u, taps)
            else:
                y = y + torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(k, n=2 * L), n=2 * L)[..., :L]
        return self.head(torch.relu(y) if self.relu else y)


class SpectralMagnitude(nn.Module):
    """The power and magnitude spectrum of a projected signal, then a head."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(L, L)
        self.head = nn.Linear(2 * (L // 2 + 1), 2)

    def forward(self, x):
        spectrum = torch.fft.rfft(self.proj(x), norm="ortho")
        return self.head(torch.cat([spectrum.abs(), spectrum.abs() ** 2 / L], -1))


def _data(seed=0, n_bg=6, n_x=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_bg, L, generator=g), torch.randn(n_x, L, generator=g)


def _model(cls, seed=0, **kwargs):
    torch.manual_seed(seed)
    return cls(**kwargs).eval()


def _magnitude_case():
    """No bias, and zero rows in the background and among the explained rows: the spectrum is 0 there, where
    sqrt's slope is infinite (on the reference alone, and on the input and the reference alike)."""
    model = _model(SpectralMagnitude)
    with torch.no_grad():
        model.proj.bias.zero_()
    background, X = _data()
    background[0], X[-1] = 0, 0
    return model, background, X


# name -> (model, background, X): each model is explained once, its values shared by the tests below
CASES = {
    "weight_and_complex_filter_linear": lambda: (_model(LongConv, filter="weight+complex", relu=False), *_data(1)),
    "input_filter": lambda: (_model(LongConv, filter="input"), *_data(2)),
    "magnitude": _magnitude_case,
}


@pytest.fixture(scope="module")
def explained():
    """name -> (model, background, X, explainer, values): each model converted and explained once."""

    def run(name):
        model, background, X = CASES[name]()
        explainer = xshap.DeepExplainer(model, background)
        return model, background, X, explainer, explainer.shap_values(X)  # raises XShapIncompleteError if incomplete

    return Lazy(run)


@pytest.mark.parametrize("name", sorted(CASES))
def test_conversion_matches_torch_and_xshap_is_complete(explained, name):
    model, background, X, explainer, values = explained[name]
    report = explainer.model.converted.validate(torch.cat([X, background]))
    assert report.ok, str(report)
    assert values.dtype == np.float32 and np.all(np.isfinite(values))
    outputs, expected = torch_f(model, background, X)
    gaps = completeness_gaps(values, outputs, expected)
    assert np.all(np.abs(gaps) <= 1e-4 * scale(outputs, expected)), np.abs(gaps).max()


def test_linear_fft_convolution_gives_exact_values(explained):
    """A weight filter and a learned complex spectrum, no ReLU: the model is linear, so phi_ij = J_ij (x_j - E[bg]_j)
    with J torch's own Jacobian."""
    model, background, X, _, values = explained["weight_and_complex_filter_linear"]  # (N, L, 3)
    jacobian = torch.autograd.functional.jacobian(lambda row: model(row[None])[0], X[0]).numpy()  # (3, L)
    exact = np.einsum("oj,nj->njo", jacobian, (X - background.mean(0)).numpy())
    np.testing.assert_allclose(values, exact, rtol=1e-4, atol=1e-5 * np.abs(exact).max())


def test_fft_convolution_equals_time_domain_convolution(explained):
    """An input-dependent filter: the spectral route (a product of two input-dependent complex spectra) and the
    time-domain route (a real einsum over the filter's taps) compute the same function and split each product the
    same way, so they give the same attributions."""
    spectral, background, X, _, mine = explained["input_filter"]
    temporal = _model(LongConv, filter="input", time_domain=True)
    with torch.no_grad():
        np.testing.assert_allclose(spectral(X).numpy(), temporal(X).numpy(), rtol=1e-5, atol=1e-5)
    theirs = xshap.DeepExplainer(temporal, background).shap_values(X)
    np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())


def test_bilinear_fft_convolution_is_complete_in_float64():
    model = copy.deepcopy(_model(LongConv, filter="input")).double()
    background, X = (t.double() for t in _data(2))
    with jax.enable_x64(True):
        values = xshap.DeepExplainer(model, background).shap_values(X)
    outputs, expected = torch_f(model, background, X)
    gaps = completeness_gaps(values, outputs, expected)
    assert np.all(np.abs(gaps) <= 1e-9 * scale(outputs, expected)), np.abs(gaps).max()
