"""Side-by-side check of the converted JAX function against the exported torch graph, layer by layer.

Rounding is not a conversion error. torch and XLA sum in different orders, so in float32 every op differs by a
few ulps, and through a deep net (a 50-layer ResNet) those differences grow past the float32 tolerance although
every op is converted right. So where float32 differences exceed it, torch's graph (weights, inputs and the
dtypes it records cast to float64) and the JAX function (under ``jax.enable_x64``) are run again in float64 and
compared per layer at ``FLOAT64_RTOL``: rounding shrinks by eight orders of magnitude there, a wrong conversion
(a different formula) stays as large as it was. The report says which of the two decided.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import jax
import jax.numpy as jnp
import numpy as np
import torch

from converters.arrays import to_device
from converters.graph import GraphFunction, retype
from converters.provenance import Provenance

FLOAT32_RTOL = 1e-5
FLOAT64_RTOL = 1e-9  # float64 rounding through a deep net: ~1e-14; a conversion error: what it was in float32
FLOAT64 = {torch.float32: torch.float64, torch.complex64: torch.complex128}


@dataclass(frozen=True)
class LayerCheck:
    """The largest relative difference over the ops of one call of one module (and, where the float32
    differences were rechecked, in float64)."""

    layer: str
    module_type: str
    call_index: int
    n_ops: int
    max_rel_diff: float
    worst_node: str
    ok: bool
    float64_rel_diff: float | None = None
    float64_worst_node: str = ""


@dataclass
class ValidationReport:
    """Per layer (module path and call), how far the JAX values are from torch's; the first divergent one.

    ``float64_rtol`` is set when the float32 differences exceeded ``rtol`` and were rechecked in float64: the
    layers' ``ok`` (and the report's) then come from the float64 run, see the module docstring and ``decided_by``.
    """

    layers: list[LayerCheck]
    rtol: float
    output_rel_diff: float
    n_rows: int = 0
    notes: list[str] = field(default_factory=list)
    float64_rtol: float | None = None
    output_float64_rel_diff: float | None = None

    @property
    def rechecked(self) -> bool:
        return self.float64_rtol is not None

    @property
    def output_ok(self) -> bool:
        if self.output_rel_diff <= self.rtol:
            return True
        wide = self.output_float64_rel_diff
        return self.rechecked and wide is not None and wide <= self.float64_rtol

    @property
    def ok(self) -> bool:
        return all(layer.ok for layer in self.layers) and self.output_ok

    @property
    def first_divergent(self) -> LayerCheck | None:
        return next((layer for layer in self.layers if not layer.ok), None)

    @property
    def max_rel_diff(self) -> float:
        """The largest float32 difference over every layer and the output."""
        return max([layer.max_rel_diff for layer in self.layers] + [self.output_rel_diff])

    @property
    def max_float64_rel_diff(self) -> float | None:
        if not self.rechecked:
            return None
        diffs = [layer.float64_rel_diff for layer in self.layers if layer.float64_rel_diff is not None]
        return max(diffs + [self.output_float64_rel_diff if self.output_float64_rel_diff is not None else np.inf])

    @property
    def decided_by(self) -> str:
        """Which comparison decided, in words."""
        if not self.rechecked:
            if self.ok:
                return f"float32 within {self.rtol:.0e}"
            return f"float32 differences up to {self.max_rel_diff:.2e} > {self.rtol:.0e}"
        head = f"float32 differences up to {self.max_rel_diff:.2e}"
        if self.ok:
            agreement = f"{self.max_float64_rel_diff:.1e} (<= {self.float64_rtol:.0e})"
            return f"{head} were rounding: float64 agrees to {agreement}"
        bad = self.first_divergent
        where = f" at {bad.layer}" if bad is not None else " at the output"
        diff = bad.float64_rel_diff if bad is not None else self.output_float64_rel_diff
        if diff is None:
            return f"{head}; {where.strip()} is not comparable in float64: the float32 verdict stands"
        return f"{head}; in float64 still {diff:.2e}{where} (> {self.float64_rtol:.0e}): a conversion error"

    def __str__(self) -> str:
        head = f"conversion check on {self.n_rows} row(s), tolerance {self.rtol:.0e} (max |jax - torch| / max |torch|)"
        if self.rechecked:
            head += f", rechecked in float64 at {self.float64_rtol:.0e}"
        f64 = f" {'float64':>13}" if self.rechecked else ""
        rows = [head, f"  {'layer':<32} {'type':<18} {'call':>4} {'ops':>4} {'max rel diff':>13}{f64}"]
        for layer in self.layers:
            mark = "" if layer.ok else "   <-- diverges" if layer is self.first_divergent else "   <--"
            second = ""
            if self.rechecked:
                second = f" {layer.float64_rel_diff:>13.2e}" if layer.float64_rel_diff is not None else f" {'-':>13}"
            rows.append(
                f"  {layer.layer:<32} {layer.module_type.rsplit('.', 1)[-1]:<18} {layer.call_index + 1:>4} "
                f"{layer.n_ops:>4} {layer.max_rel_diff:>13.2e}{second}{mark}"
            )
        output = f"  output: max rel diff {self.output_rel_diff:.2e}"
        if self.rechecked and self.output_float64_rel_diff is not None:
            output += f" (float64 {self.output_float64_rel_diff:.2e})"
        rows.append(f"{output} -> {'OK' if self.ok else 'MISMATCH'}: {self.decided_by}")
        rows += [f"  note: {note}" for note in self.notes]
        return "\n".join(rows)

    def raise_if_failed(self) -> None:
        if self.ok:
            return
        from converters.errors import ConversionError

        bad = self.first_divergent
        if self.rechecked and (bad is None or bad.float64_rel_diff is not None):
            node = bad.float64_worst_node if bad is not None else ""
            diff = bad.float64_rel_diff if bad is not None else self.output_float64_rel_diff
            limit = f"{diff:.2e} > {self.float64_rtol:.0e} in float64 (float32 {self.max_rel_diff:.2e})"
        else:
            node = bad.worst_node if bad is not None else ""
            limit = f"{bad.max_rel_diff if bad else self.output_rel_diff:.2e} > {self.rtol:.0e}"
        where = f"first divergent layer: {bad.layer} ({bad.module_type}), node {node}, " if bad else ""
        raise ConversionError(
            f"the converted JAX function does not reproduce torch's forward: {where}max rel diff {limit}\n{self}"
        )


def relative_difference(mine: np.ndarray, reference: np.ndarray) -> float:
    """max |mine - reference| / max |reference| over finite values (exact match for integers, booleans and
    non-finite entries: equal infinities count as no difference, any other non-finite mismatch as inf)."""
    mine, reference = np.asarray(mine), np.asarray(reference)
    if mine.shape != reference.shape:
        return float("inf")
    if reference.dtype.kind in "biu":
        return 0.0 if np.array_equal(mine, reference) else float("inf")
    if reference.dtype.kind == "c" or mine.dtype.kind == "c":  # complex: the real and imaginary parts as pairs
        mine, reference = mine.astype(np.complex128), reference.astype(np.complex128)
        mine, reference = np.stack([mine.real, mine.imag], -1), np.stack([reference.real, reference.imag], -1)
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


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A tensor's values as numpy, with torch's lazy conjugation / negation bits resolved."""
    return tensor.detach().cpu().resolve_conj().resolve_neg().numpy()


