"""Opening a user's file: it must exist and be a regular file (a FIFO or a device could block or never end)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from xshap.errors import InputError
from xshap.files.errors import UnsafeFileError


def open_regular(path: str | os.PathLike, what: str) -> BinaryIO:
    """``path`` opened for reading in binary, if it is a regular file; ``what`` names it in errors."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist") from None
    if not stat.S_ISREG(mode):
        raise UnsafeFileError(f"refusing {what} {path}: not a regular file")
    source = open(path, "rb")  # noqa: SIM115 - the caller closes it
    if not stat.S_ISREG(os.fstat(source.fileno()).st_mode):  # replaced between the two calls
        source.close()
        raise UnsafeFileError(f"refusing {what} {path}: not a regular file")
    return source
