"""crosscheck(model, background, X): xshap against shap's DeepExplainer and Captum's DeepLiftShap."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from xshap.check.culprits import INPLACE, RULE_CHOICE, Culprit, find_culprits
from xshap.check.diagnosis import ERROR_CAUSING_KINDS, ablate, explain_error, model_facts, trace_layers
from xshap.check.references import REFERENCES, RULE_TABLES, Ranking, ReferenceResult, available_references
from xshap.check.report import (
    AGREE,
    DISAGREE,
    REFERENCE_INCOMPLETE,
    RULE_DIFFERENCE,
    CrosscheckReport,
    ReferenceComparison,
)
from xshap.engine.rulesets import SHAP
from xshap.errors import InputError
from xshap.explain.completeness import ROUNDING_FACTOR
from xshap.explain.explainer import RANK_ORDERS, Attribution, DeepExplainer, rank_outputs
from xshap.explain.model import is_exported_program
from xshap.explain.per_sample import PerSampleExplainer, _concatenate

# references whose own rule choices xshap can reproduce, and the rule set that does
REPRODUCIBLE_RULES = {"shap": SHAP}


def crosscheck(
    model,
    background,
    X,
    *,
    references: Sequence[str] | None = None,
    validate_rows: int = 16,
    feature_names: Sequence[str] | None = None,
    ranked_outputs: int | None = None,
    output_rank_order: str = "max",
    diagnose: bool = True,
    **explainer_options,
) -> CrosscheckReport:
    """Explain ``X`` with xshap and with each reference on the same model and background; compare.

    For a torch model the conversion is checked against torch layer by layer first, so a conversion
    error is never mistaken for a finding. xshap's own completeness is checked too: if it fails,
    ``XShapIncompleteError`` is raised (a bug in xshap), never reported as a verdict.
    ``references``: names among "shap", "captum"; default every one installed. ``feature_names``: one
    per feature of the flattened input(s), for the plots, the HTML report and ``report.explanation``.
    ``model`` may be shap's interim form ``(model, layer)``; ``ranked_outputs``/``output_rank_order`` explain
    each row's top outputs as shap does (the report's outputs are then the rank slots).

    ``diagnose`` (default True): explain a reference's error from the table of known errors; where a culprit's
    fix can be applied automatically, re-run the reference on a fixed deep copy of the model (an ablation: how
    much of its gap the culprits explain); where no culprit accounts for a reference's gap, trace its
    completeness layer by layer. The user's model is never modified.
    """
    start = time.perf_counter()
    explainer = DeepExplainer(model, background, **explainer_options)
    if isinstance(explainer, PerSampleExplainer):
        if ranked_outputs is not None or isinstance(model, tuple):
            raise InputError(
                "a background function (per-sample references) takes neither ranked_outputs nor (model, layer)"
            )
        return _crosscheck_per_sample(explainer, model, X, references, validate_rows, feature_names, start)
    x_arrays = explainer.model_inputs(X)  # checked (and cast to the model's float type) before the conversion check
    bg_arrays = explainer._model_inputs_np
    converted = explainer.model.converted
    validation = None
    if converted is not None:
        rows = [np.concatenate([x[:validate_rows], b[:validate_rows]]) for x, b in zip(x_arrays, bg_arrays)]
        validation = converted.validate(*rows, max_rows=2 * validate_rows)
        validation.raise_if_failed()
    attribution = explainer.explain(X, check_additivity=True)
    ranking = None
    if ranked_outputs is not None:
        if output_rank_order not in RANK_ORDERS:
            raise ValueError("output_rank_order must be max, min, or max_abs!")
        ranks = rank_outputs(attribution.outputs, int(ranked_outputs), output_rank_order)
        ranking = Ranking(int(ranked_outputs), output_rank_order, ranks)
        attribution = select_outputs(attribution, ranks)
    xshap_seconds = time.perf_counter() - start

    notes = [f"xshap: {note}" for note in attribution.notes]
    names = list(references) if references is not None else available_references()
    unknown = [name for name in names if name not in REFERENCES]
    if unknown:
        raise ValueError(f"unknown reference(s) {unknown}; choose from {sorted(REFERENCES)}")
    results: list[ReferenceResult] = []
    saved = is_exported_program(model)
    torch_model = model[0] if isinstance(model, tuple) else model  # (model, layer): shap's interim form
    if converted is None:
        if names:
            notes.append("shap and Captum explain torch models only: no reference run for a JAX model")
        tables = {}
    elif saved:
        tables = {name: RULE_TABLES[name]() for name in names}
        if names:
            notes.append(SAVED_PROGRAM_NOTE)
    else:
        layer = explainer.model.layer if explainer.model.head is not None else None
        value_ndims = [b.ndim for b in explainer._background_np]  # the layer's inputs for (model, layer)
        for name in names:
            results.append(
                REFERENCES[name](
                    torch_model,
                    bg_arrays,
                    x_arrays,
                    explainer.n_outputs,
                    layer=layer,
                    value_ndims=value_ndims,
                    ranking=ranking,
                )
            )
        tables = {name: result.rule_table for name, result in zip(names, results)}

    culprits = find_culprits(converted, tables, None if saved else torch_model) if converted is not None else []
    failed = {name for name, result in zip(names, results) if result.error is not None}
    if failed:  # a culprit explains a reference's values; one that raised has none to explain, unless the
        # culprit's kind is the known cause of such an error (an in-place module for shap, a reused one for Captum)
        culprits = [c for c in culprits if set(c.references) - failed or c.kind in ERROR_CAUSING_KINDS]
        if any(not np.issubdtype(a.dtype, np.floating) for a in bg_arrays):
            notes.append(
                f"{', '.join(sorted(failed))} raised: they take gradients of the model's inputs, and integer inputs (token "
                "ids) have none; no culprit is listed for a reference that did not run. For a token model compare at "
                "the embeddings with xshap.crosscheck_tokens (the model split at the embedding layer)"
            )
    comparisons = []
    float64_runs: dict = {}  # xshap's float64 recheck per rule set, shared by the references
    for name, result in zip([n for n in names if not saved], results):
        choices = [c for c in culprits if c.kind == RULE_CHOICE and name in c.references]
        reproduced = None
        if choices and name in REPRODUCIBLE_RULES and result.error is None:
            reproduced = explainer.with_rules(REPRODUCIBLE_RULES[name]).explain(X, check_additivity=True)
            if ranking is not None:
                reproduced = select_outputs(reproduced, ranking.ranks)
        comparison = compare(result, attribution, choices, reproduced, REPRODUCIBLE_RULES.get(name))
        plain = not saved and ranking is None and explainer.model.head is None
        if plain:
            _recheck_in_float64(
                comparison, name, torch_model, bg_arrays, x_arrays, explainer, attribution, notes, float64_runs
            )
        comparisons.append(comparison)
    if converted is not None and not saved:
        culprits = [c for c in culprits if c.kind != INPLACE or _broken(comparisons, c.references)]
        if diagnose and ranking is None and explainer.model.head is None:
            facts: dict = {}
            for comparison in comparisons:
                _diagnose(comparison, culprits, torch_model, bg_arrays, x_arrays, explainer, attribution, facts)
    return CrosscheckReport(
        model_name=_model_name(model, converted),
        outputs=attribution.outputs,
        expected_value=attribution.expected_value,
        xshap_values=attribution.values,
        xshap_gaps=attribution.gaps,
        tolerance=attribution.tolerance,
        references=comparisons,
        culprits=culprits,
        validation=validation,
        n_background=int(bg_arrays[0].shape[0]),
        xshap_seconds=xshap_seconds,
        notes=notes,
        data=explainer.model.to_interim([np.asarray(x) for x in x_arrays]),
        feature_names=list(feature_names) if feature_names is not None else None,
        rules=explainer.rules,
    )


def _crosscheck_per_sample(explainer, model, X, references, validate_rows, feature_names, start) -> CrosscheckReport:
    """Each row against its own background (the function is called once per row): xshap and every reference."""
    from xshap.explain.data import as_input_list

    arrays, _ = as_input_list(X)
    names = list(references) if references is not None else available_references()
    unknown = [name for name in names if name not in REFERENCES]
    if unknown:
        raise ValueError(f"unknown reference(s) {unknown}; choose from {sorted(REFERENCES)}")
    parts, runs, validation, n_background = [], {name: [] for name in names}, None, 0
    torch_rows = []
    for i in range(arrays[0].shape[0]):
        inner = explainer._explainer_for(explainer.background_of([a[i] for a in arrays]))
        rows = inner.model_inputs([a[i : i + 1] for a in arrays] if inner.multi_input else arrays[0][i : i + 1])
        bg_arrays = inner._model_inputs_np
        if validation is None and inner.model.converted is not None:
            checked = [np.concatenate([x, b[:validate_rows]]) for x, b in zip(rows, bg_arrays)]
            validation = inner.model.converted.validate(*checked, max_rows=validate_rows + 1)
            validation.raise_if_failed()
            n_background = int(bg_arrays[0].shape[0])
        parts.append(inner.explain(rows if inner.multi_input else rows[0], check_additivity=True))
        torch_rows.append(rows)
        if inner.model.converted is not None:
            for name in names:
                runs[name].append(REFERENCES[name](model, bg_arrays, rows, inner.n_outputs))
    attribution = _concatenate(parts)
    explainer.expected_value = attribution.expected_value
    converted = explainer.model.converted
    notes = [f"xshap: {note}" for note in attribution.notes]
    notes.append("per-sample references: each row explained, and each reference run, against its own background")
    comparisons = []
    for name in names if converted is not None else []:
        results = runs[name]
        failed = next((r for r in results if r.error is not None), None)
        merged = ReferenceResult(
            results[0].name,
            None if failed else [np.concatenate([r.values[k] for r in results]) for k in range(len(results[0].values))],
            failed.error if failed else None,
            sum(r.seconds for r in results),
            results[0].rule_table,
        )
        comparisons.append(compare(merged, attribution))
    tables = {name: RULE_TABLES[name]() for name in names}
    culprits = find_culprits(converted, tables, model) if converted is not None else []
    return CrosscheckReport(
        model_name=_model_name(model, converted),
        outputs=attribution.outputs,
        expected_value=attribution.expected_value,
        xshap_values=attribution.values,
        xshap_gaps=attribution.gaps,
        tolerance=attribution.tolerance,
        references=comparisons,
        culprits=culprits,
        validation=validation,
        n_background=n_background,
        xshap_seconds=time.perf_counter() - start,
        notes=notes,
        data=[np.concatenate([r[k] for r in torch_rows]) for k in range(len(torch_rows[0]))],
        feature_names=list(feature_names) if feature_names is not None else None,
        rules=explainer.rules,
    )


def _broken(comparisons, references) -> bool:
    """Whether any of these references raised or is not AGREE (an in-place module is a culprit only then)."""
    return any(c.key in references and c.verdict != AGREE for c in comparisons)


def _diagnose(comparison, culprits, model, bg_arrays, x_arrays, explainer, attribution, facts) -> None:
    """Explain the reference's error, prove its fixable culprits by ablation, or trace an unexplained gap."""
    name = comparison.key
    if comparison.verdict == AGREE:
        return
    n_outputs = explainer.n_outputs

    def run(fixed_model, **options):
        return REFERENCES[name](fixed_model, bg_arrays, x_arrays, n_outputs, **options)

    def tolerance(values):
        return reference_tolerance(attribution, values)

    if comparison.error is not None:
        if not facts:
            facts.update(model_facts(model, x_arrays) or {"none": True})
        comparison.error_explanation = explain_error(name, comparison.error, culprits, facts)
    mine = [c for c in culprits if name in c.references and c.kind != RULE_CHOICE]
    comparison.ablation = ablate(
        name, run, model, culprits, comparison, lambda result: compare(result, attribution), tolerance
    )
    if not mine and comparison.error is None and comparison.count(REFERENCE_INCOMPLETE):
        comparison.layer_trace = trace_layers(
            lambda path, ndim: run(model, layer=path, value_ndims=[ndim]), model, x_arrays, attribution, tolerance
        )


