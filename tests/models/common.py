"""Helpers shared by the model-level acceptance tests: torch's own f, completeness gaps, the references run
directly (not through xshap), and culprit call sites as line numbers."""

from __future__ import annotations

import copy
import inspect
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch


class Lazy(dict):
    """A dict that computes a missing entry on first use (module-scoped fixtures share models and reports)."""

    def __init__(self, make):
        super().__init__()
        self.make = make

    def __missing__(self, key):
        value = self[key] = self.make(key)
        return value


def randomize_batchnorm(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters, so it is not the identity."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            with torch.no_grad():
                module.running_mean.copy_(0.3 * torch.randn(n, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                module.weight.copy_(0.8 + 0.6 * torch.rand(n, generator=gen))
                module.bias.copy_(0.2 * torch.randn(n, generator=gen))
    return model


def torch_f(model, background, X):
    """f(x) (N, n_out) and E f (n_out,) computed by torch itself."""
    with torch.no_grad():
        return model(X).numpy().astype(np.float64), model(background).numpy().astype(np.float64).mean(axis=0)


def scale(outputs, expected):
    """max(1, |f(x)|, |E f|): what the completeness tolerance is relative to."""
    return np.maximum(1.0, np.maximum(np.abs(outputs), np.abs(expected)))


def completeness_gaps(values_shap_layout, outputs, expected):
    """sum(phi) - (f(x) - E f) per row and output; values in shap's layout (N, *row, n_out)."""
    values = np.asarray(values_shap_layout, dtype=np.float64)
    return values.reshape(values.shape[0], -1, values.shape[-1]).sum(axis=1) - (outputs - expected)


def shap_values(model, background, X) -> np.ndarray:
    """shap.DeepExplainer on a copy of the model, without its additivity check: shap's own layout."""
    shap = pytest.importorskip("shap")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explainer = shap.DeepExplainer(copy.deepcopy(model), background)
        return np.asarray(explainer.shap_values(X, check_additivity=False))


def captum_values(model, background, X, n_outputs: int) -> np.ndarray:
    """Captum's DeepLiftShap on a copy of the model, one call per output, stacked in shap's layout."""
    captum_attr = pytest.importorskip("captum.attr")
    per_output = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for output in range(n_outputs):
            explainer = captum_attr.DeepLiftShap(copy.deepcopy(model))
            per_output.append(explainer.attribute(X, baselines=background, target=output).detach().numpy())
    return np.stack(per_output, axis=-1)


def lines_with(method, needle: str) -> list[int]:
    """Line numbers of the lines of ``method`` that contain ``needle``."""
    lines, start = inspect.getsourcelines(method)
    return [start + i for i, line in enumerate(lines) if needle in line]


def site_lines(culprit, test_file: str) -> list[int]:
    """The culprit's call sites as line numbers of ``test_file`` (fails if a site is in another file)."""
    lines = []
    for source, _code in culprit.sites:
        path, line = source.rsplit(":", 1)
        assert Path(path).resolve() == Path(test_file).resolve(), source
        lines.append(int(line))
    return lines


def assert_really_incomplete(values, model, background, X, reported_gaps, min_broken: int) -> None:
    """A reference's values, checked here against torch's f: its completeness gaps are real (over 10x the
    tolerance on at least ``min_broken`` entries) and equal the gaps the report quotes."""
    outputs, expected = torch_f(model, background, X)
    gaps = completeness_gaps(values, outputs, expected)
    broken = np.abs(gaps) > 10 * 1e-4 * scale(outputs, expected)
    assert broken.sum() >= min_broken, (np.abs(gaps).max(), broken.sum())
    np.testing.assert_allclose(reported_gaps, gaps, atol=2e-5)  # both from float32 references
