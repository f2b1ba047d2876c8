"""DeepExplainer: DeepSHAP, the DeepLIFT multipliers averaged over a background, jit-compiled."""

from __future__ import annotations

import copy
import functools
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from xshap.engine.rulesets import COMPLETE, REVEALCANCEL, module_scopes
from xshap.engine.transform import DeepLift
from xshap.errors import InputError, NonFiniteError, PrecisionError, XShapIncompleteError
from xshap.explain.compiling import jit
from xshap.explain.completeness import ROUNDING_FACTOR, completeness_tolerance, incomplete, tolerance_precision
from xshap.explain.data import as_input_list, check_background, check_inputs, is_background_function, is_float
from xshap.explain.devices import RowSharding, default_max_memory
from xshap.explain.model import ExplainedModel, wrap_model
from xshap.explain.precision import FLOAT64, cast_floats, model_float_dtype, needs_x64, precision
from xshap.explain.processes import ProcessGroup, split_rows


@dataclass
class Attribution:
    """DeepSHAP values with what they should add up to.

    values: one array per input, each (N, n_outputs, *row_shape).
    outputs: f(x), (N, n_outputs). expected_value: E f(background), (n_outputs,).
    gaps: sum(phi) - (f(x) - E f), (N, n_outputs); tolerance: the allowed |gap|, same shape.
    """

    values: list[np.ndarray]
    outputs: np.ndarray
    expected_value: np.ndarray
    gaps: np.ndarray
    tolerance: np.ndarray
    pair_totals: np.ndarray | None = None  # sum(phi) per (row, background row, output), when asked for
    background_outputs: np.ndarray | None = None  # f(r) per background row, (B, n_outputs), with pair_totals
    # rows whose float32 (or lower) attributions missed the tolerance and were recomputed in float64: their
    # values come from the float64 twin of the model, their gaps and tolerances are against its float64 forward
    recomputed: np.ndarray | None = None  # (N,) bool
    notes: list[str] = field(default_factory=list)
    finite: np.ndarray | None = field(default=None, repr=False)  # (N,): every attribution of the row finite

    def shap_layout(self, several_inputs: bool):
        """shap 0.51's layout: (N, *row_shape, n_outputs) per input; a list for several inputs."""
        arrays = [np.moveaxis(v, 1, -1) for v in self.values]
        return arrays if several_inputs else arrays[0]


def _in_precision(method):
    """Run a method inside the explainer's precision scope (x64 for a float64 model, nothing otherwise)."""

    @functools.wraps(method)
    def scoped(self, *args, **kwargs):
        with precision(self._x64):
            return method(self, *args, **kwargs)

    return scoped


