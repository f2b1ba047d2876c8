"""A ``.npy`` file, read without trusting its header: the shape and dtype it claims are checked against the
file's size and the limits before anything is allocated, and only plain numbers are accepted (no objects, no
structured or string dtypes, no pickles)."""

from __future__ import annotations

import os
from typing import BinaryIO

import numpy as np

from xshap.errors import InputError
from xshap.files.errors import FileTooLargeError, UnsafeFileError
from xshap.files.limits import Limits

MAX_HEADER = 10_000


def _header(source: BinaryIO, what: str) -> tuple[tuple, bool, np.dtype]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(source)
        if version == (1, 0):
            return fmt.read_array_header_1_0(source, max_header_size=MAX_HEADER)
        if version == (2, 0):
            return fmt.read_array_header_2_0(source, max_header_size=MAX_HEADER)
    except (ValueError, SyntaxError, TypeError, EOFError, OverflowError, RecursionError) as error:
        raise UnsafeFileError(f"refusing {what}: not a valid .npy header ({error})") from None
    raise UnsafeFileError(f"refusing {what}: .npy format version {version} (only 1.0 and 2.0)")


def _dtype_problem(dtype: np.dtype) -> str | None:
    if dtype.hasobject:
        return "holds Python objects (Object arrays cannot be loaded when allow_pickle=False)"
    if dtype.fields is not None or dtype.subdtype is not None:
        return f"has a structured dtype {dtype}"
    if dtype.kind == "c":
        return f"holds complex numbers ({dtype}); DeepSHAP explains real-valued inputs"
    if dtype.kind not in "biuf":
        return f"has dtype {dtype}, not numbers"
    return None


def read_npy(source: BinaryIO, what: str, limits: Limits) -> np.ndarray:
    """The array in ``source``, refused if its header lies about its size or asks for more than the limits."""
    shape, fortran_order, dtype = _header(source, what)
    problem = _dtype_problem(dtype)
    if problem:
        raise UnsafeFileError(f"refusing to load {what}: it {problem}; xshap reads only plain numeric .npy arrays")
    if not all(isinstance(n, int) and n >= 0 for n in shape):
        raise UnsafeFileError(f"refusing {what}: its header gives the shape {shape!r}")
    count = 1
    for n in shape:
        count *= n
    claimed = count * dtype.itemsize
    if claimed > limits.max_bytes:
        raise FileTooLargeError(
            f"refusing {what}: its header claims a {shape} array of {claimed:,} bytes, over the limit of "
            f"{limits.max_bytes:,} (--max-bytes)"
        )
    data_start = source.tell()
    held = os.fstat(source.fileno()).st_size - data_start
    if held != claimed:
        raise UnsafeFileError(
            f"refusing {what}: its header claims {claimed:,} bytes of data ({shape}, {dtype}), the file holds {held:,}"
        )
    try:
        flat = np.fromfile(source, dtype=dtype, count=count)
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read {what}: {error}") from error
    array = flat.reshape(shape, order="F" if fortran_order else "C")
    return array if dtype.isnative else array.astype(dtype.newbyteorder("="))
