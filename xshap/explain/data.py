"""Inputs and backgrounds as arrays: torch tensors, JAX and numpy arrays, single or several inputs."""

from __future__ import annotations

import numpy as np

from xshap.errors import InputError


def to_numpy(value) -> np.ndarray:
    """A numpy copy of a torch tensor, JAX array or array-like."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor, without importing torch
        return value.detach().cpu().numpy()
    return np.asarray(value)


def as_input_list(data) -> tuple[list[np.ndarray], bool]:
    """(arrays, several): a list or tuple means several inputs, anything else one input."""
    several = isinstance(data, (list, tuple))
    arrays = [to_numpy(d) for d in (data if several else [data])]
    return arrays, several


def check_background(arrays: list[np.ndarray]) -> None:
    for i, array in enumerate(arrays):
        name = f"background input {i}" if len(arrays) > 1 else "background"
        if array.ndim == 0:
            raise InputError(f"{name} is a scalar; it needs a leading axis of rows")
        if array.shape[0] == 0:
            raise InputError(f"{name} is empty (shape {array.shape}): DeepSHAP needs at least one background row")
        _check_finite(array, name)
    rows = {a.shape[0] for a in arrays}
    if len(rows) > 1:
        raise InputError(f"background inputs have different numbers of rows: {[a.shape[0] for a in arrays]}")


def check_inputs(arrays: list[np.ndarray], background: list[np.ndarray]) -> None:
    """Explained rows must match the background: same number of inputs, row shapes and dtypes."""
    if len(arrays) != len(background):
        raise InputError(f"model takes {len(background)} input(s) (as the background has), got {len(arrays)}")
    for i, (array, reference) in enumerate(zip(arrays, background)):
        name = f"input {i}" if len(arrays) > 1 else "X"
        if array.ndim != reference.ndim or array.shape[1:] != reference.shape[1:]:
            raise InputError(
                f"{name} has rows of shape {array.shape[1:]} (array {array.shape}) but the background has rows of "
                f"shape {reference.shape[1:]}"
            )
        if array.dtype != reference.dtype:
            raise InputError(
                f"{name} has dtype {array.dtype} but the background has dtype {reference.dtype}; "
                "convert one of them (e.g. X.astype(background.dtype))"
            )
        _check_finite(array, name)
    rows = {a.shape[0] for a in arrays}
    if len(rows) > 1:
        raise InputError(f"inputs have different numbers of rows: {[a.shape[0] for a in arrays]}")


def _check_finite(array: np.ndarray, name: str) -> None:
    if array.dtype.kind in "fc" and not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array))
        raise InputError(f"{name} holds {len(bad)} NaN/Inf value(s), first at index {tuple(int(i) for i in bad[0])}")
