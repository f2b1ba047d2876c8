"""No state leaks between explanations: A then B equals each alone, and the torch model is left untouched."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import xshap


def _model(seed: int, activation):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), activation(), torch.nn.Linear(7, 2)).eval()


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _hooks(model) -> int:
    return sum(
        len(m._forward_hooks)
        + len(m._forward_pre_hooks)
        + len(m._backward_hooks)
        + len(getattr(m, "_backward_pre_hooks", {}))
        for m in model.modules()
    )


def test_a_then_b_equals_each_alone():
    g = torch.Generator().manual_seed(0)
    background, X = torch.randn(12, 5, generator=g), torch.randn(4, 5, generator=g)
    a, b = _model(1, torch.nn.ReLU), _model(2, torch.nn.Tanh)
    alone_a = xshap.DeepExplainer(copy.deepcopy(a), background).shap_values(X)
    alone_b = xshap.DeepExplainer(copy.deepcopy(b), background).shap_values(X)
    for first, second, expected in ((a, b, (alone_a, alone_b)), (b, a, (alone_b, alone_a))):
        got_first = xshap.DeepExplainer(first, background).shap_values(X)
        got_second = xshap.DeepExplainer(second, background).shap_values(X)
        np.testing.assert_array_equal(got_first, expected[0])
        np.testing.assert_array_equal(got_second, expected[1])
    # two explainers alive at once, used interleaved
    ea, eb = xshap.DeepExplainer(a, background), xshap.DeepExplainer(b, background, rules="revealcancel")
    np.testing.assert_array_equal(ea.shap_values(X), alone_a)
    eb.shap_values(X)
    np.testing.assert_array_equal(ea.shap_values(X), alone_a)


def test_crosscheck_leaves_the_model_as_it_was():
    pytest.importorskip("shap")
    pytest.importorskip("captum")
    g = torch.Generator().manual_seed(1)
    background, X = torch.randn(12, 5, generator=g), torch.randn(4, 5, generator=g)
    model = _model(3, torch.nn.ReLU)
    before, hooks_before = _snapshot(model), _hooks(model)
    params_before = [id(p) for p in model.parameters()]
    report = xshap.crosscheck(model, background, X)
    assert report.reference("shap").verdict == "AGREE"
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [id(p) for p in model.parameters()] == params_before
    assert _hooks(model) == hooks_before == 0
    assert not model.training
    assert not any(hasattr(m, "x") or hasattr(m, "y") or hasattr(m, "target_input") for m in model.modules())
    # and a second crosscheck gives the same numbers
    again = xshap.crosscheck(model, background, X)
    np.testing.assert_array_equal(again.xshap_values[0], report.xshap_values[0])
    np.testing.assert_allclose(again.reference("shap").values[0], report.reference("shap").values[0], rtol=1e-6)
