"""What a refused file raises: always an ``InputError`` (the CLI's exit code 2), never a crash."""

from __future__ import annotations

from xshap.errors import InputError


class UnsafeFileError(InputError):
    """A file is refused: malformed, ambiguous, or holding something that loading it could run or write."""


class FileTooLargeError(UnsafeFileError):
    """A file, or an entry of an archive, would take more memory than the limits allow (``--max-bytes``)."""
