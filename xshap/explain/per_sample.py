"""Per-sample references: the background as a function of the explained row (shap's genomics notebook passes
``dinuc_shuffle_several_times``; Captum takes baselines as a function).

``DeepExplainer(model, fn)``: for each row x of X, ``fn([x_input_0, x_input_1, ...])`` (shap's convention: a list
with that row of every input, without the row axis) returns its background, an array (or a list of arrays for
several inputs) with rows on the leading axis. The model is converted once, on the first row's background; every
row is then explained against its own background, and ``expected_value`` is per row, (N, n_outputs).
"""

from __future__ import annotations

import jax
import numpy as np

from xshap.errors import InputError
from xshap.explain.data import as_input_list
from xshap.explain.explainer import Attribution, DeepExplainer

# what the row-by-row explainer shares with the explainer it runs (none of it depends on the background)
_DELEGATED = frozenset(
    {"model", "n_outputs", "multi_input", "_several", "rules", "_x64", "_given", "_model_dtype", "_deeplift"}
)


class PerSampleExplainer(DeepExplainer):
    """DeepExplainer with a background function: built on first use, its background replaced row by row."""

    def __init__(self, model, data, **options):
        self._background_fn = data
        self._model = model
        self._explainer_options = options
        self._inner: DeepExplainer | None = None
        self.expected_value = None  # per row, (N, n_outputs), once rows are explained

    def __getattr__(self, name):
        inner = self.__dict__.get("_inner")
        if name not in _DELEGATED:  # what depends on one background (with_rules, twins ...) is not shared
            raise AttributeError(f"{name!r} is not available on a DeepExplainer with a background function")
        if inner is None:
            raise AttributeError(
                f"{name!r}: a DeepExplainer with a background function is built on its first explained rows"
            )
        return getattr(inner, name)

    def background_of(self, row: list[np.ndarray]):
        """The background of one row (a list with that row of every input), as the function returns it."""
        background = self._background_fn(row)
        if background is None:
            raise InputError("the background function returned None; it must return the row's background rows")
        return background

    def _explainer_for(self, background) -> DeepExplainer:
        if self._inner is None:
            self._inner = DeepExplainer(self._model, background, **self._explainer_options)
        else:
            self._inner.set_background(background)
        return self._inner

    def explain(self, X, *, check_additivity: bool = True, pair_totals: bool = False, rows: str = "all") -> Attribution:
        if rows != "all" or jax.process_count() > 1:
            raise InputError(
                "a background function is explained in one process, row by row: rows= and jax.distributed are "
                "not supported with it (give each process its own rows and a DeepExplainer of its own)"
            )
        arrays, several = as_input_list(X)
        parts = []
        for i in range(arrays[0].shape[0]):
            explainer = self._explainer_for(self.background_of([a[i] for a in arrays]))
            rows = [a[i : i + 1] for a in arrays]
            parts.append(explainer.explain(rows if several else rows[0], check_additivity=check_additivity))
        attribution = _concatenate(parts)
        self.expected_value = attribution.expected_value
        return attribution

    def explain_to(self, store, rows, **options):
        raise InputError(
            "explain_to streams rows against one background; with a background function, explain the rows in "
            "blocks with explain() and store them yourself"
        )

    def model_inputs(self, X) -> list[np.ndarray]:
        arrays, several = as_input_list(X)
        explainer = self._inner or self._explainer_for(self.background_of([a[0] for a in arrays]))
        return explainer.model_inputs(X)


def _concatenate(parts: list[Attribution]) -> Attribution:
    """One Attribution of rows explained each against its own background: expected_value per row."""
    n_inputs = len(parts[0].values)
    attribution = Attribution(
        values=[np.concatenate([p.values[k] for p in parts]) for k in range(n_inputs)],
        outputs=np.concatenate([p.outputs for p in parts]),
        expected_value=np.stack([np.asarray(p.expected_value) for p in parts]),
        gaps=np.concatenate([p.gaps for p in parts]),
        tolerance=np.concatenate([p.tolerance for p in parts]),
        recomputed=np.concatenate([p.recomputed for p in parts]),
        notes=sorted({note for p in parts for note in p.notes}),
    )
    return attribution
