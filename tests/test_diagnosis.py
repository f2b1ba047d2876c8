"""Diagnosis (issue 18, items 1-7): every reported reference bug named with its fix, proven by ablation, and an
unexplained gap traced layer by layer.

One tiny model per finding, rebuilt from the thread it was reported in (the origin is in each docstring). Each
test runs the real shap and Captum through ``xshap.crosscheck`` and checks what the report says against the
references' own values (their completeness gaps recomputed from torch) or against the model itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xshap
from tests.models.common import Lazy, completeness_gaps, lines_with, shap_values, site_lines, torch_f
from xshap.check.culprits import (
    FUNCTIONAL,
    INPLACE,
    OVERLAPPING_POOL,
    REDUCTION,
    REUSED,
    find_culprits,
)
from xshap.check.diagnosis import UNKNOWN_ERROR, explain_error
from xshap.check.references import captum_rule_table, shap_rule_table
from xshap.check.report import AGREE, REFERENCE_ERROR, REFERENCE_INCOMPLETE

pytest.importorskip("shap")
pytest.importorskip("captum")


class PoolStem(nn.Module):
    """shap issue thread: ResNet stem MaxPool2d(3, 2, 1) (also ShuffleNet, OSNet): overlapping windows."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.fc = nn.Linear(3 * 4 * 4, 2)

    def forward(self, x):
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


class ReductionHead(nn.Module):
    """shap issue thread: a head that adds torch.std and logsumexp features ("none found in the graph")."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 5)
        self.out = nn.Linear(5, 2)

    def forward(self, x):
        h = self.fc(x)
        spread = h.std(dim=1, keepdim=True)
        soft = torch.logsumexp(h, 1, keepdim=True)
        return self.out(h) + spread + soft


class InplaceNet(nn.Module):
    """shap issue thread: blocks built with nn.ReLU(inplace=True) / nn.LeakyReLU(inplace=True) raise 'Output 0 of
    BackwardHookFunction is a view and is being modified inplace'."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 5)
        self.act1 = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(5, 5)
        self.act2 = nn.LeakyReLU(0.1, inplace=True)
        self.out = nn.Linear(5, 2)

    def forward(self, x):
        return self.out(self.act2(self.fc2(self.act1(self.fc1(x)))))


class FlatRegressor(nn.Module):
    """shap issue thread: a regressor returning shape (N,) makes shap raise IndexError (it reads
    outputs.shape[1]); its F.relu is a real culprit, but not the cause of that error."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 5)
        self.out = nn.Linear(5, 1)

    def forward(self, x):
        return self.out(F.relu(self.fc(x))).squeeze(1)


class SharedTanh(nn.Module):
    """shap issue thread: one nn.Tanh object shared by every block ("3 call sites" for 9 paths); here called
    twice at the root and once inside each of three blocks (never one Tanh straight into another: that would
    add Captum's adjacent-hooks culprit, which no edit of the model fixes)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 6)
        self.c = nn.Linear(6, 6)
        self.t = nn.Tanh()
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(6, 6), self.t) for _ in range(3)])
        self.b = nn.Linear(6, 2)

    def forward(self, x):
        x = self.t(self.a(x))
        x = self.t(self.c(x))
        for block in self.blocks:
            x = block(x)
        return self.b(x)


