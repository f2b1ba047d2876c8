"""The archive torch reads: written in memory, by torch's own writer, from entries that were checked.

torch never opens the user's file; it gets a fresh archive holding exactly the validated bytes, so nothing it
could read differently (another end record, an unlisted entry, a second name for an entry) reaches it.
"""

from __future__ import annotations

import io
from collections.abc import Iterable

# records torch's writer adds itself when it closes an archive
WRITER_RECORDS = frozenset({"version", ".data/version", ".data/serialization_id", "byteorder"})


def torch_archive(records: Iterable[tuple[str, bytes]], min_version: int | None = None) -> bytes:
    """An archive of ``(name, data)`` records (names inside the root folder), as torch's writer lays it out."""
    import torch

    buffer = io.BytesIO()
    writer = torch._C.PyTorchFileWriter(buffer)
    if min_version is not None:
        writer.set_min_version(min_version)
    for name, data in records:
        if name not in WRITER_RECORDS:
            writer.write_record(name, data, len(data))
    writer.write_end_of_file()
    return buffer.getvalue()
