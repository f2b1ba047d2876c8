"""Attributions streamed to disk a block of rows at a time, resumable after an interruption.

The store is a folder:

- ``manifest.json``: what the attributions are of (model fingerprint, background digest, rules, shapes, row
  count, block size) and the expected value; a resumed run must match it;
- the arrays ``values_<i>`` (one per input, shap's layout ``(N, *row_shape, n_outputs)``), ``outputs``, ``gaps``,
  ``tolerance``, ``recomputed``: ``.npy`` files, or for a folder named ``*.zarr`` a zarr group (one zarr chunk
  per block), see ``xshap.explain.stores``;
- ``done/block-<k>``: written (atomically, after the block's rows are on disk) once block k is complete,
  holding a digest of its rows. A block without its marker, or whose rows no longer match the digest (a write
  cut short), is computed again; a block with a matching marker is never recomputed.

Memory is one chunk's intermediates (sized by ``max_memory``) and one block's results (whole chunks, at most
a sixteenth of ``max_memory``); rows are written with plain file I/O, so nothing written stays in memory.
Under ``jax.distributed`` every process opens the same store and writes its own blocks (block k is process
k mod P's).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xshap.errors import InputError
from xshap.explain.completeness import incomplete
from xshap.explain.sources import row_source
from xshap.explain.stores import store_format

FORMAT = "xshap-attributions/1"
MANIFEST = "manifest.json"


@dataclass
class StoredAttribution:
    """A finished store: where it is, and how complete its rows are."""

    path: Path
    n: int
    expected_value: np.ndarray
    blocks_computed: int  # in this call (the others were done before it: a resumed run)
    blocks_total: int
    recomputed_rows: int
    incomplete_rows: int  # rows whose |gap| exceeds their tolerance (0 unless check_additivity was off)
    max_gap_ratio: float  # max |gap| / tolerance over every row and output

    def values(self, i: int = 0):
        """The attributions of input ``i``, (N, *row_shape, n_outputs), read-only (a memory map, or a zarr array)."""
        return store_format(self.path).load(self.path, f"values_{i}")

    def array(self, name: str):
        """``outputs``, ``gaps``, ``tolerance`` or ``recomputed``, read-only."""
        return store_format(self.path).load(self.path, name)

    def summary(self) -> str:
        done = f"{self.blocks_computed} of {self.blocks_total} block(s) computed now"
        if self.blocks_computed < self.blocks_total:
            done += f", {self.blocks_total - self.blocks_computed} resumed from {self.path}"
        return (
            f"{self.n} row(s) explained into {self.path} ({done}); complete: {self.n - self.incomplete_rows} of "
            f"{self.n} (max |gap| / tolerance {self.max_gap_ratio:.3g}); recomputed in float64: {self.recomputed_rows}"
        )


def explain_to(
    explainer,
    store,
    rows,
    *,
    resume: bool = False,
    n: int | None = None,
    block_rows: int | None = None,
    check_additivity: bool = True,
    progress: bool | None = None,
) -> StoredAttribution:
    """Explain ``rows`` (see ``xshap.explain.sources.row_source``) into the folder ``store``.

    A folder that already holds a store is refused unless ``resume``: then its finished blocks are kept and the
    rest computed, provided the manifest matches this explainer and these rows."""
    source = row_source(rows, len(explainer._given), n)
    if source.n_inputs != len(explainer._given):
        raise InputError(f"the rows hold {source.n_inputs} input(s); the model takes {len(explainer._given)}")
    total = len(source)
    if total == 0:
        raise InputError("there are no rows to explain")
    processes = explainer.processes
    size = int(block_rows) if block_rows else default_block_rows(explainer)
    path = Path(store)
    manifest = _manifest(explainer, total, size)
    error = None
    try:
        if processes.is_first:
            _open_store(path, manifest, explainer, resume)
    except Exception as failure:  # noqa: BLE001 - shared with the other processes, then raised
        error = failure
    processes.agree(error)  # every process waits for the store to exist
    blocks = -(-total // size)
    mine = {k for k in range(blocks) if k % processes.count == processes.index}
    error, computed, closing = None, 0, []
    try:
        arrays = _open_arrays(path, explainer)
        todo = {k for k in mine if not _block_done(path, k, arrays, size)}
        closing.extend(arrays.values())
        for block in _progress(source.blocks(size, todo), len(todo), progress if processes.is_first else False):
            attribution = explainer._explain_here(
                block.arrays if explainer.multi_input else block.arrays[0], check_additivity, False
            )
            _write_block(path, arrays, block.index, block.start, attribution, explainer._several)
            computed += 1
    except Exception as failure:  # noqa: BLE001 - shared with the other processes, then raised
        error = failure
    finally:
        for handle in closing:
            handle.close()
    processes.agree(error, f"process {processes.index}: ")
    computed = sum(processes.counts(computed))
    return _finished(path, total, blocks, computed, explainer.expected_value)


RESULT_SHARE = 16  # a block's results (and their copy in shap's layout) take at most 1/16 of max_memory each
MAX_BLOCK_ROWS = 1 << 16


def default_block_rows(explainer) -> int:
    """Rows per block: whole chunks, as many as keep the block's results under max_memory / RESULT_SHARE (fewer
    blocks mean fewer markers and syncs), at most MAX_BLOCK_ROWS."""
    chunk = explainer.chunk_rows()
    itemsize = np.dtype(explainer._deeplift.compute_dtype).itemsize
    per_row = explainer.n_outputs * (itemsize + 16) + 1
    per_row += sum(int(np.prod(b.shape[1:])) * explainer.n_outputs * itemsize for b in explainer._background_np)
    rows = max(chunk, min(MAX_BLOCK_ROWS, explainer.max_memory // RESULT_SHARE // per_row))
    return rows // chunk * chunk


def _progress(blocks, count: int, progress: bool | None):
    """``blocks`` with a tqdm bar when asked, or (``None``) on a terminal for two blocks or more."""
    show = progress if progress is not None else (count > 1 and sys.stderr.isatty())
    if not show:
        return blocks
    from tqdm.auto import tqdm

    return tqdm(blocks, total=count, desc="xshap explain", unit="block")


def _manifest(explainer, total: int, size: int) -> dict:
    from xshap.explain.fingerprint import digest_array

    return {
        "format": FORMAT,
        "n": total,
        "block_rows": size,
        "n_outputs": int(explainer.n_outputs),
        "inputs": [{"row_shape": list(b.shape[1:]), "dtype": str(b.dtype)} for b in explainer._background_np],
        "model": _model_digest(explainer),
        "background": [digest_array(b) for b in explainer._model_inputs_np],
        "rules": explainer.rules,
        "output": explainer.output,
        "expected_value": [float(v) for v in explainer.expected_value],
    }


def _model_digest(explainer) -> str:
    """A digest of what is explained, stable across processes and runs: the converted weights, the program's
    constants, and its equations (primitive, operands, results) in order."""
    import jax

    digest = hashlib.sha256()

    def add_array(value) -> None:
        value = np.asarray(value)
        digest.update(str((value.shape, value.dtype.str)).encode())
        digest.update(np.ascontiguousarray(value).tobytes())

    for leaf in jax.tree_util.tree_leaves(explainer.model.params):
        add_array(leaf)
    program = explainer._deeplift.program
    for index in sorted(program.consts):
        add_array(program.consts[index])
    for eqn in program.eqns:
        operands = [a if isinstance(a, int) else str(np.asarray(a.value).tolist()) for a in eqn.inputs]
        digest.update(f"{eqn.name}{operands}{eqn.outputs}".encode())
    return digest.hexdigest()


def _open_store(path: Path, manifest: dict, explainer, resume: bool) -> None:
    """Create the store (process 0), or check that the one there is this explanation's when resuming."""
    existing = path / MANIFEST
    if existing.exists():
        if not resume:
            raise InputError(
                f"{path} already holds attributions; pass resume=True (the CLI's --resume) to finish them, or "
                "choose another folder"
            )
        found = json.loads(existing.read_text(encoding="utf-8"))
        differing = [k for k in manifest if found.get(k) != manifest[k]]
        if differing:
            raise InputError(
                f"{path} holds attributions of another explanation (differing: {', '.join(differing)}): they "
                "cannot be resumed with this model, background and rows; choose another folder"
            )
        return
    if path.exists() and any(path.iterdir()):
        raise InputError(f"{path} exists and is not an xshap store: choose an empty or new folder")
    total, outputs = manifest["n"], manifest["n_outputs"]
    arrays = {
        f"values_{i}": ((total, *_row_shape(explainer, i), outputs), _values_dtype(explainer, i))
        for i in range(len(manifest["inputs"]))
    }
    arrays.update(
        outputs=((total, outputs), _values_dtype(explainer, 0)),
        gaps=((total, outputs), np.dtype(np.float64)),
        tolerance=((total, outputs), np.dtype(np.float64)),
        recomputed=((total,), np.dtype(bool)),
    )
    path.mkdir(parents=True, exist_ok=True)
    store_format(path).create(path, arrays, manifest["block_rows"])
    (path / "done").mkdir(exist_ok=True)
    _atomic_write(path / MANIFEST, json.dumps(manifest, indent=1))


