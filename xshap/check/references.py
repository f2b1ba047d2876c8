"""Run the reference implementations (shap.DeepExplainer, Captum's DeepLiftShap) on the same data.

Each runs on its own deep copy of the model, so hooks or attributes a reference leaves behind never
reach the user's model or the other reference. A reference that raises is recorded, not propagated.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Ranking:
    """shap's ranked_outputs: the k outputs explained per row (ranks: (N, k) output indexes)."""

    k: int
    order: str
    ranks: np.ndarray


@dataclass
class ReferenceResult:
    """One reference's attributions, (N, n_outputs, *row_shape) per input, or the error it raised."""

    name: str
    values: list[np.ndarray] | None
    error: str | None
    seconds: float
    rule_table: dict[str, str]  # module type name -> the reference's rule for it


def _tensors(arrays: list[np.ndarray]):
    import torch

    return [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]


def _timed(name: str, table: dict[str, str], run: Callable[[], list[np.ndarray]]) -> ReferenceResult:
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = run()
        return ReferenceResult(name, values, None, time.perf_counter() - start, table)
    except Exception as error:  # a reference failing is a finding to record, whatever its type
        return ReferenceResult(name, None, f"{type(error).__name__}: {error}", time.perf_counter() - start, table)


def shap_rule_table() -> dict[str, str]:
    from shap.explainers._deep import deep_pytorch

    return {name: handler.__name__ for name, handler in deep_pytorch.op_handler.items()}


def run_shap(
    model,
    background: list[np.ndarray],
    X: list[np.ndarray],
    n_outputs: int,
    layer: str | None = None,
    value_ndims: list[int] | None = None,
    ranking: Ranking | None = None,
) -> ReferenceResult:
    """shap.DeepExplainer(model, background).shap_values(X, check_additivity=False); with ``layer`` (a module
    path), shap's interim form ``DeepExplainer((model, layer), ...)``, which explains the layer's input; with
    ``ranking``, shap's ``ranked_outputs``/``output_rank_order`` (shap's own indexes must equal xshap's)."""
    import shap

    def run():
        model_copy = copy.deepcopy(model).eval()
        bg, xs = _tensors(background), _tensors(X)
        target = model_copy if layer is None else (model_copy, model_copy.get_submodule(layer))
        explainer = shap.DeepExplainer(target, bg if len(bg) > 1 else bg[0])
        inputs = xs if len(xs) > 1 else xs[0]
        if ranking is None:
            values = explainer.shap_values(inputs, check_additivity=False)
        else:
            values, indexes = explainer.shap_values(
                inputs, ranked_outputs=ranking.k, output_rank_order=ranking.order, check_additivity=False
            )
            if not np.array_equal(np.asarray(indexes), ranking.ranks):
                raise RuntimeError("shap ranked the outputs differently from xshap (near-equal outputs?)")
        values = values if isinstance(values, list) else [values]
        ndims = value_ndims or [x.ndim for x in X]  # (N, *row) of each explained value
        out = []
        for v, ndim in zip(values, ndims):
            v = np.asarray(v, dtype=np.float64)
            if v.ndim == ndim:  # a single output without its trailing axis
                v = v[..., None]
            out.append(np.moveaxis(v, -1, 1))
        return out

    return _timed(f"shap {shap.__version__}", shap_rule_table(), run)


def captum_rule_table() -> dict[str, str]:
    from captum.attr._core import deep_lift

    return {module.__name__: rule.__name__ for module, rule in deep_lift.SUPPORTED_NON_LINEAR.items()}


def run_captum(
    model,
    background: list[np.ndarray],
    X: list[np.ndarray],
    n_outputs: int,
    layer: str | None = None,
    value_ndims: list[int] | None = None,
    ranking: Ranking | None = None,
) -> ReferenceResult:
    """captum.attr.DeepLiftShap(model).attribute(X, baselines=background, target=o), one call per output; with
    ``layer``, ``LayerDeepLiftShap(model, layer).attribute(..., attribute_to_layer_input=True)``; with
    ``ranking``, one call per rank slot with each row's own target."""
    import captum
    from captum.attr import DeepLiftShap, LayerDeepLiftShap

    def run():
        model_copy = copy.deepcopy(model).eval()
        bg, xs = _tensors(background), _tensors(X)
        if layer is None:
            explainer, extra = DeepLiftShap(model_copy), {}
        else:
            explainer = LayerDeepLiftShap(model_copy, model_copy.get_submodule(layer))
            extra = {"attribute_to_layer_input": True}
        per_output = []
        if ranking is not None:
            targets = [ranking.ranks[:, j].tolist() for j in range(ranking.ranks.shape[1])]
        else:
            targets = list(range(n_outputs))
        for target in targets:
            attributions = explainer.attribute(
                tuple(xs) if len(xs) > 1 else xs[0],
                baselines=tuple(bg) if len(bg) > 1 else bg[0],
                target=target if n_outputs > 1 or _has_output_axis(model_copy, xs) else None,
                **extra,
            )
            attributions = attributions if isinstance(attributions, tuple) else (attributions,)
            per_output.append([a.detach().numpy().astype(np.float64) for a in attributions])
        return [np.stack([p[i] for p in per_output], axis=1) for i in range(len(per_output[0]))]

    return _timed(f"captum {captum.__version__}", captum_rule_table(), run)


def _has_output_axis(model, xs) -> bool:
    import torch

    with torch.no_grad():
        return model(*[x[:1] for x in xs]).ndim > 1


REFERENCES: dict[str, Callable[..., ReferenceResult]] = {"shap": run_shap, "captum": run_captum}
RULE_TABLES: dict[str, Callable[[], dict[str, str]]] = {"shap": shap_rule_table, "captum": captum_rule_table}


def available_references() -> list[str]:
    """The references that are installed."""
    names = []
    for name in REFERENCES:
        try:
            __import__(name)
        except ImportError:
            continue
        names.append(name)
    return names
