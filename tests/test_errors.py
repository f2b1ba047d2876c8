"""Bad input gets a clear error naming the problem, never a silently wrong attribution."""

from __future__ import annotations

import dataclasses
import warnings

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import converters
import xshap


class TwoUnknownOps(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        h = torch.sort(self.fc(x), dim=1).values
        return torch.cummax(h, dim=1).values


def test_unknown_ops_are_listed_at_once_with_module_and_line():
    with pytest.raises(converters.UnsupportedOperatorError) as caught:
        converters.from_torch(TwoUnknownOps(), torch.randn(2, 4))
    message = str(caught.value)
    assert "aten.sort" in message and "aten.cummax" in message
    assert "test_errors.py" in message and "torch.sort(self.fc(x), dim=1).values" in message
    assert len(caught.value.unknown) == 2


def test_training_mode_is_converted_in_eval_with_a_warning_and_restored():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.5), torch.nn.ReLU())
    model.train()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted = converters.from_torch(model, torch.randn(2, 3))
    assert any("training mode" in str(w.message) for w in caught)
    assert model.training and all(m.training for m in model.modules())
    x = torch.randn(5, 3)
    model.eval()
    np.testing.assert_allclose(np.asarray(converted(x)), model(x).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_validate_names_the_first_divergent_layer():
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)).eval()
    converted = converters.from_torch(model, torch.randn(2, 4))
    steps = converted.graph.steps
    index = next(i for i, s in enumerate(steps) if s.provenance.module_path == "1")
    steps[index] = dataclasses.replace(steps[index], impl=lambda h: jnp.tanh(h) * 1.01)  # a wrong conversion
    report = converted.validate(torch.randn(6, 4))
    assert not report.ok
    assert report.first_divergent.layer == "1"
    assert report.first_divergent.module_type.endswith("Tanh")
    assert [layer.ok for layer in report.layers][:1] == [True]
    with pytest.raises(converters.ConversionError, match="first divergent layer: 1"):
        report.raise_if_failed()


def test_model_returning_a_tuple_is_refused():
    class Pair(torch.nn.Module):
        def forward(self, x):
            return x * 2, x + 1

    with pytest.raises(converters.ConversionError, match="returns 2 value"):
        xshap.DeepExplainer(Pair(), torch.randn(4, 3))


def test_mismatched_inputs_are_refused():
    model = torch.nn.Linear(3, 1).eval()
    explainer = xshap.DeepExplainer(model, torch.randn(8, 3))
    with pytest.raises(xshap.InputError, match=r"rows of shape \(4,\)"):
        explainer.shap_values(torch.randn(2, 4))
    with pytest.raises(xshap.InputError, match="dtype float64"):
        explainer.shap_values(np.zeros((2, 3)))
    with pytest.raises(xshap.InputError, match="NaN/Inf"):
        explainer.shap_values(torch.tensor([[0.0, float("nan"), 1.0]]))


def test_empty_background_is_refused():
    with pytest.raises(xshap.InputError, match="empty"):
        xshap.DeepExplainer(torch.nn.Linear(3, 1), torch.zeros(0, 3))


def test_changed_weights_are_detected():
    model = torch.nn.Linear(3, 1).eval()
    explainer = xshap.DeepExplainer(model, torch.randn(8, 3))
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(xshap.InputError, match="changed after xshap converted it"):
        explainer.shap_values(torch.randn(2, 3))


class SoftmaxOverBatch(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 3)

    def forward(self, x):
        return torch.softmax(self.layer(x), dim=0)


class CentredOverBatch(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = torch.nn.Sequential(torch.nn.Linear(4, 3))
        self.head = torch.nn.Linear(3, 2)

    def forward(self, x):
        h = self.inner(x)
        return self.head(h - h.mean(0, keepdim=True))


@pytest.mark.parametrize("model_type, op", [(SoftmaxOverBatch, "softmax"), (CentredOverBatch, "mean")])
def test_models_that_mix_rows_of_a_batch_are_refused_with_the_op_and_line(model_type, op):
    torch.manual_seed(0)
    model = model_type().eval()
    with pytest.raises(converters.BatchDependenceError) as caught:
        xshap.DeepExplainer(model, torch.randn(8, 4))
    message = str(caught.value)
    assert f"aten.{op}" in message and "test_errors.py:" in message
    assert f"[{model_type.__name__}]" in message


def test_batchnorm_without_running_statistics_is_refused_by_name():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3, track_running_stats=False)).eval()
    with pytest.raises(converters.BatchDependenceError, match=r"1 \[BatchNorm1d\] has track_running_stats=False"):
        xshap.DeepExplainer(model, torch.randn(8, 4))


def test_models_that_keep_rows_apart_pass_the_row_check():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Softmax(dim=1), torch.nn.Linear(3, 2)
    ).eval()
    background = torch.randn(8, 4)
    explainer = xshap.DeepExplainer(model, background)
    X = torch.randn(3, 4)
    np.testing.assert_allclose(explainer.explain(X).outputs, model(X).detach().numpy(), rtol=1e-5, atol=1e-6)
