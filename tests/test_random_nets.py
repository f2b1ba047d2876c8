"""Property-based cross-validation on small random torch nets (drawn by tests/strategies.py).

For every drawn net (Linear/Conv2d, every supported activation called as a module, functionally or through one
shared instance, residual adds, concatenations, pooling, LayerNorm/BatchNorm, gates, a tiny attention, an
optional softmax head):

1. the converted JAX forward equals torch's within 1e-5 (max |jax - torch| / max |torch|, float32);
2. xshap is complete, by its own check and against torch's own f(x) and E f(background), in float32 (1e-4
   relative + 16 eps * sum|phi|) and, for the float64 model with jax_enable_x64, to 1e-9 relative;
3. on the nets where a hook-based reference applies its rules exactly (every nonlinearity a module of a type
   it has a rule for, called once; no products, LayerNorm or functional calls; for Captum no GELU, no softmax
   and no two hooked modules feeding each other), xshap equals shap.DeepExplainer and Captum's DeepLiftShap
   within 1e-4 * max(1, |f(x)|, |E f|), all in float64 (shap's softmax-head rule: compared with rules="shap");
4. the culprits read from the exported graph name a cause for a reference exactly when the spec says its hooks
   can be wrong there.

Example counts come from the hypothesis profile (tests/conftest.py): "ci" by default, "thorough" with
``--hypothesis-profile=thorough``.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from hypothesis import given, note, settings
from hypothesis import strategies as st

import converters
import xshap
from tests.models.common import captum_values, shap_values, torch_f
from tests.strategies import (
    NetSpec,
    build,
    homogeneous_nets,
    ill_conditioned_nets,
    nets,
    safe_references,
    unsafe_reasons,
)
from xshap.check.culprits import RULE_CHOICE, find_culprits
from xshap.check.references import captum_rule_table, shap_rule_table

pytestmark = pytest.mark.filterwarnings("ignore")

EPS32, EPS64 = float(np.finfo(np.float32).eps), float(np.finfo(np.float64).eps)


def examples(ci: int):
    """``ci`` examples under the "ci" profile (the counts below are sized for ~4-5 minutes in all on one of the two
    CI cores: each example exports a new model and JIT-compiles it, 1-5 s, up to 10 s for the float64 and scale
    properties); the profile's max_examples under any other (``--hypothesis-profile=thorough``: 1,000 per
    property)."""
    if settings.get_current_profile_name() == "ci":
        return settings(max_examples=ci)
    return lambda test: test


def _scale(outputs, expected) -> np.ndarray:
    """max(1, |f(x)|, |E f|) per row and output."""
    return np.maximum(1.0, np.maximum(np.abs(outputs), np.abs(expected)))


def _flat(values_shap_layout: np.ndarray) -> np.ndarray:
    """(N, *row, n_out) -> (N, n_features, n_out) in float64."""
    values = np.asarray(values_shap_layout, dtype=np.float64)
    return values.reshape(values.shape[0], -1, values.shape[-1])


def _check_complete(spec: NetSpec, model, background, X, rtol: float, eps: float, dtype) -> None:
    attribution = xshap.DeepExplainer(model, background).explain(X, check_additivity=False)
    values = attribution.values[0]
    assert values.dtype == dtype, values.dtype
    assert values.shape == (spec.n_explained, spec.n_out, *spec.input_shape)
    assert np.all(np.isfinite(values))
    own = np.abs(attribution.gaps) / attribution.tolerance
    assert np.all(own <= 1), f"xshap's own completeness check: max |gap| / tolerance = {own.max():.3g}"

    outputs, expected = torch_f(model, background, X)
    phi = values.astype(np.float64).reshape(spec.n_explained, spec.n_out, -1)
    gaps = phi.sum(axis=2) - (outputs - expected)
    tolerance = rtol * _scale(outputs, expected) + 16 * eps * np.abs(phi).sum(axis=2)
    worst = np.unravel_index(np.argmax(np.abs(gaps) / tolerance), gaps.shape)
    assert np.all(np.abs(gaps) <= tolerance), (
        f"sum(phi) - (f_torch(x) - E f_torch) = {gaps[worst]:.3e} > {tolerance[worst]:.1e} at (row, output) {worst}"
    )


# -- 1. conversion ---------------------------------------------------------------------------------------------
@examples(ci=16)
@given(spec=nets())
def test_conversion_matches_torch(spec):
    note(str(spec))
    model, background, X = build(spec)
    converted = converters.from_torch(model, background)
    rows = torch.cat([X, background])
    with torch.no_grad():
        expected = model(rows).numpy()
    got = np.asarray(converted(rows.numpy()))
    assert got.dtype == np.float32 and got.shape == expected.shape == (len(rows), spec.n_out)
    difference = np.abs(got.astype(np.float64) - expected).max() / np.abs(expected).max()
    assert difference <= 1e-5, difference


# -- 2. completeness -------------------------------------------------------------------------------------------
@examples(ci=12)
@given(spec=nets())
def test_complete_in_float32(spec):
    note(str(spec))
    model, background, X = build(spec)
    _check_complete(spec, model, background, X, rtol=1e-4, eps=EPS32, dtype=np.float32)


@examples(ci=8)
@given(spec=nets())
def test_complete_in_float64(spec):
    note(str(spec))
    model, background, X = build(spec, dtype=torch.float64)
    with jax.enable_x64(True):  # restored on exit: x64 is global JAX state
        _check_complete(spec, model, background, X, rtol=1e-9, eps=EPS64, dtype=np.float64)


# -- 3. agreement with the references where their hooks are exact ---------------------------------------------
@examples(ci=10)
@given(spec=nets(hook_safe=True))
def test_equals_references_where_their_hooks_are_exact(spec):
    """Compared in float64 (the model, the data, shap, Captum and xshap with jax_enable_x64): the property is that
    the rules are the same, and in float32 the references' own rounding is not within 1e-4. shap and Captum take
    the secant Delta f / Delta z of every hooked nonlinearity down to |Delta z| = 1e-6 (shap) or 1e-10 (Captum);
    at |Delta z| ~ 1e-6 a float32 secant is off by a few percent, and that error multiplies attributions that cancel
    (e.g. a sigmoid after a residual add: Captum float32 differs from float64 by 3.6e-4 while xshap float32 is
    within 5e-8 of it). In float64 the same nets agree to ~1e-9."""
    note(str(spec))
    safe = safe_references(spec)
    assert "shap" in safe, unsafe_reasons(spec, "shap")  # the hook-safe strategy draws nets shap handles exactly
    note(f"compared with {safe}; captum left out: {unsafe_reasons(spec, 'captum')}")
    model, background, X = build(spec, dtype=torch.float64)
    outputs, expected = torch_f(model, background, X)
    tolerance = 1e-4 * _scale(outputs, expected)
    with jax.enable_x64(True):  # restored on exit: x64 is global JAX state
        mine = {
            rules: _flat(xshap.DeepExplainer(model, background, rules=rules).shap_values(X))
            for rules in set(safe.values())
        }
    theirs = {"shap": lambda: shap_values(model, background, X)}
    theirs["captum"] = lambda: captum_values(model, background, X, spec.n_out)
    for reference, rules in safe.items():
        values = np.asarray(theirs[reference]())
        if values.ndim == len(spec.input_shape) + 1:  # one output, without its trailing axis
            values = values[..., None]
        assert mine[rules].dtype == np.float64
        difference = np.abs(mine[rules] - _flat(values)).max(axis=1)  # (N, n_out)
        worst = np.unravel_index(np.argmax(difference / tolerance), difference.shape)
        assert np.all(difference <= tolerance), (
            f"{reference} vs xshap(rules={rules!r}): max |diff| {difference[worst]:.3e} > {tolerance[worst]:.1e} "
            f"at (row, output) {worst}"
        )


# -- 4. the culprits read from the graph match what the spec says about the hooks ------------------------------
@examples(ci=16)
@given(spec=nets())
def test_culprits_match_the_spec(spec):
    note(str(spec))
    model, background, _ = build(spec)
    converted = converters.from_torch(model, background)
    culprits = find_culprits(converted, {"shap": shap_rule_table(), "captum": captum_rule_table()}, model)
    for reference in ("shap", "captum"):
        # shap's softmax rule is complete (a rule difference, not an error); Captum's is not
        named = [
            c.describe()
            for c in culprits
            if reference in c.references and not (c.kind == RULE_CHOICE and reference == "shap")
        ]
        reasons = unsafe_reasons(spec, reference)
        assert bool(named) == bool(reasons), f"{reference}: spec says {reasons}, culprits {named}"


# -- 5. scale: nothing in xshap has an absolute floor -----------------------------------------------------------
@examples(ci=6)
@given(spec=homogeneous_nets(), k=st.integers(-8, 8))
def test_homogeneous_nets_attributions_scale_exactly(spec, k):
    """f(10^k x) = 10^k f(x) for a bias-free ReLU net, and its DeepLIFT attributions scale the same way (1e-5)."""
    note(str(spec))
    model, background, X = build(spec)
    base = xshap.DeepExplainer(model, background).explain(X)
    scale = np.float32(10.0**k)
    scaled = xshap.DeepExplainer(model, background * scale).explain(X * scale)
    for a, b in zip(scaled.values, base.values):
        np.testing.assert_allclose(a / scale, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())
    assert np.all(np.abs(scaled.gaps) <= scaled.tolerance)


@examples(ci=6)
@given(spec=ill_conditioned_nets(), k=st.integers(-8, 8))
def test_complete_at_every_scale(spec, k):
    """Inputs and background scaled by 10^k: every row complete (in float32, or recomputed in float64)."""
    note(str(spec))
    model, background, X = build(spec)
    scale = 10.0**k
    attribution = xshap.DeepExplainer(model, background * scale).explain(X * scale, check_additivity=False)
    assert all(np.all(np.isfinite(v)) for v in attribution.values)
    within = np.abs(attribution.gaps) <= attribution.tolerance  # 0 <= 0 where an output and its mean are exactly 0
    assert np.all(within), (
        f"gaps {attribution.gaps[~within]} > tolerances {attribution.tolerance[~within]} "
        f"(recomputed rows: {attribution.recomputed})"
    )


# -- 6. float32 against float64, ill-conditioned nets included ---------------------------------------------------
@examples(ci=8)
@given(spec=ill_conditioned_nets())
def test_float32_equals_float64_or_says_it_was_recomputed(spec):
    """The float32 model's attributions equal the float64 model's within 1e-4 of the row's attribution mass, except
    for the rows the float32 result says it recomputed in float64 (those equal the float64 ones to float32 rounding)."""
    note(str(spec))
    model, background, X = build(spec)
    single = xshap.DeepExplainer(model, background).explain(X)
    model64, background64, X64 = build(spec, dtype=torch.float64)
    double = xshap.DeepExplainer(model64, background64).explain(X64)
    n, n_out = single.outputs.shape
    mass = sum(np.abs(v).reshape(n, n_out, -1).sum(axis=2) for v in double.values)  # (N, n_out)
    for a, b in zip(single.values, double.values):
        diff = np.abs(a.astype(np.float64) - b).reshape(n, n_out, -1).max(axis=2)
        allowed = np.where(single.recomputed[:, None], 4 * EPS32, 1e-4) * mass + 1e-30
        worst = np.unravel_index(np.argmax(diff / allowed), diff.shape)
        assert np.all(diff <= allowed), (
            f"max |float32 - float64| {diff[worst]:.3e} > {allowed[worst]:.1e} at (row, output) {worst}; "
            f"recomputed: {single.recomputed.tolist()}"
        )
