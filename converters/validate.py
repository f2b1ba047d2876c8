"""Side-by-side check of the converted JAX function against the exported torch graph, layer by layer."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from converters.provenance import Provenance


@dataclass(frozen=True)
class LayerCheck:
    """The largest relative difference over the ops of one call of one module."""

    layer: str
    module_type: str
    call_index: int
    n_ops: int
    max_rel_diff: float
    worst_node: str
    ok: bool


@dataclass
class ValidationReport:
    """Per layer (module path and call), how far the JAX values are from torch's; the first divergent one."""

    layers: list[LayerCheck]
    rtol: float
    output_rel_diff: float
    n_rows: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(layer.ok for layer in self.layers) and self.output_rel_diff <= self.rtol

    @property
    def first_divergent(self) -> LayerCheck | None:
        return next((layer for layer in self.layers if not layer.ok), None)

    def __str__(self) -> str:
        head = f"conversion check on {self.n_rows} row(s), tolerance {self.rtol:.0e} (max |jax - torch| / max |torch|)"
        rows = [head, f"  {'layer':<32} {'type':<18} {'call':>4} {'ops':>4} {'max rel diff':>13}"]
        for layer in self.layers:
            mark = "" if layer.ok else "   <-- diverges" if layer is self.first_divergent else "   <--"
            rows.append(
                f"  {layer.layer:<32} {layer.module_type.rsplit('.', 1)[-1]:<18} {layer.call_index + 1:>4} "
                f"{layer.n_ops:>4} {layer.max_rel_diff:>13.2e}{mark}"
            )
        rows.append(f"  output: max rel diff {self.output_rel_diff:.2e} -> {'OK' if self.ok else 'MISMATCH'}")
        return "\n".join(rows)

    def raise_if_failed(self) -> None:
        if self.ok:
            return
        from converters.errors import ConversionError

        bad = self.first_divergent
        where = f"first divergent layer: {bad.layer} ({bad.module_type}), node {bad.worst_node}, " if bad else ""
        raise ConversionError(
            f"the converted JAX function does not reproduce torch's forward: {where}"
            f"max rel diff {bad.max_rel_diff if bad else self.output_rel_diff:.2e} > {self.rtol:.0e}\n{self}"
        )


def relative_difference(mine: np.ndarray, reference: np.ndarray) -> float:
    """max |mine - reference| / max |reference| over finite values (exact match for integers, booleans and
    non-finite entries: equal infinities count as no difference, any other non-finite mismatch as inf)."""
    mine, reference = np.asarray(mine), np.asarray(reference)
    if mine.shape != reference.shape:
        return float("inf")
    if reference.dtype.kind in "biu":
        return 0.0 if np.array_equal(mine, reference) else float("inf")
    mine, reference = mine.astype(np.float64), reference.astype(np.float64)
    finite = np.isfinite(mine) & np.isfinite(reference)
    same_nonfinite = (mine == reference) | (np.isnan(mine) & np.isnan(reference))
    if np.any(~finite & ~same_nonfinite):
        return float("inf")
    mine, reference = mine[finite], reference[finite]
    scale = max(float(np.max(np.abs(reference), initial=0.0)), float(np.max(np.abs(mine), initial=0.0)))
    if scale == 0.0:
        return 0.0
    return float(np.max(np.abs(mine - reference), initial=0.0)) / scale


class _Recorder(torch.fx.Interpreter):
    def __init__(self, module):
        super().__init__(module)
        self.values: dict[str, object] = {}

    def run_node(self, n):
        value = super().run_node(n)
        if n.op == "call_function":
            self.values[n.name] = value
        return value


def torch_node_values(program, weights: list[torch.Tensor], inputs: list[torch.Tensor]) -> tuple[dict, object]:
    """Run the exported graph in torch, recording every node's value; returns (values, outputs)."""
    recorder = _Recorder(program.graph_module)
    with torch.no_grad():
        outputs = recorder.run(*weights, *inputs)
    return recorder.values, outputs


def compare_layers(
    provenance: dict[str, Provenance], torch_values: list[dict], jax_values: dict, rtol: float
) -> list[LayerCheck]:
    """Group node differences by (module path, call) in graph order."""
    groups: dict[tuple[str, int], list[tuple[str, float]]] = {}
    first: dict[tuple[str, int], Provenance] = {}
    for name, prov in provenance.items():
        reference = [values.get(name) for values in torch_values]
        if not reference or not isinstance(reference[0], torch.Tensor) or name not in jax_values:
            continue
        expected = np.stack([t.detach().cpu().numpy() for t in reference])
        diff = relative_difference(np.asarray(jax_values[name]), expected)
        key = (prov.module_path, prov.call_index)
        groups.setdefault(key, []).append((name, diff))
        first.setdefault(key, prov)
    checks = []
    for key, diffs in groups.items():
        worst_node, worst = max(diffs, key=lambda item: item[1])
        prov = first[key]
        checks.append(
            LayerCheck(prov.layer, prov.module_type, prov.call_index, len(diffs), worst, worst_node, worst <= rtol)
        )
    return checks