class DeepExplainer:
    """DeepSHAP for a torch model (converted with torch.export) or a JAX callable, shap's API.

    ``model``: a ``torch.nn.Module`` or a JAX function of batched inputs (a Flax module included),
    returning (batch,) or (batch, n_outputs) — or a dict / ``ModelOutput`` / tuple of such, of which ``output``
    (a key or position; default ``logits`` where there is one) is explained. ``data``: the background, an array or
    tensor with rows on the leading axis, or a list/tuple of them for several inputs.
    ``batch_size``: explained rows per compiled chunk; by default chosen to keep intermediates under
    ``max_memory`` bytes per device (default: 1 GiB on a CPU, a quarter of an accelerator's memory).
    ``rules``: ``"complete"`` (default) or ``"shap"``, shap's rule choices where they differ from the
    complete rules (see ``xshap.engine.rulesets``). ``devices``: where the explained rows
    are spread (default: every device JAX sees; results are the same on one or many). ``progress``: a
    tqdm bar over chunks; ``None`` shows it only on an interactive terminal for work of several chunks.

    Precision is the model's: a model with float64 weights (or a float64 background for a JAX function) is
    explained in float64, with x64 enabled for xshap's own work only; float data for a float32 model is cast to
    float32. Rows that miss float32's tolerance are recomputed in float64 (``Attribution.recomputed``).
    """

    def __new__(cls, model=None, data=None, *args, **kwargs):
        if cls is DeepExplainer and is_background_function(data):  # per-sample references: a function of x
            from xshap.explain.per_sample import PerSampleExplainer

            return super().__new__(PerSampleExplainer)
        return super().__new__(cls)

    def __init__(
        self,
        model,
        data,
        *,
        rules: str = COMPLETE,
        batch_size: int | None = None,
        max_memory: int | None = None,
        devices=None,
        progress: bool | None = None,
        output: str | int | None = None,
        _group: ProcessGroup | None = None,
    ):
        # under jax.distributed every process builds the explainer; one that fails makes every one raise
        self.processes = ProcessGroup() if _group is None else _group
        error = None
        try:
            self._init(model, data, rules, batch_size, max_memory, devices, progress, output)
        except Exception as failure:  # noqa: BLE001 - shared with the other processes, then raised
            error = failure
        self.processes.agree(error)
        if self.processes.several:
            self.processes.check_same("background", self._model_inputs_np)
            self._device_shares = self.processes.counts(self.sharding.count)

    def _init(self, model, data, rules, batch_size, max_memory, devices, progress, output) -> None:
        given, self.multi_input = as_input_list(data)
        check_background(given)
        self._given = [np.empty((0, *b.shape[1:]), dtype=b.dtype) for b in given]  # X is checked against these
        self._model_dtype = model_float_dtype(model)
        background = cast_floats(given, self._model_dtype)
        self._x64 = needs_x64([self._model_dtype, *(b.dtype for b in background)])
        self._model_inputs_np = background  # the model's own inputs (the references get these)
        self.output = output
        self.batch_size = batch_size
        self.progress = progress if self.processes.is_first else False  # one bar, on process 0
        self._options = {"batch_size": batch_size, "max_memory": max_memory, "devices": devices, "output": output}
        with precision(self._x64):
            self._build(model, background, rules, max_memory, devices)

    def _build(self, model, background: list[np.ndarray], rules: str, max_memory, devices) -> None:
        self.model: ExplainedModel = wrap_model(model, background, self.output)
        # what is explained: the model's inputs, or for (model, layer) the layer's inputs
        background = self.model.to_interim(background)
        _refuse_non_float(background, interim=self.model.head is not None)
        self._background_np = background
        self._several = len(background) > 1 if self.model.head is not None else self.multi_input
        self.sharding = RowSharding(devices)
        self.background = [self.sharding.put_replicated(b) for b in background]
        self._params = self.sharding.put_replicated(self.model.params)
        self.max_memory = default_max_memory(self.sharding.devices) if max_memory is None else int(max_memory)
        self._vmap = None  # the output pullbacks' form: chosen in _set_rules (see vmap_outputs)
        self._set_rules(rules)
        self.n_outputs = self._set_expected_value().shape[1]

    @property
    def _vmap_outputs(self) -> bool:
        """Whether each chunk vmaps one pullback over the outputs' one-hot cotangents (True) or unrolls one pullback
        per output (see ``_explain_chunk``)."""
        return self._vmap

    @_vmap_outputs.setter
    def _vmap_outputs(self, value: bool) -> None:
        if value != self._vmap:
            self._vmap = bool(value)
            self._set_rules(self.rules)

    def _set_expected_value(self) -> np.ndarray:
        """f(r) for every background row and E f over them; a non-finite f(r) raises, naming its op and row.
        Returns f(r), (B, n_outputs)."""
        background_out = self._background_forward()
        if not np.all(np.isfinite(background_out)):
            row = int(np.argwhere(~np.isfinite(background_out))[0][0])
            raise NonFiniteError(
                f"f(background row {row}) = {background_out[row].tolist()} is not finite: "
                + self._locate_nonfinite_forward(self._model_inputs_np, row)
                + "; an expected value over it would be meaningless"
            )
        self._background_outputs = background_out
        self.expected_value = background_out.mean(axis=0)
        return background_out

    def _background_forward(self) -> np.ndarray:
        """f(r) for every background row, (B, n_outputs): the output's reference half where the references are
        kept (``_reference_values``: the same ops on the same rows, and one program fewer to compile), else the
        forward pass compiled on its own."""
        output = self._deeplift.program.outputs[0]
        if self._references is not None and isinstance(output, int) and output in self._references:
            return np.asarray(self._references[output]).reshape(len(self._background_np[0]), -1)
        return np.asarray(self._forward(self.model.params, *self.background))

    @_in_precision
    def set_background(self, data) -> None:
        """Replace the background (the same model, converted once; the same row shapes and dtypes): the per-sample
        references of a background function are set so, row by row."""
        given, several = as_input_list(data)
        check_background(given)
        if several != self.multi_input or [g.shape[1:] for g in given] != [g.shape[1:] for g in self._given]:
            raise InputError(
                "the background function returned rows of another form than its first call's: "
                f"{[g.shape[1:] for g in given]} vs {[g.shape[1:] for g in self._given]}"
            )
        background = cast_floats(given, self._model_dtype)
        self._model_inputs_np = background
        background = self.model.to_interim(background)
        self._background_np = background
        self.background = [self.sharding.put_replicated(b) for b in background]
        self._references = self._reference_values()
        self._set_expected_value()
        self._twins = {}  # built from the old background

    def _set_rules(self, rules: str) -> None:
        self.rules = rules
        self._twins: dict = {}  # the model in float64 (float32), built when a row needs it; its rules are these
        rows = tuple((b.shape[1:], np.dtype(b.dtype)) for b in self._background_np)
        deeplift_key = (rules, rows, bool(jax.config.jax_enable_x64))
        deeplift = self.model.programs.get(deeplift_key)
        if deeplift is None:
            deeplift = self.model.programs[deeplift_key] = DeepLift(
                self.model.fn,
                self.model.params,
                [b[0] for b in self._background_np],
                module_scopes(rules, self.model.converted),
                reveal_cancel=rules == REVEALCANCEL,
            )
        self._deeplift = deeplift
        if self._vmap is None:
            self._vmap = vmap_outputs(self.sharding.devices[0].platform, deeplift)
        results = self.sharding.pinned_host_rows()
        key = (deeplift_key, self._vmap, None if results is None else tuple(self.sharding.devices))
        programs = self.model.programs.get(key)
        if programs is None:
            programs = self.model.programs[key] = _Programs(deeplift, self.model.fn, self._vmap, results)
        self._programs = programs
        self._chunk, self._forward, self._reference_jit = programs.chunk, programs.forward, programs.references
        self._pair_bytes = self._bytes_per_pair()
        self._references = self._reference_values()

    def _reference_values(self) -> dict[int, jax.Array] | None:
        """The reference half of every input-dependent value, for every background row, computed once here
        rather than in each chunk: with one explained row per chunk (a large model under the memory budget) the
        background's forward pass would otherwise be repeated for every row. None where it would take more than
        a quarter of ``max_memory``; each chunk then computes it."""
        if self._pair_bytes * len(self._background_np[0]) > self.max_memory // 4:
            return None
        values = self._reference_jit(self.model.params, tuple(self.background))
        return self.sharding.put_replicated(values)

    @_in_precision
    def with_rules(self, rules: str) -> DeepExplainer:
        """The same model and background (converted once) explained with another rule set."""
        other = copy.copy(self)
        other._set_rules(rules)
        return other

    # -- the computation: _explain_chunk (module level), compiled per rule set in _Programs --------------------
    def _bytes_per_pair(self) -> int:
        """Bytes of the values that depend on the explained inputs, for one (row, background row) pair: the
        weights and other constants are shared by every pair and not counted."""
        program = self._deeplift.program
        return sum(
            math.prod(program.avals[v].shape) * program.avals[v].dtype.itemsize
            for v in self._deeplift.analysis.varying
            if v in program.avals
        )

    def chunk_rows(self) -> int:
        """Explained rows per compiled chunk: ``batch_size``, or as many as ``max_memory`` holds.

        From an estimate (``_values_per_pair``), and once a chunk is compiled, no more than XLA's own count of it
        allows. Never more than the estimate: with vmapped chunks grown to XLA's count, DenseNet-121's first call
        took 213 s against 88 s (W5, one quiet run each), and MobileNetV3's steady time was no shorter (one chunk
        of 4 rows: 1.67 s, four of 1 row: 1.64 s)."""
        if self.batch_size is not None:
            return self.sharding.round_up(max(1, int(self.batch_size)))
        limit = self._rows_within(self._pair_bytes * len(self._background_np[0]) * self._values_per_pair())
        measured = self._programs.bytes_per_row
        if measured is not None:
            limit = min(limit, self._rows_within(measured / CHUNK_SHARE))
        return limit * self.sharding.count  # the memory budget holds on each device

    def _rows_within(self, per_row: float) -> int:
        """The rows per device that ``max_memory`` holds at ``per_row`` bytes each: a power of two (the padded
        tail compiles no new shape), 1 to 1024."""
        rows = int(max(1, min(1024, self.max_memory // max(1.0, per_row))))
        return 1 << (rows.bit_length() - 1)

    def _values_per_pair(self) -> int:
        """The estimate before any chunk is compiled: how many copies of a pair's input-dependent values a chunk
        holds at once. Vmapped, every output's pullback can be live at once; unrolled, XLA runs them one after
        another, reusing one cotangent buffer (XLA's buffer assignment gave 17 copies vmapped and 3.1 unrolled
        on ResNet-18, 0.2 vmapped on MobileNetV3). An estimate: ``_chunk_size`` holds the chunk to XLA's count."""
        return 3 * self.n_outputs if self._vmap else 4

    def _chunk_size(self, arrays: list[np.ndarray], pair_totals: bool) -> int:
        """Rows per chunk for this call, held to ``max_memory`` by what XLA allocates for the compiled chunk.

        The first chunk is compiled at the size ``chunk_rows`` plans before any is compiled; where its buffer
        assignment passes the budget, the chunk is made smaller before anything runs. Later calls and explainers
        of the same programs size from that count at once."""
        size = self.chunk_rows()
        if self.batch_size is not None or self._programs.bytes_per_row is not None:
            return size
        n = arrays[0].shape[0]
        rows = self._padded_rows(n, size, min(n, size))
        self._compiled_chunk([a[:1].repeat(rows, axis=0) for a in arrays], pair_totals)
        return min(size, self.chunk_rows())

    def _padded_rows(self, n: int, size: int, rows: int) -> int:
        """One compiled shape for every chunk of a long run (the tail padded to the full chunk); a short run pads
        to a power of two: a few shapes over all N, never one per N."""
        return size if n > size else min(size, self.sharding.round_up(1 << (rows - 1).bit_length()))

    def _compiled_chunk(self, chunk: list[np.ndarray], pair_totals: bool):
        """The compiled chunk for these rows (model inputs, already padded) and its arguments."""
        args = (
            self._params,
            self.sharding.put_rows(self.model.to_interim(chunk)),
            tuple(self.background),
            self._references,
        )
        return self._programs.compiled_chunk(args, pair_totals), args

    def model_inputs(self, X) -> list[np.ndarray]:
        """The rows of ``X`` checked against the background (inputs, row shapes, dtypes, finite values) and cast to
        the model's float type, as the background was."""
        arrays, several = as_input_list(X)
        if several != self.multi_input:
            raise InputError(
                f"the explainer was built with {'several inputs' if self.multi_input else 'one input'}; pass X the same way"
            )
        check_inputs(arrays, self._given)
        return cast_floats(arrays, self._model_dtype)

    @_in_precision
    def explain(self, X, *, check_additivity: bool = True, pair_totals: bool = False, rows: str = "all") -> Attribution:
        """DeepSHAP values of the rows of ``X`` with their outputs and completeness gaps; with ``pair_totals``,
        also sum(phi) for every (row, background row) pair (``Attribution.pair_totals``).

        Never returns what it cannot stand behind: a non-finite output or attribution raises ``NonFiniteError``
        naming the op and row; rows that miss the tolerance in float32 (or lower) are recomputed in float64 and
        marked in ``Attribution.recomputed``; with ``check_additivity`` rows that miss it in float64 raise
        ``XShapIncompleteError`` (a bug in xshap).

        Under ``jax.distributed`` (several processes), every process calls this at the same point.
        ``rows="all"``: every process passes the same ``X``; each explains a share of its rows (in proportion
        to its devices) and every process gets all of them. ``rows="local"``: each process passes its own rows
        and gets their attributions back. Either way an error in one process is raised in every process."""
        if rows not in ("all", "local"):
            raise InputError(f"rows must be 'all' or 'local', got {rows!r}")
        if self.processes.several:
            return self._explain_across_processes(X, check_additivity, pair_totals, rows)
        return self._explain_here(X, check_additivity, pair_totals)

    def _explain_here(self, X, check_additivity: bool, pair_totals: bool) -> Attribution:
        """``explain`` within this process, on its devices."""
        arrays = self.model_inputs(X)
        self.model.check_unchanged()
        attribution = self._explain_rows(arrays, pair_totals)
        outputs_finite = np.all(np.isfinite(attribution.outputs), axis=1)
        if not outputs_finite.all():
            row = int(np.argwhere(~outputs_finite)[0][0])
            raise NonFiniteError(
                f"f(X row {row}) = {attribution.outputs[row].tolist()} is not finite: "
                + self._locate_nonfinite_forward(arrays, row)
            )
        bad = _bad_rows(attribution)
        if bad.any():
            self._settle(attribution, arrays, bad, check_additivity, pair_totals)
        return attribution

    def _explain_across_processes(self, X, check_additivity: bool, pair_totals: bool, rows: str) -> Attribution:
        """``explain`` under JAX's multi-controller runtime: this process's share, the errors agreed on by every
        process, and for ``rows="all"`` every process's share gathered in row order."""
        error, local, context = None, None, f"process {self.processes.index}: "
        try:
            arrays, _ = as_input_list(X)
            if rows == "all":
                self.processes.check_same("X (rows='all')", arrays)
                begin, end = split_rows(arrays[0].shape[0], self._device_shares)[self.processes.index]
                context = f"process {self.processes.index} (rows {begin}..{end - 1} of X): "
                arrays = [a[begin:end] for a in arrays]
            if arrays and arrays[0].ndim > 0 and arrays[0].shape[0] == 0:  # fewer rows than processes
                local = self._no_rows(pair_totals)
            else:
                local = self._explain_here(arrays if self.multi_input else arrays[0], check_additivity, pair_totals)
        except Exception as failure:  # noqa: BLE001 - shared with the other processes, then raised
            error = failure
        self.processes.agree(error, context)
        if rows == "local":
            return local
        return _gather_attribution(self.processes, local)

    @_in_precision  # also when a twin's rows are computed from another explainer's call
    def _explain_rows(self, arrays: list[np.ndarray], pair_totals: bool) -> Attribution:
        """The compiled chunks over every row; results written into arrays allocated once, so that the memory
        beyond the result itself is one chunk's, whatever N (nothing is kept per chunk)."""
        n = arrays[0].shape[0]
        size = self._chunk_size(arrays, pair_totals)
        results: list[np.ndarray] | None = None
        tree = None
        gaps, tolerance = np.empty((n, self.n_outputs)), np.empty((n, self.n_outputs))
        finite = np.empty(n, dtype=bool)  # every attribution of the row finite
        for start in _progress(range(0, n, size), self.progress, desc="xshap"):
            chunk = [a[start : start + size] for a in arrays]
            rows = chunk[0].shape[0]
            padded = self._padded_rows(n, size, rows)
            if padded > rows:
                chunk = [np.concatenate([c, np.repeat(c[:1], padded - rows, axis=0)]) for c in chunk]
            compiled, args = self._compiled_chunk(chunk, pair_totals)
            result = compiled(*args)
            leaves, tree = jax.tree_util.tree_flatten(result)
            for leaf in leaves:  # every copy started before the first wait (on an accelerator a wait costs most)
                leaf.copy_to_host_async()
            if results is None:
                mass_leaf = len(chunk) + 1  # sum(|phi|): used per chunk for the tolerance, never kept for all N
                results = [
                    None if k == mass_leaf else np.empty((n, *leaf.shape[1:]), dtype=leaf.dtype)
                    for k, leaf in enumerate(leaves)
                ]
            for whole, leaf in zip(results, leaves):
                if whole is not None:
                    whole[start : start + rows] = np.asarray(leaf)[:rows]
            # gaps, tolerances and the finite check per chunk: over all N at once their temporaries grow with N
            part = slice(start, start + rows)
            chunk_values = [v[part].reshape(rows, self.n_outputs, -1) for v in results[: len(chunk)]]
            chunk_outputs, chunk_mass = results[len(chunk)][part], np.asarray(leaves[mass_leaf])[:rows]
            total = sum(v.sum(axis=2, dtype=np.float64) for v in chunk_values)
            gaps[part] = total - (chunk_outputs.astype(np.float64) - self.expected_value)
            tolerance[part] = completeness_tolerance(
                self._deeplift.compute_dtype, chunk_outputs, self.expected_value, mass=chunk_mass
            )
            finite[part] = np.logical_and.reduce([np.isfinite(v).all(axis=(1, 2)) for v in chunk_values])
            del result, leaves, chunk_values
        if pair_totals:
            values, outputs, _, totals = jax.tree_util.tree_unflatten(tree, results)
        else:
            (values, outputs, _), totals = jax.tree_util.tree_unflatten(tree, results), None
        attribution = Attribution(list(values), outputs, self.expected_value, gaps, tolerance, finite=finite)
        attribution.recomputed = np.zeros(n, dtype=bool)
        if pair_totals:
            attribution.pair_totals = totals
            attribution.background_outputs = self._background_outputs
        return attribution

    @_in_precision
    def explain_to(
        self,
        store,
        rows,
        *,
        resume: bool = False,
        n: int | None = None,
        block_rows: int | None = None,
        check_additivity: bool = True,
        progress: bool | None = None,
    ):
        """Explain rows that need not fit in memory into an on-disk store, a block at a time, resumably.

        ``rows``: an array or memmap (or a list of them for several inputs), a ``.npy`` path, a folder of ``.npy``
        shards, or an iterable of batches (a ``DataLoader``; ``n`` rows, or ``len(loader.dataset)``). ``store``: a
        folder (see ``xshap.explain.streaming``); with ``resume`` its finished blocks are kept. Memory stays one
        chunk's (``max_memory``), whatever N. Under ``jax.distributed`` each process writes its own blocks of
        the same store. Returns a ``StoredAttribution`` (memory-mapped results and a completeness summary)."""
        from xshap.explain.streaming import explain_to

        return explain_to(
            self,
            store,
            rows,
            resume=resume,
            n=n,
            block_rows=block_rows,
            check_additivity=check_additivity,
            progress=self.progress if progress is None else progress,
        )

    def _no_rows(self, pair_totals: bool) -> Attribution:
        """The attribution of no rows: a process's share when there are fewer rows than processes."""
        empty = np.zeros((0, self.n_outputs))
        attribution = Attribution(
            [np.zeros((0, self.n_outputs, *b.shape[1:]), dtype=b.dtype) for b in self._background_np],
            empty,
            self.expected_value,
            empty,
            empty,
            recomputed=np.zeros(0, dtype=bool),
            finite=np.zeros(0, dtype=bool),
        )
        if pair_totals:
            attribution.pair_totals = np.zeros((0, len(self._background_np[0]), self.n_outputs))
            attribution.background_outputs = self._background_outputs
        return attribution

    # -- rows that cannot be trusted as computed ----------------------------------------------------------
    def _settle(self, attribution: Attribution, arrays, bad, check_additivity: bool, pair_totals: bool) -> None:
        """Rows that miss the tolerance or whose attributions are not finite.

        Computed in float32 (or lower), they are recomputed by the float64 twin of the model, and their values,
        gaps and tolerances replaced. In float64, a row that still misses float64's tolerance is told apart from a
        bug by how its gap scales with the precision: rounding is first order in eps, so an ill-conditioned row's
        gap shrinks from float32 to float64 by eps64 / eps32 (~1e-9); a wrong rule's does not shrink at all. Its
        tolerance is widened to 16 * eps64 / eps32 * |float32 gap|, and what misses even that raises."""
        rows = np.flatnonzero(bad)
        if tolerance_precision(self._deeplift.compute_dtype) != FLOAT64:
            low_gaps = attribution.gaps[rows]
            owner = self._twin(FLOAT64)
            owner_arrays = [_cast(a[rows], FLOAT64) for a in arrays]
            high = owner._explain_rows(owner_arrays, pair_totals)
        else:
            owner, owner_arrays = self, [a[rows] for a in arrays]
            high = _subset(attribution, rows)
            low_gaps = self._float32_gaps(owner_arrays)
        scaled = ROUNDING_FACTOR * _EPS_RATIO * np.abs(low_gaps)
        ill = incomplete(high.gaps, high.tolerance) & np.isfinite(scaled) & ~incomplete(high.gaps, scaled)
        if ill.any():
            high.tolerance = np.where(ill, np.maximum(high.tolerance, scaled), high.tolerance)
            attribution.notes.append(
                f"{int(ill.any(axis=1).sum())} row(s) are ill-conditioned: their float64 gap (max "
                f"{float(np.max(np.abs(high.gaps[ill]))):.2e}) exceeds float64's rounding at the output's level but "
                f"shrinks with the precision (float32 gap {float(np.max(np.abs(low_gaps[ill]))):.2e}), as rounding "
                "does and a wrong rule does not"
            )
        owner._raise_for_rows(high, owner_arrays, check_additivity, row_ids=rows)
        if owner is self:
            attribution.tolerance[rows] = high.tolerance
            return
        for mine, theirs in zip(attribution.values, high.values):
            mine[rows] = theirs.astype(mine.dtype)
        # the values are returned in the model's type: their gaps are those of the values as returned, and the
        # rounding of storing them is allowed for (16 eps of that type per unit of attribution mass)
        stored = [v[rows].reshape(len(rows), self.n_outputs, -1).astype(np.float64) for v in attribution.values]
        change = high.outputs.astype(np.float64) - high.expected_value
        attribution.gaps[rows] = sum(v.sum(axis=2) for v in stored) - change
        eps = float(jnp.finfo(attribution.values[0].dtype).eps)
        attribution.tolerance[rows] = high.tolerance + ROUNDING_FACTOR * eps * sum(
            np.abs(v).sum(axis=2) for v in stored
        )
        attribution.finite[rows] = _finite_rows(high)
        if pair_totals:
            attribution.pair_totals[rows] = high.pair_totals
        attribution.recomputed[rows] = True
        attribution.notes.append(
            f"{len(rows)} row(s) ({_row_list(rows)}) missed float32's completeness tolerance in "
            f"{np.dtype(self._deeplift.compute_dtype).name} (ill-conditioned: large cancellations, values near a "
            "division by 0 or far above their changes) and were recomputed in float64; their gaps are against the "
            "float64 forward"
        )

    def _twin(self, dtype) -> DeepExplainer:
        """The same model and background in ``dtype`` (float64 or float32), built once per explainer and rule set."""
        dtype = np.dtype(dtype)
        if dtype not in self._twins:
            background = [_cast(b, dtype) for b in self._model_inputs_np]
            # on this process's devices alone: under jax.distributed only the processes with such rows build it
            options = {**self._options, "progress": False, "devices": self.sharding.devices}
            data = background if self.multi_input else background[0]
            twin = DeepExplainer(
                self.model.twin(dtype), data, rules=self.rules, _group=ProcessGroup(solo=True), **options
            )
            if dtype == FLOAT64 and tolerance_precision(twin._deeplift.compute_dtype) != FLOAT64:
                raise PrecisionError(
                    "some rows miss float32's completeness tolerance and cannot be recomputed in float64: in float64 "
                    f"the model still computes in {np.dtype(twin._deeplift.compute_dtype).name} somewhere (an "
                    "explicit cast or a float32 constant in its function); those rows' attributions cannot be verified"
                )
            self._twins[dtype] = twin
        return self._twins[dtype]

    def _float32_gaps(self, arrays: list[np.ndarray]) -> np.ndarray:
        """The completeness gaps of the float32 twin on these rows (NaN where it cannot be built or run): how a
        float64 model's gaps scale with the precision."""
        try:
            twin = self._twin(np.float32)
            return twin._explain_rows([_cast(a, np.float32) for a in arrays], False).gaps
        except Exception:  # noqa: BLE001 - without a float32 twin no gap is excused as rounding
            return np.full((arrays[0].shape[0], self.n_outputs), np.nan)

    @_in_precision
    def _raise_for_rows(
        self, attribution: Attribution, arrays, check_additivity: bool, row_ids: np.ndarray | None = None
    ) -> None:
        """Non-finite attributions always raise; incomplete rows raise with ``check_additivity``. ``row_ids``: the
        rows' numbers in X when ``attribution`` holds a subset of them."""
        ids = np.arange(attribution.outputs.shape[0]) if row_ids is None else np.asarray(row_ids)
        finite = _finite_rows(attribution)
        if not finite.all():
            row = int(np.flatnonzero(~finite)[0])
            raise NonFiniteError(
                f"the attributions of X row {ids[row]} are not finite although f(x) and E f are: "
                + self._locate_nonfinite_multiplier(arrays, row)
            )
        if check_additivity:
            _raise_if_incomplete(attribution, lambda row: self._locate(arrays, row), row_ids=ids)

    def _locate(self, arrays: list[np.ndarray], row: int) -> str:
        """Name the op whose rule broke completeness for one row (see xshap.engine.diagnose)."""
        from xshap.engine.diagnose import local_gaps

        try:
            x_rows = self.model.to_interim([a[row : row + 1] for a in arrays])
            gaps = local_gaps(self._deeplift, self.model.params, [x[0] for x in x_rows], self._background_np)
        except Exception as error:  # the diagnosis must never hide the original error
            return f"(the culprit could not be located: {type(error).__name__}: {error})"
        if not gaps:
            return (
                "(every op's rule is locally complete when this row is rechecked op by op, so the compiled chunk "
                f"departs from its own rules: lost precision, or a miscompile by XLA (jax {jax.__version__} on "
                f"{self.sharding.devices[0].platform}))"
            )
        first = gaps[0]
        where = self._describe_scope(first.scope)
        return (
            f"first locally incomplete op: {first.primitive} in {where} (|tangent - Delta| {first.gap:.3e} "
            f"on values of size {first.scale:.3e}); {len(gaps)} value(s) affected downstream"
        )

    def _locate_nonfinite_forward(self, model_rows: list[np.ndarray], row: int) -> str:
        """The first op of the model whose value is not finite for one row of the model's inputs."""
        try:
            converted = self.model.converted
            rows = [jnp.asarray(a[row : row + 1]) for a in model_rows]
            if converted is not None:
                record: dict = {}
                converted.graph(self.model.params, *rows, record=record)
                for step in converted.graph.steps:
                    value = record.get(step.name)
                    if _nonfinite(value):
                        return f"the first non-finite value is {step.provenance.op} in {step.provenance.describe()}"
                return "no op of the converted graph makes it (an input is not finite?)"
            from xshap.engine.diagnose import first_nonfinite_value

            interim = self.model.to_interim([np.asarray(r) for r in rows])
            flat = [*jax.tree_util.tree_leaves(self.model.params), *(jnp.asarray(x[0]) for x in interim)]
            found = first_nonfinite_value(self._deeplift.program, flat)
            if found is None:
                return "no op of the function makes it"
            return f"the first non-finite value is {found.primitive} in {self._describe_scope(found.scope)}"
        except Exception as error:  # the diagnosis must never hide the original error
            return f"(the op could not be located: {type(error).__name__}: {error})"

    def _locate_nonfinite_multiplier(self, arrays: list[np.ndarray], row: int) -> str:
        from xshap.engine.diagnose import first_nonfinite_multiplier

        try:
            x_rows = self.model.to_interim([a[row : row + 1] for a in arrays])
            found = first_nonfinite_multiplier(
                self._deeplift, self.model.params, [x[0] for x in x_rows], self._background_np
            )
        except Exception as error:  # the diagnosis must never hide the original error
            return f"(the op could not be located: {type(error).__name__}: {error})"
        if found is None:
            return "no single rule's multiplier is non-finite: the sum over the background overflows"
        return f"the DeepLIFT multiplier first overflows at {found.primitive} in {self._describe_scope(found.scope)}"

    def _describe_scope(self, scope: str) -> str:
        converted = self.model.converted
        if converted is None:
            return f"scope {scope or '<top level>'!r}"
        for prov in converted.ops:
            if prov.scope and (
                scope == prov.scope or scope.endswith("/" + prov.scope) or scope.startswith(prov.scope + "/")
            ):
                return f"module {prov.describe()}"
        return f"scope {scope or '<top level>'!r}"

    def shap_values(
        self,
        X,
        ranked_outputs: int | None = None,
        output_rank_order: str = "max",
        check_additivity: bool = True,
        rows: str = "all",
    ):
        """shap.DeepExplainer.shap_values: (N, *row_shape, n_outputs) per input (a list for several).

        ``ranked_outputs=k``: for each row, only its k top outputs by ``output_rank_order`` ("max", "min" or
        "max_abs" of f(x)); returns ``(values, indexes)`` with values (N, *row_shape, k) and indexes (N, k),
        the output explained in each slot, as shap 0.51 does (a torch tensor for torch models, like shap's).
        ``rows``: under ``jax.distributed``, ``"all"`` or ``"local"`` (see ``explain``).
        """
        if output_rank_order not in RANK_ORDERS:
            raise ValueError("output_rank_order must be max, min, or max_abs!")
        attribution = self.explain(X, check_additivity=check_additivity, rows=rows)
        values = attribution.shap_layout(self._several)
        if ranked_outputs is None:
            return values
        ranks = rank_outputs(attribution.outputs, int(ranked_outputs), output_rank_order)
        rows = np.arange(ranks.shape[0])[:, None]
        chosen = [
            np.moveaxis(np.moveaxis(v, -1, 1)[rows, ranks], 1, -1) for v in (values if self._several else [values])
        ]
        indexes = ranks
        if self.model.torch_model is not None:
            import torch

            indexes = torch.from_numpy(ranks.astype(np.int64 if self.n_outputs > 1 else np.int32))
        return (chosen if self._several else chosen[0]), indexes

    @_in_precision
    def summary(self):
        """The layer-by-layer view (torch models): module calls, their ops and the rules they get."""
        if self.model.converted is None:
            raise InputError("summary() describes a converted torch model; a JAX function has no modules")
        from xshap.explain.summary import summarize

        name = self.model.converted.capture.root_type.rsplit(".", 1)[-1]
        return summarize(self.model.converted, self._deeplift, self.rules, name)

    @_in_precision
    def explanation(self, X, *, feature_names=None, output_names=None, check_additivity: bool = True):
        """The DeepSHAP values of ``X`` as a ``shap.Explanation`` with base values and data (shap's plots take it)."""
        from xshap.explain.interop import to_explanation

        attribution = self.explain(X, check_additivity=check_additivity)
        arrays = self.model.to_interim(self.model_inputs(X))
        return to_explanation(
            attribution.values,
            attribution.expected_value,
            arrays,
            feature_names=feature_names,
            output_names=output_names,
        )

    def __call__(self, X):
        """shap's ``explainer(X)``: a ``shap.Explanation`` (with base values, which shap's own omits)."""
        return self.explanation(X)


def _explain_chunk(
    deeplift: DeepLift,
    fn: Callable,
    vmapped: bool,
    params,
    xs: tuple,
    background: tuple,
    references: dict | None,
    pair_totals: bool = False,
) -> tuple:
    """phi for a chunk of rows, mean over the background of (x - r) * m(x, r) per output, f(x), and sum(|phi|)
    per (row, output) for the tolerance of the completeness check (which sums phi itself on the host);
    with ``pair_totals``, also sum(phi) of every (row, background row) pair, (rows, B, n_outputs).

    f(x) comes from the same compiled call: one dispatch per chunk, which is most of the cost of a short run.
    ``vmapped``: one pullback vmapped over the outputs' one-hot cotangents, else one pullback per output
    (``vmap_outputs`` chooses). A function of its arguments only (no explainer in it): explainers of one
    cached conversion share its compiled form.
    """

    def per_pair(x_rows, r_rows, r_values):
        out, pullback = jax.vjp(lambda rows: deeplift.paired(params, rows, r_rows, references=r_values), tuple(x_rows))
        one_hot = jnp.eye(out.shape[0], dtype=out.dtype)
        if vmapped:
            multipliers = list(jax.vmap(pullback)(one_hot)[0])
        else:
            per_output = [pullback(one_hot[o])[0] for o in range(out.shape[0])]
            multipliers = [jnp.stack([grads[i] for grads in per_output]) for i in range(len(x_rows))]
        return tuple((x - r)[None] * m for x, r, m in zip(x_rows, r_rows, multipliers))

    def per_row(x_rows):
        contributions = jax.vmap(per_pair, in_axes=(None, 0, 0))(x_rows, background, references)
        means = tuple(c.mean(axis=0) for c in contributions)
        if not pair_totals:
            return means
        totals = sum(c.reshape(c.shape[:2] + (-1,)).sum(axis=2) for c in contributions)
        return means, totals

    outputs = jax.vmap(fn, in_axes=(None,) + (0,) * len(xs))(params, *xs)
    if not pair_totals:
        means = jax.vmap(per_row)(xs)
        return means, outputs, _mass(means)
    means, totals = jax.vmap(per_row)(xs)
    return means, outputs, _mass(means), totals


class _Programs:
    """The compiled functions of one rule set on one converted model: the chunk, the forward pass over rows and
    the reference values over the background. Kept in ``ExplainedModel.programs``, so a second explainer of a
    cached conversion (``xshap.explain.model.CONVERSIONS``) reuses their compiled forms; they take every array
    (weights, rows, references) as an argument and hold none."""

    def __init__(self, deeplift: DeepLift, fn: Callable, vmapped: bool, results=None):
        placement = {} if results is None else {"out_shardings": results}
        self.chunk = jit(
            functools.partial(_explain_chunk, deeplift, fn, vmapped), static_argnames=("pair_totals",), **placement
        )
        n_inputs = len(deeplift.program.inputs) - deeplift._n_params
        self.forward = jit(jax.vmap(fn, in_axes=(None,) + (0,) * n_inputs))
        self.references = jit(jax.vmap(deeplift.reference_values, in_axes=(None, 0)))
        self._compiled: dict = {}  # the chunk compiled ahead of time, by its arguments' signature
        # bytes a chunk takes on a device per row explained there, beyond its arguments: XLA's buffer assignment
        # (``memory_analysis``) of the compiled chunk with the most rows so far, times RUNTIME_MEMORY; None until
        # one is compiled
        self.bytes_per_row: float | None = None
        self._measured_rows = 0

    def compiled_chunk(self, args: tuple, pair_totals: bool):
        """The chunk compiled for these arguments' shapes, types and placements, compiled once. Compiled ahead
        of time (``lower().compile()``) rather than on the first call, so that what it will allocate is known
        before it runs: the explainer sizes its chunks by it."""
        leaves, tree = jax.tree_util.tree_flatten(args)
        key = (pair_totals, tree, tuple((a.shape, a.dtype, getattr(a, "sharding", None)) for a in leaves))
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self.chunk.lower(*args, pair_totals=pair_totals).compile()
            used = assigned_bytes(compiled)  # per device, for rows spread over several
            rows_given = args[1][0]
            rows = max(1, rows_given.shape[0] // len(getattr(rows_given.sharding, "device_set", (None,))))
            if used is not None and rows > self._measured_rows:  # the most rows: the least fixed cost per row
                self.bytes_per_row, self._measured_rows = RUNTIME_MEMORY * used / rows, rows
            self._compiled[key] = compiled
        return compiled


def assigned_bytes(compiled) -> int | None:
    """What XLA's buffer assignment gives a compiled program on each device beyond its arguments (temporaries and
    results), or None where the backend does not say."""
    analysis = compiled.memory_analysis()
    return None if analysis is None else analysis.temp_size_in_bytes + analysis.output_size_in_bytes


# The resident memory a chunk adds per byte of XLA's buffer assignment: the CPU runtime's scratch (the dot and
# convolution libraries' packing) and the allocator's rounding are not in it. ResNet-18's chunk: 1.15-1.26 bytes
# resident per byte assigned. A quarter of the budget is kept besides for what does not grow with the rows
# (CHUNK_SHARE).
RUNTIME_MEMORY = 1.3
CHUNK_SHARE = 0.75


def vmap_outputs(platform: str, deeplift: DeepLift) -> bool:
    """One pullback vmapped over the outputs (True) or one per output, unrolled (False).

    On an accelerator the vmapped form launches one kernel where the loop launches one per output. On XLA:CPU
    the unrolled loop ran 2-3x faster than the vmap on the issue-4 CNN, and ResNet-18 at 3x64x64 ran 2.11 s against
    3.90 s steady, but it makes a program of one pullback per output, and XLA:CPU's compile time grows with the number
    of fused kernels it emits: MobileNetV3-small's 10-output chunk took 400 s to compile unrolled. Large programs
    are vmapped on the CPU too (``CPU_VMAP_EQUATIONS``), and so are models that do little work per row
    (``CPU_VMAP_ROW_FLOPS``), where the compile is all the cost: a tiny ConvNeXt's 3-output chunk compiled in
    14.4 s vmapped and 27.6 s unrolled (``benchmarks/compile_levels.py``)."""
    if platform != "cpu":
        return True
    return len(deeplift.program.eqns) >= CPU_VMAP_EQUATIONS or row_flops(deeplift.program) < CPU_VMAP_ROW_FLOPS


CPU_VMAP_EQUATIONS = 1000  # equations of the model's program from which a CPU chunk vmaps its output pullbacks
CPU_VMAP_ROW_FLOPS = 2e7  # a model's forward operations per row below which a CPU chunk vmaps them


def row_flops(program) -> float:
    """An estimate of the floating-point operations of one row's forward pass, read from the program's shapes:
    2 per multiply-add of each matrix product and convolution, 1 per element of every other result (ResNet-18 at
    3x64x64 with ten classes: 3.1e8 a row; MobileNetV3-small there: 1.4e7; the seed MLPs: 4.9e3)."""
    total = 0.0
    for eqn in program.eqns:
        out = sum(math.prod(program.avals[o].shape) for o in eqn.outputs if o in program.avals)
        weight = _input_aval(program, eqn, 1)
        if eqn.name == "dot_general" and weight is not None:
            lhs = _input_aval(program, eqn, 0)
            (contracting, _), _ = eqn.params["dimension_numbers"]
            total += 2.0 * out * math.prod(lhs.shape[d] for d in contracting) if lhs is not None else out
        elif eqn.name == "conv_general_dilated" and weight is not None:
            output_feature = eqn.params["dimension_numbers"].rhs_spec[0]
            total += 2.0 * out * math.prod(weight.shape) / max(1, weight.shape[output_feature])
        else:
            total += out
    return total


def _input_aval(program, eqn, position: int):
    """The abstract value of an equation's operand (a value of the program's or a constant), or None."""
    if len(eqn.inputs) <= position:
        return None
    atom = eqn.inputs[position]
    if isinstance(atom, int):
        return program.avals.get(atom)
    value = getattr(atom, "value", None)
    return value if hasattr(value, "shape") else None


_EPS_RATIO = float(np.finfo(np.float64).eps / np.finfo(np.float32).eps)  # how much less float64 rounds


def _cast(array: np.ndarray, dtype) -> np.ndarray:
    return array.astype(dtype) if is_float(array.dtype) and array.dtype != dtype else array


def _subset(attribution: Attribution, rows: np.ndarray) -> Attribution:
    """The rows ``rows`` of an attribution (copies: what is widened there is written back by the caller)."""
    return Attribution(
        [v[rows] for v in attribution.values],
        attribution.outputs[rows],
        attribution.expected_value,
        attribution.gaps[rows],
        attribution.tolerance[rows].copy(),
        finite=None if attribution.finite is None else attribution.finite[rows],
    )


def _gather_attribution(processes: ProcessGroup, local: Attribution) -> Attribution:
    """Every process's rows of an attribution, in process (and so row) order, in every process."""

    def gather(array):
        if array is None:
            return None
        parts = processes.gather_arrays(array)
        rows = [part for part in parts if part.shape[0]]  # a process with no rows has no say in the dtype
        return np.concatenate(rows or parts)

    notes = processes.gather_bytes("\n".join(local.notes).encode())
    whole = Attribution(
        [gather(v) for v in local.values],
        gather(local.outputs),
        local.expected_value,
        gather(local.gaps),
        gather(local.tolerance),
        pair_totals=gather(local.pair_totals),
        background_outputs=local.background_outputs,
        recomputed=gather(local.recomputed),
        finite=gather(local.finite),
    )
    whole.notes = [f"process {p}: {line}" for p, text in enumerate(notes) for line in text.decode().splitlines()]
    return whole


def _bad_rows(attribution: Attribution) -> np.ndarray:
    """Rows with an output that misses the tolerance or an attribution that is not finite."""
    return incomplete(attribution.gaps, attribution.tolerance).any(axis=1) | ~_finite_rows(attribution)


def _finite_rows(attribution: Attribution) -> np.ndarray:
    if attribution.finite is not None:
        return attribution.finite
    n = attribution.outputs.shape[0]
    finite = np.ones(n, dtype=bool)
    for v in attribution.values:
        finite &= np.isfinite(v.reshape(n, -1)).all(axis=1)
    return finite


def _nonfinite(value) -> bool:
    if not hasattr(value, "dtype") or not jnp.issubdtype(value.dtype, jnp.inexact):
        return False
    return not bool(jnp.all(jnp.isfinite(value)))


def _row_list(rows: np.ndarray, limit: int = 8) -> str:
    shown = ", ".join(str(int(r)) for r in rows[:limit])
    return shown + (f", ... {len(rows) - limit} more" if len(rows) > limit else "")


def _refuse_non_float(arrays: list[np.ndarray], interim: bool) -> None:
    """DeepLIFT attributes real-valued changes: integer or boolean inputs (token ids, masks) have none."""
    for i, array in enumerate(arrays):
        if not is_float(array.dtype):
            what = f"the layer's input {i}" if interim else (f"input {i}" if len(arrays) > 1 else "the input")
            raise InputError(
                f"{what} has dtype {array.dtype}: DeepSHAP attributes changes of real values, and integer or boolean "
                "values (token ids, masks) have no difference to scale. For token ids explain the embedding's output: "
                "DeepExplainer((model, layer), background) with layer the module that takes the embeddings; where a "
                "mask (or anything else computed from the inputs) goes beside the layer, use "
                "xshap.LayerExplainer(model, layer, data) (or xshap.TokenExplainer for a Hugging Face model), which "
                "holds it at each row's own value."
            )


RANK_ORDERS = ("max", "min", "max_abs")


def rank_outputs(outputs: np.ndarray, k: int, order: str) -> np.ndarray:
    """The k outputs of each row to explain, as shap ranks them: (N, k) output indexes.

    With one output shap explains it whatever k is (indexes all 0); otherwise a (stable) sort of f(x)
    descending ("max"), ascending ("min") or of |f(x)| descending ("max_abs"), first k.
    """
    n, n_outputs = outputs.shape
    if n_outputs == 1:
        return np.zeros((n, 1), dtype=np.int64)
    if k < 1:
        raise ValueError(f"ranked_outputs must be at least 1, got {k}")
    key = {"max": -outputs, "min": outputs, "max_abs": -np.abs(outputs)}[order]
    return np.argsort(key, axis=1, kind="stable")[:, :k].astype(np.int64)


def _mass(means: tuple) -> jax.Array:
    """sum(|phi|) per (row, output) over every input: the scale of the rounding in the sum of phi."""
    return sum(jnp.abs(m).reshape(m.shape[:2] + (-1,)).sum(axis=2) for m in means)


def _progress(chunks: range, progress: bool | None, desc: str):
    """``chunks`` wrapped in a tqdm bar when asked, or (``None``) on a terminal for two chunks or more."""
    show = progress if progress is not None else (len(chunks) > 1 and sys.stderr.isatty())
    if not show:
        return chunks
    from tqdm.auto import tqdm

    return tqdm(chunks, desc=desc, unit="chunk")


def _raise_if_incomplete(
    attribution: Attribution, locate: Callable[[int], str] | None = None, row_ids: np.ndarray | None = None
) -> None:
    bad = incomplete(attribution.gaps, attribution.tolerance)
    if bad.any():
        row, output = (int(i) for i in np.argwhere(bad)[0])
        culprit = f" {locate(row)}." if locate is not None else ""
        shown = int(row_ids[row]) if row_ids is not None else row
        raise XShapIncompleteError(
            f"xshap's attributions do not add up for {int(bad.sum())} (row, output) pair(s); first: row {shown}, "
            f"output {output}: gap {attribution.gaps[row, output]:.3e} > {attribution.tolerance[row, output]:.1e}."
            f"{culprit} This is a bug in xshap, not a property of the model: please report it with the model."
        )


def explain_function(fn: Callable, background, X, **options) -> np.ndarray:
    """DeepSHAP values of a JAX function in shap's layout (a convenience around DeepExplainer)."""
    return DeepExplainer(fn, background, **options).shap_values(X)
