"""Rows for ``xshap check`` from a ``.npy`` or ``.pt`` file: plain real-valued arrays, within the limits.

A ``.pt`` may hold a tensor or a list/tuple of tensors (a model of several inputs). Each tensor must be a dense
CPU tensor of real numbers or bool: sparse, meta (no values), quantised, complex and float8 tensors, and tensor
subclasses, are refused with the reason. bfloat16, which numpy cannot hold, becomes float32 (exactly) with a
``DataConversionWarning`` saying so.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from xshap.errors import InputError
from xshap.files.errors import FileTooLargeError, UnsafeFileError
from xshap.files.limits import Limits
from xshap.files.npy import read_npy
from xshap.files.opening import open_regular
from xshap.files.pt import load_torch_save


class DataConversionWarning(UserWarning):
    """A data file's values were converted to a dtype numpy holds (bfloat16 -> float32, exactly)."""


def load_array(path: str | os.PathLike, limits: Limits | None = None) -> np.ndarray | list[np.ndarray]:
    """Rows from a ``.npy`` (no pickles) or ``.pt`` file (``weights_only=True``): an array, or a list of
    arrays for a model of several inputs (a ``.pt`` holding a list or tuple of tensors)."""
    limits = limits or Limits()
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".pt", ".pth"):
        if not path.exists():
            raise InputError(f"data file {path} does not exist")
        raise InputError(f"{path}: unknown data file type {suffix!r}; use .npy or .pt")
    with open_regular(path, "data file") as source:
        if suffix == ".npy":
            return read_npy(source, str(path), limits)
        value = load_torch_save(source, str(path), limits)
    return _tensors_to_arrays(value, path, limits)


def _tensors_to_arrays(value: object, path: Path, limits: Limits) -> np.ndarray | list[np.ndarray]:
    import torch

    if isinstance(value, torch.Tensor):
        return _to_numpy(value, f"{path}", limits)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
        return [_to_numpy(v, f"{path} (tensor {i})", limits) for i, v in enumerate(value)]
    raise InputError(f"{path} holds a {type(value).__name__}; expected a tensor or a list of tensors")


def _to_numpy(tensor, what: str, limits: Limits) -> np.ndarray:
    import torch

    if type(tensor) not in (torch.Tensor, torch.nn.Parameter):
        raise UnsafeFileError(f"refusing {what}: a {type(tensor).__name__} (a tensor subclass), not a plain tensor")
    if tensor.layout != torch.strided:
        raise UnsafeFileError(f"refusing {what}: a sparse tensor ({tensor.layout}); save it dense (.to_dense())")
    if tensor.device.type != "cpu":
        raise UnsafeFileError(f"refusing {what}: a tensor on the {tensor.device.type} device, which holds no values")
    if tensor.is_quantized:
        raise UnsafeFileError(f"refusing {what}: a quantised tensor ({tensor.dtype}); save it dequantised")
    if tensor.is_complex():
        raise UnsafeFileError(f"refusing {what}: complex numbers ({tensor.dtype}); DeepSHAP explains real inputs")
    nbytes = tensor.numel() * tensor.element_size()
    if nbytes > limits.max_bytes:
        raise FileTooLargeError(
            f"refusing {what}: a {tuple(tensor.shape)} tensor of {nbytes:,} bytes, over the limit of "
            f"{limits.max_bytes:,} (--max-bytes)"
        )
    tensor = tensor.detach()
    if tensor.dtype == torch.bfloat16:
        warnings.warn(f"{what}: bfloat16 values converted to float32 (exactly)", DataConversionWarning, stacklevel=3)
        tensor = tensor.to(torch.float32)
    try:
        return tensor.contiguous().numpy()
    except (TypeError, RuntimeError) as error:  # dtypes numpy has no match for (float8 ...)
        raise UnsafeFileError(f"refusing {what}: {tensor.dtype} values, which numpy cannot hold ({error})") from None
