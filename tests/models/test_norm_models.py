"""Models built on vector norms: a ConvNeXt-V2 block with GlobalResponseNorm (``torch.norm`` over the spatial
axes, and the ``addcmul`` form timm writes it in), a ScaleNorm head and a cosine classifier (``F.normalize`` of
the features and of the class weights).

For each, against torch's own forward: the conversion matches layer by layer, and xshap's DeepSHAP values are
complete in float32 and float64 (``DeepExplainer.explain`` raises ``XShapIncompleteError`` otherwise; the gaps are
recomputed here from torch's f). The first layers have no bias and the background holds an all-zero row, so on
that reference every norm is exactly 0, where the norm's derivative is infinite: the values must stay finite and
complete there.
"""

from __future__ import annotations

import copy

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import converters
import xshap
from tests.models.common import Lazy, torch_f


class GlobalResponseNorm(nn.Module):
    """ConvNeXt-V2's GRN on channels-last input (N, H, W, C): each channel scaled by its spatial 2-norm relative
    to the mean over channels. ``fused``: written with addcmul, as timm writes it."""

    def __init__(self, dim: int, eps: float = 1e-6, fused: bool = False):
        super().__init__()
        self.gamma = nn.Parameter(0.5 * torch.randn(1, 1, 1, dim))
        self.beta = nn.Parameter(0.1 * torch.randn(1, 1, 1, dim))
        self.eps, self.fused = eps, fused

    def forward(self, x):
        Gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        Nx = Gx / (Gx.mean(dim=-1, keepdim=True) + self.eps)
        if self.fused:
            return torch.addcmul(self.beta, self.gamma, x * Nx) + x
        return self.gamma * (x * Nx) + self.beta + x


