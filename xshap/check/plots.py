"""Plots of a cross-check report (matplotlib): agreement scatter, completeness gaps, mean |phi| per feature.

Figures are built with ``matplotlib.figure.Figure`` directly, not pyplot, so plotting leaves no global
state behind (no open figure list growing over a notebook or a long run).
"""

from __future__ import annotations

import numpy as np

MAX_BARS = 24  # features shown in the bar panel (the largest by xshap's mean |phi|)
COLORS = {"xshap": "#1f77b4", "shap": "#d62728", "captum": "#2ca02c"}


def _flat(values: list[np.ndarray], output: int | None) -> np.ndarray:
    """(N, n_outputs, *row) per input -> (N, n_outputs', features), outputs restricted to ``output``."""
    n, n_out = values[0].shape[:2]
    flat = np.concatenate([v.reshape(n, n_out, -1) for v in values], axis=2)
    return flat if output is None else flat[:, [output]]


def feature_labels(report, n_features: int) -> list[str]:
    """The report's feature names, or the index of each feature in its input."""
    if report.feature_names is not None:
        return list(report.feature_names)
    labels = []
    for i, array in enumerate(report.data or [np.zeros((1, n_features))]):
        shape = array.shape[1:]
        prefix = f"in{i}" if len(report.data) > 1 else "x"
        labels += [f"{prefix}[{','.join(map(str, idx))}]" for idx in np.ndindex(*shape)] if shape else [prefix]
    return labels


def _gaps(report, output: int | None) -> dict[str, np.ndarray]:
    """|gap| per sample for each implementation (the worst output when ``output`` is None)."""

    def per_sample(gaps):
        g = np.abs(gaps if output is None else gaps[:, [output]])
        return g.max(axis=1)

    out = {"xshap": per_sample(report.xshap_gaps)}
    for ref in report.references:
        if ref.error is None:
            out[ref.key] = per_sample(ref.gaps)
    return out


def plot_report(report, output: int | None = None, max_bars: int = MAX_BARS):
    """The three panels of a report, for one output or (``None``) all outputs pooled; returns the Figure."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4.6), layout="constrained")
    scatter_ax, gap_ax, bar_ax = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 1.5]})
    mine = _flat(report.xshap_values, output)
    refs = [r for r in report.references if r.error is None and r.values is not None]
    which = "all outputs" if output is None else f"output {output}"
    verdicts = ", ".join(f"{r.key} {r.verdict}" for r in report.references) or "no reference ran"
    fig.suptitle(f"xshap cross-check of {report.model_name} ({which}): {verdicts}")

    _scatter(scatter_ax, mine, refs, output)
    raised = [r.name for r in report.references if r.error is not None]
    if raised:
        scatter_ax.text(
            0.98,
            0.02,
            f"{', '.join(raised)} raised: no values",
            transform=scatter_ax.transAxes,
            ha="right",
            fontsize="small",
            color="gray",
        )
    _gap_panel(gap_ax, report, output)
    _bar_panel(bar_ax, report, mine, refs, output, max_bars)
    return fig


def _scatter(ax, mine: np.ndarray, refs, output) -> None:
    lo, hi = float(mine.min()), float(mine.max())
    for ref in refs:
        theirs = _flat(ref.values, output)
        ax.scatter(mine.ravel(), theirs.ravel(), s=6, alpha=0.5, color=COLORS.get(ref.key), label=ref.name)
        lo, hi = min(lo, float(theirs.min())), max(hi, float(theirs.max()))
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="black", lw=1, ls="--", label="y = x")
    ax.set_xlabel("xshap φ")
    ax.set_ylabel("reference φ")
    ax.set_title("attributions, one point per feature and sample")
    if refs:
        ax.legend(loc="upper left", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no reference ran", transform=ax.transAxes, ha="center")


def _gap_panel(ax, report, output) -> None:
    tolerance = report.tolerance if output is None else report.tolerance[:, [output]]
    samples = np.arange(report.outputs.shape[0])
    for name, gaps in _gaps(report, output).items():
        # a gap of exactly 0 cannot be drawn on a log axis: show it at the bottom of the tolerance scale
        shown = np.maximum(gaps, 1e-3 * float(tolerance.min()))
        ax.plot(samples, shown, marker="o", ms=3, lw=1, color=COLORS.get(name), label=name)
    ax.plot(samples, tolerance.min(axis=1), color="gray", lw=1, ls=":", label="tolerance")
    ax.set_yscale("log")
    ax.set_xlabel("sample")
    ax.set_ylabel("|Σφ − (f(x) − E f)|")
    ax.set_title("completeness gap per sample")
    ax.legend(loc="center right", fontsize="small", framealpha=0.9)


def _bar_panel(ax, report, mine: np.ndarray, refs, output, max_bars: int) -> None:
    means = {"xshap": np.abs(mine).mean(axis=(0, 1))}
    for ref in refs:
        means[ref.key] = np.abs(_flat(ref.values, output)).mean(axis=(0, 1))
    labels = feature_labels(report, means["xshap"].size)
    order = np.argsort(-means["xshap"])[:max_bars]
    width = 0.8 / len(means)
    positions = np.arange(order.size)
    for k, (name, mean) in enumerate(means.items()):
        ax.bar(positions + (k - (len(means) - 1) / 2) * width, mean[order], width, color=COLORS.get(name), label=name)
    ax.set_xticks(positions, [labels[i] for i in order], rotation=90, fontsize="small")
    ax.set_ylabel("mean |φ|")
    shown = "" if order.size == means["xshap"].size else f" (top {order.size} of {means['xshap'].size})"
    ax.set_title(f"mean |φ| per feature{shown}")
    ax.legend(loc="upper right", fontsize="small")


def figure_png(fig, dpi: int = 96) -> bytes:
    """A figure as PNG bytes (for the HTML report)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
