"""The cross-check report as HTML: for Jupyter (``_repr_html_``) and as a standalone page (``save_html``)."""

from __future__ import annotations

import base64
from html import escape

import numpy as np

from xshap.check.verdicts import AGREE, DISAGREE, REFERENCE_ERROR, REFERENCE_INCOMPLETE, RULE_DIFFERENCE

VERDICT_COLORS = {
    AGREE: ("#e6f4ea", "#137333"),
    RULE_DIFFERENCE: ("#fef7e0", "#8a6100"),
    DISAGREE: ("#fce8e6", "#a50e0e"),
    REFERENCE_INCOMPLETE: ("#fce8e6", "#a50e0e"),
    REFERENCE_ERROR: ("#fce8e6", "#a50e0e"),
}
VERDICT_MEANING = {
    AGREE: "equal to xshap within tolerance, and complete",
    RULE_DIFFERENCE: "complete, differs from xshap only where it applies a rule of its own",
    DISAGREE: "complete, but differs from xshap with no known rule difference to explain it",
    REFERENCE_INCOMPLETE: "its attributions do not add up to f(x) − E f: they are wrong",
    REFERENCE_ERROR: "raised an error instead of giving attributions",
}
MAX_SAMPLE_ROWS = 200

STYLE = """
.xshap-report { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; font-size: 13px; color: #202124; }
.xshap-report table { border-collapse: collapse; margin: 6px 0 12px 0; }
.xshap-report th, .xshap-report td { border: 1px solid #dadce0; padding: 3px 8px; text-align: right; }
.xshap-report th { background: #f1f3f4; }
.xshap-report td.text, .xshap-report th.text { text-align: left; }
.xshap-report .banner { padding: 10px 14px; border-radius: 6px; margin-bottom: 10px; font-size: 15px; }
.xshap-report .verdict { font-weight: 600; padding: 1px 6px; border-radius: 4px; }
.xshap-report code, .xshap-report pre { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px; }
.xshap-report pre { background: #f8f9fa; padding: 4px 8px; margin: 2px 0 8px 16px; white-space: pre-wrap; }
.xshap-report img { max-width: 100%; }
"""


def _verdict(verdict: str) -> str:
    background, color = VERDICT_COLORS.get(verdict, ("#f1f3f4", "#202124"))
    return f'<span class="verdict" style="background:{background};color:{color}">{escape(verdict)}</span>'


def _num(value: float) -> str:
    return escape(f"{value:.3g}")


def _banner(report) -> str:
    verdict = report.verdict
    background, color = VERDICT_COLORS.get(verdict, ("#f1f3f4", "#202124"))
    n, n_out = report.outputs.shape
    parts = []
    for ref in report.references:
        parts.append(f"{escape(ref.name)}: {_verdict(ref.verdict)} — {escape(VERDICT_MEANING[ref.verdict])}")
    refs = "<br>".join(parts) if parts else "no reference ran"
    return (
        f'<div class="banner" style="background:{background};color:{color}">'
        f"<b>xshap cross-check of {escape(report.model_name)}</b>: {n} sample(s) × {n_out} output(s), "
        f"background {report.n_background} rows, rules {escape(repr(report.rules))}<br>"
        f"xshap: complete, max |gap| {_num(np.max(np.abs(report.xshap_gaps)))} "
        f"(tolerance ≥ {_num(np.min(report.tolerance))}), {report.xshap_seconds:.2f} s<br>{refs}</div>"
    )


def _expected(report, o: int) -> str:
    column = np.broadcast_to(report.expected_value, report.outputs.shape)[:, o]
    return _num(column[0]) if np.all(column == column[0]) else f"{_num(column.min())} … {_num(column.max())}"


def _output_table(report) -> str:
    n, n_out = report.outputs.shape
    refs = report.references
    head = "<tr><th>output</th><th>E f</th><th>f(x) range</th><th>max |gap| xshap</th>"
    for ref in refs:
        head += f"<th>{escape(ref.key)} verdict</th><th>incomplete</th><th>max |gap| {escape(ref.key)}</th>"
        head += f"<th>max |xshap − {escape(ref.key)}|</th>"
    rows = [head + "</tr>"]
    for o in range(n_out):
        row = (
            f"<tr><td>{o}</td><td>{_expected(report, o)}</td>"
            f"<td>{_num(report.outputs[:, o].min())} … {_num(report.outputs[:, o].max())}</td>"
            f"<td>{_num(np.abs(report.xshap_gaps[:, o]).max())}</td>"
        )
        for ref in refs:
            if ref.error is not None:
                row += f'<td class="text">{_verdict(REFERENCE_ERROR)}</td><td colspan="3" class="text">—</td>'
                continue
            verdicts = ref.verdicts[:, o]
            worst = next((v for v in (REFERENCE_INCOMPLETE, DISAGREE, RULE_DIFFERENCE) if np.any(verdicts == v)), AGREE)
            row += (
                f'<td class="text">{_verdict(worst)}</td><td>{int(np.sum(verdicts == REFERENCE_INCOMPLETE))}/{n}</td>'
                f"<td>{_num(np.abs(ref.gaps[:, o]).max())}</td><td>{_num(ref.max_abs_diff[:, o].max())}</td>"
            )
        rows.append(row + "</tr>")
    return "<h4>Per output</h4><table>" + "".join(rows) + "</table>"


