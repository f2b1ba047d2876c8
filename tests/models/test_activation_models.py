"""Model-level acceptance tests: small MLPs with the activations transformers use (GELU, LayerNorm, SiLU, softmax)
through xshap, shap.DeepExplainer and Captum's DeepLiftShap.

shap 0.51 has a rule (nonlinear_1d) for nn.GELU and nn.Softmax but none for nn.LayerNorm or nn.SiLU; Captum 0.9
has rules for neither GELU, SiLU nor LayerNorm, and its own (incomplete) rule for nn.Softmax. Each model is checked
for (a) xshap's completeness in float32 for every output against torch's own f(x) and E f, (b) the same in float64,
(c) the cross-check verdict of each reference, that a reference called incomplete really is (its gap recomputed
here from its own values), and the culprits read from the exported graph, and (d) where shap agrees (or differs by
its own softmax rule only), xshap's values against shap's directly.

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
    scale,
    shap_values,
    site_lines,
    torch_f,
)
from xshap.check.culprits import FUNCTIONAL, NO_RULE, REUSED, RULE_CHOICE
from xshap.check.references import captum_rule_table, shap_rule_table
from xshap.check.report import AGREE, REFERENCE_ERROR, REFERENCE_INCOMPLETE, RULE_DIFFERENCE

N_BACKGROUND, N_EXPLAINED, N_FEATURES, N_OUT = 12, 5, 10, 3
WEIGHT_SCALE = 2.0  # larger weights than torch's default init: the nonlinearities work away from their linear part


# -- models ---------------------------------------------------------------------------------------------------
class GeluNormMLP(nn.Module):
    """Linear -> LayerNorm -> GELU -> Linear -> LayerNorm -> GELU(tanh) -> Linear; ``norm=False``: no LayerNorms."""

    def __init__(self, norm: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(N_FEATURES, 16)
        self.norm1 = nn.LayerNorm(16) if norm else nn.Identity()
        self.act1 = nn.GELU()
        self.fc2 = nn.Linear(16, 12)
        self.norm2 = nn.LayerNorm(12) if norm else nn.Identity()
        self.act2 = nn.GELU(approximate="tanh")
        self.head = nn.Linear(12, N_OUT)

    def forward(self, x):
        h = self.act1(self.norm1(self.fc1(x)))
        h = self.act2(self.norm2(self.fc2(h)))
        return self.head(h)


class ReusedGeluNormMLP(GeluNormMLP):
    """One nn.GELU instance, called for both activations."""

    def __init__(self):
        super().__init__()
        del self.act1, self.act2
        self.act = nn.GELU()

    def forward(self, x):
        h = self.act(self.norm1(self.fc1(x)))
        h = self.act(self.norm2(self.fc2(h)))
        return self.head(h)


class SplitGeluNormMLP(ReusedGeluNormMLP):
    """ReusedGeluNormMLP with a second GELU instance for the second call: the same function, no reuse."""

    def __init__(self):
        super().__init__()
        self.act_b = nn.GELU()

    def forward(self, x):
        h = self.act(self.norm1(self.fc1(x)))
        h = self.act_b(self.norm2(self.fc2(h)))
        return self.head(h)


class AliasedGeluNormMLP(GeluNormMLP):
    """One nn.GELU instance registered under two attribute names (act1 and act2) and called once through each."""

    def __init__(self):
        super().__init__()
        self.act2 = self.act1


class FunctionalMLP(nn.Module):
    """Linear -> F.silu -> Linear -> F.softmax -> Linear: no module for a hook to catch."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(N_FEATURES, 16)
        self.fc2 = nn.Linear(16, 12)
        self.head = nn.Linear(12, N_OUT)

    def forward(self, x):
        h = F.silu(self.fc1(x))
        h = F.softmax(self.fc2(h), dim=-1)
        return self.head(h)


class SoftmaxMLP(nn.Module):
    """FunctionalMLP with modules: Linear -> activation module (nn.SiLU or nn.ReLU) -> Linear -> nn.Softmax -> Linear."""

    def __init__(self, activation: type[nn.Module] = nn.SiLU):
        super().__init__()
        self.fc1 = nn.Linear(N_FEATURES, 16)
        self.act = activation()
        self.fc2 = nn.Linear(16, 12)
        self.softmax = nn.Softmax(dim=-1)
        self.head = nn.Linear(12, N_OUT)

    def forward(self, x):
        h = self.act(self.fc1(x))
        h = self.softmax(self.fc2(h))
        return self.head(h)


