"""crosscheck(model, background, X): xshap against shap's DeepExplainer and Captum's DeepLiftShap."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from xshap.culprits import find_culprits
from xshap.data import as_input_list
from xshap.explainer import Attribution, DeepExplainer
from xshap.references import REFERENCES, ReferenceResult, available_references
from xshap.report import AGREE, REFERENCE_INCOMPLETE, RULE_DIFFERENCE, CrosscheckReport, ReferenceComparison


def crosscheck(
    model,
    background,
    X,
    *,
    references: Sequence[str] | None = None,
    validate_rows: int = 16,
    **explainer_options,
) -> CrosscheckReport:
    """Explain ``X`` with xshap and with each reference on the same model and background; compare.

    For a torch model the conversion is checked against torch layer by layer first, so a conversion
    error is never mistaken for a finding. xshap's own completeness is checked too: if it fails,
    ``XShapIncompleteError`` is raised (a bug in xshap), never reported as a verdict.
    ``references``: names among "shap", "captum"; default every one installed.
    """
    start = time.perf_counter()
    explainer = DeepExplainer(model, background, **explainer_options)
    x_arrays, _ = as_input_list(X)
    bg_arrays = explainer._background_np
    converted = explainer.model.converted
    validation = None
    if converted is not None:
        rows = [np.concatenate([x[:validate_rows], b[:validate_rows]]) for x, b in zip(x_arrays, bg_arrays)]
        validation = converted.validate(*rows, max_rows=2 * validate_rows)
        validation.raise_if_failed()
    attribution = explainer.explain(X, check_additivity=True)
    xshap_seconds = time.perf_counter() - start

    notes = []
    names = list(references) if references is not None else available_references()
    unknown = [name for name in names if name not in REFERENCES]
    if unknown:
        raise ValueError(f"unknown reference(s) {unknown}; choose from {sorted(REFERENCES)}")
    results: list[ReferenceResult] = []
    if converted is None:
        if names:
            notes.append("shap and Captum explain torch models only: no reference run for a JAX model")
    else:
        for name in names:
            results.append(REFERENCES[name](model, bg_arrays, x_arrays, explainer.n_outputs))

    comparisons = [compare(result, attribution) for result in results]
    tables = {name: result.rule_table for name, result in zip(names, results)}
    culprits = find_culprits(converted, tables) if converted is not None else []
    return CrosscheckReport(
        model_name=type(model).__name__ if converted is not None else getattr(model, "__name__", type(model).__name__),
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
    )


def compare(result: ReferenceResult, attribution: Attribution) -> ReferenceComparison:
    """Gaps, differences and verdicts of one reference against xshap, per sample and output."""
    if result.error is not None:
        return ReferenceComparison(result.name, result.seconds, error=result.error)
    n, n_out = attribution.outputs.shape
    totals = sum(v.reshape(n, n_out, -1).sum(axis=2) for v in result.values)
    gaps = totals - (attribution.outputs - attribution.expected_value)
    diffs = np.zeros((n, n_out))
    for mine, theirs in zip(attribution.values, result.values):
        diffs = np.maximum(diffs, np.abs(mine.reshape(n, n_out, -1) - theirs.reshape(n, n_out, -1)).max(axis=2))
    # Completeness tolerance as for xshap, but never below float32's: the references compute in float32.
    tolerance = np.maximum(attribution.tolerance, 1e-4 * np.maximum(1.0, np.abs(attribution.outputs)))
    complete = np.abs(gaps) <= tolerance
    verdicts = np.where(~complete, REFERENCE_INCOMPLETE, np.where(diffs <= tolerance, AGREE, RULE_DIFFERENCE))
    return ReferenceComparison(result.name, result.seconds, None, gaps, diffs, verdicts.astype(object))