def _errors(report) -> str:
    parts = [
        f"<p>{escape(ref.name)} raised: <code>{escape(ref.error)}</code></p>"
        for ref in report.references
        if ref.error is not None
    ]
    return "".join(parts)


def _culprits(report) -> str:
    if not report.culprits:
        return "<h4>Culprits</h4><p>None found in the graph: every nonlinearity is a hooked module used once.</p>"
    rows = [
        '<tr><th class="text">kind</th><th class="text">module path</th><th class="text">type</th>'
        '<th class="text">op</th><th class="text">affects</th><th class="text">source lines</th></tr>'
    ]
    for culprit in report.culprits:
        sites = "<br>".join(f"<code>{escape(src)}</code>: <code>{escape(code)}</code>" for src, code in culprit.sites)
        rows.append(
            f'<tr><td class="text">{escape(culprit.kind)}</td><td class="text"><code>{escape(culprit.module_path or "<root>")}</code></td>'
            f'<td class="text">{escape(culprit.module_type.rsplit(".", 1)[-1])}</td><td class="text"><code>{escape(culprit.op)}</code></td>'
            f'<td class="text">{escape(", ".join(culprit.references))}</td><td class="text">{sites}</td></tr>'
        )
    details = "".join(f"<pre>{escape(c.describe())}</pre>" for c in report.culprits)
    return (
        "<h4>Culprits (read from the exported graph)</h4><table>"
        + "".join(rows)
        + f"</table><details><summary>in words</summary>{details}</details>"
    )


def _rules(report) -> str:
    text = report._rule_lines()
    return f"<pre>{escape(chr(10).join(line for line in text if line))}</pre>" if text else ""


def _plots(report) -> str:
    try:
        from xshap.check.plots import figure_png
    except ImportError:  # pragma: no cover - matplotlib missing
        return "<p>(plots need matplotlib)</p>"
    try:
        png = figure_png(report.plot())
    except ImportError:
        return "<p>(plots need matplotlib: pip install matplotlib)</p>"
    data = base64.b64encode(png).decode("ascii")
    return f'<h4>Plots</h4><img alt="xshap vs references" src="data:image/png;base64,{data}">'


def _samples(report) -> str:
    records = report.rows()
    if not records:
        return ""
    keys = list(records[0])
    head = "".join(f"<th>{escape(k)}</th>" for k in keys)
    body = []
    for record in records[:MAX_SAMPLE_ROWS]:
        cells = []
        for k in keys:
            value = record[k]
            if isinstance(value, str):
                cells.append(f'<td class="text">{_verdict(value) if k.startswith("verdict") else escape(value)}</td>')
            elif isinstance(value, float):
                cells.append(f"<td>{_num(value)}</td>")
            else:
                cells.append(f"<td>{escape(str(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = len(records) - MAX_SAMPLE_ROWS
    tail = f"<p>… {more} more rows (report.rows() or report.to_frame() has them all)</p>" if more > 0 else ""
    return (
        f"<details><summary>Per sample and output ({len(records)} rows)</summary><table><tr>{head}</tr>"
        + "".join(body)
        + f"</table>{tail}</details>"
    )


def render_html(report, standalone: bool = True) -> str:
    """The report as HTML: a fragment for Jupyter, or (``standalone``) a whole page."""
    notes = "".join(f"<p>note: {escape(note)}</p>" for note in report.notes)
    validation = ""
    if report.validation is not None:
        worst = max((layer.max_rel_diff for layer in report.validation.layers), default=0.0)
        ok = "OK" if report.validation.ok else "MISMATCH"
        validation = (
            f"<p>conversion checked against torch: {len(report.validation.layers)} layer call(s), "
            f"max relative difference {_num(worst)} ({ok}: {escape(report.validation.decided_by)})</p>"
        )
    body = (
        f'<div class="xshap-report"><style>{STYLE}</style>'
        + _banner(report)
        + validation
        + _output_table(report)
        + _errors(report)
        + _rules(report)
        + _culprits(report)
        + _plots(report)
        + _samples(report)
        + notes
        + "</div>"
    )
    if not standalone:
        return body
    title = escape(f"xshap cross-check: {report.model_name}")
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title></head><body>{body}</body></html>\n'
    )
