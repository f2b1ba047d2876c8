"""DeepExplainer: DeepSHAP, the DeepLIFT multipliers averaged over a background, jit-compiled."""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from xshap.engine.rulesets import COMPLETE, REVEALCANCEL, module_scopes
from xshap.engine.transform import DeepLift
from xshap.errors import InputError, XShapIncompleteError
from xshap.explain.compiling import jit
from xshap.explain.data import as_input_list, check_background, check_inputs
from xshap.explain.devices import RowSharding, default_max_memory
from xshap.explain.model import ExplainedModel, wrap_model

ROUNDING_FACTOR = 16  # ulps of rounding allowed per unit of attribution mass (see completeness_tolerance)


def completeness_tolerance(dtype, *scales, mass=0.0) -> np.ndarray:
    """The allowed |sum(phi) - (f(x) - E f)|: 1e-4 (float32) or 1e-9 (float64) relative to
    max(1, |f(x)|, |E f|), plus the rounding of the sum itself, 16 eps * sum(|phi|) (``mass``).

    The second term is negligible when the attributions are of the size of the output. It matters only
    where large attributions cancel (LayerNorm against an all-zero background, whose 1/std is
    1/sqrt(eps)): no float32 computation of such terms can add up closer than their own rounding.
    ``dtype``: the least precise float type the model computes in.
    """
    dtype = np.dtype(dtype)
    rtol = 1e-9 if dtype == np.float64 else 1e-4
    scale = np.ones(np.broadcast_shapes(*(np.shape(s) for s in scales)))
    for s in scales:
        scale = np.maximum(scale, np.abs(s))
    return rtol * scale + ROUNDING_FACTOR * float(np.finfo(dtype).eps) * np.asarray(mass)


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

    def shap_layout(self, several_inputs: bool):
        """shap 0.51's layout: (N, *row_shape, n_outputs) per input; a list for several inputs."""
        arrays = [np.moveaxis(v, 1, -1) for v in self.values]
        return arrays if several_inputs else arrays[0]


