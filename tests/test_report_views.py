"""The report's other views (HTML, plots, DataFrame), shap.Explanation interop and the layer summary."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import converters
import xshap
from xshap.check.report import AGREE, REFERENCE_INCOMPLETE

FEATURES = [f"f{i}" for i in range(16)]


@pytest.fixture(scope="module")
def reports(seed):
    nets, data = seed
    return {
        name: xshap.crosscheck(nets[name], data.X_train, data.X_test[:8], feature_names=FEATURES)
        for name in ("Sequential", "FunctionalTestNet")
    }


def test_html_has_banner_table_culprits_and_plots(reports, tmp_path):
    report = reports["FunctionalTestNet"]
    fragment = report._repr_html_()
    assert "<!DOCTYPE" not in fragment and fragment.startswith('<div class="xshap-report">')
    assert 'class="banner"' in fragment and REFERENCE_INCOMPLETE in fragment
    assert "Per output" in fragment and "data:image/png;base64," in fragment
    # culprits with module path and both source lines
    (culprit,) = report.culprits
    for source, code in culprit.sites:
        assert source in fragment
        assert code.replace(">", "&gt;").replace("<", "&lt;") in fragment
    # every sample row is there, with the reference's own gap
    shap_gaps = report.reference("shap").gaps
    assert all(f"{g:.3g}" in fragment for g in shap_gaps[:, 0])
    path = tmp_path / "report.html"
    report.save_html(path)
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>") and fragment in page
    assert AGREE in reports["Sequential"]._repr_html_()


def test_plot_panels_hold_the_report_numbers(reports):
    report = reports["FunctionalTestNet"]
    fig = report.plot()
    scatter_ax, gap_ax, bar_ax = fig.axes[:3]
    # scatter: one point per feature and sample for each reference, at (xshap, reference)
    offsets = {c.get_label(): c.get_offsets() for c in scatter_ax.collections}
    shap_ref = report.reference("shap")
    points = offsets[shap_ref.name]
    assert points.shape == (8 * 16, 2)
    np.testing.assert_allclose(points[:, 0], report.xshap_values[0].ravel(), rtol=1e-6)
    np.testing.assert_allclose(points[:, 1], shap_ref.values[0].ravel(), rtol=1e-6)
    # the gap panel: each implementation's |gap| per sample
    lines = {line.get_label(): line.get_ydata() for line in gap_ax.get_lines()}
    floor = 1e-3 * report.tolerance.min()  # a gap of 0 is drawn at the bottom of the log axis
    np.testing.assert_allclose(lines["shap"], np.maximum(np.abs(shap_ref.gaps[:, 0]), floor), rtol=1e-6)
    assert set(lines) >= {"xshap", "shap", "captum", "tolerance"}
    # bars: per-feature mean |phi|, xshap's largest first, feature names as labels
    labels = [t.get_text() for t in bar_ax.get_xticklabels()]
    mean_abs = np.abs(report.xshap_values[0][:, 0]).mean(axis=0)
    assert labels[0] == FEATURES[int(np.argmax(mean_abs))]
    xshap_bars = [p.get_height() for p in bar_ax.containers[0]]
    np.testing.assert_allclose(xshap_bars, np.sort(mean_abs)[::-1], rtol=1e-6)


def test_to_frame_matches_rows(reports):
    pd = pytest.importorskip("pandas")
    frame = reports["FunctionalTestNet"].to_frame()
    assert isinstance(frame, pd.DataFrame) and len(frame) == 8
    assert list(frame["verdict shap"]) == [r["verdict shap"] for r in reports["FunctionalTestNet"].rows()]


def test_explanation_works_with_shap_plots(seed, reports):
    shap = pytest.importorskip("shap")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets, data = seed
    explainer = xshap.DeepExplainer(nets["Sequential"], data.X_train)
    explanation = explainer.explanation(data.X_test[:8], feature_names=FEATURES)
    assert isinstance(explanation, shap.Explanation)
    assert explanation.values.shape == (8, 16) and explanation.base_values.shape == (8,)
    np.testing.assert_allclose(explanation.values, explainer.shap_values(data.X_test[:8])[..., 0], rtol=1e-6)
    # completeness through the Explanation itself: base + sum(values) = f(x)
    f = nets["Sequential"](data.X_test[:8]).detach().numpy()[:, 0]
    np.testing.assert_allclose(explanation.base_values + explanation.values.sum(axis=1), f, rtol=1e-4, atol=1e-3)
    assert list(explanation.feature_names) == FEATURES
    for plot in (
        lambda: shap.plots.waterfall(explanation[0], show=False),
        lambda: shap.plots.beeswarm(explanation, show=False),
        lambda: shap.plots.bar(explanation, show=False),
    ):
        plot()
        plt.close("all")
    assert isinstance(explainer(data.X_test[:2]), shap.Explanation)  # shap's explainer(X) form
    same = reports["Sequential"].explanation
    np.testing.assert_allclose(same.values, explanation.values, rtol=1e-6)
    with pytest.raises(ValueError, match="3 names for 16 features"):
        explainer.explanation(data.X_test[:2], feature_names=["a", "b", "c"])


def test_explanation_of_several_outputs_and_inputs():
    shap = pytest.importorskip("shap")

    class TwoInputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(3, 2), torch.nn.Linear(4, 2)

        def forward(self, x, y):
            return torch.relu(self.a(x)) + self.b(y)

    torch.manual_seed(0)
    model = TwoInputs().eval()
    bg, x = [torch.randn(10, 3), torch.randn(10, 4)], [torch.randn(5, 3), torch.randn(5, 4)]
    explanation = xshap.DeepExplainer(model, bg).explanation(x)
    assert isinstance(explanation, shap.Explanation)
    assert explanation.values.shape == (5, 7, 2) and explanation.base_values.shape == (5, 2)
    assert explanation.feature_names[0] == "in0[0]" and explanation.feature_names[-1] == "in1[3]"
    f = model(*x).detach().numpy()
    np.testing.assert_allclose(explanation.base_values + explanation.values.sum(axis=1), f, rtol=1e-4, atol=1e-5)


def test_summary_shows_calls_rules_and_reuse(seed):
    nets, data = seed
    reused = xshap.summary(converters.from_torch(nets["ModuleTestNet"], data.X_train[:4]))
    text = str(reused)
    by_scope = {c.scope: c for c in reused.calls}
    assert {"activation", "activation@1"} <= set(by_scope)
    for scope in ("activation", "activation@1"):
        call = by_scope[scope]
        assert call.calls_of_module == 2 and call.reused
        assert call.torch_ops == {"aten.relu.default": 1}
        assert any("rescale" in rule for rule in call.rules)
    assert "reused module instances" in text and "activation" in text
    assert by_scope["layer_1"].calls_of_module == 1 and not by_scope["layer_1"].rules  # linear: no rule
    assert "call 2/2" in text
    seq = xshap.summary(converters.from_torch(nets["Sequential"], data.X_train[:4]))
    assert "reused" not in str(seq).split("\n")[1]
    assert "<table>" in seq._repr_html_()


def test_summary_names_shap_rules_and_selection(seed):
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(18, 3),
        torch.nn.Softmax(dim=1),
    ).eval()
    x = torch.randn(6, 1, 8, 8)
    complete = xshap.DeepExplainer(model, x).summary()
    rules = {c.scope: " ".join(c.rules) for c in complete.calls}
    assert "max selection" in rules["2"]
    assert re.search(r"rescale", rules["1"])
    like_shap = xshap.DeepExplainer(model, x, rules="shap").summary()
    assert "nonlinear_1d" in " ".join(like_shap.calls[-1].rules)
    assert "nonlinear_1d" not in " ".join(complete.calls[-1].rules)


def test_single_output_explanation_with_output_names_works_with_waterfall(seed):
    shap = pytest.importorskip("shap")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets, data = seed
    explanation = xshap.DeepExplainer(nets["Sequential"], data.X_train).explanation(data.X_test[:3], output_names=["y"])
    assert np.ndim(explanation[0].base_values) == 0
    shap.plots.waterfall(explanation[0], show=False)
    plt.close("all")


def test_report_repr_is_short(reports):
    text = repr(reports["FunctionalTestNet"])
    assert text.startswith("<CrosscheckReport") and "shap=REFERENCE_INCOMPLETE" in text and len(text) < 300