class ReusedSiluMLP(nn.Module):
    """One nn.SiLU instance called twice, then nn.Softmax once: Linear -> SiLU -> Linear -> SiLU -> Linear -> Softmax."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(N_FEATURES, 12)
        self.act = nn.SiLU()
        self.fc2 = nn.Linear(12, 12)
        self.fc3 = nn.Linear(12, 12)
        self.softmax = nn.Softmax(dim=-1)
        self.head = nn.Linear(12, N_OUT)

    def forward(self, x):
        h = self.act(self.fc1(x))
        h = self.act(self.fc2(h))
        return self.head(self.softmax(self.fc3(h)))


class SplitSiluMLP(ReusedSiluMLP):
    """ReusedSiluMLP with a second SiLU instance for the second call: the same function, no reuse."""

    def __init__(self):
        super().__init__()
        self.act_b = nn.SiLU()

    def forward(self, x):
        h = self.act(self.fc1(x))
        h = self.act_b(self.fc2(h))
        return self.head(self.softmax(self.fc3(h)))


class ReusedSoftmaxMLP(nn.Module):
    """One nn.Softmax instance called twice: Linear -> ReLU -> Linear -> Softmax -> Linear -> Softmax -> Linear."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(N_FEATURES, 12)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(12, 12)
        self.softmax = nn.Softmax(dim=-1)
        self.fc3 = nn.Linear(12, 12)
        self.head = nn.Linear(12, N_OUT)

    def forward(self, x):
        h = self.softmax(self.fc2(self.act(self.fc1(x))))
        return self.head(self.softmax(self.fc3(h)))


# -- cases ----------------------------------------------------------------------------------------------------
@dataclass
class Case:
    model: nn.Module
    background: torch.Tensor
    X: torch.Tensor


def _case(make, seed: int) -> Case:
    torch.manual_seed(seed)
    model = make()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                module.weight.mul_(WEIGHT_SCALE)
    gen = torch.Generator().manual_seed(seed + 100)
    background = torch.randn(N_BACKGROUND, N_FEATURES, generator=gen)
    X = 2 * torch.randn(N_EXPLAINED, N_FEATURES, generator=gen)
    return Case(model.eval(), background, X)


BUILDERS = {
    "gelu_layernorm": lambda: _case(GeluNormMLP, 0),
    "gelu_layernorm_reused": lambda: _case(ReusedGeluNormMLP, 0),
    "gelu_layernorm_aliased": lambda: _case(AliasedGeluNormMLP, 0),
    "gelu": lambda: _case(lambda: GeluNormMLP(norm=False), 1),
    "functional_silu_softmax": lambda: _case(FunctionalMLP, 2),
    "silu_softmax": lambda: _case(lambda: SoftmaxMLP(nn.SiLU), 2),
    "relu_softmax": lambda: _case(lambda: SoftmaxMLP(nn.ReLU), 3),
    "silu_reused": lambda: _case(ReusedSiluMLP, 4),
    "softmax_reused": lambda: _case(ReusedSoftmaxMLP, 5),
}
FLOAT64_CASES = ["gelu_layernorm", "gelu", "functional_silu_softmax", "silu_softmax", "relu_softmax"]
# reused model -> the same function with one module instance per call (same parameters)
SPLIT = {"gelu_layernorm_reused": SplitGeluNormMLP, "silu_reused": SplitSiluMLP}


@pytest.fixture(scope="module")
def cases():
    return Lazy(lambda name: BUILDERS[name]())


@pytest.fixture(scope="module")
def reports(cases):
    return Lazy(lambda name: xshap.crosscheck(cases[name].model, cases[name].background, cases[name].X))


@pytest.fixture(scope="module")
def explained(reports):
    """xshap's float32 values (from the cross-check's DeepExplainer run) in shap's layout (N, features, n_out)."""
    return Lazy(lambda name: np.moveaxis(reports[name].xshap_values[0], 1, -1))


# -- helpers --------------------------------------------------------------------------------------------------
REFERENCE_VALUES = {
    "shap": shap_values,
    "captum": lambda model, background, X: captum_values(model, background, X, N_OUT),
}


def _reference_values(name: str, case: Case) -> np.ndarray:
    return REFERENCE_VALUES[name](case.model, case.background, case.X)


