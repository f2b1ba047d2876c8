"""Models built on vector norms: a ConvNeXt-V2 block with GlobalResponseNorm (``torch.norm`` over the spatial
axes, and the ``addcmul`` form timm writes it in), and a ScaleNorm layer feeding a cosine classifier
(``F.normalize`` of the features and of the class weights).

For each, against torch's own forward: the conversion matches layer by layer, and xshap's DeepSHAP values are
complete (``DeepExplainer.explain`` raises ``XShapIncompleteError`` otherwise; the gaps are recomputed here from
torch's f). The GRN block's stem has no bias and its background holds an all-zero row, so on that reference every
norm is exactly 0, where the norm's derivative is infinite: the values must stay finite and complete there.
"""

from __future__ import annotations

import copy

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


class ScaleNorm(nn.Module):
    """ScaleNorm (Nguyen & Salazar 2019): g * x / max(||x||, eps) with one learned scale g."""

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.g = nn.Parameter(torch.tensor(4.0))
        self.eps = eps

    def forward(self, x):
        return self.g * x / torch.norm(x, dim=-1, keepdim=True).clamp(min=self.eps)


class CosineClassifier(nn.Module):
    """Logits = s * cos(features, class weight): F.normalize of both (a weight-normalised head)."""

    def __init__(self, features: int = 12, classes: int = 3, s: float = 8.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, features))
        self.s = s

    def forward(self, h):
        return self.s * F.normalize(h, dim=-1) @ F.normalize(self.weight, dim=-1).T


class NormalizedHeads(nn.Module):
    """Linear -> tanh -> ScaleNorm -> Linear -> ReLU -> cosine classifier: both heads in one model."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(10, 16, bias=False)
        self.scalenorm = ScaleNorm()
        self.fc2 = nn.Linear(16, 12, bias=False)
        self.cosine = CosineClassifier()

    def forward(self, x):
        return self.cosine(F.relu(self.fc2(self.scalenorm(torch.tanh(self.fc(x))))))


def _data(shape, zero_row: bool, seed=0, n_bg=6, n_x=3):
    g = torch.Generator().manual_seed(seed)
    background, X = torch.randn(n_bg, *shape, generator=g), torch.randn(n_x, *shape, generator=g)
    if zero_row:
        background[0] = 0  # every norm of this reference is 0
    return background, X


def _case(make, shape, zero_row):
    def build():
        torch.manual_seed(0)
        return make().eval(), *_data(shape, zero_row)

    return build


# GRN's norms are 0 on a zero reference (sqrt at 0, infinite slope); ScaleNorm's and F.normalize's 1/max(|x|, eps)
# would be 1/eps there, where the exact product split gives complete but huge, cancelling terms (README,
# Tolerances): their background has no zero row.
CASES = {
    "grn": _case(ConvNeXtV2Block, (2, 4, 4), zero_row=True),
    "grn_addcmul": _case(lambda: ConvNeXtV2Block(fused=True), (2, 4, 4), zero_row=True),
    "scalenorm_cosine": _case(NormalizedHeads, (10,), zero_row=False),
}


def assert_complete(attribution, model, background, X):
    """sum(phi) == f(x) - E f with f torch's own, within xshap's stated tolerance, whose rounding term (16 eps
    sum |phi|) stays below its relative term here: no large terms cancel, the check means what it says."""
    outputs, expected = torch_f(model, background, X)
    if attribution.recomputed.any():  # those rows are checked against torch's float64 forward, as xshap checks them
        outputs64, expected64 = torch_f(copy.deepcopy(model).double(), background.double(), X.double())
        rows = attribution.recomputed
        outputs[rows] = outputs64[rows]
        expected = np.where(rows[:, None], expected64, expected)
    n, n_out = outputs.shape
    total = sum(v.reshape(n, n_out, -1).sum(axis=2) for v in attribution.values)
    assert all(np.all(np.isfinite(v)) for v in attribution.values)
    gaps = total - (outputs - expected)
    assert np.all(np.abs(gaps) <= attribution.tolerance), (np.abs(gaps).max(), attribution.tolerance.min())
    assert np.all(attribution.tolerance <= 2e-4 * np.maximum(1, np.maximum(np.abs(outputs), np.abs(expected))))


@pytest.fixture(scope="module")
def explained():
    """name -> (model, background, X, explainer, attribution): each model converted and explained once."""

    def run(name):
        model, background, X = CASES[name]()
        explainer = xshap.DeepExplainer(model, background)
        return model, background, X, explainer, explainer.explain(X)  # raises XShapIncompleteError if incomplete

    return Lazy(run)


@pytest.mark.parametrize("name", ["grn_addcmul", "scalenorm_cosine"])
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