class WhereLeaky(nn.Module):
    """A leaky ReLU written as torch.where(h > 0, h, 0.1 * h): no culprit kind covers it, both references are
    incomplete; the layer trace must show the gap appearing between the input of `fc` and that of `mid`."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 4)
        self.mid = nn.Linear(4, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        h = self.fc(x)
        h = torch.where(h > 0, h, 0.1 * h)
        return self.out(self.mid(h))


SHAPES = {
    PoolStem: (2, 8, 8),
    ReductionHead: (6,),
    InplaceNet: (6,),
    FlatRegressor: (6,),
    SharedTanh: (6,),
    WhereLeaky: (6,),
}


def _case(cls):
    torch.manual_seed(0)
    model = cls().eval()
    shape = SHAPES[cls]
    return model, torch.randn(3, *shape), torch.randn(2, *shape)


@pytest.fixture(scope="module")
def checked():
    """class -> (model, background, X, report): each model cross-checked once."""

    def run(cls):
        model, background, X = _case(cls)
        return model, background, X, xshap.crosscheck(model, background, X, validate_rows=2)

    return Lazy(run)


def _kinds(report, kind):
    return [c for c in report.culprits if c.kind == kind]


# -- 1. overlapping max pooling ---------------------------------------------------------------------------------
def test_overlapping_pool_is_named_for_shap_and_captum(checked):
    model, background, X, report = checked[PoolStem]
    outputs, expected = torch_f(model, background, X)
    shap_gaps = completeness_gaps(shap_values(model, background, X), outputs, expected)
    assert np.abs(shap_gaps).max() > 1e-3  # shap itself does not add up here
    assert report.reference("shap").verdict == REFERENCE_INCOMPLETE
    (pool,) = _kinds(report, OVERLAPPING_POOL)
    assert pool.module_path == "pool" and pool.module_type.endswith("MaxPool2d")
    assert set(pool.references) == {"shap", "captum"}
    assert "kernel 3 > stride 2" in pool.describe()
    assert site_lines(pool, __file__) == lines_with(PoolStem.forward, "self.pool(")
    assert "cannot be fixed by editing the model" in pool.fix and not pool.auto_fixable
    # the only culprit for shap: nothing else to blame, and nothing to ablate
    assert [c.kind for c in report.culprits if "shap" in c.references] == [OVERLAPPING_POOL]
    assert report.reference("shap").ablation is None and not report.reference("shap").unexplained
    assert "cannot be fixed by editing the model" in str(report)


@pytest.mark.parametrize(("pool", "overlaps"), [(nn.MaxPool1d(4, 2), True), (nn.MaxPool1d(2, 2), False)])
def test_overlap_is_read_off_the_graph(pool, overlaps):
    """Genomics nets (shap's genomics notebook threads): Conv1d -> MaxPool1d(4, 2) overlaps, (2, 2) does not."""
    import converters

    model = nn.Sequential(nn.Conv1d(2, 2, 3), nn.ReLU(), pool, nn.Flatten(), nn.Linear(2 * (3 if overlaps else 4), 1))
    converted = converters.from_torch(model.eval(), torch.randn(2, 2, 10))
    culprits = find_culprits(converted, {"shap": shap_rule_table(), "captum": captum_rule_table()}, model)
    named = [c for c in culprits if c.kind == OVERLAPPING_POOL]
    assert bool(named) == overlaps
    if overlaps:
        assert named[0].module_path == "2" and "kernel 4 > stride 2" in named[0].describe()


# -- 2. non-linear functional reductions ----------------------------------------------------------------------------
def test_nonlinear_reductions_are_culprits(checked):
    model, background, X, report = checked[ReductionHead]
    assert report.reference("shap").verdict == REFERENCE_INCOMPLETE
    assert report.reference("captum").verdict == REFERENCE_INCOMPLETE
    found = {c.op: c for c in _kinds(report, REDUCTION)}
    assert set(found) == {"std", "logsumexp"}, str(report)
    assert found["std"].callee == "h.std" and found["logsumexp"].callee == "torch.logsumexp"
    assert site_lines(found["std"], __file__) == lines_with(ReductionHead.forward, "h.std(")
    assert all(set(c.references) == {"shap", "captum"} for c in found.values())
    assert {c.kind for c in report.culprits} == {REDUCTION}
    assert "none found" not in str(report)


# -- 3. in-place modules ------------------------------------------------------------------------------------------
def test_inplace_modules_are_the_cause_of_shaps_error_and_the_fix_is_proven(checked):
    model, background, X, report = checked[InplaceNet]
    shap_ref = report.reference("shap")
    assert shap_ref.verdict == REFERENCE_ERROR and "modified inplace" in shap_ref.error
    assert report.reference("captum").verdict == AGREE
    inplace = _kinds(report, INPLACE)
    assert [c.module_path for c in inplace] == ["act1", "act2"]
    assert all(c.references == ("shap",) and "inplace=False" in c.fix for c in inplace)
    assert shap_ref.error_explanation.culprits == ["act1", "act2"]
    assert "out of place" in shap_ref.error_explanation.fix
    # ablation: shap runs on the fixed copy and agrees with xshap; the user's model is untouched
    ablation = shap_ref.ablation
    assert ablation.error is None and ablation.complete_after and ablation.verdict_after == AGREE
    assert model.act1.inplace and model.act2.inplace
    assert not model._forward_hooks and not model._forward_pre_hooks and not model.act1._backward_hooks
    text = str(report)
    assert "cause: an in-place module" in text and "`act1`" in text


# -- 4. known reference errors --------------------------------------------------------------------------------
def test_shaps_index_error_on_a_1d_output_is_explained_without_the_unrelated_culprit(checked):
    model, background, X, report = checked[FlatRegressor]
    shap_ref = report.reference("shap")
    assert shap_ref.verdict == REFERENCE_ERROR and shap_ref.error.startswith("IndexError")
    with torch.no_grad():
        assert model(X).ndim == 1
    explanation = shap_ref.error_explanation
    assert "shape (N,)" in explanation.cause and "(N, 1)" in explanation.fix
    assert explanation.culprits == []  # the F.relu culprit is real, but not this error's cause
    (relu,) = _kinds(report, FUNCTIONAL)
    assert relu.callee == "F.relu"
    assert report.reference("captum").verdict == REFERENCE_INCOMPLETE


def test_an_unknown_error_is_not_attributed_to_culprits():
    culprits = [
        find_culprits.__globals__["Culprit"](INPLACE, "relu", "act", "torch.nn.ReLU", "", ("shap",)),
    ]
    assert explain_error("shap", "RuntimeError: something else", culprits, {}) is UNKNOWN_ERROR
    # the in-place entry needs an in-place culprit, the IndexError entry a 1-D output
    assert explain_error("shap", "RuntimeError: ... is a view and is being modified inplace", [], {}) is UNKNOWN_ERROR
    assert explain_error("shap", "IndexError: tuple index out of range", [], {"output_1d": False}) is UNKNOWN_ERROR


# -- 5 and 7. names of every call, and the ablation of a reused module --------------------------------------------
def test_shared_module_lists_every_call_and_ablation_explains_the_gap(checked):
    model, background, X, report = checked[SharedTanh]
    (reused,) = _kinds(report, REUSED)
    assert reused.module_path == "t"
    assert reused.calls == ["t", "t (call #2)", "blocks.0.1", "blocks.1.1", "blocks.2.1"]
    assert "5 calls: t, t (call #2), blocks.0.1, blocks.1.1, blocks.2.1" in str(report)
    shap_ref, captum_ref = report.reference("shap"), report.reference("captum")
    assert shap_ref.verdict == REFERENCE_INCOMPLETE
    assert shap_ref.ablation.explained == 1.0 and shap_ref.ablation.complete_after
    assert shap_ref.ablation.max_gap_after < 1e-3 * shap_ref.ablation.max_gap_before
    assert "culprits explain 100 % of shap's gap" in str(report)
    assert captum_ref.verdict == REFERENCE_ERROR and captum_ref.error_explanation.culprits == ["t"]
    assert captum_ref.ablation.verdict_after == AGREE
    assert model.t is model.blocks[0][1]  # the user's model still shares its Tanh


def test_functional_call_inside_a_torch_module_is_named_by_its_module_path():
    """shap issue thread (FT-Transformer, ViT): the ReLU inside nn.TransformerEncoderLayer was reported as
    "`self._ff_block` (relu)"; it is `layers.0.activation`, torch.nn.functional.relu called in _ff_block."""
    import converters

    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(4, 1, 8, dropout=0.0, batch_first=True)
    model = nn.Sequential(nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)).eval()
    converted = converters.from_torch(model, torch.randn(2, 3, 4))
    culprits = find_culprits(converted, {"shap": shap_rule_table()}, model)
    (relu,) = [c for c in culprits if c.kind == FUNCTIONAL and c.op == "relu"]
    assert relu.module_path == "0.layers.0" and relu.callee == "self.activation"
    assert relu.qualified_name == "0.layers.0.activation" and relu.target == "torch.nn.functional.relu"
    assert "`0.layers.0.activation` = torch.nn.functional.relu" in relu.describe()


# -- 6. an unexplained gap, traced layer by layer --------------------------------------------------------------
def test_unexplained_gap_is_traced_to_the_layer_where_it_appears(checked):
    model, background, X, report = checked[WhereLeaky]
    outputs, expected = torch_f(model, background, X)
    shap_gaps = completeness_gaps(shap_values(model, background, X), outputs, expected)
    assert np.abs(shap_gaps).max() > 1e-3
    assert report.culprits == []
    for name in ("shap", "captum"):
        ref = report.reference(name)
        assert ref.verdict == REFERENCE_INCOMPLETE and ref.unexplained
        trace = ref.layer_trace
        assert [g.layer for g in trace.layers] == ["fc", "mid", "out"]
        assert [g.complete for g in trace.layers] == [False, True, True]
        assert (trace.first_broken, trace.last_complete) == ("fc", "mid")
    text = str(report)
    assert "unexplained" in text and "first stop adding up at the input of `fc`" in text
