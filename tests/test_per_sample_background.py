"""Issue 18, item 13: per-sample references (the background as a function of x) and float64 DataFrames against a
float32 model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import xshap
from tests.models.common import shap_values

pytest.importorskip("shap")
pytest.importorskip("captum")


def _genomics_net():
    """shap's genomics notebook (DeepExplainer(model, dinuc_shuffle_several_times)): a Conv1d over one-hot DNA
    whose references are shuffles of each explained sequence."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(4, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6, 2)).eval()


class Shuffles:
    """Five shuffles of the row's positions (shap's convention: called with a list holding the row of each input);
    remembers what it returned, so the test can run shap on exactly the same backgrounds."""

    def __init__(self):
        self.rng = np.random.default_rng(0)
        self.returned: list[np.ndarray] = []

    def __call__(self, row):
        (x,) = row
        background = np.stack([x[:, self.rng.permutation(x.shape[1])] for _ in range(5)]).astype(np.float32)
        self.returned.append(background)
        return background


@pytest.fixture(scope="module")
def per_sample():
    model = _genomics_net()
    X = torch.randn(3, 4, 8)
    shuffles = Shuffles()
    return model, X, shuffles, xshap.crosscheck(model, shuffles, X, validate_rows=2)


def test_each_row_is_explained_against_its_own_background(per_sample):
    model, X, shuffles, report = per_sample
    assert len(shuffles.returned) == 3  # called once per row: xshap and the references saw the same background
    assert np.asarray(report.expected_value).shape == (3, 2)
    values = np.moveaxis(report.xshap_values[0], 1, -1)  # (N, 4, 8, 2), shap's layout
    for i, background in enumerate(shuffles.returned):
        bg = torch.from_numpy(background)
        with torch.no_grad():
            fx, ef = model(X[i : i + 1]).numpy(), model(bg).numpy().mean(axis=0)
        np.testing.assert_allclose(values[i].sum(axis=(0, 1)), (fx - ef)[0], rtol=1e-4, atol=1e-5)
        theirs = shap_values(model, bg, X[i : i + 1])[0]
        np.testing.assert_allclose(values[i], theirs, rtol=1e-4, atol=1e-6)
    assert report.reference("shap").verdict == "AGREE" and report.reference("captum").verdict == "AGREE"
    assert "per-sample references" in str(report)


def test_shaps_calls_on_a_background_function():
    """shap_values, explainer(X) and expected_value per row; what depends on one background is refused."""
    model = _genomics_net()
    X = torch.randn(2, 4, 8)
    e = xshap.DeepExplainer(model, lambda row: np.stack([row[0] * s for s in (0.0, 0.5)]))
    values = e.shap_values(X)
    assert values.shape == (2, 4, 8, 2) and e.expected_value.shape == (2, 2)
    np.testing.assert_array_equal(e(X).values, values)
    with torch.no_grad():
        expected = np.stack([model(torch.stack([x * s for s in (0.0, 0.5)])).numpy().mean(axis=0) for x in X])
    np.testing.assert_allclose(e.expected_value, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(AttributeError, match="background function"):
        e.with_rules("shap")


def test_a_float64_dataframe_against_a_float32_model():
    """shap issue thread: a float64 pandas DataFrame against a float32 model gave torch's dtype error; xshap casts
    it to the model's float32 (as torch would compute) and equals shap on the float32 tensors."""
    pd = pytest.importorskip("pandas")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    rng = np.random.default_rng(0)
    bg, X = pd.DataFrame(rng.normal(size=(5, 4))), pd.DataFrame(rng.normal(size=(3, 4)))
    assert (bg.dtypes == np.float64).all()
    values = xshap.DeepExplainer(model, bg).shap_values(X)
    assert values.dtype == np.float32 and values.shape == (3, 4, 2)
    theirs = shap_values(
        model, torch.tensor(bg.values, dtype=torch.float32), torch.tensor(X.values, dtype=torch.float32)
    )
    np.testing.assert_allclose(values, theirs, rtol=1e-4, atol=1e-6)
