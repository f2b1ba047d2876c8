"""Saved programs exported for other batches than one row.

A program exported with a dynamic batch (``dynamic_shapes=({0: Dim("batch")},)``, the usual export for
serving) is specialised here to the smallest batch its range allows, by exporting its own graph module again
for that many example rows: torch keeps each node's module stack and source lines. A program exported for a
static batch of k rows is kept as it is: it computes k rows at a time (``Converted.batch_size``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind

from converters.errors import ConversionError, ExportError
from converters.independence import repeat_rows


@dataclass
class SavedBatch:
    """A saved program with static shapes and the number of rows it computes at once."""

    program: ExportedProgram
    batch_size: int
    dynamic: ExportedProgram | None = None  # the program as saved, if its shapes were dynamic
    dynamic_max_rows: int = 1  # the most rows the saved dynamic program takes (for the independence check)


def user_input_shapes(program: ExportedProgram) -> list[tuple]:
    """The shapes of the program's user inputs, as saved (ints, or SymInts for dynamic dimensions)."""
    names = [spec.arg.name for spec in program.graph_signature.input_specs if spec.kind == InputKind.USER_INPUT]
    values = {node.name: node.meta.get("val") for node in program.graph.nodes if node.op == "placeholder"}
    shapes = []
    for i, name in enumerate(names):
        value = values.get(name)
        if not isinstance(value, torch.Tensor) or value.ndim == 0:
            raise ConversionError(f"the saved program's input {i} is not a tensor with a batch axis")
        shapes.append(tuple(value.shape))
    return shapes


def _is_static(shape: tuple) -> bool:
    return all(isinstance(d, int) for d in shape)


def _batch_range(program: ExportedProgram, dim) -> tuple[int, int | None]:
    """(smallest, largest or None) batch the program's range constraints allow for a dynamic leading dim."""
    value_range = program.range_constraints.get(dim.node.expr)
    if value_range is None:
        return 1, None
    lower = max(1, int(value_range.lower)) if getattr(value_range.lower, "is_Integer", False) else 1
    upper = int(value_range.upper) if getattr(value_range.upper, "is_Integer", False) else None
    return lower, upper


def saved_batch(program: ExportedProgram, examples: Sequence[torch.Tensor]) -> SavedBatch:
    """The program with static shapes for the examples' rows, and its batch size."""
    shapes = user_input_shapes(program)
    if len(shapes) != len(examples):
        raise ConversionError(f"the saved program takes {len(shapes)} input(s); {len(examples)} given")
    if all(_is_static(shape) for shape in shapes):
        return SavedBatch(program, _static_batch(shapes, examples))
    lower, upper = _batch_range(program, shapes[0][0]) if not isinstance(shapes[0][0], int) else (shapes[0][0],) * 2
    if upper is not None and upper < lower:
        raise ConversionError(f"the saved program's batch range [{lower}, {upper}] is empty")
    inputs = tuple(repeat_rows(x, lower) for x in examples)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            specialised = torch.export.export(program.module(), inputs, strict=False)
    except Exception as error:  # torch raises many types; all mean "cannot specialise"
        rows = ", ".join(str(tuple(x.shape)) for x in inputs)
        raise ExportError(
            f"the saved program has dynamic shapes and could not be specialised to inputs of shape {rows}: "
            f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        ) from error
    batch = _static_batch(user_input_shapes(specialised), examples)
    return SavedBatch(specialised, batch, program, upper if upper is not None else 4)


def _static_batch(shapes: list[tuple], examples: Sequence[torch.Tensor]) -> int:
    batches = {shape[0] for shape in shapes}
    for i, (shape, x) in enumerate(zip(shapes, examples)):
        if shape[1:] != tuple(x.shape[1:]):
            raise ConversionError(
                f"the saved program's input {i} takes rows of shape {shape[1:]} (in a batch of {shape[0]}); the rows "
                f"given have shape {tuple(x.shape[1:])}"
            )
    if len(batches) != 1 or min(batches) < 1:
        raise ConversionError(f"the saved program's inputs have leading dimensions {sorted(batches)}, not one batch")
    return batches.pop()
