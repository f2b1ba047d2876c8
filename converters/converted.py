"""The result of a conversion: a pure JAX function, its weights, and where every op came from."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import torch
from torch.export import ExportedProgram

from converters.arrays import to_device
from converters.batching import saved_batch
from converters.errors import ConversionError
from converters.export import CAPTURE_LOCK, Capture, capture, capture_saved, eval_mode, weights_of
from converters.graph import GraphFunction
from converters.independence import (
    check_batch_statistics_modules,
    check_rows_independent,
    check_saved_rows_independent,
    probe_rows,
)
from converters.outputs import choose_output, output_leaves
from converters.preflight import check_not_quantised, check_runs, check_tensors_have_values
from converters.provenance import Provenance
from converters.validate import (
    FLOAT32_RTOL,
    ValidationReport,
    fill_batch,
    needs_float64_recheck,
    recheck_in_float64,
    side_by_side,
)


def _as_tuple(inputs) -> tuple:
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def as_tensor(value) -> torch.Tensor:
    """A torch tensor of a tensor or array-like; an ``ml_dtypes.bfloat16`` array (JAX's) as torch.bfloat16."""
    if isinstance(value, torch.Tensor):
        return value
    array = np.asarray(value)
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(np.ascontiguousarray(array).view(np.int16)).view(torch.bfloat16)
    return torch.as_tensor(array)


def _to_jax(tensor: torch.Tensor) -> jax.Array:
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16: the same bits as JAX's own
        return to_device(tensor.contiguous().view(torch.int16).numpy().view(jnp.bfloat16))
    return to_device(tensor.numpy())


@dataclass
class Converted:
    """A torch model as a pure JAX function.

    ``apply(params, *inputs)`` takes batched inputs (leading axis = rows) and maps the exported
    batch-of-one graph over the rows with ``jax.vmap``, so every row is computed exactly as torch would
    compute it alone. ``params`` is the weights pytree (copied once from torch). ``provenance`` tells,
    for every op, the module path, module type, call index and source line it came from.

    ``batch_size`` is the number of rows the graph computes at once: 1, except for a saved program exported
    for a static batch of k rows (its rows proven independent). ``apply`` then runs the rows in groups of k,
    the last one padded, and ``apply_row`` puts its row in every slot of the batch and returns the first.
    """

    graph: GraphFunction
    params: dict[str, jax.Array]
    provenance: dict[str, Provenance]
    input_shapes: list[tuple[int, ...]]  # per row, without the batch axis
    input_dtypes: list[np.dtype]
    output_shape: tuple[int, ...]  # per row, without the batch axis
    capture: Capture
    output_name: str | None = None  # the output leaf converted, when the model returns several (a dict ...)
    output_index: int | None = None  # its position among the flattened outputs
    batch_size: int = 1  # rows the graph computes at once

    # -- evaluation -------------------------------------------------------------------------------------
    def apply_single(self, params: dict, *rows):
        """The exported graph itself: inputs and outputs with a batch axis of ``batch_size``."""
        return self.graph(params, *rows)

    def apply_row(self, params: dict, *rows):
        """One output row (without the batch axis) from one row of each input: the function xshap explains."""
        return self.graph(params, *(fill_batch(r, self.batch_size) for r in rows))[0]

    def apply(self, params: dict, *inputs):
        """Batched forward: each row through the exported graph alone, vectorised with vmap (for a graph of
        k rows: groups of k rows, the last group padded with copies of the last row)."""
        if self.batch_size == 1:
            return jax.vmap(lambda *rows: self.apply_row(params, *rows))(*inputs)
        k, n = self.batch_size, int(inputs[0].shape[0])
        groups = -(-n // k)
        padded = [jnp.concatenate([x, jnp.repeat(x[-1:], groups * k - n, axis=0)]) for x in inputs]
        grouped = [x.reshape((groups, k, *x.shape[1:])) for x in padded]
        out = jax.vmap(lambda *batch: self.graph(params, *batch))(*grouped)
        return out.reshape((groups * k, *out.shape[2:]))[:n]

    def row_function(self):
        """``f(*rows) -> output row`` with the weights bound: the function xshap explains."""

        def row(*rows):
            return self.apply_row(self.params, *rows)

        return row

    def __call__(self, *inputs):
        return self.apply(self.params, *(to_device(np.asarray(x)) for x in inputs))

    @property
    def ops(self) -> list[Provenance]:
        """Provenance of every op, in graph order."""
        return list(self.provenance.values())

    # -- self-check -------------------------------------------------------------------------------------
    def validate(
        self, *inputs, rtol: float | None = None, max_rows: int = 16, recheck_float64: bool = True
    ) -> ValidationReport:
        """Run the exported torch graph and the JAX function side by side on the same rows.

        Reports, per layer (module path and call), the largest relative difference of the values its
        ops produce, and names the first layer that diverges beyond ``rtol``. A float32 model whose float32
        differences exceed ``rtol`` is compared again in float64 (``recheck_float64``), where rounding vanishes
        and a conversion error does not; ``report.decided_by`` says which comparison decided.
        """
        tensors = [as_tensor(x)[:max_rows] for x in inputs]
        n_rows = int(tensors[0].shape[0])
        if rtol is None:
            rtol = 1e-10 if tensors[0].dtype == torch.float64 and jax.config.jax_enable_x64 else FLOAT32_RTOL
        program = self.capture.program
        weights = weights_of(program)
        layers, output_diff = side_by_side(
            program, list(weights.values()), self.graph, self.params, self.provenance, tensors, rtol,
            batch_size=self.batch_size,
        )  # fmt: skip
        report = ValidationReport(layers, rtol, output_diff, n_rows)
        if recheck_float64 and needs_float64_recheck(report, tensors, list(weights.values())):
            report = recheck_in_float64(
                report, program, weights, self.graph, self.provenance, tensors, batch_size=self.batch_size
            )
        return report


def from_torch(
    model: torch.nn.Module, example_inputs, output: str | int | None = None, decompose: str = "always"
) -> Converted:
    """Convert ``model`` to a pure JAX function with torch.export.

    ``example_inputs``: a tensor or a tuple of tensors with a leading batch axis. The graph is exported for
    the first row and mapped over rows with ``jax.vmap``; the model is also checked to compute each row
    independently of the others (``BatchDependenceError`` if not), on the example rows and on rows made from
    them. ``output``: which output to convert when the model returns a dict, ``ModelOutput`` or tuple (see
    ``converters.outputs``). ``decompose="as_needed"``: skip the functionalising pass where the graph is functional
    already (``converters.export.capture``; faster). Conversions are serialised: torch.export is not thread-safe.
    """
    examples = _examples(example_inputs)
    with CAPTURE_LOCK:
        check_tensors_have_values(model)
        check_not_quantised(model)
        check_batch_statistics_modules(model)
        check_runs(model, examples, eval_mode)
        captured = capture(model, [x[:1] for x in examples], decompose)
        converted = _build(captured, examples, output)
        leaf = converted.output_index or 0
        check_rows_independent(model, probe_rows([x[:4] for x in examples]), captured, leaf=leaf)
    return converted


def from_exported(program: ExportedProgram, example_inputs, output: str | int | None = None) -> Converted:
    """Convert a saved ``torch.export`` program (``torch.export.load`` of a ``.pt2``) to a pure JAX function.

    The program may have been exported for one row, for a dynamic batch (it is specialised here to the
    smallest batch its range allows, usually one row) or for a static batch of k rows (it then computes k rows
    at a time, ``Converted.batch_size``). With several rows, on two example rows or more, the program is
    checked to compute each row alone (``BatchDependenceError`` if not).
    """
    examples = _examples(example_inputs)
    with CAPTURE_LOCK:
        saved = saved_batch(program, examples)
        captured = capture_saved(saved.program)
    converted = _build(captured, examples, output, saved.batch_size)
    leaf = converted.output_index or 0
    if saved.batch_size > 1:
        check_saved_rows_independent(saved.program, examples, saved.batch_size, leaf=leaf)
    elif saved.dynamic is not None:
        check_saved_rows_independent(saved.dynamic, examples, 1, max_rows=min(4, saved.dynamic_max_rows), leaf=leaf)
    return converted


def _examples(example_inputs) -> list[torch.Tensor]:
    examples = [as_tensor(x) for x in _as_tuple(example_inputs)]
    for i, x in enumerate(examples):
        if x.ndim == 0 or x.shape[0] == 0:
            raise ValueError(f"example input {i} has shape {tuple(x.shape)}: it needs a leading batch axis with rows")
    return examples


def _build(
    captured: Capture, examples: list[torch.Tensor], output: str | int | None = None, batch_size: int = 1
) -> Converted:
    leaves = output_leaves(captured.program)
    index = choose_output(leaves, output)
    graph = GraphFunction(captured, index if len(leaves) > 1 else None)
    weights = weights_of(captured.program)
    params = {name: _to_jax(weights[name]) for name in captured.param_names}

    out_shape = tuple(leaves[index].value.shape)
    if len(out_shape) == 0 or out_shape[0] != batch_size:
        rows = "one row" if batch_size == 1 else f"{batch_size} rows"
        raise ConversionError(
            f"for a batch of {rows} the model returns shape {out_shape}"
            + (f" for output {leaves[index].name!r}" if len(leaves) > 1 else "")
            + "; xshap needs outputs whose leading axis is the batch axis"
        )
    return Converted(
        graph=graph,
        params=params,
        provenance=captured.provenance,
        input_shapes=[tuple(x.shape[1:]) for x in examples],
        input_dtypes=[_numpy_dtype(x.dtype) for x in examples],
        output_shape=out_shape[1:],
        capture=captured,
        output_name=leaves[index].name if len(leaves) > 1 else None,
        output_index=index if len(leaves) > 1 else None,
        batch_size=batch_size,
    )


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    name = str(dtype).replace("torch.", "")
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)
