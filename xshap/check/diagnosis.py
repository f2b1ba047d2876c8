"""What crosscheck does beyond naming culprits: explain a reference's error, prove the culprits by ablation, and,
where no culprit accounts for a reference's gap, find the layer where its attributions stop adding up.

- Known reference errors: a table of the errors shap and Captum raise on models they cannot handle, each with
  its cause and its fix, matched by the error's text (and, where the text is generic, by what the model shows).
- Ablation: where a culprit's fix can be applied to the torch model automatically (a reused instance -> one deep
  copy per call; an in-place module -> out of place), the reference is run again on a fixed deep copy (the
  user's model is never touched), and the report says how much of the reference's gap the culprits explain.
- Per-layer completeness: the reference's own attributions to the input of each leaf module (shap's interim
  ``DeepExplainer((model, layer))``, Captum's ``LayerDeepLiftShap(attribute_to_layer_input=True)``), in forward
  order, from torch's forward hooks on a copy of the model: where they add up after a layer and not before it,
  the error is in between.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

import numpy as np

from xshap.check.culprits import INPLACE, REUSED, RULE_CHOICE, Culprit


# -- known reference errors -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KnownError:
    """One error a reference raises for a known reason."""

    reference: str  # "shap", "captum"
    pattern: str  # a regular expression searched in "Type: message"
    cause: str
    fix: str
    culprit_kind: str = ""  # the culprit kind that is the cause (its culprits are named), if any
    condition: str = ""  # a fact about the model the cause also needs: "output_1d"


KNOWN_ERRORS: tuple[KnownError, ...] = (
    KnownError(
        "shap",
        r"is a view and is being modified inplace",
        "an in-place module (inplace=True): shap's backward hooks make each module's output a view, and the "
        "in-place module overwrites it",
        "construct the module out of place (e.g. nn.ReLU() instead of nn.ReLU(inplace=True)); the function is the same",
        culprit_kind=INPLACE,
    ),
    KnownError(
        "shap",
        r"IndexError: tuple index out of range",
        "the model returns shape (N,), one value per row without an output axis, and shap reads outputs.shape[1]",
        "return shape (N, 1) (e.g. `return out.unsqueeze(-1)` instead of `out.squeeze(-1)`), or wrap the model in "
        "a module that does",
        condition="output_1d",
    ),
    KnownError(
        "captum",
        r"was detected that does not contain some of the input/output attributes",
        "a module instance called more than once: Captum stores one input and output per module, and a later "
        "call finds them gone",
        "give every call its own instance (copy.deepcopy of the module per call site)",
        culprit_kind=REUSED,
    ),
)


# the culprit kinds that are the known cause of a reference's error: kept for a reference that raised
ERROR_CAUSING_KINDS = frozenset(e.culprit_kind for e in KNOWN_ERRORS if e.culprit_kind)


@dataclass
class ErrorExplanation:
    cause: str
    fix: str
    culprits: list[str] = field(default_factory=list)  # the culprits that cause it (module paths)

    def describe(self) -> str:
        named = f" ({', '.join(f'`{c}`' for c in self.culprits)})" if self.culprits else ""
        return f"cause: {self.cause}{named}; fix: {self.fix}"


UNKNOWN_ERROR = ErrorExplanation(
    "not in xshap's table of known reference errors: the culprits below are not known to cause it",
    "none known",
)


def explain_error(reference: str, error: str, culprits: list[Culprit], facts: dict) -> ErrorExplanation:
    """The cause and fix of a reference's error, from the table; ``UNKNOWN_ERROR`` if none matches."""
    for known in KNOWN_ERRORS:
        if known.reference != reference or not re.search(known.pattern, error):
            continue
        if known.condition and not facts.get(known.condition, False):
            continue
        named = [c.qualified_name for c in culprits if c.kind == known.culprit_kind and reference in c.references]
        if known.culprit_kind and not named:
            continue  # the cause the table names is not in this model
        return ErrorExplanation(known.cause, known.fix, named)
    return UNKNOWN_ERROR


def model_facts(model, x_arrays: list[np.ndarray]) -> dict:
    """What the known errors' conditions need to know about the model (one torch forward over two rows)."""
    import torch

    try:
        with torch.no_grad():
            out = copy.deepcopy(model).eval()(*[torch.from_numpy(np.ascontiguousarray(x[:2])) for x in x_arrays])
    except Exception:  # facts are a refinement: none if the forward cannot run here
        return {}
    return {"output_1d": getattr(out, "ndim", 0) == 1}


