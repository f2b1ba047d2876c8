"""torch's serialized dtype numbers (``torch._export.serde.schema.ScalarType``): element sizes, and which ones
xshap loads (real numbers and bool; complex and float8 are refused)."""

from __future__ import annotations

# ScalarType value -> (torch dtype name, bytes per element); tests/test_untrusted_files.py checks it against torch
SCALAR_TYPES: dict[int, tuple[str, int]] = {
    1: ("uint8", 1),
    2: ("int8", 1),
    3: ("int16", 2),
    4: ("int32", 4),
    5: ("int64", 8),
    6: ("float16", 2),
    7: ("float32", 4),
    8: ("float64", 8),
    9: ("complex32", 4),
    10: ("complex64", 8),
    11: ("complex128", 16),
    12: ("bool", 1),
    13: ("bfloat16", 2),
    28: ("uint16", 2),
    29: ("float8_e4m3fn", 1),
    30: ("float8_e5m2", 1),
    31: ("float8_e4m3fnuz", 1),
    32: ("float8_e5m2fnuz", 1),
    33: ("float8_e8m0fnu", 1),
    34: ("uint32", 4),
    35: ("uint64", 8),
}
LOADABLE = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 12, 13, 28, 34, 35})
STRIDED_LAYOUT = 7  # schema.Layout.Strided


def element_size(code: object) -> int | None:
    """Bytes per element of a serialized dtype, or None if the number is not one."""
    entry = SCALAR_TYPES.get(code) if isinstance(code, int) and not isinstance(code, bool) else None
    return entry[1] if entry else None