def _recheck_in_float64(
    comparison, name, model, bg_arrays, x_arrays, explainer, attribution, notes, float64_runs: dict
) -> None:
    """Before calling a float32 difference DISAGREE (or a rule reproduction failed), run xshap and the reference
    again in float64. A reference's float32 secant over a tiny |Delta z| can be off by percents (Captum's eps is
    1e-10, shap's fallback threshold 1e-6) and multiply terms that cancel; if the difference is gone in float64,
    it was that rounding, not a disagreement about the rules."""
    if comparison.error is not None or comparison.verdicts is None:
        return
    failed_reproduction = comparison.reproduced_diff is not None and not comparison.reproduces
    disagree = comparison.verdicts == DISAGREE
    if not (disagree.any() or failed_reproduction):
        return
    if any(a.dtype != np.float32 for a in bg_arrays):
        return  # already float64 (or not float): nothing to gain
    import copy

    import jax

    rules = comparison.reproduced_rules if comparison.reproduced_diff is not None else explainer.rules
    try:
        model64 = copy.deepcopy(model).double()
        bg64, x64 = [a.astype(np.float64) for a in bg_arrays], [a.astype(np.float64) for a in x_arrays]
        with jax.enable_x64(True):
            if rules not in float64_runs:  # xshap's side depends on the rules only: once for every reference
                float64_runs[rules] = DeepExplainer(model64, bg64 if len(bg64) > 1 else bg64[0], rules=rules).explain(
                    x64 if len(x64) > 1 else x64[0]
                )
            mine = float64_runs[rules]
            theirs = REFERENCES[name](model64, bg64, x64, explainer.n_outputs)
    except Exception as error:  # the recheck is a refinement: keep the float32 verdicts if it cannot run
        notes.append(f"{name}: the float64 recheck of the differences could not run ({type(error).__name__}: {error})")
        return
    if theirs.error is not None:
        return
    n, n_out = attribution.outputs.shape
    diff64 = _max_difference(mine.values, theirs.values, n, n_out)
    same = diff64 <= attribution.tolerance
    if comparison.reproduced_diff is not None:
        fixed = disagree & same
        comparison.verdicts[fixed] = RULE_DIFFERENCE
        comparison.reproduces = bool(np.all((comparison.reproduced_diff <= attribution.tolerance) | same))
    else:
        fixed = disagree & same
        comparison.verdicts[fixed] = AGREE
    comparison.float64_diff = diff64
    if fixed.any():
        notes.append(
            f"{name}: {int(fixed.sum())} (sample, output) difference(s) beyond tolerance in float32 vanish in "
            f"float64 (max |xshap - {name}| {float(diff64[fixed].max()):.2g} with rules={rules!r}): the reference's "
            "float32 rounding, not its rules"
        )


