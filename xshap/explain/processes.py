"""The processes of one explanation under JAX's multi-controller runtime (``jax.distributed.initialize()``).

Rows are independent, so the compiled chunk needs no communication: each process runs it on its own devices
over its own rows. What crosses processes goes through JAX's collectives (gloo on CPUs, NCCL on GPUs) via
``jax.experimental.multihost_utils``: the row counts, a fingerprint of the background (every process must
explain against the same one), the errors (one process's failure makes every process raise instead of
waiting), and the results when every process asks for all rows.

Values are exchanged as raw bytes, so that float64 gaps and int64 counts survive whatever x64 setting the
process has (JAX's collectives would cast them to 32 bits with x64 off).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import jax
import numpy as np

from xshap.errors import InputError

MESSAGE_BYTES = 4096  # an error message is cut to this many bytes when it is shared


class ProcessFailedError(RuntimeError):
    """Another process of the explanation failed: this one raises too, with that process's error."""


class ProcessGroup:
    """This process's place among the processes JAX runs (one process: index 0 of 1, nothing exchanged)."""

    def __init__(self, *, solo: bool = False) -> None:
        """``solo``: this process on its own (a float64 twin that only some processes build, which must not
        wait on the others)."""
        self.index = 0 if solo else jax.process_index()
        self.count = 1 if solo else jax.process_count()

    @property
    def several(self) -> bool:
        return self.count > 1

    @property
    def is_first(self) -> bool:
        return self.index == 0

    # -- exchanges ------------------------------------------------------------------------------------------
    def gather_bytes(self, payload: bytes) -> list[bytes]:
        """Every process's ``payload``, in process order."""
        if not self.several:
            return [payload]
        from jax.experimental import multihost_utils

        try:
            sizes = multihost_utils.process_allgather(np.array([len(payload)], dtype=np.int32))
            longest = int(np.max(sizes))
            padded = np.zeros(max(1, longest), dtype=np.uint8)
            padded[: len(payload)] = np.frombuffer(payload, dtype=np.uint8)
            everyone = np.asarray(multihost_utils.process_allgather(padded))
        except Exception as error:  # noqa: BLE001 - a collective fails when a process has died
            raise ProcessFailedError(
                f"process {self.index} of {self.count} lost another process of the explanation (it crashed or was "
                f"killed): {type(error).__name__}: {error}"
            ) from error
        return [everyone[p, : int(sizes[p][0])].tobytes() for p in range(self.count)]

    def gather_arrays(self, array: np.ndarray) -> list[np.ndarray]:
        """Every process's array (shapes may differ; dtype and values exact), in process order."""
        array = np.ascontiguousarray(array)
        header = json.dumps({"shape": list(array.shape), "dtype": array.dtype.str}).encode()
        blobs = self.gather_bytes(len(header).to_bytes(4, "little") + header + array.tobytes())
        arrays = []
        for blob in blobs:
            size = int.from_bytes(blob[:4], "little")
            meta = json.loads(blob[4 : 4 + size])
            arrays.append(np.frombuffer(blob[4 + size :], dtype=np.dtype(meta["dtype"])).reshape(meta["shape"]))
        return arrays

    def counts(self, n: int) -> list[int]:
        return [int(a[0]) for a in self.gather_arrays(np.array([n], dtype=np.int64))]

    def agree(self, error: BaseException | None, context: str = "") -> None:
        """Every process learns whether any failed; every process raises if one did (its own error where it
        is the one that failed). Called at the same points by every process, so no process waits forever on
        another that has stopped with an error. ``context``: what this process was doing (its rows), shown to
        the others with its error."""
        if not self.several:
            if error is not None:
                raise error
            return
        text = "" if error is None else f"{context}{type(error).__name__}: {error}"
        shared = text.encode()[:MESSAGE_BYTES]
        failures = [(p, m.decode(errors="replace")) for p, m in enumerate(self.gather_bytes(shared)) if m]
        if error is not None:
            raise error
        if failures:
            process, message = failures[0]
            more = f" (and {len(failures) - 1} other process(es))" if len(failures) > 1 else ""
            raise ProcessFailedError(f"process {process} of {self.count} failed{more}: {message}")

    def check_same(self, what: str, arrays: Sequence[np.ndarray]) -> None:
        """Raise in every process unless ``arrays`` are the same bytes in every process (the background: an
        expected value that differed between processes would make their rows incomparable)."""
        if not self.several:
            return
        digest = hashlib.sha256()
        for array in arrays:
            array = np.ascontiguousarray(array)
            digest.update(str((array.shape, array.dtype.str)).encode())
            digest.update(array.tobytes())
        digests = self.gather_bytes(digest.digest())
        differing = [p for p, d in enumerate(digests) if d != digests[0]]
        if differing:
            raise InputError(
                f"the {what} differs between processes (process(es) {differing} against process 0): every process "
                f"must pass the same {what}, or the rows they explain are not comparable"
            )

    def barrier(self, name: str) -> None:
        if self.several:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(name)


def split_rows(n: int, shares: Sequence[int]) -> list[tuple[int, int]]:
    """Contiguous [start, stop) blocks of ``n`` rows, one per process, in proportion to ``shares`` (their
    device counts); the first blocks take the remainder."""
    total = sum(shares)
    bounds, start = [], 0
    exact = [n * s / total for s in shares]
    sizes = [int(e) for e in exact]
    for k in np.argsort([-(e - int(e)) for e in exact], kind="stable")[: n - sum(sizes)]:
        sizes[int(k)] += 1
    for size in sizes:
        bounds.append((start, start + size))
        start += size
    return bounds
