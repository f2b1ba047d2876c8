"""Model-level acceptance tests: small CNNs (ResNet-style 2-D, text CNN 1-D over embeddings) through xshap,
shap.DeepExplainer and Captum's DeepLiftShap.

Each model is checked for (a) xshap's completeness in float32 against torch's own f, (b) the same in float64,
(c) the cross-check verdicts per reference and the culprits read from the graph, and (d) where a reference
agrees, xshap's values against the reference's directly.

The models live in this file so that the culprits' call sites point here.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import jax
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import xshap
from tests.models.common import (
    Lazy,
    assert_really_incomplete,
    captum_values,
    completeness_gaps,
    lines_with,
    randomize_batchnorm,
    scale,
    shap_values,
    site_lines,
    torch_f,
)
from xshap.check.culprits import ADJACENT, FUNCTIONAL, NO_RULE, PRODUCT, REUSED
from xshap.check.report import AGREE, REFERENCE_ERROR, REFERENCE_INCOMPLETE

N_BACKGROUND, N_EXPLAINED = 12, 5
VOCAB, SEQ_LEN, EMB = 50, 12, 8


# -- models ---------------------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN + skip, then ReLU; a 1x1 strided conv + BN on the skip when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + identity)


class ReusedReluBlock(BasicBlock):
    """torchvision's style: one ReLU instance per block, called twice."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__(cin, cout, stride)
        del self.relu1, self.relu2
        self.relu = nn.ReLU()

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class FunctionalReluBlock(BasicBlock):
    """The ReLUs called functionally: no module for a hook to catch."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__(cin, cout, stride)
        del self.relu1, self.relu2

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + identity)


class SmallResNet(nn.Module):
    def __init__(self, block: type[BasicBlock]):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.relu = nn.ReLU()
        self.layer1 = block(6, 6)
        self.layer2 = block(6, 8, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = self.relu(self.bn(self.conv(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class TextCNNHead(nn.Module):
    """A 1-D CNN over already-embedded sequences (N, L, E); max over time as a module or with torch.amax."""

    def __init__(self, emb: int = EMB, hidden: int = 16, n_out: int = 4, functional_max: bool = False):
        super().__init__()
        self.functional_max = functional_max
        self.conv1 = nn.Conv1d(emb, hidden, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool1d(2)
        self.conv2 = nn.Conv1d(hidden, hidden, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.time_pool = nn.MaxPool1d(SEQ_LEN // 2)
        self.fc = nn.Linear(hidden, n_out)

    def forward(self, embedded):
        h = embedded.transpose(1, 2)
        h = self.pool1(self.relu1(self.conv1(h)))
        h = self.relu2(self.conv2(h))
        h = torch.amax(h, dim=-1) if self.functional_max else torch.flatten(self.time_pool(h), 1)
        return self.fc(h)


class TextCNN(nn.Module):
    def __init__(self, functional_max: bool = False):
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, EMB)
        self.head = TextCNNHead(functional_max=functional_max)

    def forward(self, tokens):
        return self.head(self.embedding(tokens))


# -- cases ----------------------------------------------------------------------------------------------------
@dataclass
class Case:
    model: nn.Module  # the explained model
    background: torch.Tensor
    X: torch.Tensor
    full: nn.Module | None = None  # the text models: embedding + head
    tokens: torch.Tensor | None = None  # the explained rows' token ids


def _resnet_case(block: type[BasicBlock]) -> Case:
    torch.manual_seed(0)
    model = randomize_batchnorm(SmallResNet(block), seed=1).eval()
    gen = torch.Generator().manual_seed(2)
    background = torch.randn(N_BACKGROUND, 3, 8, 8, generator=gen)
    X = torch.randn(N_EXPLAINED, 3, 8, 8, generator=gen)
    return Case(model, background, X)


def _text_case(functional_max: bool) -> Case:
    torch.manual_seed(5)
    full = TextCNN(functional_max).eval()
    gen = torch.Generator().manual_seed(6)
    tokens = torch.randint(0, VOCAB, (N_BACKGROUND + N_EXPLAINED, SEQ_LEN), generator=gen)
    with torch.no_grad():
        embedded = full.embedding(tokens).detach()
    return Case(full.head, embedded[:N_BACKGROUND], embedded[N_BACKGROUND:], full, tokens[N_BACKGROUND:])


BUILDERS = {
    "resnet": lambda: _resnet_case(BasicBlock),
    "resnet_reused_relu": lambda: _resnet_case(ReusedReluBlock),
    "resnet_functional_relu": lambda: _resnet_case(FunctionalReluBlock),
    "textcnn_maxpool": lambda: _text_case(functional_max=False),
    "textcnn_amax": lambda: _text_case(functional_max=True),
}


@pytest.fixture(scope="module")
def cases():
    return Lazy(lambda name: BUILDERS[name]())


@pytest.fixture(scope="module")
def reports(cases):
    return Lazy(lambda name: xshap.crosscheck(cases[name].model, cases[name].background, cases[name].X))


@pytest.fixture(scope="module")
def explained(reports):
    """xshap's float32 values (from the cross-check's DeepExplainer run) in shap's layout (N, *row, n_out)."""
    return Lazy(lambda name: np.moveaxis(reports[name].xshap_values[0], 1, -1))


