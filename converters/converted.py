"""The result of a conversion: a pure JAX function, its weights, and where every op came from."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import torch
from torch.export import ExportedProgram

from converters.errors import ConversionError
from converters.export import Capture, capture, capture_saved, weights_of
from converters.graph import GraphFunction
from converters.independence import check_batch_statistics_modules, check_rows_independent
from converters.provenance import Provenance
from converters.validate import (
    FLOAT32_RTOL,
    ValidationReport,
    needs_float64_recheck,
    recheck_in_float64,
    side_by_side,
)


def _as_tuple(inputs) -> tuple:
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def _to_jax(tensor: torch.Tensor) -> jax.Array:
    return jnp.asarray(tensor.detach().cpu().numpy())


@dataclass
class Converted:
    """A torch model as a pure JAX function.

    ``apply(params, *inputs)`` takes batched inputs (leading axis = rows) and maps the exported
    batch-of-one graph over the rows with ``jax.vmap``, so every row is computed exactly as torch would
    compute it alone. ``params`` is the weights pytree (copied once from torch). ``provenance`` tells,
    for every op, the module path, module type, call index and source line it came from.
    """

    graph: GraphFunction
    params: dict[str, jax.Array]
    provenance: dict[str, Provenance]
    input_shapes: list[tuple[int, ...]]  # per row, without the batch axis
    input_dtypes: list[np.dtype]
    output_shape: tuple[int, ...]  # per row, without the batch axis
    capture: Capture

    # -- evaluation -------------------------------------------------------------------------------------
    def apply_single(self, params: dict, *rows):
        """The exported graph itself: inputs and outputs with a batch axis of one."""
        return self.graph(params, *rows)

    def apply(self, params: dict, *inputs):
        """Batched forward: one row at a time through the exported graph, vectorised with vmap."""

        def one_row(*rows):
            return self.graph(params, *(row[None] for row in rows))[0]

        return jax.vmap(one_row)(*inputs)

    def row_function(self):
        """``f(*rows) -> output row`` with the weights bound: the function xshap explains."""

        def row(*rows):
            return self.graph(self.params, *(r[None] for r in rows))[0]

        return row

    def __call__(self, *inputs):
        return self.apply(self.params, *(jnp.asarray(np.asarray(x)) for x in inputs))

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
        tensors = [torch.as_tensor(np.asarray(x))[:max_rows] for x in inputs]
        n_rows = int(tensors[0].shape[0])
        if rtol is None:
            rtol = 1e-10 if tensors[0].dtype == torch.float64 and jax.config.jax_enable_x64 else FLOAT32_RTOL
        program = self.capture.program
        weights = weights_of(program)
        layers, output_diff = side_by_side(
            program, list(weights.values()), self.graph, self.params, self.provenance, tensors, rtol
        )
        report = ValidationReport(layers, rtol, output_diff, n_rows)
        if recheck_float64 and needs_float64_recheck(report, tensors, list(weights.values())):
            report = recheck_in_float64(report, program, weights, self.graph, self.provenance, tensors)
        return report


def from_torch(model: torch.nn.Module, example_inputs) -> Converted:
    """Convert ``model`` to a pure JAX function with torch.export.

    ``example_inputs``: a tensor or a tuple of tensors with a leading batch axis. The graph is exported for
    the first row and mapped over rows with ``jax.vmap``; with two rows or more, the model is also checked
    to compute each row independently of the others (``BatchDependenceError`` if not).
    """
    examples = _examples(example_inputs)
    check_batch_statistics_modules(model)
    captured = capture(model, [x[:1] for x in examples])
    converted = _build(captured, examples)
    check_rows_independent(model, [x[:4] for x in examples], captured)
    return converted


def from_exported(program: ExportedProgram, example_inputs) -> Converted:
    """Convert a saved ``torch.export`` program (``torch.export.load`` of a ``.pt2``) to a pure JAX function.

    The program must have been exported for one row (batch axis of size 1): it is mapped over rows with
    ``jax.vmap``, so each row is computed alone, as the saved graph computes it.
    """
    examples = _examples(example_inputs)
    captured = capture_saved(program)
    user_inputs = [
        node.meta.get("val")
        for node in captured.program.graph.nodes
        if node.op == "placeholder" and node.name in captured.input_names
    ]
    if len(user_inputs) != len(examples):
        raise ConversionError(f"the saved program takes {len(user_inputs)} input(s); {len(examples)} given")
    for i, (val, x) in enumerate(zip(user_inputs, examples)):
        shape = tuple(getattr(val, "shape", ()))
        if not shape or shape[0] != 1 or shape[1:] != tuple(x.shape[1:]):
            raise ConversionError(
                f"the saved program's input {i} has shape {shape}; xshap needs a program exported for ONE row "
                f"of shape (1, {', '.join(map(str, x.shape[1:]))}) (torch.export.export(model, (x[:1],)))"
            )
    return _build(captured, examples)


def _examples(example_inputs) -> list[torch.Tensor]:
    examples = [torch.as_tensor(x) for x in _as_tuple(example_inputs)]
    for i, x in enumerate(examples):
        if x.ndim == 0 or x.shape[0] == 0:
            raise ValueError(f"example input {i} has shape {tuple(x.shape)}: it needs a leading batch axis with rows")
    return examples


def _build(captured: Capture, examples: list[torch.Tensor]) -> Converted:
    graph = GraphFunction(captured)
    weights = weights_of(captured.program)
    params = {name: _to_jax(weights[name]) for name in captured.param_names}

    output_node = next(node for node in captured.program.graph.nodes if node.op == "output")
    output_vals = [arg.meta.get("val") if hasattr(arg, "meta") else arg for arg in output_node.args[0]]
    if len(output_vals) != 1 or not isinstance(output_vals[0], torch.Tensor):
        kinds = ", ".join(type(v).__name__ for v in output_vals)
        raise ConversionError(
            f"the model returns {len(output_vals)} value(s) ({kinds}); xshap explains models that return one "
            "tensor with a leading batch axis. Wrap the model to select the output to explain."
        )
    out_shape = tuple(output_vals[0].shape)
    if len(out_shape) == 0 or out_shape[0] != 1:
        raise ConversionError(
            f"for a batch of one row the model returns shape {out_shape}; xshap needs outputs whose leading "
            "axis is the batch axis"
        )
    return Converted(
        graph=graph,
        params=params,
        provenance=captured.provenance,
        input_shapes=[tuple(x.shape[1:]) for x in examples],
        input_dtypes=[np.dtype(str(x.dtype).replace("torch.", "")) for x in examples],
        output_shape=out_shape[1:],
        capture=captured,
    )
