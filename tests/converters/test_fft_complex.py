"""Forward checks of the FFT family (converters/ops/fft.py) and of complex tensors (converters/ops/complex.py):
converted JAX forward == torch forward within 1e-5, and layer by layer. Each case feeds a Linear's output (so
weights are involved) through the ops and returns real values (``view_as_real`` of complex results). Covered:
every ``norm`` mode (for the 1-D and Hermitian transforms; one for the other n-D ones), ``n`` / ``s`` padding and
truncation, odd and even lengths for the inverse real transforms, several axes, complex parameters, and the
decomposed primitives (``_fft_r2c`` / ``_fft_c2r`` / ``_fft_c2c``) of a program run
through torch's default decompositions, as a saved ``.pt2`` may hold them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import converters
from converters.registry import supported_ops
from tests.converters.helpers import assert_converts

NORMS = ["backward", "ortho", "forward"]  # None is "backward" for torch and jnp alike


class Lambda(torch.nn.Module):
    """``fn(Linear(x))`` with the result flattened per row; a complex result is viewed as real pairs."""

    def __init__(self, fn, width=12):
        super().__init__()
        self.fc = torch.nn.Linear(width, width)
        self.fn = fn

    def forward(self, x):
        out = self.fn(self.fc(x))
        out = out if isinstance(out, (tuple, list)) else (out,)
        return torch.cat([(torch.view_as_real(o.resolve_conj()) if o.is_complex() else o).flatten(1) for o in out], 1)


def v3(h):  # (N, 3, 4)
    return h.view(-1, 3, 4)


def spectrum(h, n=None):
    """A complex input made of two halves of h (the inverse transforms' input): (N, 6) complex."""
    return torch.complex(h[:, :6], h[:, 6:]) if n is None else torch.fft.rfft(h, n=n)


# family -> (outputs for one norm mode, the norm modes checked). Every mode for the 1-D transforms and for the
# Hermitian ones (whose normalisation the converter mirrors); the other n-D ones pass `norm` to jnp.fft unchanged,
# as the 1-D ones do, so one mode each (and the default elsewhere in these tests).
FFTS = {
    "fft_ifft": (
        lambda h, norm: (
            torch.fft.fft(h, norm=norm),
            torch.fft.fft(h, n=8, norm=norm),  # truncated
            torch.fft.fft(h, n=15, norm=norm),  # padded, odd
            torch.fft.ifft(spectrum(h), norm=norm),
            torch.fft.ifft(h, n=9, norm=norm),  # a real input
        ),
        NORMS,
    ),
    "rfft_irfft": (
        lambda h, norm: (
            torch.fft.rfft(h, norm=norm),
            torch.fft.rfft(h, n=7, norm=norm),  # truncated, odd
            torch.fft.rfft(h, n=20, norm=norm),  # padded
            torch.fft.rfft(v3(h), dim=1, norm=norm),
            torch.fft.irfft(spectrum(h), norm=norm),  # default n: 2 * (6 - 1), even
            torch.fft.irfft(spectrum(h), n=11, norm=norm),  # odd
            torch.fft.irfft(spectrum(h), n=4, norm=norm),  # truncated
            torch.fft.irfft(spectrum(h), n=16, norm=norm),  # padded
        ),
        NORMS,
    ),
    "hfft_ihfft": (
        lambda h, norm: (
            torch.fft.hfft(spectrum(h), norm=norm),
            torch.fft.hfft(spectrum(h), n=9, norm=norm),
            torch.fft.ihfft(h, norm=norm),
            torch.fft.ihfft(h, n=7, norm=norm),
            torch.fft.hfft2(torch.fft.rfft2(v3(h)), norm=norm),
            torch.fft.hfftn(torch.fft.rfftn(v3(h), dim=(1, 2)), s=(3, 5), dim=(1, 2), norm=norm),
            torch.fft.ihfft2(v3(h), norm=norm),
            torch.fft.ihfftn(v3(h), dim=(1, 2), norm=norm),
        ),
        NORMS,
    ),
    "complex_nd": (
        lambda h, norm: (
            torch.fft.fft2(v3(h), norm=norm),
            torch.fft.ifft2(v3(h), s=(2, 5), norm=norm),
            torch.fft.fft2(v3(h).unsqueeze(1), dim=(1, 3), norm=norm),
            torch.fft.fftn(v3(h), dim=(1, 2), norm=norm),
            torch.fft.ifftn(v3(h), s=(4, 3), dim=(2, 1), norm=norm),
            torch.fft.fftn(v3(h), s=(5,), norm=norm),  # no dim: the last len(s) axes
        ),
        ["ortho"],
    ),
    "real_nd": (
        lambda h, norm: (
            torch.fft.rfft2(v3(h), norm=norm),
            torch.fft.irfft2(torch.fft.rfft2(v3(h)), norm=norm),
            torch.fft.irfft2(torch.fft.rfft2(v3(h)), s=(3, 5), norm=norm),  # odd last length
            torch.fft.rfftn(v3(h), dim=(1, 2), norm=norm),
            torch.fft.irfftn(torch.fft.rfftn(v3(h), dim=(1, 2)), s=(3, 4), dim=(1, 2), norm=norm),
            torch.fft.irfftn(torch.fft.rfftn(v3(h), dim=(2, 1)), s=(6, 3), dim=(2, 1), norm=norm),
        ),
        ["forward"],
    ),
}


@pytest.mark.parametrize("name", sorted(FFTS))
def test_fft_matches_torch(name):
    """Each norm mode side by side in one model (one export per family)."""
    torch.manual_seed(0)
    fn, norms = FFTS[name]
    assert_converts(Lambda(lambda h: [out for norm in norms for out in fn(h, norm)]), torch.randn(4, 12))


COMPLEX = {
    "parts_views_shifts": lambda h: (
        torch.fft.fftshift(v3(h), dim=-1),
        torch.fft.ifftshift(v3(h), dim=(1, 2)),
        torch.fft.fftshift(torch.fft.fft(v3(h)), dim=(-1,)),
        h * torch.fft.fftfreq(12),
        h[:, :7] * torch.fft.rfftfreq(12, d=0.5),
        torch.fft.rfft(h).real,  # exported as view_as_real + select
        torch.fft.rfft(h).imag,
        torch.complex(h[:, :6], h[:, 6:]) * torch.complex(h[:, 6:], -h[:, :6]),
        torch.view_as_complex(v3(h)[:, :, :2].contiguous()) / (2 + torch.view_as_complex(v3(h)[:, :, 2:].contiguous())),
        torch.conj_physical(torch.fft.rfft(h)),
        torch.fft.rfft(h).conj(),
        torch.fft.rfft(h) * torch.fft.rfft(h).conj(),
    ),
    "polar_angle_abs": lambda h: (
        torch.polar(h.abs(), h),
        torch.fft.rfft(h).angle(),
        h.angle(),
        torch.fft.rfft(h).abs(),
        torch.fft.fft(h).abs() ** 2,
        torch.fft.rfft(h * 0).abs(),  # |0| is 0, not NaN
        torch.complex(h, 0 * h).abs(),
    ),
}


class SpectralFilter(torch.nn.Module):
    """A learned complex filter on the spectrum (an FNO / global-filter layer): irfft(rfft(Wx) * w)."""

    def __init__(self, width=12, n_fft=16):
        super().__init__()
        self.fc = torch.nn.Linear(width, width)
        self.weight = torch.nn.Parameter(torch.randn(n_fft // 2 + 1, dtype=torch.cfloat))
        self.n_fft = n_fft

    def forward(self, x):
        return torch.fft.irfft(torch.fft.rfft(self.fc(x), n=self.n_fft) * self.weight, n=self.n_fft)


@pytest.mark.parametrize("name", sorted(COMPLEX) + ["complex_parameter_filter"])
def test_complex_ops_match_torch(name):
    torch.manual_seed(0)
    model = SpectralFilter() if name == "complex_parameter_filter" else Lambda(COMPLEX[name])
    assert_converts(model, torch.randn(4, 12))


def _decomposed(model, x):
    """The model's program after torch's default decompositions (the FFT ops become _fft_r2c/_fft_c2r/_fft_c2c)."""
    program = torch.export.export(model.eval(), (x[:1],), strict=False).run_decompositions()
    ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    return program, ops


DECOMPOSED = {
    "r2c_c2r": (
        lambda h: (
            torch.fft.irfft(torch.fft.rfft(h, n=16, norm="ortho") * torch.fft.rfft(torch.ones(5), n=16), n=16),
            torch.fft.irfft2(torch.fft.rfft2(v3(h)), s=(3, 5)),
            torch.fft.hfft(torch.fft.rfft(h), n=10),
        ),
        {"aten._fft_r2c.default", "aten._fft_c2r.default", "aten._conj.default"},
    ),
    "c2c": (
        lambda h: (torch.fft.ifft(torch.fft.fft(h, norm="forward"), n=9), torch.fft.fftn(v3(h), dim=(1, 2))),
        {"aten._fft_c2c.default", "aten._fft_r2c.default"},
    ),
}


@pytest.mark.parametrize("name", sorted(DECOMPOSED))
def test_decomposed_fft_primitives_match_torch(name):
    """A saved program may hold torch's FFT primitives instead of torch.fft's ops: they convert too."""
    torch.manual_seed(0)
    fn, expected_ops = DECOMPOSED[name]
    model = Lambda(fn).eval()
    x = torch.randn(4, 12)
    program, ops = _decomposed(model, x)
    assert expected_ops <= ops, ops
    converted = converters.from_exported(program, x)
    with torch.no_grad():
        expected = model(x).numpy()
    actual = np.asarray(converted(x))
    assert np.max(np.abs(actual - expected)) <= 1e-5 * np.max(np.abs(expected))
    assert converted.validate(x).ok


def test_registered_names():
    ops = set(supported_ops())
    for family in ["", "i", "r", "ir", "h", "ih"]:
        for suffix in ["", "2", "n"]:
            assert f"aten.fft_{family}fft{suffix}" in ops
    assert {"aten._fft_r2c", "aten._fft_c2r", "aten._fft_c2c", "aten.view_as_real", "aten.view_as_complex"} <= ops