def _site_lines(culprit) -> list[int]:
    return site_lines(culprit, __file__)


def _assert_really_incomplete(values, case: Case, reported_gaps, min_broken: int):
    assert_really_incomplete(values, case.model, case.background, case.X, reported_gaps, min_broken)


def _check_incomplete(report, case: Case, name: str, min_broken: int = N_EXPLAINED):
    result = report.reference(name)
    assert result.verdict == REFERENCE_INCOMPLETE, str(report)
    assert result.count(REFERENCE_INCOMPLETE) >= min_broken
    _assert_really_incomplete(_reference_values(name, case), case, result.gaps, min_broken)


def _by_kind(report, kind: str) -> dict[str, object]:
    """module path (or callee for functional calls) -> the culprit of ``kind``; one per key."""
    found = [c for c in report.culprits if c.kind == kind]
    keyed = {(c.callee if kind == FUNCTIONAL else c.module_path): c for c in found}
    assert len(keyed) == len(found), [c.describe() for c in found]
    return keyed


def _kinds(report) -> set[str]:
    return {c.kind for c in report.culprits}


def _assert_close_to(mine, theirs):
    assert theirs.shape == mine.shape
    assert np.max(np.abs(mine - theirs)) <= 1e-4 * max(1.0, np.max(np.abs(theirs))), np.max(np.abs(mine - theirs))


