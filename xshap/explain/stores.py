"""The on-disk arrays of a streamed explanation: ``.npy`` files (always available) or a zarr group (a folder
named ``*.zarr``, where zarr is installed). Both are written a block of rows at a time and read back as arrays.

A format creates the arrays (``create``), opens them for writing rows (``open_rows``: objects with ``write``,
``read`` (the rows' bytes, for the block digests), ``sync`` and ``close``) and loads one read-only (``load``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap

from xshap.errors import InputError


class NpyRows:
    """A ``.npy`` file whose rows are read and written with plain file I/O at their offsets: what is written
    leaves memory once it is on disk (through a memory map the written pages would stay in the process)."""

    def __init__(self, path: Path):
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(handle)
            self.offset = handle.tell()
        if fortran:
            raise InputError(f"{path} is not in C order: it is not a store xshap wrote")
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self.handle = open(path, "r+b")  # noqa: SIM115 - closed by close()

    def __len__(self) -> int:
        return self.shape[0]

    def write(self, start: int, rows: np.ndarray) -> None:
        self.handle.seek(self.offset + start * self.row_bytes)
        self.handle.write(np.ascontiguousarray(rows, dtype=self.dtype).tobytes())

    def read(self, start: int, stop: int) -> bytes:
        self.handle.seek(self.offset + start * self.row_bytes)
        return self.handle.read((stop - start) * self.row_bytes)

    def sync(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()


class NpyFormat:
    name = "npy"

    @staticmethod
    def create(path: Path, arrays: dict[str, tuple[tuple, np.dtype]], block_rows: int) -> None:
        for name, (shape, dtype) in arrays.items():
            open_memmap(path / f"{name}.npy", mode="w+", dtype=dtype, shape=shape).flush()

    @staticmethod
    def open_rows(path: Path, names: list[str]) -> dict:
        return {name: NpyRows(path / f"{name}.npy") for name in names}

    @staticmethod
    def load(path: Path, name: str):
        return np.load(path / f"{name}.npy", mmap_mode="r")


class ZarrRows:
    """One array of a zarr group, written a block at a time (a block is one zarr chunk: no chunk is shared by two
    blocks, so two processes never write the same chunk)."""

    def __init__(self, array):
        self.array = array

    def __len__(self) -> int:
        return self.array.shape[0]

    def write(self, start: int, rows: np.ndarray) -> None:
        self.array[start : start + rows.shape[0]] = rows

    def read(self, start: int, stop: int) -> bytes:
        return np.ascontiguousarray(self.array[start:stop]).tobytes()

    def sync(self) -> None:
        """zarr writes a chunk's file when it is assigned."""

    def close(self) -> None:
        """Nothing is held open."""


class ZarrFormat:
    name = "zarr"

    @staticmethod
    def _zarr():
        try:
            import zarr
        except ImportError as error:
            raise InputError(
                "a store named *.zarr needs zarr (pip install zarr); or write the .npy store to a folder whose name "
                "does not end in .zarr"
            ) from error
        return zarr

    @classmethod
    def create(cls, path: Path, arrays: dict[str, tuple[tuple, np.dtype]], block_rows: int) -> None:
        group = cls._zarr().open_group(str(path), mode="a")
        for name, (shape, dtype) in arrays.items():
            group.create_array(name, shape=shape, dtype=dtype, chunks=(block_rows, *shape[1:]), fill_value=0)

    @classmethod
    def open_rows(cls, path: Path, names: list[str]) -> dict:
        group = cls._zarr().open_group(str(path), mode="r+")
        return {name: ZarrRows(group[name]) for name in names}

    @classmethod
    def load(cls, path: Path, name: str):
        return cls._zarr().open_group(str(path), mode="r")[name]


def store_format(path: Path):
    """zarr for a folder named ``*.zarr``, ``.npy`` files otherwise."""
    return ZarrFormat if path.suffix == ".zarr" else NpyFormat
