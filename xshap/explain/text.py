"""Token models the way researchers explain them: token ids in, one score per token at the embedding output.

``TokenExplainer(model, background_ids)`` takes a Hugging Face model (or any torch module called as
``model(input_ids=..., attention_mask=...)``, or a module of the ids alone that reads its padding from them) and explains its output at ``model.get_input_embeddings()`` (or
another layer): DeepSHAP values per token and embedding dimension, with the attention mask, the position ids and
everything else computed beside the layer held at the explained row's own value (``xshap.explain.layer_explainer``);
the mask is the row's own on both sides of each pair (``rows_of_other_inputs``, Captum's ``additional_forward_args``),
so a layer the mask flows into (an encoder layer) takes the background's values under the row's mask.
A row's scores add up to f(x) minus the background's mean at the row's own mask; rows with the background's mask
(unpadded rows against an unpadded background) add up to f(x) - E f exactly.
"""

from __future__ import annotations

import inspect

import numpy as np

from xshap.errors import InputError
from xshap.explain.data import to_numpy
from xshap.explain.layer_explainer import LayerAttribution, LayerExplainer


def _keyword_model(model, names: tuple[str, ...]):
    """``model`` called with its token inputs by keyword (torch.export passes inputs by position, and a Hugging
    Face forward's second parameter is not always the mask), with ``use_cache=False`` where it takes one (a cache
    object in the output is nothing to explain). A forward without an ``input_ids`` parameter gets the ids as its
    first argument; one without an ``attention_mask`` parameter (a model that computes its padding mask from the
    ids) does not get the mask (``takes_mask`` is False then)."""
    import torch

    parameters = inspect.signature(model.forward).parameters
    any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())

    class KeywordInputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self._fixed = {"use_cache": False} if "use_cache" in parameters else {}
            self._names = names
            self.takes = {name: any_keyword or name in parameters for name in names}

        def forward(self, *tensors):
            args, keywords = [], dict(self._fixed)
            for name, tensor in zip(self._names, tensors):
                if self.takes[name]:
                    keywords[name] = tensor
                elif name == "input_ids":
                    args.append(tensor)
            return self.model(*args, **keywords)

    return KeywordInputs().train(model.training)


class TokenExplainer:
    """Per-token DeepSHAP values of a token model at its embedding output (module docstring).

    ``background_ids``: (B, L) token ids; ``background_mask``: (B, L) attention mask (default all ones).
    ``layer``: the layer to explain (default ``model.get_input_embeddings()``), a submodule or its path.
    ``output``: the model's output to explain (default ``logits``). ``tokenizer``: turns ids into the tokens shown
    by ``explanation`` (``convert_ids_to_tokens``); or pass ``tokens=`` there.
    """

    def __init__(
        self,
        model,
        background_ids,
        background_mask=None,
        *,
        layer=None,
        output: str | int | None = None,
        tokenizer=None,
        batch_size: int | None = None,
    ):
        ids = to_numpy(background_ids)
        if ids.ndim != 2 or ids.dtype.kind not in "iu":
            raise InputError(f"background_ids must be (rows, tokens) integer ids, got {ids.dtype} {ids.shape}")
        mask = np.ones_like(ids) if background_mask is None else to_numpy(background_mask)
        if mask.shape != ids.shape:
            raise InputError(f"background_mask has shape {mask.shape}, the ids {ids.shape}")
        self.model, self.tokenizer = model, tokenizer
        if layer is None:
            if not hasattr(model, "get_input_embeddings"):
                raise InputError("the model has no get_input_embeddings(): pass layer= (its embedding module)")
            layer = model.get_input_embeddings()
        elif isinstance(layer, str):
            layer = model.get_submodule(layer)
        self.layer = layer
        wrapped = _keyword_model(model, ("input_ids", "attention_mask"))
        self.takes_mask = wrapped.takes["attention_mask"]
        self._refuse_mask(mask, "background_mask")
        self._mask_dtype = mask.dtype
        self.explainer = LayerExplainer(wrapped, layer, [ids, mask], output=output, batch_size=batch_size)
        self.expected_value = self.explainer.expected_value
        self.n_outputs = self.explainer.n_outputs
        self.background = (ids, mask)

    def _rows(self, ids, mask) -> list[np.ndarray]:
        ids = to_numpy(ids)
        if ids.ndim == 1:
            ids = ids[None]
        mask = np.ones_like(ids) if mask is None else to_numpy(mask).reshape(ids.shape)
        self._refuse_mask(mask, "mask")
        return [ids.astype(self.background[0].dtype), mask.astype(self._mask_dtype)]

    def _refuse_mask(self, mask: np.ndarray, name: str) -> None:
        if not self.takes_mask and not np.all(mask == 1):
            raise InputError(
                f"{name} has zeros, but the model's forward takes no attention_mask (it would be ignored): pass the "
                "padding in the ids, as the model reads it"
            )

    def explain(self, ids, mask=None, *, check_additivity: bool = True) -> LayerAttribution:
        """The attributions per token and embedding dimension: values[0] is (N, n_outputs, L, D)."""
        ids, mask = self._rows(ids, mask)
        return self.explainer.explain([ids], rows_of_other_inputs=[mask], check_additivity=check_additivity)

    def token_values(self, ids, mask=None) -> np.ndarray:
        """One score per token and output, (N, L, n_outputs): the attributions summed over the embedding."""
        values = self.explain(ids, mask).values[0]
        return np.moveaxis(values.reshape(*values.shape[:3], -1).sum(axis=3), 1, -1)

    def explanation(self, ids, mask=None, *, tokens=None, output_names=None):
        """A ``shap.Explanation`` of the token scores whose data are the tokens (``shap.plots.text(e[0])`` works;
        with several outputs pick one, ``e[0, :, k]``). Base values are each row's reference output, so that base
        plus the scores is f(x)."""
        from xshap.explain.interop import to_token_explanation

        rows = self._rows(ids, mask)
        attribution = self.explainer.explain([rows[0]], rows_of_other_inputs=[rows[1]])
        values = attribution.values[0]
        scores = np.moveaxis(values.reshape(*values.shape[:3], -1).sum(axis=3), 1, -1)
        words = self._tokens(rows[0], tokens)
        base = attribution.reference_outputs
        if self.n_outputs == 1:
            scores, base, output_names = scores[..., 0], base[:, 0], None
        return to_token_explanation(scores, base, words, output_names)

    def _tokens(self, ids: np.ndarray, tokens) -> np.ndarray:
        if tokens is not None:
            words = np.array(tokens, dtype=object)
            if words.ndim == 1:
                words = np.broadcast_to(words, ids.shape)
            if words.shape != ids.shape:
                raise InputError(f"tokens has shape {words.shape} for ids of shape {ids.shape}")
            return np.array(words, dtype=object)
        if self.tokenizer is not None:
            return np.array([self.tokenizer.convert_ids_to_tokens([int(i) for i in row]) for row in ids], dtype=object)
        return np.array([[str(int(i)) for i in row] for row in ids], dtype=object)
