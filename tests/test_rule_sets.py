"""rules="shap": shap's own rule choices reproduced (1-D rescale over a whole nn.Softmax), and the
crosscheck telling such a rule difference apart from an error."""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import xshap
from xshap.check.culprits import RULE_CHOICE
from xshap.check.report import AGREE, REFERENCE_INCOMPLETE, RULE_DIFFERENCE
from xshap.engine.rulesets import SHAP_NONLINEAR_1D

shap = pytest.importorskip("shap")


def _cnn_with_every_shap_module() -> torch.nn.Module:
    """Every module type shap 0.51 has a rule for, each instance used once, softmax in the middle and at the end."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 6, 3, padding=1),
        torch.nn.ELU(),
        torch.nn.AvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(6, 10),
        torch.nn.Tanh(),
        torch.nn.Linear(10, 8),
        torch.nn.Softmax(dim=1),
        torch.nn.Linear(8, 8),
        torch.nn.GELU(),
        torch.nn.Linear(8, 6),
        torch.nn.LeakyReLU(0.1),
        torch.nn.Linear(6, 6),
        torch.nn.Softplus(),
        torch.nn.Linear(6, 5),
        torch.nn.Sigmoid(),
        torch.nn.Linear(5, 3),
        torch.nn.Softmax(dim=1),
    )
    batch_norm = model[1]
    batch_norm.running_mean.uniform_(-0.5, 0.5)
    batch_norm.running_var.uniform_(0.5, 2.0)
    batch_norm.weight.data.uniform_(0.5, 1.5)
    with torch.no_grad():  # larger weights: the squashing layers would otherwise leave attributions ~1e-7
        for layer in model:
            if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)):
                layer.weight.mul_(3)
    return model.eval()


@pytest.fixture(scope="module")
def cnn_case():
    model = _cnn_with_every_shap_module()
    generator = torch.Generator().manual_seed(1)
    background = torch.randn(12, 2, 4, 4, generator=generator)
    X = torch.cat([3 * torch.randn(4, 2, 4, 4, generator=generator), background[:1]])  # last row: Delta = 0
    return model, background, X


def test_the_shap_rule_table_is_the_installed_shaps():
    from shap.explainers._deep import deep_pytorch

    installed = {name for name, handler in deep_pytorch.op_handler.items() if handler.__name__ == "nonlinear_1d"}
    assert installed == set(SHAP_NONLINEAR_1D)


def test_shap_rules_equal_shap_where_shap_is_right_and_complete_rules_differ(cnn_case):
    model, background, X = cnn_case
    explainer = xshap.DeepExplainer(model, background)
    complete = explainer.shap_values(X)
    as_shap = explainer.with_rules("shap").shap_values(X)
    theirs = shap.DeepExplainer(copy.deepcopy(model), background).shap_values(X, check_additivity=False)
    assert np.max(np.abs(as_shap - theirs)) <= 1e-4 * max(1.0, np.max(np.abs(theirs)))
    assert np.max(np.abs(complete - theirs)) > 0.5 * np.max(np.abs(theirs))  # the softmaxes split differently

    out = model(X).detach().numpy()
    expected = model(background).detach().numpy().mean(axis=0)
    for values in (complete, as_shap):  # both rule sets are complete
        gaps = values.reshape(len(X), -1, 3).sum(axis=1) - (out - expected)
        assert np.all(np.abs(gaps) <= 1e-4 * np.maximum(1.0, np.abs(out)))


def test_shap_rules_equal_shap_exactly_in_float64(cnn_case):
    """In float64 the rounding of shap's own difference quotients vanishes: the rules are the same."""
    model, background, X = cnn_case
    model, background, X = copy.deepcopy(model).double(), background.double(), X.double()
    with jax.enable_x64(True):
        as_shap = xshap.DeepExplainer(model, background, rules="shap").shap_values(X)
    theirs = shap.DeepExplainer(copy.deepcopy(model), background).shap_values(X, check_additivity=False)
    assert theirs.dtype == np.float64
    assert np.max(np.abs(as_shap - theirs)) <= 1e-9 * np.max(np.abs(theirs))


def test_crosscheck_reports_the_softmax_rule_as_a_rule_difference(cnn_case):
    model, background, X = cnn_case
    report = xshap.crosscheck(model, background, X)
    shap_result = report.reference("shap")
    assert shap_result.verdict == RULE_DIFFERENCE
    assert shap_result.count(REFERENCE_INCOMPLETE) == 0
    assert np.max(shap_result.reproduced_diff) <= 1e-4 * max(1.0, np.max(np.abs(report.outputs)))
    assert shap_result.rule_differences == [
        "`nonlinear_1d` on module `11` [Softmax]",
        "`nonlinear_1d` on module `21` [Softmax]",
    ]
    choices = [c for c in report.culprits if c.kind == RULE_CHOICE and c.references == ("shap",)]
    assert [c.module_path for c in choices] == ["11", "21"]
    text = str(report)
    assert "`nonlinear_1d` on module `11` [Softmax]" in text and "reproduces shap" in text
    # Captum's own softmax rule is named too; it is not complete, and the report says so.
    captum_result = report.reference("captum")
    assert captum_result.verdict == REFERENCE_INCOMPLETE
    assert any(c.kind == RULE_CHOICE and c.rule == "softmax" for c in report.culprits)


def test_without_softmax_both_rule_sets_agree_with_shap_and_each_other(seed):
    nets, data = seed
    net = nets["Sequential"]
    explainer = xshap.DeepExplainer(net, data.X_train)
    complete = explainer.shap_values(data.X_test)
    as_shap = explainer.with_rules("shap").shap_values(data.X_test)
    theirs = shap.DeepExplainer(copy.deepcopy(net), data.X_train).shap_values(data.X_test, check_additivity=False)
    scale = max(1.0, np.max(np.abs(theirs)))
    assert np.max(np.abs(as_shap - theirs)) <= 1e-4 * scale
    assert np.max(np.abs(complete - as_shap)) <= 1e-4 * scale
    assert xshap.crosscheck(net, data.X_train, data.X_test[:6]).reference("shap").verdict == AGREE


def test_shap_rules_keep_completeness_where_shaps_hooks_fail():
    """A reused nn.Softmax: each call is its own unit, so rules="shap" stays complete (shap does not)."""

    class ReusedSoftmax(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.first, self.second, self.head = torch.nn.Linear(4, 6), torch.nn.Linear(6, 6), torch.nn.Linear(6, 2)
            self.softmax = torch.nn.Softmax(dim=-1)

        def forward(self, x):
            return self.head(self.softmax(self.second(self.softmax(self.first(x)))))

    torch.manual_seed(0)
    model = ReusedSoftmax().eval()
    background, X = torch.randn(10, 4), 2 * torch.randn(4, 4)
    values = xshap.DeepExplainer(model, background, rules="shap").shap_values(X)
    out, expected = model(X).detach().numpy(), model(background).detach().numpy().mean(axis=0)
    assert np.all(np.abs(values.sum(axis=1) - (out - expected)) <= 1e-4 * np.maximum(1.0, np.abs(out)))


def test_rule_set_errors():
    with pytest.raises(xshap.InputError, match="unknown rule set 'deeplift'"):
        xshap.DeepExplainer(torch.nn.Linear(3, 1).eval(), torch.randn(4, 3), rules="deeplift")
    with pytest.raises(xshap.InputError, match="a JAX function has no modules"):
        xshap.DeepExplainer(lambda x: jnp.tanh(x), np.ones((4, 3), np.float32), rules="shap")