# -- ablation -------------------------------------------------------------------------------------------------
@dataclass
class Ablation:
    """The reference run again on a deep copy of the model with the fixable culprits fixed."""

    applied: list[str]  # what was changed, one line each
    unfixable: list[str]  # culprits affecting the reference whose fix cannot be applied automatically
    error: str | None  # the error the reference raised on the fixed copy, if any
    max_gap_before: float | None  # None: the reference raised before the fix
    max_gap_after: float | None
    complete_after: bool
    explained: float | None  # the fraction of the reference's gap the fixed culprits explain (0..1)
    verdict_after: str = ""

    def describe(self, reference: str) -> str:
        fixed = "; ".join(self.applied)
        if self.error is not None:
            return f"ablation ({fixed}): {reference} still raises on the fixed copy: {self.error}"
        if self.max_gap_before is None:
            head = f"ablation ({fixed}): {reference} raised before; on the fixed copy it runs: {self.verdict_after}"
        else:
            head = (
                f"ablation ({fixed}): culprits explain {100 * self.explained:.0f} % of {reference}'s gap "
                f"(max |gap| {self.max_gap_before:.3g} -> {self.max_gap_after:.3g} on the fixed copy, "
                f"{self.verdict_after})"
            )
        if self.unfixable:
            head += f"; not applied automatically: {', '.join(self.unfixable)}"
        return head


class PerCall:
    """Marker base of the wrapper that gives every call of one module path its own deep copy."""


def _per_call_module(module, n_calls: int):
    import torch

    class _PerCall(torch.nn.Module, PerCall):
        """Calls copies[0], copies[1], ... in turn; the count restarts at every forward of the root model."""

        def __init__(self):
            super().__init__()
            self.copies = torch.nn.ModuleList([copy.deepcopy(module) for _ in range(n_calls)])
            self.count = 0

        def forward(self, *args, **kwargs):
            chosen = self.copies[self.count % len(self.copies)]
            self.count += 1
            return chosen(*args, **kwargs)

    return _PerCall()


_CALL = re.compile(r"^(?P<path>.*) \(call #(?P<k>\d+)\)$")


def fixed_copy(model, culprits: list[Culprit]):
    """A deep copy of ``model`` with the auto-fixable culprits fixed, and one line per change made."""
    fixed = copy.deepcopy(model)
    applied: list[str] = []
    wrappers = []
    for culprit in culprits:
        if culprit.kind == INPLACE:
            fixed.get_submodule(culprit.module_path).inplace = False
            applied.append(f"`{culprit.module_path}` out of place")
        elif culprit.kind == REUSED:
            counts: dict[str, int] = {}
            for call in culprit.calls:
                match = _CALL.match(call)
                path, k = (match["path"], int(match["k"])) if match else (call, 1)
                path = "" if path == "<root>" else path
                counts[path] = max(counts.get(path, 0), k)
            for path, n in counts.items():
                parent_path, _, name = path.rpartition(".")
                parent = fixed.get_submodule(parent_path) if parent_path else fixed
                original = parent._modules[name]
                replacement = _per_call_module(original, n) if n > 1 else copy.deepcopy(original)
                parent._modules[name] = replacement
                if n > 1:
                    wrappers.append(replacement)
            applied.append(f"`{culprit.module_path}` deep-copied for each of its {len(culprit.calls)} calls")
    if wrappers:

        def restart(_module, _inputs):
            for wrapper in wrappers:
                wrapper.count = 0

        fixed.register_forward_pre_hook(restart)
    return fixed, applied


def ablate(reference_name, run, model, culprits, comparison, compare, tolerance) -> Ablation | None:
    """Run the reference again on a fixed copy of the model; None when no culprit of it can be fixed automatically.

    ``run(model)``: the reference on the same data; ``compare(result)``: its comparison with xshap;
    ``tolerance(values)``: the allowed gap per (sample, output) of the reference's values."""
    mine = [c for c in culprits if reference_name in c.references and c.kind != RULE_CHOICE]
    fixable = [c for c in mine if c.auto_fixable]
    if not fixable:
        return None
    unfixable = [f"{c.kind} `{c.qualified_name}`" for c in mine if not c.auto_fixable]
    try:
        model_fixed, applied = fixed_copy(model, fixable)
    except Exception as error:  # an ablation is evidence; if the copy cannot be fixed, say so and go on
        return Ablation(
            [f"could not fix the copy: {type(error).__name__}: {error}"], unfixable, None, None, None, False, None
        )
    result = run(model_fixed)
    before = None if comparison.gaps is None else float(np.max(np.abs(comparison.gaps)))
    if result.error is not None:
        return Ablation(applied, unfixable, result.error, before, None, False, 0.0 if before else None)
    after = compare(result)
    excess = np.maximum(np.abs(after.gaps) - tolerance(result.values), 0.0)
    complete = bool(np.all(excess == 0))
    explained = None
    if before:
        explained = float(np.clip(1.0 - np.max(excess) / before, 0.0, 1.0))
    return Ablation(
        applied, unfixable, None, before, float(np.max(np.abs(after.gaps))), complete, explained, after.verdict
    )


