"""Explained rows spread over every visible device with jax.sharding; background and weights replicated.

Rows are independent (each is averaged over the whole background on its own), so sharding the rows axis
of a chunk splits the N*B pairs across devices without any communication but the final gather. With one
device this is a no-op placement.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

CPU_MAX_MEMORY = 1 << 30  # bytes of intermediates per chunk on a CPU: host memory is shared with everything else
ACCELERATOR_MEMORY_SHARE = 4  # on a GPU/TPU: a quarter of the device's memory per chunk
PINNED_HOST = "pinned_host"  # JAX's memory kind of page-locked host memory, which an accelerator writes directly


def default_max_memory(devices: Sequence) -> int:
    """Bytes of intermediates a chunk may use on each device: 1 GiB on a CPU; on an accelerator a quarter of
    its memory (so that a chunk is large enough to keep it busy), or 1 GiB where the device does not say."""
    device = devices[0]
    if device.platform == "cpu":
        return CPU_MAX_MEMORY
    try:
        limit = (device.memory_stats() or {}).get("bytes_limit")
    except Exception:  # noqa: BLE001 - a backend without memory_stats
        limit = None
    return int(limit) // ACCELERATOR_MEMORY_SHARE if limit else CPU_MAX_MEMORY


class RowSharding:
    """A one-axis mesh over ``devices`` (default: all of this process's devices), named "rows".

    Under JAX's multi-controller runtime only this process's devices are used (those of ``devices`` that are
    its own): rows are independent, so each process explains its share of them on its own devices and nothing
    crosses processes inside a compiled chunk (see ``xshap.explain.processes``)."""

    def __init__(self, devices: Sequence | None = None):
        here = jax.process_index()
        given = list(devices) if devices is not None else jax.local_devices()
        self.devices = [d for d in given if d.process_index == here]
        if not self.devices:
            where = f" of process {here}" if jax.process_count() > 1 else ""
            raise ValueError(f"no devices{where} to run on (given: {given})")
        self.mesh = Mesh(np.array(self.devices), ("rows",))
        self.rows = NamedSharding(self.mesh, PartitionSpec("rows"))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())

    @property
    def count(self) -> int:
        return len(self.devices)

    def round_up(self, n: int) -> int:
        """The smallest multiple of the device count that is at least ``n``."""
        return -(-n // self.count) * self.count

    def put_rows(self, arrays: Sequence[np.ndarray]) -> tuple:
        """Row-sharded device arrays: rows split evenly over the devices (``len`` a multiple of ``count``). (Staging
        them through pinned host memory first was no faster on an H200: 0.36 ms against 0.34 ms for W3's rows.)"""
        return tuple(jax.device_put(a, self.rows) for a in arrays)

    def pinned_host_rows(self) -> NamedSharding | None:
        """The rows sharding in pinned host memory, on an accelerator: a chunk's results are written there by the
        compiled program itself. Fetched after the program instead, they cost 0.4 ms more per chunk on an H200
        with their copies started together, 1.2 ms one after the other, against a 1.2 ms chunk (issue 4's W3,
        ``python -m benchmarks.kernels --host``); written by the program, nothing measurable. None on a CPU,
        whose device memory is host memory, or without pinned host memory."""
        device = self.devices[0]
        if device.platform == "cpu":
            return None
        try:
            kinds = {memory.kind for memory in device.addressable_memories()}
        except Exception:  # noqa: BLE001 - a backend that does not list its memories
            return None
        return self.rows.with_memory_kind(PINNED_HOST) if PINNED_HOST in kinds else None

    def put_replicated(self, tree):
        """Every leaf copied to every device."""
        return jax.device_put(tree, self.replicated)