def _row_shape(explainer, i: int) -> tuple:
    return tuple(explainer._background_np[i].shape[1:])


def _values_dtype(explainer, i: int) -> np.dtype:
    """Attributions are stored in the type they are computed in (the explained values' float type)."""
    return np.dtype(explainer._deeplift.compute_dtype)


def _open_arrays(path: Path, explainer) -> dict:
    names = [f"values_{i}" for i in range(len(explainer._given))]
    return store_format(path).open_rows(path, [*names, "outputs", "gaps", "tolerance", "recomputed"])


def _marker(path: Path, index: int) -> Path:
    return path / "done" / f"block-{index:08d}"


def _block_digest(arrays: dict, start: int, stop: int) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(arrays[name].read(start, stop))
    return digest.hexdigest()


def _block_done(path: Path, index: int, arrays: dict, size: int) -> bool:
    """A block is done when its marker is there and its rows on disk still match the marker's digest."""
    marker = _marker(path, index)
    if not marker.exists():
        return False
    stop = min(len(arrays["outputs"]), (index + 1) * size)
    return marker.read_text(encoding="utf-8").strip() == _block_digest(arrays, index * size, stop)


def _write_block(path: Path, arrays: dict, index: int, start: int, attribution, several: bool) -> None:
    stop = start + attribution.outputs.shape[0]
    for i, values in enumerate(attribution.values):
        arrays[f"values_{i}"].write(start, np.moveaxis(values, 1, -1))
    arrays["outputs"].write(start, attribution.outputs)
    arrays["gaps"].write(start, attribution.gaps)
    arrays["tolerance"].write(start, attribution.tolerance)
    arrays["recomputed"].write(start, attribution.recomputed)
    for array in arrays.values():
        array.sync()  # the rows are on disk before the marker says so
    _atomic_write(_marker(path, index), _block_digest(arrays, start, stop))


def _atomic_write(target: Path, text: str) -> None:
    partial = target.with_name(target.name + ".partial")
    with open(partial, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, target)


def _finished(path: Path, total: int, blocks: int, computed: int, expected_value) -> StoredAttribution:
    """The summary, read back from the store in blocks (every block must be done)."""
    kind = store_format(path)
    gaps, tolerance, recomputed = (kind.load(path, name) for name in ("gaps", "tolerance", "recomputed"))
    missing = [k for k in range(blocks) if not _marker(path, k).exists()]
    if missing:
        raise InputError(f"{len(missing)} block(s) of {path} are not done (first: {missing[0]}); resume the run")
    bad, ratio, step = 0, 0.0, 1 << 16
    for start in range(0, total, step):
        g, t = np.asarray(gaps[start : start + step]), np.asarray(tolerance[start : start + step])
        bad += int(incomplete(g, t).any(axis=1).sum())
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = max(ratio, float(np.nanmax(np.abs(g) / np.where(t > 0, t, np.inf))))
    return StoredAttribution(
        path, total, np.asarray(expected_value), computed, blocks, int(np.sum(np.asarray(recomputed))), bad, ratio
    )