class DeepExplainer:
    """DeepSHAP for a torch model (converted with torch.export) or a JAX callable, shap's API.

    ``model``: a ``torch.nn.Module`` or a JAX function of batched inputs (a Flax module included),
    returning (batch,) or (batch, n_outputs). ``data``: the background, an array or tensor with rows on
    the leading axis, or a list/tuple of them for several inputs.
    ``batch_size``: explained rows per compiled chunk; by default chosen to keep intermediates under
    ``max_memory`` bytes per device (default: 1 GiB on a CPU, a quarter of an accelerator's memory).
    ``rules``: ``"complete"`` (default) or ``"shap"``, shap's rule choices where they differ from the
    complete rules (see ``xshap.engine.rulesets``). ``devices``: where the explained rows
    are spread (default: every device JAX sees; results are the same on one or many). ``progress``: a
    tqdm bar over chunks; ``None`` shows it only on an interactive terminal for work of several chunks.
    """

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
    ):
        background, self.multi_input = as_input_list(data)
        check_background(background)
        self._model_inputs_np = background  # the model's own inputs: X is checked against them
        self.model: ExplainedModel = wrap_model(model, background)
        # what is explained: the model's inputs, or for (model, layer) the layer's inputs
        background = self.model.to_interim(background)
        _refuse_non_float(background, interim=self.model.head is not None)
        self._background_np = background
        self._several = len(background) > 1 if self.model.head is not None else self.multi_input
        self.sharding = RowSharding(devices)
        self.background = [self.sharding.put_replicated(jnp.asarray(b)) for b in background]
        self._params = self.sharding.put_replicated(self.model.params)
        self.batch_size = batch_size
        self.max_memory = default_max_memory(self.sharding.devices) if max_memory is None else int(max_memory)
        self._vmap_outputs = self.sharding.devices[0].platform != "cpu"  # see _explain_chunk
        self.progress = progress
        self._set_rules(rules)
        self._forward = jit(jax.vmap(self.model.fn, in_axes=(None,) + (0,) * len(background)))
        background_out = np.asarray(self._forward(self.model.params, *self.background))
        self.n_outputs = background_out.shape[1]
        self._background_outputs = background_out
        self.expected_value = background_out.mean(axis=0)

    def _set_rules(self, rules: str) -> None:
        scopes = module_scopes(rules, self.model.converted)
        self.rules = rules
        self._deeplift = DeepLift(
            self.model.fn,
            self.model.params,
            [b[0] for b in self._background_np],
            scopes,
            reveal_cancel=rules == REVEALCANCEL,
        )
        results = self.sharding.pinned_host_rows()
        placement = {} if results is None else {"out_shardings": results}
        self._chunk = jit(self._explain_chunk, static_argnames=("pair_totals",), **placement)
        self._pair_bytes = self._bytes_per_pair()
        self._references = self._reference_values()

    def _reference_values(self) -> dict[int, jax.Array] | None:
        """The reference half of every input-dependent value, for every background row, computed once here
        rather than in each chunk: with one explained row per chunk (a large model under the memory budget) the
        background's forward pass would otherwise be repeated for every row. None where it would take more than
        a quarter of ``max_memory``; each chunk then computes it."""
        if self._pair_bytes * len(self._background_np[0]) > self.max_memory // 4:
            return None
        values = jit(jax.vmap(self._deeplift.reference_values, in_axes=(None, 0)))(
            self.model.params, tuple(self.background)
        )
        return self.sharding.put_replicated(values)

    def with_rules(self, rules: str) -> DeepExplainer:
        """The same model and background (converted once) explained with another rule set."""
        other = copy.copy(self)
        other._set_rules(rules)
        return other

    # -- the computation --------------------------------------------------------------------------------
    def _explain_chunk(
        self, params, xs: tuple, background: tuple, references: dict | None, pair_totals: bool = False
    ) -> tuple:
        """phi for a chunk of rows, mean over the background of (x - r) * m(x, r) per output, f(x), and sum(|phi|)
        per (row, output) for the tolerance of the completeness check (which sums phi itself on the host);
        with ``pair_totals``, also sum(phi) of every (row, background row) pair, (rows, B, n_outputs).

        f(x) comes from the same compiled call: one dispatch per chunk, which is most of the cost of a short run.
        """

        def per_pair(x_rows, r_rows, r_values):
            # One forward pass, then one pullback per output. On XLA:CPU an unrolled loop of VJPs is 2-3x faster
            # than jax.jacrev's vmap over the one-hot cotangents (measured on the issue-4 CNN workload); on an
            # accelerator the vmapped form launches one kernel where the loop launches one per output.
            out, pullback = jax.vjp(
                lambda rows: self._deeplift.paired(params, rows, r_rows, references=r_values), tuple(x_rows)
            )
            one_hot = jnp.eye(out.shape[0], dtype=out.dtype)
            if self._vmap_outputs:
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

        outputs = jax.vmap(self.model.fn, in_axes=(None,) + (0,) * len(xs))(params, *xs)
        if not pair_totals:
            means = jax.vmap(per_row)(xs)
            return means, outputs, _mass(means)
        means, totals = jax.vmap(per_row)(xs)
        return means, outputs, _mass(means), totals

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
        """Explained rows per compiled chunk."""
        if self.batch_size is not None:
            return self.sharding.round_up(max(1, int(self.batch_size)))
        per_row = max(1, self._pair_bytes * len(self._background_np[0]) * self.n_outputs * 3)
        per_device = int(max(1, min(1024, self.max_memory // per_row)))
        per_device = 1 << (per_device.bit_length() - 1)  # a power of two: the padded tail compiles no new shape
        return per_device * self.sharding.count  # the memory budget holds on each device

    def explain(self, X, *, check_additivity: bool = True, pair_totals: bool = False) -> Attribution:
        """DeepSHAP values of the rows of ``X`` with their outputs and completeness gaps; with ``pair_totals``,
        also sum(phi) for every (row, background row) pair (``Attribution.pair_totals``)."""
        arrays, several = as_input_list(X)
        if several != self.multi_input:
            raise InputError(
                f"the explainer was built with {'several inputs' if self.multi_input else 'one input'}; pass X the same way"
            )
        check_inputs(arrays, self._model_inputs_np)
        self.model.check_unchanged()
        arrays = self.model.to_interim(arrays)
        n = arrays[0].shape[0]
        size = self.chunk_rows()
        pieces: list[list[np.ndarray]] = [[] for _ in arrays]
        output_pieces: list[np.ndarray] = []
        total_pieces: list[np.ndarray] = []
        mass_pieces: list[np.ndarray] = []
        for start in _progress(range(0, n, size), self.progress, desc="xshap"):
            chunk = [a[start : start + size] for a in arrays]
            rows = chunk[0].shape[0]
            # one compiled shape for every chunk of a long run (the tail padded to the full chunk); a short run
            # pads to a power of two: a few shapes over all N, never one per N
            padded = size if n > size else min(size, self.sharding.round_up(1 << (rows - 1).bit_length()))
            if padded > rows:
                chunk = [np.concatenate([c, np.repeat(c[:1], padded - rows, axis=0)]) for c in chunk]
            result = self._chunk(
                self._params,
                self.sharding.put_rows(chunk),
                tuple(self.background),
                self._references,
                pair_totals=pair_totals,
            )
            values, chunk_outputs, chunk_mass, *totals = _to_host(result, rows)
            mass_pieces.append(chunk_mass)
            total_pieces.extend(totals)
            for piece, value in zip(pieces, values):
                piece.append(value)
            output_pieces.append(chunk_outputs)
        values = [np.concatenate(p) for p in pieces]
        outputs = np.concatenate(output_pieces)
        total = sum(v.reshape(n, self.n_outputs, -1).sum(axis=2) for v in values)
        gaps = total - (outputs - self.expected_value)
        mass = np.concatenate(mass_pieces)
        tolerance = completeness_tolerance(self._deeplift.compute_dtype, outputs, self.expected_value, mass=mass)
        attribution = Attribution(values, outputs, self.expected_value, gaps, tolerance)
        if pair_totals:
            attribution.pair_totals = np.concatenate(total_pieces)
            attribution.background_outputs = self._background_outputs
        if check_additivity:
            _raise_if_incomplete(attribution, lambda row: self._locate(arrays, row))
        return attribution

    def _locate(self, arrays: list[np.ndarray], row: int) -> str:
        """Name the op whose rule broke completeness for one row (see xshap.engine.diagnose)."""
        from xshap.engine.diagnose import local_gaps

        try:
            gaps = local_gaps(self._deeplift, self.model.params, [a[row] for a in arrays], self._background_np)
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
        self, X, ranked_outputs: int | None = None, output_rank_order: str = "max", check_additivity: bool = True
    ):
        """shap.DeepExplainer.shap_values: (N, *row_shape, n_outputs) per input (a list for several).

        ``ranked_outputs=k``: for each row, only its k top outputs by ``output_rank_order`` ("max", "min" or
        "max_abs" of f(x)); returns ``(values, indexes)`` with values (N, *row_shape, k) and indexes (N, k),
        the output explained in each slot, as shap 0.51 does (a torch tensor for torch models, like shap's).
        """
        if output_rank_order not in RANK_ORDERS:
            raise ValueError("output_rank_order must be max, min, or max_abs!")
        attribution = self.explain(X, check_additivity=check_additivity)
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

    def summary(self):
        """The layer-by-layer view (torch models): module calls, their ops and the rules they get."""
        if self.model.converted is None:
            raise InputError("summary() describes a converted torch model; a JAX function has no modules")
        from xshap.explain.summary import summarize

        name = self.model.converted.capture.root_type.rsplit(".", 1)[-1]
        return summarize(self.model.converted, self._deeplift, self.rules, name)

    def explanation(self, X, *, feature_names=None, output_names=None, check_additivity: bool = True):
        """The DeepSHAP values of ``X`` as a ``shap.Explanation`` with base values and data (shap's plots take it)."""
        from xshap.explain.interop import to_explanation

        arrays, _ = as_input_list(X)
        attribution = self.explain(X, check_additivity=check_additivity)
        arrays = self.model.to_interim(arrays)
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


def _refuse_non_float(arrays: list[np.ndarray], interim: bool) -> None:
    """DeepLIFT attributes real-valued changes: integer or boolean inputs (token ids, masks) have none."""
    for i, array in enumerate(arrays):
        if array.dtype.kind not in "fc":
            what = f"the layer's input {i}" if interim else (f"input {i}" if len(arrays) > 1 else "the input")
            raise InputError(
                f"{what} has dtype {array.dtype}: DeepSHAP attributes changes of real values, and integer or boolean "
                "values (token ids, masks) have no difference to scale. For token ids explain the embedding's output: "
                "DeepExplainer((model, layer), background) with layer the module that takes the embeddings; for a "
                "mask, make it a buffer or bind it into the model."
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


def _to_host(result, rows: int) -> list:
    """A chunk's results as numpy arrays, without the padding rows. Every array's copy to the host is started
    before the first is waited for: one wait for all of them (on an accelerator, a wait costs more than a copy)."""
    leaves, tree = jax.tree_util.tree_flatten(result)
    for leaf in leaves:
        leaf.copy_to_host_async()
    return jax.tree_util.tree_unflatten(tree, [np.asarray(leaf)[:rows] for leaf in leaves])


def _progress(chunks: range, progress: bool | None, desc: str):
    """``chunks`` wrapped in a tqdm bar when asked, or (``None``) on a terminal for two chunks or more."""
    show = progress if progress is not None else (len(chunks) > 1 and sys.stderr.isatty())
    if not show:
        return chunks
    from tqdm.auto import tqdm

    return tqdm(chunks, desc=desc, unit="chunk")


def _raise_if_incomplete(attribution: Attribution, locate: Callable[[int], str] | None = None) -> None:
    bad = np.abs(attribution.gaps) > attribution.tolerance
    if bad.any():
        row, output = (int(i) for i in np.argwhere(bad)[0])
        culprit = f" {locate(row)}." if locate is not None else ""
        raise XShapIncompleteError(
            f"xshap's attributions do not add up for {int(bad.sum())} (row, output) pair(s); first: row {row}, "
            f"output {output}: gap {attribution.gaps[row, output]:.3e} > {attribution.tolerance[row, output]:.1e}."
            f"{culprit} This is a bug in xshap, not a property of the model: please report it with the model."
        )


def explain_function(fn: Callable, background, X, **options) -> np.ndarray:
    """DeepSHAP values of a JAX function in shap's layout (a convenience around DeepExplainer)."""
    return DeepExplainer(fn, background, **options).shap_values(X)