# -- per-layer completeness -----------------------------------------------------------------------------------
@dataclass
class LayerGap:
    layer: str  # module path whose input the attributions are to
    module_type: str
    max_gap: float | None  # max |sum(attributions to the layer's input) - (f(x) - E f)|; None if it raised
    complete: bool
    error: str | None = None


@dataclass
class LayerTrace:
    """A reference's completeness at the input of each leaf module, in forward order."""

    layers: list[LayerGap]
    first_broken: str | None  # from the output back: the first layer whose input's attributions do not add up
    last_complete: str | None  # the layer after it whose input's attributions do add up (None: the output)

    def describe(self, reference: str) -> str:
        lines = [
            f"{reference}: unexplained — no culprit in the graph accounts for its gap. Its attributions to the input "
            "of each layer (torch hooks on a copy of the model), in forward order:"
        ]
        for gap in self.layers:
            value = "raised" if gap.max_gap is None else f"{gap.max_gap:.3g}"
            mark = "adds up" if gap.complete else ("raised: " + (gap.error or "") if gap.error else "does NOT add up")
            lines.append(f"    {gap.layer:<32} [{gap.module_type}] max |gap| {value:>10}  {mark}")
        if not self.layers:
            lines.append("  (no leaf module called once with one tensor: nothing to trace)")
        elif self.first_broken is None:
            lines.append("  they add up at every layer's input traced: the error is not localised by these cuts")
        else:
            after = f"`{self.last_complete}`" if self.last_complete else "the output"
            lines.append(
                f"  they first stop adding up at the input of `{self.first_broken}` (going back from the output; they "
                f"add up at the input of {after}): the cause lies between the two (a layer on one branch of a "
                "residual or parallel block is not a cut of the graph: its input's attributions need not add up)"
            )
        return "\n".join(lines)


MAX_TRACED_LAYERS = 16


def leaf_calls(model, x_arrays: list[np.ndarray]) -> list[tuple[str, str, int]]:
    """(path, type, input ndim) of the leaf modules called once with one tensor, in forward order (hooks on a copy)."""
    import torch

    probe = copy.deepcopy(model).eval()
    seen: dict[str, list] = {}
    handles = []
    for path, module in probe.named_modules():
        if path and not list(module.children()):

            def hook(mod, inputs, _path=path):
                entry = seen.setdefault(_path, [type(mod).__name__, 0, None])
                entry[1] += 1
                tensors = [a for a in inputs if isinstance(a, torch.Tensor)]
                entry[2] = tensors[0].ndim if len(tensors) == 1 and len(inputs) == 1 else None

            handles.append(module.register_forward_pre_hook(hook))
    with torch.no_grad():
        probe(*[torch.from_numpy(np.ascontiguousarray(x[:2])) for x in x_arrays])
    for handle in handles:
        handle.remove()
    return [(path, mtype, ndim) for path, (mtype, count, ndim) in seen.items() if count == 1 and ndim is not None]


def trace_layers(run_at_layer, model, x_arrays, attribution, tolerance) -> LayerTrace:
    """The reference's completeness at each leaf module's input. ``run_at_layer(path, ndim)`` -> ReferenceResult;
    ``tolerance(values)``: the allowed gap per (sample, output)."""
    layers = leaf_calls(model, x_arrays)
    if len(layers) > MAX_TRACED_LAYERS:  # keep the last ones: the trace walks back from the output
        layers = layers[-MAX_TRACED_LAYERS:]
    n, n_out = attribution.outputs.shape
    delta = attribution.outputs - attribution.expected_value
    gaps = []
    for path, mtype, ndim in layers:
        result = run_at_layer(path, ndim)
        if result.error is not None:
            gaps.append(LayerGap(path, mtype, None, False, result.error))
            continue
        total = sum(v.reshape(n, n_out, -1).sum(axis=2) for v in result.values)
        gap = np.abs(total - delta)
        gaps.append(LayerGap(path, mtype, float(gap.max()), bool(np.all(gap <= tolerance(result.values)))))
    first_broken = last_complete = None
    for index in range(len(gaps) - 1, -1, -1):
        if gaps[index].max_gap is not None and not gaps[index].complete:
            first_broken = gaps[index].layer
            later = [g for g in gaps[index + 1 :] if g.complete]
            last_complete = later[0].layer if later else None
            break
    return LayerTrace(gaps, first_broken, last_complete)
