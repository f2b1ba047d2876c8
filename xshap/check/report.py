"""The cross-check report: per sample and output, each implementation's completeness gap, the
difference between xshap and each reference, the verdict; and the culprits read from the graph."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from xshap.check.verdicts import (  # noqa: F401  (re-exported: the names a report is read with)
    AGREE,
    DISAGREE,
    REFERENCE_ERROR,
    REFERENCE_INCOMPLETE,
    RULE_DIFFERENCE,
    SEVERITY,
)


@dataclass
class ReferenceComparison:
    """One reference against xshap. Arrays are (N, n_outputs); None where the reference raised."""

    name: str
    seconds: float
    error: str | None = None
    gaps: np.ndarray | None = None
    max_abs_diff: np.ndarray | None = None
    verdicts: np.ndarray | None = None
    rule_differences: list[str] = field(default_factory=list)  # the reference's own rules that differ
    reproduced_rules: str | None = None  # the xshap rule set that reproduces them ("shap"), if any
    reproduced_diff: np.ndarray | None = None  # max |xshap(reproduced_rules) - reference|, (N, n_outputs)
    reproduces: bool = False  # whether xshap(reproduced_rules) equals the reference everywhere, within tolerance
    values: list[np.ndarray] | None = None  # the reference's attributions, per input (N, n_outputs, *row_shape)
    float64_diff: np.ndarray | None = None  # max |xshap - reference| rerun in float64, when float32 differed

    @property
    def key(self) -> str:
        """The short name: "shap", "captum"."""
        return self.name.split()[0]

    @property
    def verdict(self) -> str:
        """The worst verdict over all samples and outputs."""
        if self.error is not None:
            return REFERENCE_ERROR
        for verdict in (REFERENCE_INCOMPLETE, DISAGREE, RULE_DIFFERENCE):
            if np.any(self.verdicts == verdict):
                return verdict
        return AGREE

    def count(self, verdict: str) -> int:
        return 0 if self.verdicts is None else int(np.sum(self.verdicts == verdict))


@dataclass(repr=False)
class CrosscheckReport:
    model_name: str
    outputs: np.ndarray  # f(x), (N, n_outputs)
    expected_value: np.ndarray  # (n_outputs,), or (N, k) per rank slot with ranked_outputs
    xshap_values: list[np.ndarray]  # per input, (N, n_outputs, *row_shape)
    xshap_gaps: np.ndarray  # (N, n_outputs)
    tolerance: np.ndarray  # (N, n_outputs): allowed |gap| and |difference|
    references: list[ReferenceComparison]
    culprits: list = field(default_factory=list)
    validation: object | None = None  # converters.ValidationReport for torch models
    n_background: int = 0
    xshap_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    data: list[np.ndarray] = field(default_factory=list)  # the explained rows, per input (N, *row_shape)
    feature_names: list[str] | None = None  # one per feature of the (flattened) inputs, if given
    rules: str = "complete"

    @property
    def verdict(self) -> str:
        """The worst verdict over every reference (AGREE when there is none)."""
        verdicts = [ref.verdict for ref in self.references]
        return next((v for v in SEVERITY if v in verdicts), AGREE)

    def expected_at(self, sample: int, output: int) -> float:
        """E f for one sample's output (with ranked outputs each sample's slot is its own output)."""
        return float(np.broadcast_to(self.expected_value, self.outputs.shape)[sample, output])

    def reference(self, prefix: str) -> ReferenceComparison:
        """The comparison whose name starts with ``prefix`` ("shap", "captum")."""
        for comparison in self.references:
            if comparison.key == prefix:
                return comparison
        raise KeyError(f"no reference {prefix!r} in this report (have: {[r.name for r in self.references]})")

    def rows(self) -> list[dict]:
        """One record per sample and output: everything the report knows about it."""
        records = []
        n, n_out = self.outputs.shape
        for i in range(n):
            for o in range(n_out):
                record = {
                    "sample": i,
                    "output": o,
                    "f(x)": float(self.outputs[i, o]),
                    "E f": float(self.expected_at(i, o)),
                    "gap xshap": float(self.xshap_gaps[i, o]),
                }
                for ref in self.references:
                    key = ref.key
                    if ref.error is None:
                        record[f"gap {key}"] = float(ref.gaps[i, o])
                        record[f"max |xshap - {key}|"] = float(ref.max_abs_diff[i, o])
                        record[f"verdict {key}"] = str(ref.verdicts[i, o])
                    else:
                        record[f"verdict {key}"] = REFERENCE_ERROR
                records.append(record)
        return records

    # -- text -------------------------------------------------------------------------------------------
    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        n, n_out = self.outputs.shape
        refs = ", ".join(f"{r.key}={r.verdict}" for r in self.references) or "no references"
        return f"<CrosscheckReport {self.model_name}: {n} sample(s) x {n_out} output(s); {refs}; {len(self.culprits)} culprit(s)>"

    def to_text(self, max_rows: int = 12) -> str:
        n, n_out = self.outputs.shape
        lines = [
            f"xshap crosscheck: {self.model_name} — {n} sample(s) x {n_out} output(s), background {self.n_background} rows",
        ]
        if self.validation is not None:
            worst = max((layer.max_rel_diff for layer in self.validation.layers), default=0.0)
            lines.append(
                f"conversion check: {len(self.validation.layers)} layer call(s), max rel diff {worst:.1e} "
                f"vs torch ({'OK' if self.validation.ok else 'MISMATCH'}: {self.validation.decided_by})"
            )
        lines.append(
            f"xshap: complete, max |gap| {np.max(np.abs(self.xshap_gaps)):.2e} "
            f"(tolerance {np.min(self.tolerance):.1e}..{np.max(self.tolerance):.1e}), {self.xshap_seconds:.2f}s"
        )
        lines += [
            "",
            f"  {'reference':<16} {'verdict':<22} {'max |gap|':>10} {'incomplete':>11} {'max |diff|':>11} {'time':>7}",
        ]
        for ref in self.references:
            if ref.error is not None:
                lines.append(f"  {ref.name:<16} {REFERENCE_ERROR:<22} raised: {_shorten(ref.error, 90)}")
                continue
            incomplete = ref.count(REFERENCE_INCOMPLETE)
            lines.append(
                f"  {ref.name:<16} {ref.verdict:<22} {np.max(np.abs(ref.gaps)):>10.3g} "
                f"{incomplete:>5}/{ref.gaps.size:<5} {np.max(ref.max_abs_diff):>11.3g} {ref.seconds:>6.2f}s"
            )
        lines += self._rule_lines()
        lines += self._culprit_lines()
        lines += self._row_lines(max_rows)
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    # -- other views (each in its own module) -------------------------------------------------------------
    def to_frame(self):
        """``rows()`` as a pandas DataFrame (pandas must be installed)."""
        try:
            import pandas as pd
        except ImportError as error:
            raise ImportError("report.to_frame() needs pandas: pip install pandas") from error
        return pd.DataFrame.from_records(self.rows())

    def plot(self, output: int | None = None):
        """The matplotlib figure: xshap vs each reference, completeness gaps per sample, mean |phi| per feature."""
        from xshap.check.plots import plot_report

        return plot_report(self, output=output)

    def to_html(self) -> str:
        """A standalone HTML page: verdict banner, per-output table, culprits, the plots."""
        from xshap.check.report_html import render_html

        return render_html(self)

    def _repr_html_(self) -> str:
        from xshap.check.report_html import render_html

        return render_html(self, standalone=False)

    def save_html(self, path) -> None:
        """Write ``to_html()`` to ``path``."""
        from pathlib import Path

        Path(path).write_text(self.to_html(), encoding="utf-8")

    @property
    def explanation(self):
        """xshap's values as a ``shap.Explanation`` (shap's plots work on it unchanged)."""
        from xshap.explain.interop import to_explanation

        return to_explanation(
            self.xshap_values, self.expected_value, self.data, feature_names=self.feature_names, outputs=self.outputs
        )

    def reference_explanation(self, prefix: str):
        """A reference's values as a ``shap.Explanation``, for side-by-side shap plots."""
        from xshap.explain.interop import to_explanation

        ref = self.reference(prefix)
        if ref.values is None:
            raise ValueError(f"{ref.name} raised, it has no values: {ref.error}")
        return to_explanation(ref.values, self.expected_value, self.data, feature_names=self.feature_names)

    def _rule_lines(self) -> list[str]:
        lines = []
        for ref in self.references:
            if ref.error is not None or not ref.rule_differences:
                continue
            key = ref.key
            lines += ["", f"{ref.name} uses its own rule(s): {'; '.join(ref.rule_differences)} (see culprits)"]
            if ref.reproduced_diff is not None:
                worst = np.max(ref.reproduced_diff)
                same = "reproduces" if ref.reproduces else "does NOT reproduce"
                lines.append(
                    f"  xshap with rules={ref.reproduced_rules!r} {same} {key}: max |xshap - {key}| {worst:.3g}"
                )
        return lines

    def _culprit_lines(self) -> list[str]:
        if not self.culprits:
            return ["", "culprits: none found in the graph (every nonlinearity is a hooked module used once)"]
        lines = ["", "culprits (read from the exported graph):"]
        for culprit in self.culprits:
            lines.append("  - " + culprit.describe().replace("\n", "\n  "))
        return lines

    def _row_lines(self, max_rows: int) -> list[str]:
        n, n_out = self.outputs.shape
        refs = [r for r in self.references if r.error is None]
        header = f"  {'sample':>6} {'out':>3} {'f(x)':>10} {'E f':>10} {'gap xshap':>10}"
        for ref in refs:
            key = ref.key
            header += f" {'gap ' + key:>11} {'|diff| ' + key:>12} {'verdict ' + key:<22}"
        lines = ["", "per sample and output:", header]
        shown = 0
        for i in range(n):
            for o in range(n_out):
                if shown == max_rows:
                    lines.append(f"  ... {n * n_out - shown} more (report.rows() has them all)")
                    return lines
                row = f"  {i:>6} {o:>3} {self.outputs[i, o]:>10.4g} {self.expected_at(i, o):>10.4g} {self.xshap_gaps[i, o]:>10.2e}"
                for ref in refs:
                    row += f" {ref.gaps[i, o]:>11.4g} {ref.max_abs_diff[i, o]:>12.4g} {ref.verdicts[i, o]:<22}"
                lines.append(row)
                shown += 1
        return lines


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