class ConvNeXtV2Block(nn.Module):
    """stem -> [Linear, GELU, GRN, Linear] on channels-last + residual -> pool -> head (ConvNeXt-V2's block
    without its depthwise conv and LayerNorm, which other tests cover)."""

    def __init__(self, fused: bool = False, channels: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(2, channels, 3, padding=1, bias=False)
        self.pwconv1 = nn.Linear(channels, 2 * channels)
        self.act = nn.GELU()
        self.grn = GlobalResponseNorm(2 * channels, fused=fused)
        self.pwconv2 = nn.Linear(2 * channels, channels)
        self.head = nn.Linear(channels, 3)

    def forward(self, x):
        x = self.stem(x)
        h = self.pwconv2(self.grn(self.act(self.pwconv1(x.permute(0, 2, 3, 1)))))  # (N, H, W, C)
        x = x + h.permute(0, 3, 1, 2)
        return self.head(x.mean(dim=(2, 3)))


class ScaleNormHead(nn.Module):
    """ScaleNorm (Nguyen & Salazar 2019): g * x / max(||x||, eps) with one learned scale g, between two Linears."""

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.fc = nn.Linear(10, 16, bias=False)
        self.g = nn.Parameter(torch.tensor(4.0))
        self.head = nn.Linear(16, 3)
        self.eps = eps

    def forward(self, x):
        h = torch.tanh(self.fc(x))
        h = self.g * h / torch.norm(h, dim=-1, keepdim=True).clamp(min=self.eps)
        return self.head(h)


class CosineClassifier(nn.Module):
    """Logits = s * cos(features, class weight): F.normalize of both (a weight-normalised head)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(10, 16, bias=False)
        self.weight = nn.Parameter(torch.randn(3, 16))
        self.s = 8.0

    def forward(self, x):
        h = F.relu(self.fc(x))
        return self.s * F.normalize(h, dim=-1) @ F.normalize(self.weight, dim=-1).T


def _data(shape, seed=0, n_bg=6, n_x=3):
    g = torch.Generator().manual_seed(seed)
    background, X = torch.randn(n_bg, *shape, generator=g), torch.randn(n_x, *shape, generator=g)
    background[0] = 0  # every norm of this reference is 0
    return background, X


def _case(make, shape):
    def build():
        torch.manual_seed(0)
        return make().eval(), *_data(shape)

    return build


CASES = {
    "grn": _case(ConvNeXtV2Block, (2, 4, 4)),
    "grn_addcmul": _case(lambda: ConvNeXtV2Block(fused=True), (2, 4, 4)),
    "scalenorm": _case(ScaleNormHead, (10,)),
    "cosine_normalize": _case(CosineClassifier, (10,)),
}


def assert_complete(attribution, model, background, X):
    """sum(phi) == f(x) - E f with f torch's own, within xshap's stated tolerance (which includes the rounding of
    large terms that cancel: the exact product split against the zero reference multiplies by 1/eps there)."""
    outputs, expected = torch_f(model, background, X)
    n, n_out = outputs.shape
    total = sum(v.reshape(n, n_out, -1).sum(axis=2) for v in attribution.values)
    assert all(np.all(np.isfinite(v)) for v in attribution.values)
    gaps = total - (outputs - expected)
    assert np.all(np.abs(gaps) <= attribution.tolerance), (np.abs(gaps).max(), attribution.tolerance.min())


@pytest.fixture(scope="module")
def explained():
    """name -> (model, background, X, explainer, attribution): each model converted and explained once."""

    def run(name):
        model, background, X = CASES[name]()
        explainer = xshap.DeepExplainer(model, background)
        return model, background, X, explainer, explainer.explain(X)  # raises XShapIncompleteError if incomplete

    return Lazy(run)


@pytest.mark.parametrize("name", ["grn_addcmul", "scalenorm", "cosine_normalize"])
def test_conversion_matches_torch_and_xshap_is_complete_in_float32(explained, name):
    model, background, X, explainer, attribution = explained[name]
    converted = explainer.model.converted
    ops = {p.op.split(".")[1] for p in converted.ops}
    assert "linalg_vector_norm" in ops and ("addcmul" in ops) == (name == "grn_addcmul")
    report = converted.validate(torch.cat([X, background]))
    assert report.ok, str(report)
    assert_complete(attribution, model, background, X)


def test_grn_as_the_paper_writes_it_converts():
    model, background, X = CASES["grn"]()
    converted = converters.from_torch(model, X)
    assert "addcmul" not in {p.op.split(".")[1] for p in converted.ops}
    assert converted.validate(torch.cat([X, background])).ok


def test_scalenorm_against_the_zero_reference_is_complete_in_float64():
    """In float64 the 1/eps terms of the zero reference cancel to within 1e-9 of the output."""
    model, background, X = CASES["scalenorm"]()
    model, background, X = copy.deepcopy(model).double(), background.double(), X.double()
    with jax.enable_x64(True):
        attribution = xshap.DeepExplainer(model, background).explain(X)
    assert np.max(attribution.tolerance) < 1e-8
    assert_complete(attribution, model, background, X)


def test_culprits_name_the_norm_and_the_products(explained):
    """For shap and Captum the norm is a functional nonlinearity (no module hook applies a rule to it) and
    x * Nx / Gx / mean(Gx) are input-dependent products; addcmul(beta, gamma, x * Nx) multiplies by a weight."""
    pytest.importorskip("shap")
    pytest.importorskip("captum")
    from tests.models.common import lines_with, site_lines
    from xshap.check.culprits import FUNCTIONAL, PRODUCT, find_culprits
    from xshap.check.references import captum_rule_table, shap_rule_table

    model, _, _, explainer, _ = explained["grn_addcmul"]
    tables = {"shap": shap_rule_table(), "captum": captum_rule_table()}
    by_op = {(c.kind, c.op): c for c in find_culprits(explainer.model.converted, tables, model)}
    norm = by_op[(FUNCTIONAL, "linalg_vector_norm")]
    assert norm.module_path == "grn"
    assert site_lines(norm, __file__) == lines_with(GlobalResponseNorm.forward, "torch.norm")
    assert (PRODUCT, "mul") in by_op and (PRODUCT, "div") in by_op
    assert (PRODUCT, "addcmul") not in by_op
