"""xshap results as ``shap.Explanation`` objects, so shap's plots (waterfall, beeswarm, bar) work on them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def to_explanation(
    values: list[np.ndarray],
    expected_value: np.ndarray,
    data: list[np.ndarray],
    *,
    feature_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    outputs: np.ndarray | None = None,
):
    """A ``shap.Explanation`` of attributions in xshap's layout, per input (N, n_outputs, *row_shape).

    One input keeps its row shape (an image stays an image); several inputs are flattened and joined
    into one row of features named ``in{i}[{j}]`` unless ``feature_names`` names them. A single output
    drops the output axis, so ``shap.plots.waterfall(e[0])`` works directly; with several outputs,
    values are (N, *features, n_outputs) and base_values (N, n_outputs), as shap lays them out: pick one
    with ``e[:, :, k]``.
    """
    try:
        import shap
    except ImportError as error:
        raise ImportError("shap.Explanation needs shap: pip install 'xshap[crosscheck]'") from error
    n, n_out = values[0].shape[:2]
    if len(values) == 1:
        phi, rows = np.moveaxis(values[0], 1, -1), np.asarray(data[0])
        default_names = None
    else:
        phi = np.concatenate([np.moveaxis(v, 1, -1).reshape(n, -1, n_out) for v in values], axis=1)
        rows = np.concatenate([np.asarray(d).reshape(n, -1) for d in data], axis=1)
        default_names = [f"in{i}[{j}]" for i, d in enumerate(data) for j in range(int(np.prod(d.shape[1:])))]
    n_features = int(np.prod(phi.shape[1:-1]))
    names = list(feature_names) if feature_names is not None else default_names
    if names is not None and len(names) != n_features:
        raise ValueError(f"feature_names has {len(names)} names for {n_features} features")
    base = np.broadcast_to(np.asarray(expected_value, dtype=phi.dtype), (n, n_out)).copy()
    if output_names is not None and len(output_names) != n_out:
        raise ValueError(f"output_names has {len(output_names)} names for {n_out} outputs")
    if n_out == 1:
        # one output: no output axis, so no output names either (shap would index base_values by them)
        phi, base, output_names = phi[..., 0], base[:, 0], None
    explanation = shap.Explanation(
        values=phi,
        base_values=base,
        data=rows,
        feature_names=names,
        output_names=list(output_names) if output_names is not None else None,
    )
    return explanation


def to_token_explanation(scores: np.ndarray, base_values: np.ndarray, tokens: np.ndarray, output_names=None):
    """A ``shap.Explanation`` of one score per token, (N, L) or (N, L, n_outputs), whose data are the tokens
    (``shap.plots.text`` shows it). ``base_values``: (N,) or (N, n_outputs)."""
    try:
        import shap
    except ImportError as error:
        raise ImportError("shap.Explanation needs shap: pip install 'xshap[crosscheck]'") from error
    return shap.Explanation(
        values=scores,
        base_values=base_values,
        data=tokens,
        output_names=list(output_names) if output_names is not None else None,
    )
