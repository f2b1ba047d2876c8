"""torch -> JAX: capture a model with torch.export and rebuild it, op by op, as a pure JAX function.

Knows torch; knows nothing of DeepLIFT.
"""

from converters import ops as _ops  # noqa: F401  (fills the op registry)
from converters.converted import Converted, from_exported, from_torch
from converters.errors import ConversionError, ExportError, UnsupportedOperatorError
from converters.independence import BatchDependenceError
from converters.provenance import Provenance
from converters.registry import register, supported_ops
from converters.validate import LayerCheck, ValidationReport

__all__ = [
    "BatchDependenceError",
    "ConversionError",
    "Converted",
    "ExportError",
    "LayerCheck",
    "Provenance",
    "UnsupportedOperatorError",
    "ValidationReport",
    "from_exported",
    "from_torch",
    "register",
    "supported_ops",
]
