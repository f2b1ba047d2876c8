"""How much a file may make xshap allocate: caps checked from headers before anything is read or inflated."""

from __future__ import annotations

import re
from dataclasses import dataclass

from xshap.errors import InputError

DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB: a model or data file bigger than this needs --max-bytes


@dataclass(frozen=True)
class Limits:
    """Caps for one file.

    ``max_bytes``: the total uncompressed size of an archive's entries (and so of every entry), the size of a
    ``.npy`` array, the memory the tensors of a file may take once built. Text entries (JSON), which Python
    parses into objects many times their size, get a sixteenth of it. A deflated entry may not inflate more
    than ``max_deflate_ratio`` times its compressed size (a legitimate ``torch.save`` stores entries
    uncompressed; a higher ratio is a decompression bomb).
    """

    max_bytes: int = DEFAULT_MAX_BYTES
    max_entries: int = 100_000
    max_deflate_ratio: int = 100
    max_graph_nodes: int = 200_000

    def __post_init__(self):
        if self.max_bytes <= 0:
            raise InputError(f"max_bytes must be positive, got {self.max_bytes}")

    @property
    def max_text_bytes(self) -> int:
        return max(1 << 16, self.max_bytes // 16)


_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 1 << 10, "m": 10**6, "mb": 10**6, "mib": 1 << 20}
_UNITS.update({"g": 10**9, "gb": 10**9, "gib": 1 << 30, "t": 10**12, "tb": 10**12, "tib": 1 << 40})
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$")


def parse_size(text: str) -> int:
    """Bytes from ``"1073741824"``, ``"512MiB"``, ``"2GB"``, ``"1.5GiB"`` (the ``--max-bytes`` option)."""
    match = _SIZE.match(text.lower())
    if not match or match.group(2) not in _UNITS:
        raise InputError(f"cannot read {text!r} as a size; write bytes, or a number with KiB, MiB, GiB, MB, GB ...")
    size = int(float(match.group(1)) * _UNITS[match.group(2)])
    if size <= 0:
        raise InputError(f"a size must be positive, got {text!r}")
    return size