class _Recorder(torch.fx.Interpreter):
    def __init__(self, module, dtypes: Mapping | None = None):
        super().__init__(module)
        self.values: dict[str, object] = {}
        self.dtypes = dtypes

    def call_function(self, target, args, kwargs):
        if self.dtypes:
            args, kwargs = retype(args, self.dtypes), retype(kwargs, self.dtypes)
        return super().call_function(target, args, kwargs)

    def run_node(self, n):
        value = super().run_node(n)
        if n.op == "call_function":
            self.values[n.name] = value
        return value


def torch_node_values(
    program, weights: list[torch.Tensor], inputs: list[torch.Tensor], dtypes: Mapping | None = None
) -> tuple[dict, object]:
    """Run the exported graph in torch, recording every node's value; returns (values, outputs). ``dtypes``:
    torch dtype -> torch dtype for the dtype arguments the graph records (the float64 recheck)."""
    recorder = _Recorder(program.graph_module, dtypes)
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
        expected = np.stack([to_numpy(t) for t in reference])
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


def side_by_side(
    program,
    weights: list[torch.Tensor],
    graph: GraphFunction,
    params: dict,
    provenance: dict[str, Provenance],
    tensors: list[torch.Tensor],
    rtol: float,
    dtypes: Mapping | None = None,
    batch_size: int = 1,
) -> tuple[list[LayerCheck], float]:
    """Run the exported torch graph row by row and the JAX graph over the same rows (vmapped, each row alone, as
    xshap runs it); compare every node. A graph of a static batch of ``batch_size`` rows gets each row in every
    slot, and the first slot is compared. Returns the per-layer checks and the output's relative difference."""
    k = batch_size
    torch_values, torch_outputs = [], []
    for i in range(int(tensors[0].shape[0])):
        batch = [t[i : i + 1].expand(k, *t.shape[1:]) for t in tensors]
        values, out = torch_node_values(program, weights, batch, dtypes)
        for name, v in list(values.items()):  # compare like with like: the first row of values with a batch axis
            values[name] = leading_row(v, k) if isinstance(v, torch.Tensor) else None
        torch_values.append(values)
        torch_outputs.append((out[0] if isinstance(out, (tuple, list)) else out)[:1])

    def traced(*rows):
        record: dict = {}
        out = graph(params, *(fill_batch(r, k) for r in rows), record=record, dtypes=dtypes)
        firsts = {name: leading_row(v, k) if isinstance(v, jax.Array) else None for name, v in record.items()}
        return {name: v for name, v in firsts.items() if v is not None}, out[0]

    rows = tuple(to_device(to_numpy(t)) for t in tensors)
    try:  # one compiled program: run eagerly, every op of the graph would compile a program of its own
        jax_values, jax_output = jax.jit(jax.vmap(traced))(*rows)
    except jax.errors.JAXTypeError:  # an op that needs concrete values: the same check, op by op
        jax_values, jax_output = jax.vmap(traced)(*rows)
    layers = compare_layers(provenance, torch_values, jax_values, rtol)
    expected = np.concatenate([to_numpy(o) for o in torch_outputs])
    return layers, relative_difference(np.asarray(jax_output), expected)


