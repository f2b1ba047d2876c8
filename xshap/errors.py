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
