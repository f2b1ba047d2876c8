"""Captum's calling convention (``xshap.attribute``) and DeepLIFT with a single baseline (``xshap.DeepLift``)."""

from __future__ import annotations

import numpy as np

from xshap.errors import InputError
from xshap.explain.data import as_input_list, to_numpy
from xshap.explain.explainer import DeepExplainer


def _is_torch(value) -> bool:
    return type(value).__module__.startswith("torch")


def _target_indexes(target, n: int, n_outputs: int) -> np.ndarray:
    """Captum's ``target``: None (one output), an int, or one int per row (list, array or tensor)."""
    if target is None:
        if n_outputs != 1:
            raise InputError(f"the model has {n_outputs} outputs: pass target=k (or one target per row), as in Captum")
        return np.zeros(n, dtype=np.int64)
    if isinstance(target, tuple):
        raise InputError("tuple targets index a multi-dimensional output; xshap models return (batch, n_outputs)")
    index = np.asarray(to_numpy(target) if _is_torch(target) else target).astype(np.int64).reshape(-1)
    if index.size == 1:
        index = np.full(n, int(index[0]))
    if index.size != n:
        raise InputError(f"target has {index.size} entries for {n} rows")
    if index.min() < 0 or index.max() >= n_outputs:
        raise InputError(f"target {index.tolist()} out of range for {n_outputs} output(s)")
    return index


def _format(values: list[np.ndarray], like, several: bool):
    """Captum's output form: tensors (of the inputs' dtype) for tensor inputs, a tuple for tuple inputs."""
    firsts = like if several else [like]
    out = []
    for v, x in zip(values, firsts):
        if _is_torch(x):
            import torch

            out.append(torch.as_tensor(v).to(x.dtype))
        else:
            out.append(v.astype(np.asarray(x).dtype, copy=False))
    return tuple(out) if several else out[0]


def _delta(attribution, target: np.ndarray, like):
    """Captum's convergence delta: sum(attr) - (f(x) - f(r)) for every (row, baseline) pair, row-major."""
    rows = np.arange(len(target))
    totals = attribution.pair_totals[rows, :, target]  # (N, B)
    expected = attribution.outputs[rows, target][:, None] - attribution.background_outputs[:, target].T
    delta = (totals - expected).reshape(-1)
    first = like[0] if isinstance(like, tuple) else like
    if _is_torch(first):
        import torch

        return torch.as_tensor(delta)
    return delta


def _attribute(explainer: DeepExplainer, inputs, target, return_convergence_delta: bool):
    several = isinstance(inputs, tuple)
    attribution = explainer.explain(list(inputs) if several else inputs, pair_totals=return_convergence_delta)
    index = _target_indexes(target, attribution.outputs.shape[0], explainer.n_outputs)
    rows = np.arange(len(index))
    values = _format([v[rows, index] for v in attribution.values], inputs, several)
    if return_convergence_delta:
        return values, _delta(attribution, index, inputs)
    return values


def attribute(
    model,
    inputs,
    baselines,
    target=None,
    additional_forward_args=None,
    return_convergence_delta: bool = False,
    **explainer_options,
):
    """``captum.attr.DeepLiftShap(model).attribute(inputs, baselines, target=...)`` computed by xshap.

    ``inputs``/``baselines``: a tensor or array, or a tuple of them for several inputs (rows first; at least
    two baseline rows, as Captum requires). Returns attributions shaped like the inputs (tensors for tensor
    inputs), and with ``return_convergence_delta`` Captum's delta: sum(attr) - (f(x) - f(r)) for each of the
    N * B (input, baseline) pairs, input-major.
    """
    if additional_forward_args is not None:
        raise InputError("additional_forward_args is not supported: bind them into the model (a wrapper module)")
    several = isinstance(inputs, tuple)
    if several != isinstance(baselines, tuple):
        raise InputError("inputs and baselines must both be tuples (several inputs) or both single tensors")
    base, _ = as_input_list(list(baselines) if several else baselines)
    if base[0].shape[0] < 2:
        raise InputError("DeepLiftShap needs a distribution of at least two baselines; use xshap.DeepLift for one")
    explainer = DeepExplainer(model, list(baselines) if several else baselines, **explainer_options)
    return _attribute(explainer, inputs, target, return_convergence_delta)


class DeepLift(DeepExplainer):
    """DeepLIFT with ONE baseline (Captum's ``DeepLift``; DeepSHAP with a background of one row).

    ``baseline``: one row with its batch axis, shape (1, *row_shape), or a list/tuple of such for several
    inputs; a scalar (Captum allows one) or ``None`` (zeros, Captum's default) needs ``example`` rows to give
    the row shapes and dtypes. The attributions add up to f(x) - f(baseline).
    """

    def __init__(self, model, baseline=None, *, example=None, **options):
        if baseline is None or np.isscalar(baseline) or (hasattr(baseline, "ndim") and baseline.ndim == 0):
            if example is None:
                raise InputError("DeepLift with a zero or scalar baseline needs example=... rows, for their shapes")
            fill = 0.0 if baseline is None else float(to_numpy(baseline))
            arrays, several = as_input_list(example)
            rows = [np.full((1,) + a.shape[1:], fill, dtype=a.dtype) for a in arrays]
        else:
            rows, several = as_input_list(baseline)
            bad = [tuple(r.shape) for r in rows if r.ndim == 0 or r.shape[0] != 1]
            if bad:
                raise InputError(
                    f"DeepLift takes one baseline row with its batch axis, shape (1, *row_shape); got {bad} "
                    "(use DeepExplainer for a background of many rows)"
                )
        super().__init__(model, rows if several else rows[0], **options)
        self.baseline = rows if several else rows[0]

    def attribute(self, inputs, target=None, return_convergence_delta: bool = False):
        """Captum's ``DeepLift.attribute(inputs, target=...)`` against this explainer's baseline."""
        return _attribute(self, inputs, target, return_convergence_delta)
