"""A ``torch.save`` file, read as data: its entries checked against torch's layout, then loaded with
``torch.load(weights_only=True)`` from an archive rebuilt from them.

A ``torch.save`` archive holds ``data.pkl`` (the pickle, which ``weights_only`` restricts to tensors and plain
containers), raw storages ``data/0``, ``data/1`` ... and a few small records (byte order, versions, alignment).
Anything else (TorchScript's code and constants, extra files), an old non-ZIP file, or a storage past the
limits is refused before torch reads a byte. torch itself checks each storage's size against the pickle.
"""

from __future__ import annotations

import io
import re
from typing import BinaryIO

from xshap.files.errors import UnsafeFileError
from xshap.files.limits import Limits
from xshap.files.rebuild import torch_archive
from xshap.files.zipread import ZipArchive, by_relative_name

_STORAGE = re.compile(r"^data/\d+$")
# small records: their content, checked
_SMALL_RECORDS = {
    "byteorder": re.compile(rb"^little$"),
    "version": re.compile(rb"^\d{1,4}\n?$"),
    ".data/version": re.compile(rb"^\d{1,4}\n?$"),
    ".format_version": re.compile(rb"^\d{1,4}\n?$"),
    ".storage_alignment": re.compile(rb"^\d{1,6}\n?$"),
    ".data/serialization_id": re.compile(rb"^[0-9A-Za-z]{1,64}$"),
}


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else ""


def checked_records(archive: ZipArchive) -> list[tuple[str, bytes]]:
    """The entries of a ``torch.save`` archive, read and checked, named inside its root folder."""
    names = by_relative_name(archive)
    unknown = [name for name in names if name != "data.pkl" and name not in _SMALL_RECORDS and not _STORAGE.match(name)]
    if unknown or "data.pkl" not in names:
        found = f"entries a torch.save file does not have: {', '.join(unknown[:6])}" if unknown else "no data.pkl"
        raise UnsafeFileError(f"refusing {archive.what}: not a torch.save file ({found})")
    records = []
    for name, full in names.items():
        if name in _SMALL_RECORDS:
            data = archive.read(full, max_size=64)
            if not _SMALL_RECORDS[name].match(data):
                raise UnsafeFileError(f"refusing {archive.what}: its {name} record holds {data[:40]!r}")
        else:
            data = archive.read(full, archive.limits.max_text_bytes if name == "data.pkl" else None)
        records.append((name, data))
    return records


def load_torch_save(source: BinaryIO, what: str, limits: Limits) -> object:
    """What ``torch.load(weights_only=True)`` gives for the checked entries of the archive in ``source``."""
    import torch

    archive = ZipArchive.parse(source, what, limits)
    rebuilt = torch_archive(checked_records(archive))
    try:
        return torch.load(io.BytesIO(rebuilt), weights_only=True, map_location="cpu")
    except Exception as error:  # the weights_only unpickler raises many types
        raise UnsafeFileError(
            f"refusing to load {what}: not loadable with torch.load(weights_only=True) "
            f"({type(error).__name__}: {first_line(error)})"
        ) from error