# -- helpers --------------------------------------------------------------------------------------------------
def _shap_values(case: Case) -> np.ndarray:
    return shap_values(case.model, case.background, case.X)


def _captum_values(case: Case, n_outputs: int) -> np.ndarray:
    return captum_values(case.model, case.background, case.X, n_outputs)


def _site_lines(culprit) -> list[int]:
    return site_lines(culprit, __file__)


def _assert_really_incomplete(values, case: Case, reported_gaps, min_broken: int):
    assert_really_incomplete(values, case.model, case.background, case.X, reported_gaps, min_broken)


# -- (a), (b): xshap's completeness ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(BUILDERS))
def test_xshap_is_complete_in_float32(explained, reports, cases, name):
    case = cases[name]
    values = explained[name]
    outputs, expected = torch_f(case.model, case.background, case.X)
    assert values.dtype == np.float32
    assert values.shape == (*case.X.shape, outputs.shape[1])
    np.testing.assert_allclose(reports[name].expected_value, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(reports[name].outputs, outputs, rtol=1e-5, atol=1e-5)
    gaps = completeness_gaps(values, outputs, expected)
    assert np.all(np.abs(gaps) <= 1e-4 * scale(outputs, expected)), np.abs(gaps).max()
    assert np.abs(values).max() > 1e-3  # not trivially complete: the outputs do differ from E f
    assert np.abs(outputs - expected).max() > 1e-2


@pytest.mark.parametrize("name", list(BUILDERS))
def test_xshap_is_complete_in_float64(cases, name):
    case = cases[name]
    model = copy.deepcopy(case.model).double()
    background, X = case.background.double(), case.X.double()
    with jax.enable_x64(True):
        values = xshap.DeepExplainer(model, background).shap_values(X, check_additivity=False)
    assert values.dtype == np.float64
    outputs, expected = torch_f(model, background, X)
    gaps = completeness_gaps(values, outputs, expected)
    assert np.all(np.abs(gaps) <= 1e-9 * scale(outputs, expected)), np.abs(gaps).max()


@pytest.mark.parametrize("name", ["textcnn_maxpool", "textcnn_amax"])
def test_text_head_explains_the_embedding_output(explained, cases, name):
    """The head explains the full model's embedding output: attributions per (position, embedding dim)."""
    case = cases[name]
    values = explained[name]
    with torch.no_grad():
        np.testing.assert_allclose(case.full(case.tokens).numpy(), case.model(case.X).numpy(), rtol=1e-6, atol=1e-6)
    outputs, expected = torch_f(case.model, case.background, case.X)
    assert values.shape == (N_EXPLAINED, SEQ_LEN, EMB, outputs.shape[1])
    gaps = values.astype(np.float64).sum(axis=(1, 2)) - (outputs - expected)  # over L and E
    assert np.all(np.abs(gaps) <= 1e-4 * scale(outputs, expected)), np.abs(gaps).max()


# -- 1. the ResNet with one ReLU module per call: everyone agrees ---------------------------------------------
def test_resnet_crosscheck_agrees(reports):
    report = reports["resnet"]
    assert report.validation is not None and report.validation.ok
    assert report.reference("shap").verdict == AGREE
    assert report.reference("captum").verdict == AGREE
    assert report.culprits == []
    assert np.max(np.abs(report.reference("shap").gaps)) <= 1e-4


@pytest.mark.parametrize("name", ["resnet", "textcnn_maxpool"])
def test_agreeing_models_equal_shap_directly(explained, cases, reports, name):
    assert reports[name].reference("shap").verdict == AGREE
    mine = explained[name]
    theirs = _shap_values(cases[name])
    assert theirs.shape == mine.shape
    assert np.max(np.abs(mine - theirs)) <= 1e-4 * max(1.0, np.max(np.abs(theirs)))


def test_resnet_equals_captum_directly(explained, cases):
    mine = explained["resnet"]
    theirs = _captum_values(cases["resnet"], mine.shape[-1])
    assert theirs.shape == mine.shape
    assert np.max(np.abs(mine - theirs)) <= 1e-4 * max(1.0, np.max(np.abs(theirs)))


# -- 2. torchvision-style ReLU reuse ---------------------------------------------------------------------------
def test_reused_relu_breaks_shap_and_captum(reports, cases):
    report = reports["resnet_reused_relu"]
    shap_result = report.reference("shap")
    assert shap_result.verdict == REFERENCE_INCOMPLETE
    assert shap_result.count(REFERENCE_INCOMPLETE) >= N_EXPLAINED
    case = cases["resnet_reused_relu"]
    _assert_really_incomplete(_shap_values(case), case, shap_result.gaps, min_broken=N_EXPLAINED)

    captum_result = report.reference("captum")
    assert captum_result.verdict == REFERENCE_ERROR
    assert "ReLU" in captum_result.error


def test_reused_relu_culprits_name_each_block(reports):
    report = reports["resnet_reused_relu"]
    expected_lines = lines_with(ReusedReluBlock.forward, "self.relu(")
    assert len(expected_lines) == 2
    reused = {c.module_path: c for c in report.culprits if c.kind == REUSED}
    assert set(reused) == {"layer1.relu", "layer2.relu"}
    for culprit in reused.values():
        assert culprit.op == "relu"
        assert culprit.module_type.endswith("ReLU")
        assert len(culprit.sites) == 2
        assert sorted(_site_lines(culprit)) == expected_lines
        assert all("self.relu(" in code for _, code in culprit.sites)
        assert {"shap", "captum"} <= set(culprit.references)
    # The stem's ReLU is called once and the blocks call no other nonlinearity: nothing else to blame.
    assert [c for c in report.culprits if c.kind != REUSED] == []
    text = str(report)
    assert "layer1.relu" in text and "layer2.relu" in text and f":{expected_lines[1]}" in text


# -- 3. ReLU called functionally -------------------------------------------------------------------------------
def test_functional_relu_breaks_shap_and_captum(reports, cases):
    case = cases["resnet_functional_relu"]
    report = reports["resnet_functional_relu"]
    shap_result, captum_result = report.reference("shap"), report.reference("captum")
    assert shap_result.verdict == REFERENCE_INCOMPLETE
    assert captum_result.verdict == REFERENCE_INCOMPLETE
    _assert_really_incomplete(_shap_values(case), case, shap_result.gaps, min_broken=N_EXPLAINED)
    _assert_really_incomplete(_captum_values(case, 3), case, captum_result.gaps, min_broken=N_EXPLAINED)


def test_functional_relu_culprits_name_callee_and_line(reports):
    report = reports["resnet_functional_relu"]
    assert all(c.kind == FUNCTIONAL for c in report.culprits), [c.describe() for c in report.culprits]
    found = {(c.module_path, c.callee): c for c in report.culprits}
    assert set(found) == {(block, callee) for block in ("layer1", "layer2") for callee in ("F.relu", "torch.relu")}
    for (_block, callee), culprit in found.items():
        assert culprit.op == "relu"
        assert culprit.module_type.endswith("FunctionalReluBlock")
        assert _site_lines(culprit) == lines_with(FunctionalReluBlock.forward, f"{callee}(")
        assert {"shap", "captum"} <= set(culprit.references)
    assert "F.relu" in str(report) and "torch.relu" in str(report)


# -- 4. text CNN over embeddings -------------------------------------------------------------------------------
def test_text_maxpool_module_verdicts(reports, cases):
    """shap knows MaxPool1d: it agrees. Captum 0.9 is incomplete here (adjacent hooked modules, see below)."""
    case = cases["textcnn_maxpool"]
    report = reports["textcnn_maxpool"]
    assert report.reference("shap").verdict == AGREE
    captum_result = report.reference("captum")
    assert captum_result.verdict == REFERENCE_INCOMPLETE
    _assert_really_incomplete(_captum_values(case, 4), case, captum_result.gaps, min_broken=N_EXPLAINED)
    # No module is reused or called functionally, every type is known to both references.
    assert [c for c in report.culprits if c.kind in (REUSED, FUNCTIONAL, NO_RULE, PRODUCT)] == []


def test_text_maxpool_captum_incompleteness_is_explained(reports):
    report = reports["textcnn_maxpool"]
    assert report.reference("captum").verdict == REFERENCE_INCOMPLETE
    assert any("captum" in c.references for c in report.culprits), str(report)
    adjacent = [c for c in report.culprits if c.kind == ADJACENT]
    assert adjacent and all(c.references == ("captum",) for c in adjacent)
    assert any(c.module_type.endswith("MaxPool1d") and "[ReLU]" in c.note for c in adjacent), str(report)


def test_text_amax_breaks_shap_and_captum(reports, cases):
    case = cases["textcnn_amax"]
    report = reports["textcnn_amax"]
    shap_result, captum_result = report.reference("shap"), report.reference("captum")
    assert shap_result.verdict == REFERENCE_INCOMPLETE
    assert captum_result.verdict == REFERENCE_INCOMPLETE
    _assert_really_incomplete(_shap_values(case), case, shap_result.gaps, min_broken=N_EXPLAINED)
    _assert_really_incomplete(_captum_values(case, 4), case, captum_result.gaps, min_broken=N_EXPLAINED)


def test_text_amax_culprit_names_the_call(reports):
    report = reports["textcnn_amax"]
    (line,) = lines_with(TextCNNHead.forward, "torch.amax(")
    named = [c for c in report.culprits if c.kind == FUNCTIONAL and "amax" in (c.op + c.callee)]
    assert len(named) == 1, str(report)
    assert named[0].callee == "torch.amax"
    assert _site_lines(named[0]) == [line]
