"""Loading files that someone else made: ``.pt2`` programs, ``.pt`` and ``.npy`` arrays, refused unless safe.

One parser decides what a file holds (``zipread`` for every ZIP archive, ``npy`` for numpy's format), every size
is capped (``Limits``), and torch is handed only bytes that were checked: an archive rebuilt in memory from the
validated entries (``rebuild``), never the file itself. ``pt2`` holds the allow-list of a ``torch.export.save``
archive and ``graph`` the checks of its serialized graph; ``pt`` the allow-list of a ``torch.save`` file.
"""

from xshap.files.arrays import load_array
from xshap.files.errors import FileTooLargeError, UnsafeFileError
from xshap.files.limits import DEFAULT_MAX_BYTES, Limits, parse_size
from xshap.files.pt2 import load_program

__all__ = [
    "DEFAULT_MAX_BYTES",
    "FileTooLargeError",
    "Limits",
    "UnsafeFileError",
    "load_array",
    "load_program",
    "parse_size",
]
