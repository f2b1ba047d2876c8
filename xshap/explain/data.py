"""Inputs and backgrounds as arrays: torch tensors, JAX and numpy arrays, single or several inputs."""

from __future__ import annotations

import numpy as np

from xshap.errors import InputError


def is_float(dtype) -> bool:
    """A real or complex floating dtype, bfloat16 included (numpy files ml_dtypes' bfloat16 under kind 'V')."""
    dtype = np.dtype(dtype)
    return dtype.kind in "fc" or dtype.name in ("bfloat16", "float8_e4m3fn", "float8_e5m2")


def to_numpy(value) -> np.ndarray:
    """A numpy copy of a torch tensor, JAX array or array-like (a pandas DataFrame's values). bfloat16 tensors,
    which numpy has no type for, become ``ml_dtypes.bfloat16`` arrays (JAX's own bfloat16) bit for bit."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor, without importing torch
        tensor = value.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":
            import ml_dtypes
            import torch

            return tensor.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return tensor.numpy()
    if hasattr(value, "to_numpy") and not isinstance(value, np.ndarray):  # pandas
        return np.asarray(value.to_numpy())
    return np.asarray(value)


def to_torch(array: np.ndarray):
    """A torch tensor of a numpy array (``ml_dtypes.bfloat16`` arrays included, as torch.bfloat16)."""
    import torch

    array = np.ascontiguousarray(array)
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def is_background_function(data) -> bool:
    """A background given as a function of the explained row (per-sample references), not as data: a plain
    callable, never an array, tensor, DataFrame or module."""
    if data is None or isinstance(data, (list, tuple, np.ndarray)) or hasattr(data, "shape"):
        return False
    if hasattr(data, "to_numpy") or hasattr(data, "forward") or hasattr(data, "__array__"):
        return False
    return callable(data)


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
    """Explained rows must match the background: same number of inputs, row shapes and dtypes, at least one row."""
    if len(arrays) != len(background):
        raise InputError(f"model takes {len(background)} input(s) (as the background has), got {len(arrays)}")
    for i, (array, reference) in enumerate(zip(arrays, background)):
        name = f"input {i}" if len(arrays) > 1 else "X"
        if array.ndim == 0:
            raise InputError(f"{name} is a scalar; it needs a leading axis of rows")
        if array.shape[0] == 0:
            raise InputError(f"{name} has no rows (shape {array.shape}): there is nothing to explain")
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


FINITE_CHECK_BLOCK = 1 << 20  # elements checked at a time: the check's temporary stays small whatever N


def _check_finite(array: np.ndarray, name: str) -> None:
    if not is_float(array.dtype) or array.size == 0:
        return
    rows_per_block = max(1, FINITE_CHECK_BLOCK // max(1, array[:1].size))
    if all(np.isfinite(array[i : i + rows_per_block]).all() for i in range(0, array.shape[0], rows_per_block)):
        return
    bad = np.argwhere(~np.isfinite(array))
    raise InputError(f"{name} holds {len(bad)} NaN/Inf value(s), first at index {tuple(int(i) for i in bad[0])}")