def fill_batch(row, batch_size: int):
    """A batch of ``batch_size`` copies of one row (without its batch axis)."""
    return row[None] if batch_size == 1 else jnp.broadcast_to(row[None], (batch_size, *row.shape))


def leading_row(value, batch_size: int):
    """A graph value's first row if its leading axis is the batch axis, else None."""
    if getattr(value, "ndim", 0) > 0 and value.shape[0] == batch_size:
        return value[0]
    return None


def _widened(tensor: torch.Tensor) -> torch.Tensor:
    """A float32 (complex64) tensor as float64 (complex128); any other tensor as it is."""
    return tensor.to(FLOAT64[tensor.dtype]) if tensor.dtype in FLOAT64 else tensor


def needs_float64_recheck(report: ValidationReport, tensors: list[torch.Tensor], weights: list[torch.Tensor]) -> bool:
    """A failed float32 check of a float32 model: its differences may be rounding."""
    floats = [t.dtype for t in [*tensors, *weights] if t.is_floating_point() or t.is_complex()]
    return not report.ok and bool(floats) and all(dtype in FLOAT64 for dtype in floats)


def recheck_in_float64(
    report: ValidationReport,
    program,
    weights: dict[str, torch.Tensor],
    graph: GraphFunction,
    provenance: dict[str, Provenance],
    tensors: list[torch.Tensor],
    rtol: float = FLOAT64_RTOL,
    batch_size: int = 1,
) -> ValidationReport:
    """``report`` with every layer's float64 difference added and its verdict taken from float64 (module
    docstring). If the float64 run cannot be made, the float32 verdict stands and a note says why."""
    wide = {name: _widened(w) for name, w in weights.items()}
    try:
        with jax.enable_x64(True):
            params = {name: to_device(to_numpy(wide[name])) for name in graph.param_names}
            layers64, output64 = side_by_side(
                program,
                list(wide.values()),
                graph,
                params,
                provenance,
                [_widened(t) for t in tensors],
                rtol,
                FLOAT64,
                batch_size,
            )
    except Exception as error:  # the recheck refines a failed check; it must not hide it
        note = f"the float64 recheck could not run ({type(error).__name__}: {error}); the float32 verdict stands"
        return replace(report, notes=[*report.notes, note])
    by_key = {(layer.layer, layer.call_index): layer for layer in layers64}
    layers = []
    for layer in report.layers:
        wide_layer = by_key.get((layer.layer, layer.call_index))
        if wide_layer is None:  # not comparable in float64: the float32 verdict stands
            layers.append(layer)
            continue
        ok = layer.ok or wide_layer.ok
        layers.append(
            replace(layer, ok=ok, float64_rel_diff=wide_layer.max_rel_diff, float64_worst_node=wide_layer.worst_node)
        )
    return replace(report, layers=layers, float64_rtol=rtol, output_float64_rel_diff=output64)
