"""Rows to explain that need not fit in memory: arrays and ``.npy`` memmaps, folders of ``.npy`` shards, and
iterables of batches (a ``torch.utils.data.DataLoader`` among them), read a block at a time.

A source gives its row count up front (``len``) and blocks of consecutive rows; an iterable is read in order,
so blocks that are already done are still read but not explained.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from xshap.errors import InputError
from xshap.explain.data import to_numpy


@dataclass
class Block:
    index: int
    start: int
    arrays: list[np.ndarray]


class RowSource:
    """Consecutive blocks of ``block_rows`` rows of one or several inputs."""

    n_inputs: int

    def __len__(self) -> int:
        raise NotImplementedError

    def blocks(self, block_rows: int, wanted: set[int]) -> Iterator[Block]:
        """The blocks whose index is in ``wanted``, in order."""
        raise NotImplementedError


class ArraySource(RowSource):
    """Arrays with rows on the leading axis (memmaps are read a block at a time)."""

    def __init__(self, arrays: list):
        self.arrays = arrays
        self.n_inputs = len(arrays)
        counts = {len(a) for a in arrays}
        if len(counts) != 1:
            raise InputError(f"the inputs have different numbers of rows: {[len(a) for a in arrays]}")

    def __len__(self) -> int:
        return len(self.arrays[0])

    def blocks(self, block_rows: int, wanted: set[int]) -> Iterator[Block]:
        for index in sorted(wanted):
            start = index * block_rows
            yield Block(index, start, [to_numpy(a[start : start + block_rows]) for a in self.arrays])


class ShardSource(RowSource):
    """A folder of ``.npy`` files (sorted by name), their rows one after the other; each file memory-mapped."""

    def __init__(self, folder: str, allow_pickle: bool = False):
        paths = sorted(glob.glob(os.path.join(glob.escape(folder), "*.npy")))
        if not paths:
            raise InputError(f"the folder {folder!r} holds no .npy file to explain")
        self.shards = [np.load(p, mmap_mode="r", allow_pickle=allow_pickle) for p in paths]
        shapes = {s.shape[1:] for s in self.shards}
        if len(shapes) != 1 or any(s.ndim == 0 for s in self.shards):
            raise InputError(f"the shards in {folder!r} have rows of different shapes: {sorted(shapes)}")
        self.offsets = np.cumsum([0] + [len(s) for s in self.shards])
        self.n_inputs = 1

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def rows(self, start: int, stop: int) -> np.ndarray:
        parts = []
        for shard, offset in zip(self.shards, self.offsets[:-1]):
            lo, hi = max(start, offset), min(stop, offset + len(shard))
            if lo < hi:
                parts.append(np.asarray(shard[lo - offset : hi - offset]))
        return np.concatenate(parts)

    def blocks(self, block_rows: int, wanted: set[int]) -> Iterator[Block]:
        for index in sorted(wanted):
            start = index * block_rows
            yield Block(index, start, [self.rows(start, min(len(self), start + block_rows))])


class BatchSource(RowSource):
    """An iterable of batches (a DataLoader's): each batch an array, or a tuple/list whose first ``n_inputs``
    items are the inputs (labels after them are ignored). The row count is ``n``, or ``len(loader.dataset)``."""

    def __init__(self, batches: Iterable, n_inputs: int, n: int | None = None):
        self.batches = batches
        self.n_inputs = n_inputs
        if n is None:
            dataset = getattr(batches, "dataset", None)
            if dataset is None or not hasattr(dataset, "__len__"):
                raise InputError(
                    "the number of rows of an iterable of batches must be known up front: pass n=, or a "
                    "DataLoader over a dataset with a length"
                )
            n = len(dataset)
        self.n = int(n)

    def __len__(self) -> int:
        return self.n

    def _inputs(self, batch) -> list[np.ndarray]:
        if isinstance(batch, (tuple, list)):
            if len(batch) < self.n_inputs:
                raise InputError(f"a batch holds {len(batch)} item(s); the model takes {self.n_inputs} input(s)")
            return [to_numpy(b) for b in batch[: self.n_inputs]]
        if isinstance(batch, dict):
            raise InputError("a batch is a dict: give the rows as arrays or (inputs..., labels) tuples")
        if self.n_inputs != 1:
            raise InputError(f"a batch is one array; the model takes {self.n_inputs} inputs")
        return [to_numpy(batch)]

    def blocks(self, block_rows: int, wanted: set[int]) -> Iterator[Block]:
        pending: list[list[np.ndarray]] = []
        held, index, seen = 0, 0, 0
        for batch in self.batches:
            arrays = self._inputs(batch)
            pending.append(arrays)
            held += len(arrays[0])
            seen += len(arrays[0])
            while held >= block_rows or (seen >= self.n and held):
                joined = [np.concatenate([p[i] for p in pending]) for i in range(self.n_inputs)]
                block, rest = [j[:block_rows] for j in joined], [j[block_rows:] for j in joined]
                if index in wanted:
                    yield Block(index, index * block_rows, block)
                index += 1
                pending, held = ([rest] if len(rest[0]) else []), len(rest[0])
        if seen != self.n:
            raise InputError(f"the batches held {seen} rows, not the {self.n} announced")


def row_source(rows, n_inputs: int, n: int | None = None) -> RowSource:
    """The source for what ``explain_to`` was given: a path (``.npy`` file or folder of shards), an array or
    tensor (or a list/tuple of them, one per input), or an iterable of batches."""
    if isinstance(rows, (str, os.PathLike)):
        path = os.fspath(rows)
        if os.path.isdir(path):
            return ShardSource(path)
        if path.endswith(".npy"):
            return ArraySource([np.load(path, mmap_mode="r")])
        raise InputError(f"{path!r} is neither a .npy file nor a folder of .npy shards")
    if isinstance(rows, (list, tuple)) and rows and all(hasattr(r, "shape") for r in rows):
        return ArraySource(list(rows))
    if hasattr(rows, "shape") and hasattr(rows, "__getitem__"):
        return ArraySource([rows])
    if isinstance(rows, Iterable):
        return BatchSource(rows, n_inputs, n)
    raise InputError(f"cannot read rows from a {type(rows).__name__}")
