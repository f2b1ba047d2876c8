"""Errors raised while capturing and converting a torch model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from converters.provenance import Provenance


class ConversionError(Exception):
    """A torch model could not be turned into a JAX function."""


class UnsupportedOperatorError(ConversionError):
    """The exported graph holds ATen ops that the converter has no JAX implementation for.

    Lists every unknown op at once, each with where it comes from, so one run tells the whole story.
    """

    def __init__(self, unknown: Sequence[tuple[str, Provenance]]):
        self.unknown = list(unknown)
        ops = sorted({op for op, _ in self.unknown})
        lines = [f"{len(ops)} unsupported operator(s): {', '.join(ops)}"]
        for op, prov in self.unknown:
            lines.append(f"  {op:<32} at {prov.describe()}")
        super().__init__("\n".join(lines))


class ExportError(ConversionError):
    """torch.export could not capture the model; the message carries torch's reason and a hint."""