# -- (a), (b): xshap's completeness ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(BUILDERS))
def test_xshap_is_complete_in_float32(explained, reports, cases, name):
    case = cases[name]
    values = explained[name]
    outputs, expected = torch_f(case.model, case.background, case.X)
    assert values.dtype == np.float32
    assert values.shape == (N_EXPLAINED, N_FEATURES, N_OUT)
    assert reports[name].validation is not None and reports[name].validation.ok
    np.testing.assert_allclose(reports[name].expected_value, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(reports[name].outputs, outputs, rtol=1e-5, atol=1e-5)
    gaps = completeness_gaps(values, outputs, expected)
    assert np.all(np.abs(gaps) <= 1e-4 * scale(outputs, expected)), np.abs(gaps).max()
    assert np.all(np.isfinite(values))
    assert np.abs(values).max() > 1e-3  # not trivially complete: the outputs do differ from E f
    assert np.abs(outputs - expected).max() > 1e-2


@pytest.mark.parametrize("name", FLOAT64_CASES)
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


# -- 1. GELU + LayerNorm: shap has no LayerNorm rule, Captum neither a GELU nor a LayerNorm rule ---------------
def test_gelu_layernorm_breaks_shap_and_captum(reports, cases):
    report = reports["gelu_layernorm"]
    _check_incomplete(report, cases["gelu_layernorm"], "shap")
    _check_incomplete(report, cases["gelu_layernorm"], "captum")
    # shap's GELU rule is complete and Softmax is absent: no rule of shap's own differs here.
    assert report.reference("shap").rule_differences == []


def test_gelu_layernorm_culprits_name_each_module(reports):
    report = reports["gelu_layernorm"]
    assert _kinds(report) == {NO_RULE}, str(report)
    no_rule = _by_kind(report, NO_RULE)
    assert set(no_rule) == {"norm1", "norm2", "act1", "act2"}
    for path in ("norm1", "norm2"):
        culprit = no_rule[path]
        assert culprit.op == "layer_norm"
        assert culprit.module_type.endswith("LayerNorm")
        assert culprit.references == ("shap", "captum")
    for path in ("act1", "act2"):
        culprit = no_rule[path]
        assert culprit.op == "gelu"
        assert culprit.module_type.endswith("GELU")
        assert culprit.references == ("captum",)  # shap's nonlinear_1d handles GELU, exact or tanh
    for path, culprit in no_rule.items():
        assert _site_lines(culprit) == lines_with(GeluNormMLP.forward, f"self.{path}(")
        assert len(culprit.sites) == 1
    text = str(report)
    assert "module `norm1` [LayerNorm] (layer_norm): no rule in shap, captum" in text
    assert "module `act2` [GELU] (gelu): no rule in captum" in text


# -- 2. GELU + LayerNorm with one GELU instance for both activations ------------------------------------------
def test_reused_gelu_verdicts(reports, cases):
    report = reports["gelu_layernorm_reused"]
    shap_result = report.reference("shap")
    # shap stores the second call's (N, 12) tensors on the module and applies them to the first call's (N, 16).
    assert shap_result.verdict == REFERENCE_ERROR
    assert "RuntimeError" in shap_result.error and "size of tensor" in shap_result.error
    # Captum has no GELU hook, so the reuse cannot trip it: it runs, incomplete from GELU and LayerNorm.
    _check_incomplete(report, cases["gelu_layernorm_reused"], "captum")


def test_reused_gelu_culprit_has_both_call_sites(reports):
    report = reports["gelu_layernorm_reused"]
    expected_lines = lines_with(ReusedGeluNormMLP.forward, "self.act(")
    assert len(expected_lines) == 2
    reused = _by_kind(report, REUSED)
    assert set(reused) == {"act"}, str(report)
    culprit = reused["act"]
    assert culprit.op == "gelu"
    assert culprit.module_type.endswith("GELU")
    assert sorted(_site_lines(culprit)) == expected_lines
    assert all("self.act(" in code for _, code in culprit.sites)
    assert "shap" in culprit.references
    no_rule = _by_kind(report, NO_RULE)
    assert set(no_rule) == {"norm1", "norm2", "act"}
    assert no_rule["act"].references == ("captum",)
    assert sorted(_site_lines(no_rule["act"])) == expected_lines
    assert _kinds(report) == {REUSED, NO_RULE}
    assert "module `act` [GELU] (gelu) reused" in str(report)


def test_aliased_gelu_is_reported_as_reused(reports, cases):
    """One GELU instance as ``self.act1`` and ``self.act2``: the same reuse as calling ``self.act`` twice.

    shap fails on it exactly as on ReusedGeluNormMLP; the report must say why.
    """
    report = reports["gelu_layernorm_aliased"]
    assert cases["gelu_layernorm_aliased"].model.act1 is cases["gelu_layernorm_aliased"].model.act2
    shap_result = report.reference("shap")
    assert shap_result.verdict == REFERENCE_ERROR
    assert "size of tensor" in shap_result.error
    reused = [c for c in report.culprits if c.kind == REUSED]
    assert len(reused) == 1, str(report)
    culprit = reused[0]
    assert culprit.op == "gelu"
    assert culprit.module_path in ("act1", "act2")
    expected_lines = lines_with(GeluNormMLP.forward, "self.act1(") + lines_with(GeluNormMLP.forward, "self.act2(")
    assert sorted(_site_lines(culprit)) == expected_lines
    assert "shap" in culprit.references


# -- 3. GELU only: shap agrees, Captum has no GELU rule -------------------------------------------------------
def test_gelu_only_shap_agrees_captum_does_not(reports, cases):
    report = reports["gelu"]
    shap_result = report.reference("shap")
    assert shap_result.verdict == AGREE, str(report)
    assert np.max(np.abs(shap_result.gaps)) <= 1e-4
    _check_incomplete(report, cases["gelu"], "captum")


def test_gelu_only_equals_shap_directly(explained, cases):
    case = cases["gelu"]
    _assert_close_to(explained["gelu"], shap_values(case.model, case.background, case.X))


def test_gelu_only_culprits_are_captums_missing_gelu_rule(reports):
    report = reports["gelu"]
    assert _kinds(report) == {NO_RULE}, str(report)
    no_rule = _by_kind(report, NO_RULE)
    assert set(no_rule) == {"act1", "act2"}
    for path, culprit in no_rule.items():
        assert culprit.op == "gelu"
        assert culprit.references == ("captum",)
        assert _site_lines(culprit) == lines_with(GeluNormMLP.forward, f"self.{path}(")
    assert all("shap" not in c.references for c in report.culprits)


# -- 4. SiLU and softmax called functionally ------------------------------------------------------------------
def test_functional_silu_softmax_breaks_shap_and_captum(reports, cases):
    report = reports["functional_silu_softmax"]
    case = cases["functional_silu_softmax"]
    _check_incomplete(report, case, "shap")
    _check_incomplete(report, case, "captum")
    # No module applies a rule of its own: nothing for rules="shap" to reproduce.
    assert report.reference("shap").rule_differences == []
    assert report.reference("shap").reproduced_diff is None


def test_functional_culprits_name_callee_and_line(reports):
    report = reports["functional_silu_softmax"]
    assert _kinds(report) == {FUNCTIONAL}, str(report)
    functional = _by_kind(report, FUNCTIONAL)
    assert set(functional) == {"F.silu", "F.softmax"}
    for callee, op in (("F.silu", "silu"), ("F.softmax", "softmax")):
        culprit = functional[callee]
        assert culprit.op == op
        assert culprit.module_path == ""
        assert culprit.module_type.endswith("FunctionalMLP")
        assert culprit.references == ("shap", "captum")
        assert _site_lines(culprit) == lines_with(FunctionalMLP.forward, f"{callee}(")
        assert len(_site_lines(culprit)) == 1
    text = str(report)
    assert "`F.silu` (silu) called functionally" in text and "`F.softmax` (softmax) called functionally" in text


# -- 5. nn.SiLU + nn.Softmax modules; then nn.ReLU + nn.Softmax ---------------------------------------------
def test_silu_softmax_modules_verdicts(reports, cases):
    report = reports["silu_softmax"]
    case = cases["silu_softmax"]
    _check_incomplete(report, case, "shap")  # from SiLU: shap's softmax rule is complete
    _check_incomplete(report, case, "captum")
    assert report.reference("shap").rule_differences == ["`nonlinear_1d` on module `softmax` [Softmax]"]
    assert report.reference("captum").rule_differences == ["`softmax` on module `softmax` [Softmax]"]


def test_silu_softmax_modules_culprits(reports):
    report = reports["silu_softmax"]
    assert _kinds(report) == {NO_RULE, RULE_CHOICE}, str(report)
    (silu,) = [c for c in report.culprits if c.kind == NO_RULE]
    assert (silu.module_path, silu.op, silu.references) == ("act", "silu", ("shap", "captum"))
    assert silu.module_type.endswith("SiLU")
    assert _site_lines(silu) == lines_with(SoftmaxMLP.forward, "self.act(")
    choices = {c.references: c for c in report.culprits if c.kind == RULE_CHOICE}
    assert set(choices) == {("shap",), ("captum",)}
    assert choices[("shap",)].rule == "nonlinear_1d"
    assert choices[("captum",)].rule == "softmax"
    for culprit in choices.values():
        assert (culprit.module_path, culprit.op) == ("softmax", "softmax")
        assert culprit.module_type.endswith("Softmax")
        assert _site_lines(culprit) == lines_with(SoftmaxMLP.forward, "self.softmax(")


def test_relu_softmax_is_a_rule_difference_for_shap(reports, cases):
    report = reports["relu_softmax"]
    shap_result = report.reference("shap")
    assert shap_result.verdict == RULE_DIFFERENCE, str(report)
    assert shap_result.count(REFERENCE_INCOMPLETE) == 0
    assert shap_result.count(RULE_DIFFERENCE) >= N_EXPLAINED
    assert np.max(np.abs(shap_result.gaps)) <= 1e-4  # shap is complete here
    assert shap_result.rule_differences == ["`nonlinear_1d` on module `softmax` [Softmax]"]
    assert shap_result.reproduced_rules == "shap"
    assert np.max(shap_result.reproduced_diff) <= 1e-4 * max(1.0, np.max(np.abs(report.outputs)))
    assert np.max(shap_result.max_abs_diff) > 1e-3  # the complete rules do split the softmax differently
    assert "reproduces shap" in str(report)
    # Captum's own softmax rule is not complete.
    _check_incomplete(report, cases["relu_softmax"], "captum")
    assert _kinds(report) == {RULE_CHOICE}, str(report)
    assert {c.rule for c in report.culprits} == {"nonlinear_1d", "softmax"}


def test_relu_softmax_shap_rules_equal_shap_directly(explained, cases):
    case = cases["relu_softmax"]
    theirs = shap_values(case.model, case.background, case.X)
    as_shap = xshap.DeepExplainer(case.model, case.background, rules="shap").shap_values(case.X)
    _assert_close_to(as_shap, theirs)
    complete = explained["relu_softmax"]
    assert np.max(np.abs(complete - theirs)) > 100 * 1e-4 * max(1.0, np.max(np.abs(theirs)))


# -- 6. reused modules: nn.SiLU called twice, nn.Softmax called twice ---------------------------------------
def test_reused_silu_verdicts(reports, cases):
    report = reports["silu_reused"]
    case = cases["silu_reused"]
    _check_incomplete(report, case, "shap")
    # Captum registers no hook on nn.SiLU, so the reuse cannot make it raise: it runs and is incomplete.
    _check_incomplete(report, case, "captum")


def test_reused_silu_culprits(reports):
    """Neither reference hooks SiLU, so the reuse changes nothing for them: the culprit is the missing rule, at
    both call sites, and no REUSED culprit sends the user to split the module for nothing."""
    report = reports["silu_reused"]
    expected_lines = lines_with(ReusedSiluMLP.forward, "self.act(")
    assert len(expected_lines) == 2
    assert _kinds(report) == {NO_RULE, RULE_CHOICE}, str(report)
    no_rule = _by_kind(report, NO_RULE)
    assert set(no_rule) == {"act"}
    assert no_rule["act"].op == "silu" and no_rule["act"].references == ("shap", "captum")
    assert sorted(_site_lines(no_rule["act"])) == expected_lines
    assert {c.module_path for c in report.culprits if c.kind == RULE_CHOICE} == {"softmax"}


def test_reused_softmax_verdicts_and_culprit(reports, cases):
    report = reports["softmax_reused"]
    captum_result = report.reference("captum")
    assert captum_result.verdict == REFERENCE_ERROR  # Captum's Softmax hook refuses a module called twice
    assert "Softmax" in captum_result.error
    # shap's nonlinear_1d uses the tensors of the second call for both calls.
    _check_incomplete(report, cases["softmax_reused"], "shap", min_broken=N_EXPLAINED)
    reused = _by_kind(report, REUSED)
    assert set(reused) == {"softmax"}, str(report)
    culprit = reused["softmax"]
    assert culprit.op == "softmax" and culprit.module_type.endswith("Softmax")
    assert sorted(_site_lines(culprit)) == lines_with(ReusedSoftmaxMLP.forward, "self.softmax(")
    assert set(culprit.references) == {"shap", "captum"}


# -- a reused module matters only to a reference that hooks its type -----------------------------------------
@pytest.mark.parametrize(
    "name, reference", [("gelu_layernorm_reused", "captum"), ("silu_reused", "shap"), ("silu_reused", "captum")]
)
def test_reuse_of_a_module_without_a_rule_leaves_the_reference_unchanged(cases, name, reference):
    """The reference's values on the reused model equal those on the same function with one instance per call."""
    case = cases[name]
    split = SPLIT[name]()
    split.load_state_dict(case.model.state_dict())
    split.eval()
    with torch.no_grad():
        np.testing.assert_array_equal(split(case.X).numpy(), case.model(case.X).numpy())
    theirs_reused = _reference_values(reference, case)
    theirs_split = REFERENCE_VALUES[reference](split, case.background, case.X)
    np.testing.assert_allclose(theirs_reused, theirs_split, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["gelu_layernorm_reused", "silu_reused", "softmax_reused"])
def test_reused_culprit_names_only_references_the_reuse_affects(reports, name):
    """A reference with no rule for a module type never hooks it, so reusing it changes nothing there (see the test
    above): a REUSED culprit saying it affects that reference sends the user to fix the wrong thing."""
    report = reports[name]
    tables = {"shap": shap_rule_table(), "captum": captum_rule_table()}
    for culprit in [c for c in report.culprits if c.kind == REUSED]:
        mtype = culprit.module_type.rsplit(".", 1)[-1]
        hooked = {ref for ref, table in tables.items() if table.get(mtype) not in (None, "passthrough")}
        assert set(culprit.references) <= hooked, culprit.describe()


# -- the report's claim about rules="shap" --------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, reproducible",
    [("relu_softmax", True), ("silu_softmax", False), ("silu_reused", False), ("softmax_reused", False)],
)
def test_report_says_rules_shap_reproduces_shap_only_when_it_does(reports, name, reproducible):
    """rules="shap" reproduces shap's softmax rule, not shap's bugs (a missing SiLU rule, a reused module): where shap
    is incomplete, xshap(rules="shap") cannot match it, and the report must not say that it does."""
    report = reports[name]
    shap_result = report.reference("shap")
    assert shap_result.reproduced_diff is not None  # shap applies its own softmax rule in each of these models
    tolerance = np.maximum(report.tolerance, 1e-4 * np.maximum(1.0, np.abs(report.outputs)))
    reproduced = bool(np.all(shap_result.reproduced_diff <= tolerance))
    assert reproduced == reproducible, np.max(shap_result.reproduced_diff)
    text = str(report)
    claims = "xshap with rules='shap' reproduces shap" in text
    denies = "xshap with rules='shap' does NOT reproduce shap" in text
    assert (claims, denies) == (reproduced, not reproduced), text
