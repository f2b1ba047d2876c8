"""crosscheck_tokens: xshap's per-token attributions of a token model against shap and Captum on the same layer.

Neither reference takes integer ids: shap's DeepExplainer and Captum's DeepLiftShap (and Captum's own
``LayerDeepLiftShap`` on a BERT's embeddings) ask the ids for gradients and raise "only Tensors of floating point
dtype can require gradients". So the model is split at its input embeddings: a Hugging Face model takes the
embedding output itself as ``inputs_embeds``, and the references explain ``model(inputs_embeds=z,
attention_mask=m)`` with z the embeddings of the ids and the background's embeddings as their background, the
mask bound to the explained row's own (xshap holds it the same way). One reference run per row, since each row has
its own mask. A model without ``inputs_embeds`` cannot be split that way: the exported graph is specialised to a
batch of one row, so a module rebuilt from its tail could not take the references' batch of background rows; the
report then says so and compares nothing.
"""

from __future__ import annotations

import copy
import inspect
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


def _embeds_model(model, mask_row, output):
    """``model(inputs_embeds=z, attention_mask=mask_row)`` as a module of z alone (the mask repeated per row)."""
    import torch

    from converters.split import pick_output

    class FromEmbeddings(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.register_buffer("mask", torch.as_tensor(mask_row)[None], persistent=False)
            self._cache = {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}

        def forward(self, embeds):
            mask = self.mask.expand(embeds.shape[0], -1)
            return pick_output(self.model(inputs_embeds=embeds, attention_mask=mask, **self._cache), output)

    return FromEmbeddings().eval()


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
    """xshap's ``TokenExplainer`` against shap's DeepExplainer and Captum's DeepLiftShap on the model split at its
    input embeddings (module docstring); a ``CrosscheckReport`` with one verdict per row and output.

    ``explainer``: a ``TokenExplainer`` of this model and background already built (its conversion is reused)."""
    import torch

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
    comparisons = []
    function = explainer.explainer._functions[0]
    embeds_layer = explainer.layer is model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else False
    takes_embeds = "inputs_embeds" in inspect.signature(model.forward).parameters
    if names and not (takes_embeds and embeds_layer):
        notes.append(
            "shap and Captum were not run: neither takes integer ids, and the model cannot be split at "
            + ("this layer" if takes_embeds else "its embeddings")
            + " for them ("
            + (
                "only the input embeddings can be fed back as inputs_embeds"
                if takes_embeds
                else "it takes no inputs_embeds, and the exported graph is specialised to one row, so a module "
                "rebuilt from its tail could not take a batch of background rows"
            )
            + ")"
        )
        names = []
    embed = explainer.layer
    with torch.no_grad():
        bg_embeds = embed(torch.as_tensor(explainer.background[0])).detach().numpy()
        x_embeds = embed(torch.as_tensor(rows[0])).detach().numpy()
    for name in names:
        per_row = []
        error, elapsed = None, 0.0
        for i in range(len(rows[0])):
            tail = _embeds_model(copy.deepcopy(model), rows[1][i], output)
            result: ReferenceResult = REFERENCES[name](tail, [bg_embeds], [x_embeds[i : i + 1]], explainer.n_outputs)
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
        data=[x_embeds],
    )