def select_outputs(attribution: Attribution, ranks: np.ndarray) -> Attribution:
    """The attribution restricted to each row's ranked outputs: (N, k) slots instead of (N, n_outputs)."""
    rows = np.arange(ranks.shape[0])[:, None]
    return Attribution(
        values=[v[rows, ranks] for v in attribution.values],
        outputs=attribution.outputs[rows, ranks],
        expected_value=np.asarray(attribution.expected_value)[ranks],
        gaps=attribution.gaps[rows, ranks],
        tolerance=attribution.tolerance[rows, ranks],
        recomputed=attribution.recomputed,
        notes=list(attribution.notes),
    )


SAVED_PROGRAM_NOTE = (
    "a saved program (.pt2) holds no nn.Module objects for shap's or Captum's hooks, so they were not run; "
    "the culprits are read from the graph, and each would make that reference's attributions for the "
    "original module incomplete or different"
)


def _model_name(model, converted) -> str:
    if isinstance(model, tuple):
        layer = model[1] if isinstance(model[1], str) else type(model[1]).__name__
        return f"{_model_name(model[0], converted)} (input of {layer})"
    if converted is None:
        return getattr(model, "__name__", type(model).__name__)
    if is_exported_program(model):
        return converted.capture.root_type.rsplit(".", 1)[-1] + " (saved program)"
    return type(model).__name__


