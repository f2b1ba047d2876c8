"""The acceptance test of the foundation: the three seed nets of the bug report."""

from __future__ import annotations

import copy

import jax
import numpy as np
import pytest
import torch

import xshap
from xshap.check.report import AGREE, REFERENCE_ERROR, REFERENCE_INCOMPLETE


def _scale(outputs, expected):
    return np.maximum(1.0, np.maximum(np.abs(outputs), np.abs(expected)))


@pytest.mark.parametrize("name", ["FunctionalTestNet", "ModuleTestNet", "Sequential"])
def test_xshap_is_complete_in_float32(seed, name):
    nets, data = seed
    net = nets[name]
    explainer = xshap.DeepExplainer(net, data.X_train)
    attribution = explainer.explain(data.X_test)
    torch_out = net(data.X_test).detach().numpy()
    torch_expected = net(data.X_train).detach().numpy().mean(axis=0)
    np.testing.assert_allclose(attribution.outputs, torch_out, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(explainer.expected_value, torch_expected, rtol=1e-5, atol=1e-4)
    phi = explainer.shap_values(data.X_test)
    gap = phi.sum(axis=1) - (torch_out - torch_expected)
    assert np.all(np.abs(gap) <= 1e-4 * _scale(torch_out, torch_expected)), np.abs(gap).max()


@pytest.mark.parametrize("name", ["FunctionalTestNet", "ModuleTestNet", "Sequential"])
def test_xshap_is_complete_in_float64(seed, name):
    nets, data = seed
    net = copy.deepcopy(nets[name]).double()
    with jax.enable_x64(True):
        explainer = xshap.DeepExplainer(net, data.X_train.double())
        phi = explainer.shap_values(data.X_test.double())
        assert phi.dtype == np.float64
        out = net(data.X_test.double()).detach().numpy()
        expected = net(data.X_train.double()).detach().numpy().mean(axis=0)
        gap = phi.sum(axis=1) - (out - expected)
        assert np.all(np.abs(gap) <= 1e-9 * _scale(out, expected)), np.abs(gap).max()


def test_shap_layout(seed):
    nets, data = seed
    explainer = xshap.DeepExplainer(nets["Sequential"], data.X_train)
    values = explainer.shap_values(data.X_test)
    assert values.shape == (36, 16, 1)
    assert explainer.expected_value.shape == (1,)


def test_sequential_equals_shap(seed):
    shap = pytest.importorskip("shap")
    nets, data = seed
    net = nets["Sequential"]
    mine = xshap.DeepExplainer(net, data.X_train).shap_values(data.X_test)
    theirs = shap.DeepExplainer(copy.deepcopy(net), data.X_train).shap_values(data.X_test, check_additivity=False)
    assert theirs.shape == mine.shape
    assert np.max(np.abs(mine - theirs)) <= 1e-4 * max(1.0, np.max(np.abs(theirs)))


def test_sequential_crosscheck_agrees(seed):
    nets, data = seed
    report = xshap.crosscheck(nets["Sequential"], data.X_train, data.X_test)
    assert report.reference("shap").verdict == AGREE
    assert report.reference("captum").verdict == AGREE
    assert report.culprits == []


@pytest.mark.parametrize("name", ["FunctionalTestNet", "ModuleTestNet"])
def test_crosscheck_blames_activation(seed, name):
    nets, data = seed
    report = xshap.crosscheck(nets[name], data.X_train, data.X_test)
    shap_result = report.reference("shap")
    assert shap_result.verdict == REFERENCE_INCOMPLETE
    assert shap_result.count(REFERENCE_INCOMPLETE) > 30  # nearly every sample is off
    worst_gap = np.max(np.abs(shap_result.gaps))
    assert worst_gap > 10.0  # gaps of tens on outputs of about 100
    text = str(report)
    assert REFERENCE_INCOMPLETE in text and f"{worst_gap:.3g}" in text

    (culprit,) = report.culprits
    assert "activation" in culprit.name
    assert culprit.op == "relu"
    assert len(culprit.sites) == 2
    lines = [source for source, _ in culprit.sites]
    assert all(source.split(":")[0].endswith("seed.py") for source in lines)
    assert lines[0] != lines[1]
    codes = [code for _, code in culprit.sites]
    assert "self.activation(self.layer_1(x))" in codes[0] and "self.activation(self.layer_2(h))" in codes[1]
    assert "activation" in text and lines[0] in text


def test_captum_raises_on_reused_module_and_is_recorded(seed):
    nets, data = seed
    report = xshap.crosscheck(nets["ModuleTestNet"], data.X_train, data.X_test)
    captum_result = report.reference("captum")
    assert captum_result.verdict == REFERENCE_ERROR
    assert "used more than once" in captum_result.error or "Module ReLU" in captum_result.error


def test_the_model_is_left_as_it_was(seed):
    nets, data = seed
    net = nets["ModuleTestNet"]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    xshap.crosscheck(net, data.X_train, data.X_test[:4])
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not net.training
    assert all(not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks for m in net.modules())
