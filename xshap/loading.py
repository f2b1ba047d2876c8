"""Loading models and arrays from files without unpickling arbitrary objects.

``torch.export.load`` of torch 2.13 falls back to ``torch.load(weights_only=False)`` and ``pickle.loads``
for some entries of a ``.pt2`` archive: a crafted file can run code. ``load_program`` therefore checks every
entry that torch would unpickle with ``torch.load(weights_only=True)`` first, and refuses pickled custom
objects, before handing the file to torch. Arrays come from ``.npy`` files with ``allow_pickle=False`` or
``.pt`` files with ``weights_only=True``.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np

from xshap.errors import InputError


class UnsafeFileError(InputError):
    """A file would need arbitrary unpickling to load: refused."""


def _check_weights_only(data: bytes, what: str, problems: list[str]) -> None:
    import torch

    try:
        torch.load(io.BytesIO(data), weights_only=True)
    except Exception as error:  # any failure means torch would fall back to a full unpickle
        problems.append(f"{what}: not loadable with weights_only=True ({type(error).__name__}: {_first_line(error)})")


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else ""


def unsafe_entries(path: str | os.PathLike) -> list[str]:
    """Every entry of a .pt2 archive that loading would unpickle as an arbitrary object."""
    from torch.export.pt2_archive import _package as package
    from torch.export.pt2_archive import constants as C

    problems: list[str] = []
    with package.PT2ArchiveReader(str(path)) as reader:
        names = set(reader.get_file_names())
        prefix, suffix = C.MODELS_FILENAME_FORMAT.split("{}")
        models = [n[len(prefix) : -len(suffix)] for n in names if n.startswith(prefix) and n.endswith(suffix)]
        for model in models:
            sample = C.SAMPLE_INPUTS_FILENAME_FORMAT.format(model)
            if sample in names:
                _check_weights_only(reader.read_bytes(sample), sample, problems)
            for config_format, folder in (
                (C.WEIGHTS_CONFIG_FILENAME_FORMAT, C.WEIGHTS_DIR),
                (C.CONSTANTS_CONFIG_FILENAME_FORMAT, C.CONSTANTS_DIR),
            ):
                legacy = f"{folder}{model}.pt"
                if legacy in names:
                    _check_weights_only(reader.read_bytes(legacy), legacy, problems)
                config_file = config_format.format(model)
                if config_file not in names:
                    continue
                config = package._load_payload_config(reader, config_file)
                for fqn, meta in config.config.items():
                    entry = os.path.join(folder, meta.path_name)
                    if meta.path_name.startswith((C.CUSTOM_OBJ_FILENAME_PREFIX, C.OPAQUE_OBJ_FILENAME_PREFIX)):
                        problems.append(f"{entry} ({fqn}): a pickled custom object")
                    elif meta.use_pickle:
                        _check_weights_only(reader.read_bytes(entry), f"{entry} ({fqn})", problems)
    return problems


def load_program(path: str | os.PathLike):
    """A ``torch.export.ExportedProgram`` from a ``.pt2`` file, refused if loading it would unpickle objects."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path} is not a torch.export archive (a .pt2 zip written by torch.export.save)")
    try:
        problems = unsafe_entries(path)
    except (KeyError, ValueError, RuntimeError, AssertionError, zipfile.BadZipFile) as error:
        raise InputError(f"{path} is not a readable torch.export archive: {type(error).__name__}: {error}") from error
    if problems:
        raise UnsafeFileError(
            f"refusing to load {path}: loading it would unpickle arbitrary objects, which can run code:\n  "
            + "\n  ".join(problems)
        )
    try:
        return torch.export.load(str(path))
    except Exception as error:  # torch raises many types for a bad archive
        raise InputError(f"torch.export.load could not read {path}: {type(error).__name__}: {error}") from error


def load_array(path: str | os.PathLike) -> np.ndarray | list[np.ndarray]:
    """Rows from a ``.npy`` (no pickles) or ``.pt`` file (``weights_only=True``): an array, or a list of
    arrays for a model of several inputs (a ``.pt`` holding a list or tuple of tensors)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"data file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except ValueError as error:
            raise UnsafeFileError(f"refusing to load {path}: {error} (only plain numeric .npy arrays)") from error
    if suffix in (".pt", ".pth"):
        import torch

        try:
            value = torch.load(path, weights_only=True, map_location="cpu")
        except Exception as error:  # pickle errors come in many types
            raise UnsafeFileError(
                f"refusing to load {path}: not loadable with torch.load(weights_only=True) "
                f"({type(error).__name__}: {_first_line(error)})"
            ) from error
        if isinstance(value, torch.Tensor):
            return value.detach().numpy()
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
            return [v.detach().numpy() for v in value]
        raise InputError(f"{path} holds a {type(value).__name__}; expected a tensor or a list of tensors")
    raise InputError(f"{path}: unknown data file type {suffix!r}; use .npy or .pt")