def compare(
    result: ReferenceResult,
    attribution: Attribution,
    rule_choices: list[Culprit] = (),
    reproduced: Attribution | None = None,
    reproduced_rules: str | None = None,
) -> ReferenceComparison:
    """Gaps, differences and verdicts of one reference against xshap, per sample and output.

    Where both are complete but differ: RULE_DIFFERENCE if the reference applies a rule of its own
    there (``rule_choices``) and, when xshap can reproduce that rule (``reproduced``: xshap's values
    under the reference's rule set), the reproduction matches; DISAGREE otherwise.
    """
    if result.error is not None:
        return ReferenceComparison(result.name, result.seconds, error=result.error)
    n, n_out = attribution.outputs.shape
    totals = sum(v.reshape(n, n_out, -1).sum(axis=2) for v in result.values)
    gaps = totals - (attribution.outputs - attribution.expected_value)
    diffs = _max_difference(attribution.values, result.values, n, n_out)
    tolerance = reference_tolerance(attribution, result.values)
    complete = np.abs(gaps) <= tolerance
    reproduced_diff = None
    if reproduced is not None:
        reproduced_diff = _max_difference(reproduced.values, result.values, n, n_out)
        explained = reproduced_diff <= tolerance
    else:
        explained = np.full((n, n_out), bool(rule_choices))
    verdicts = np.select(
        [~complete, diffs <= tolerance, explained], [REFERENCE_INCOMPLETE, AGREE, RULE_DIFFERENCE], DISAGREE
    )
    return ReferenceComparison(
        result.name,
        result.seconds,
        None,
        gaps,
        diffs,
        verdicts.astype(object),
        rule_differences=[
            f"`{c.rule}` on module `{c.module_path or '<root>'}` [{c.module_type.rsplit('.', 1)[-1]}]"
            for c in rule_choices
        ],
        reproduced_rules=reproduced_rules if reproduced is not None else None,
        reproduced_diff=reproduced_diff,
        reproduces=reproduced is not None and bool(np.all(explained)),
        values=result.values,
    )


