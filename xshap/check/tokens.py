"""crosscheck_tokens: xshap's per-token attributions of a token model against shap and Captum on the same layer.

Neither reference takes integer ids: shap's DeepExplainer and Captum's DeepLiftShap (and Captum's own
``LayerDeepLiftShap`` on a BERT's embeddings) ask the ids for gradients and raise "only Tensors of floating point
dtype can require gradients". So the model is split at the explained layer (``xshap.check.tails.LayerTail``): the
references explain the user's own model run on the row's inputs with the layer's output replaced by their float
input, the background's layer values (under the row's own mask) as their background. What is computed beside the
layer (the attention mask, a padding mask computed from the ids, position ids) comes from the row's own inputs, as
xshap holds it; any model and any layer returning one tensor, called once, can be split so, ``inputs_embeds`` or
not. One reference run per row, since each row has its own held values. Before the references run, the split is
checked against xshap: at the row's own layer value it must give xshap's f(x), at the background's its reference
outputs; where it cannot be built or does not match, the report says why and compares nothing.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from xshap.check.crosscheck import compare
from xshap.check.culprits import find_culprits
from xshap.check.references import REFERENCES, RULE_TABLES, ReferenceResult, available_references
from xshap.check.report import CrosscheckReport
from xshap.errors import InputError
from xshap.explain.explainer import Attribution
from xshap.explain.text import TokenExplainer

_WRAPPERS = "model.model."  # MarkedModel around the keyword-inputs module around the user's model


def crosscheck_tokens(
    model,
    background_ids,
    ids,
    background_mask=None,
    mask=None,
    *,
    references: Sequence[str] | None = None,
    output: str | int | None = None,
    tokenizer=None,
    explainer: TokenExplainer | None = None,
) -> CrosscheckReport:
    """xshap's ``TokenExplainer`` against shap's DeepExplainer and Captum's DeepLiftShap on the model split at the
    explained layer (module docstring); a ``CrosscheckReport`` with one verdict per row and output.

    ``explainer``: a ``TokenExplainer`` of this model and background already built (its conversion is reused)."""
    start = time.perf_counter()
    if explainer is None:
        explainer = TokenExplainer(model, background_ids, background_mask, output=output, tokenizer=tokenizer)
    elif explainer.model is not model or not np.array_equal(explainer.background[0], np.asarray(background_ids)):
        raise InputError("explainer= must be a TokenExplainer of this model with these background ids")
    output = explainer.explainer.output
    rows = explainer._rows(ids, mask)
    attribution = explainer.explain(*rows)
    seconds = time.perf_counter() - start
    names = list(references) if references is not None else available_references()
    notes = [
        "xshap: the attention mask and what else is computed beside the layer are held at each row's own value "
        f"(graph values {explainer.explainer.held})"
    ]
    ours = Attribution(
        attribution.values, attribution.outputs, attribution.reference_outputs, attribution.gaps, attribution.tolerance
    )
    from xshap.check.tails import TailError  # torch-only: loaded when a torch token model is checked

    comparisons = []
    function = explainer.explainer._functions[0]
    wrapped = explainer.explainer._source[0]  # the user's model called with (ids, mask) by keyword
    try:
        tails, bg_values, x_values = _split(wrapped, explainer.layer, rows, explainer.background, output, attribution)
    except TailError as error:
        if names:
            notes.append(
                f"shap and Captum were not run: neither takes integer ids, and the model cannot be split at the layer "
                f"for them: {error}"
            )
        names, tails, x_values = [], [], None
    for name in names:
        per_row = []
        error, elapsed = None, 0.0
        for i, tail in enumerate(tails):
            result: ReferenceResult = REFERENCES[name](tail, [bg_values[i]], [x_values[i : i + 1]], explainer.n_outputs)
            elapsed += result.seconds
            if result.error is not None:
                error = result.error
                break
            per_row.append(result.values[0])
        if error is None:
            result = ReferenceResult(result.name, [np.concatenate(per_row)], None, elapsed, result.rule_table)
        else:
            result = ReferenceResult(result.name, None, error, elapsed, result.rule_table)
        comparisons.append(compare(result, ours))
    tables = {name: RULE_TABLES[name]() for name in names}
    culprits = find_culprits(function.converted, tables, None, varying_from=function.value_names) if names else []
    for culprit in culprits:  # paths in the user's model, not in xshap's wrappers around it
        path = culprit.module_path
        culprit.module_path = "" if path == _WRAPPERS.rstrip(".") else path.removeprefix(_WRAPPERS)
    return CrosscheckReport(
        model_name=f"{type(model).__name__} (tokens, at {type(explainer.layer).__name__})",
        outputs=attribution.outputs,
        expected_value=attribution.reference_outputs,
        xshap_values=attribution.values,
        xshap_gaps=attribution.gaps,
        tolerance=attribution.tolerance,
        references=comparisons,
        culprits=culprits,
        n_background=len(explainer.background[0]),
        xshap_seconds=seconds,
        notes=notes,
        data=[x_values] if x_values is not None else [],
    )


def _split(model, layer, rows, background, output, attribution):
    """One ``LayerTail`` per row, the background's and the rows' layer values (numpy), after checking that each
    tail gives xshap's f(x) at the row's layer value and xshap's reference output at the background's."""
    import torch

    from xshap.check.tails import LayerTail, TailError, layer_values
    from xshap.explain.layers import _aliases

    modules = list({id(m): m for m in (model.get_submodule(p) for p in _aliases(model, layer))}.values())
    x_values = layer_values(model, modules, rows)
    n_background = len(background[0])
    tails, bg_values = [], []
    for i in range(len(rows[0])):  # the background under the row's own mask, as xshap computes it
        bg_values.append(layer_values(model, modules, (background[0], np.repeat(rows[1][i : i + 1], n_background, 0))))
        tail = LayerTail(model, modules, tuple(r[i : i + 1] for r in rows), output).eval()
        with torch.no_grad():
            f = tail(x_values[i : i + 1]).reshape(-1).double().numpy()
            reference = tail(bg_values[i]).reshape(n_background, -1).double().mean(0).numpy()
        for what, theirs, ours in (("f(x)", f, attribution.outputs[i]), ("the reference", reference,
                                   attribution.reference_outputs[i])):  # fmt: skip
            scale = np.abs(ours).max()
            if theirs.shape != ours.shape or not np.abs(theirs - ours).max() <= 1e-4 * scale:
                raise TailError(
                    f"the model run with the layer's output replaced gives {what} = {np.round(theirs, 6).tolist()} for "
                    f"row {i}, xshap's split {np.round(ours, 6).tolist()}: the model's output depends on more than the "
                    "layer's value and the row's own inputs (batch statistics, randomness, state kept between calls?)"
                )
        tails.append(tail)
    return tails, [b.numpy() for b in bg_values], x_values.numpy()
