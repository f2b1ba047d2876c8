"""Errors raised by xshap itself."""

from __future__ import annotations

from collections.abc import Sequence


class XShapError(Exception):
    """Base class of xshap's errors."""


class NoRuleError(XShapError):
    """The function holds operations DeepLIFT has no rule for here; lists every one at once."""

    def __init__(self, problems: Sequence[tuple[str, str, str]]):
        self.problems = list(problems)
        lines = [f"{len(self.problems)} operation(s) without a DeepLIFT rule:"]
        for primitive, scope, reason in self.problems:
            lines.append(f"  {primitive:<24} in {scope or '<top level>'}: {reason}")
        super().__init__("\n".join(lines))


class InputError(XShapError, ValueError):
    """Inputs or background that cannot be explained (shapes, dtypes, non-finite values ...)."""


class XShapIncompleteError(XShapError):
    """xshap's attributions do not sum to f(x) - E[f(background)]: a bug in xshap, never a finding."""


class NonFiniteError(InputError):
    """The model's forward (or a DeepLIFT multiplier) holds a NaN or an infinity: names the first op and row."""


class PrecisionError(XShapError):
    """Rows whose attributions cannot be verified: they miss float32's tolerance and the model cannot be
    recomputed in float64 (its function fixes a lower precision somewhere)."""


class ModelChangedError(InputError):
    """The model was edited after the explainer converted it: its attributions would be those of the old model."""