def reference_tolerance(attribution: Attribution, reference_values: list[np.ndarray]) -> np.ndarray:
    """The allowed gap of a reference, and difference from xshap, per (sample, output): float32's standard at the
    output's level, 1e-4 * max(|f(x)|, |E f|) + 16 eps32 * (sum |phi| of either), never below xshap's own. The
    references take secants over |Delta z| down to 1e-6 (shap) or 1e-10 (Captum), whatever the model's precision.
    No absolute term: at outputs of 1e-4 a floor of 1 called any attribution of that size AGREE."""
    n, n_out = attribution.outputs.shape
    masses = [
        sum(np.abs(v).reshape(n, n_out, -1).sum(axis=2) for v in values)
        for values in (attribution.values, reference_values)
    ]
    level = np.maximum(np.abs(attribution.outputs), np.abs(np.broadcast_to(attribution.expected_value, (n, n_out))))
    eps32 = float(np.finfo(np.float32).eps)
    return np.maximum(attribution.tolerance, 1e-4 * level + ROUNDING_FACTOR * eps32 * np.maximum(*masses))


def _max_difference(mine: list[np.ndarray], theirs: list[np.ndarray], n: int, n_out: int) -> np.ndarray:
    """max |mine - theirs| over the features of every input, per sample and output."""
    diffs = np.zeros((n, n_out))
    for a, b in zip(mine, theirs):
        diffs = np.maximum(diffs, np.abs(a.reshape(n, n_out, -1) - b.reshape(n, n_out, -1)).max(axis=2))
    return diffs
