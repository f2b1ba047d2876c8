"""The layer-by-layer view of a converted model: each torch module call -> the torch ops it exported,
the JAX primitives they became, and the DeepLIFT rule each nonlinear primitive gets.

Module reuse is made visible: a module instance called twice shows two calls, each with its own rules
(the per-call-site view that shap's and Captum's module hooks cannot have).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from html import escape

import numpy as np

from xshap.engine.analysis import ALWAYS_LINEAR, module_scope_of
from xshap.engine.rules import lookup
from xshap.engine.rules.revealcancel import find_linear_source

# rule function (module.name) -> what it does, for the summary
RULE_DESCRIPTIONS = {
    "bilinear.product": "product of two input-dependent operands: exact symmetric split",
    "selection.maximum": "max selection: the change credited through the selected entries",
    "selection.minimum": "min selection: the change credited through the selected entries",
    "shapley.binary": "two-operand Shapley split",
    "shapley.divide": "two-operand Shapley split (division)",
    "linear.select": "select: linear in the chosen operand",
    "linear.stop_gradient": "constant (no attribution)",
    "complex.magnitude": "|z| of a complex z as sqrt(re^2 + im^2): exact squares, rescaled sqrt",
}
LINEAR_RULES = {"linear.linear", "linear.indexed", "linear.indexed_update", "linear.convolution"}


@dataclass
class ModuleCall:
    """One call of one module: what it became and which rules it gets."""

    scope: str  # "layer" or "layer@k" (the k-th call, from 0)
    module_path: str
    module_type: str
    call_index: int
    calls_of_module: int  # how many times this module instance is called in the forward pass
    torch_ops: Counter = field(default_factory=Counter)
    jax_primitives: Counter = field(default_factory=Counter)
    rules: Counter = field(default_factory=Counter)  # rule description -> count of primitives/units
    source: str = ""

    @property
    def reused(self) -> bool:
        return self.calls_of_module > 1


@dataclass
class ModelSummary:
    model_name: str
    rules: str
    calls: list[ModuleCall]

    def rows(self) -> list[dict]:
        return [
            {
                "module": c.module_path or "<root>",
                "type": c.module_type.rsplit(".", 1)[-1],
                "call": f"{c.call_index + 1}/{c.calls_of_module}",
                "torch ops": _counts(c.torch_ops),
                "jax primitives": _counts(c.jax_primitives),
                "DeepLIFT rules": _counts(c.rules) or "linear",
                "source": c.source,
            }
            for c in self.calls
        ]

    def __str__(self) -> str:
        lines = [f"{self.model_name}: {len(self.calls)} module call(s), rules={self.rules!r}"]
        reused = sorted({c.module_path for c in self.calls if c.reused})
        if reused:
            lines.append(f"reused module instances (one hook would see several calls): {', '.join(reused)}")
        for row in self.rows():
            lines.append(f"- {row['module']} [{row['type']}] call {row['call']}   {row['source']}")
            lines.append(f"    torch: {row['torch ops']}")
            lines.append(f"    jax:   {row['jax primitives']}")
            lines.append(f"    rules: {row['DeepLIFT rules']}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        keys = ["module", "type", "call", "torch ops", "jax primitives", "DeepLIFT rules", "source"]
        head = "".join(f'<th style="text-align:left">{escape(k)}</th>' for k in keys)
        body = ""
        for call, row in zip(self.calls, self.rows()):
            style = ' style="background:#fef7e0"' if call.reused else ""
            body += f"<tr{style}>" + "".join(f'<td style="text-align:left">{escape(str(row[k]))}</td>' for k in keys)
            body += "</tr>"
        note = (
            "<p>highlighted: a module instance called more than once</p>" if any(c.reused for c in self.calls) else ""
        )
        return f"<p><b>{escape(self.model_name)}</b>, rules={escape(repr(self.rules))}</p><table>" + (
            f"<tr>{head}</tr>{body}</table>{note}"
        )


def _counts(counter: Counter) -> str:
    return ", ".join(f"{name}×{n}" if n > 1 else name for name, n in counter.items())


def _rule_name(primitive: str) -> str | None:
    fn = lookup(primitive)
    return None if fn is None else f"{fn.__module__.rsplit('.', 1)[-1]}.{fn.__name__}"


def summarize(converted, deeplift, rules: str, model_name: str = "model") -> ModelSummary:
    """Group the converted program's equations by module call and name each one's rule."""
    calls: dict[str, ModuleCall] = {}
    per_path: dict[str, set[int]] = {}
    for prov in converted.ops:
        per_path.setdefault(prov.module_path, set()).add(prov.call_index)
    for prov in converted.ops:
        call = calls.get(prov.scope)
        if call is None:
            call = calls[prov.scope] = ModuleCall(
                prov.scope, prov.module_path, prov.module_type, prov.call_index, len(per_path[prov.module_path])
            )
            call.source = prov.source
        call.torch_ops[prov.op] += 1
    scopes = frozenset(calls)
    analysis = deeplift.analysis
    counted_units: set[int] = set()
    for eqn in deeplift.program.eqns:
        scope = module_scope_of(eqn.scope, scopes)
        if scope is not None:
            calls[scope].jax_primitives[eqn.name] += 1
    for eqn in deeplift.program.eqns:
        varying_in = [a for a in eqn.inputs if isinstance(a, int) and a in analysis.varying]
        if not varying_in:
            continue
        unit = analysis.units.get(id(eqn))
        if unit is not None:
            if unit.linear or id(unit) in counted_units:
                continue
            counted_units.add(id(unit))
            # a unit can start in one module (a bias add) and end in the next (the activation): it belongs
            # to the module of its first nonlinear equation
            nonlinear = [e for e in unit.eqns if e.name not in ALWAYS_LINEAR] or unit.eqns
            scope = module_scope_of(nonlinear[0].scope, scopes)
            if scope is None:
                continue
            prims = sorted({e.name for e in nonlinear})
            if unit.module:
                rule = "1-D rescale of the whole module call (shap's nonlinear_1d)"
            elif deeplift.reveal_cancel and find_linear_source(unit.root, deeplift._producers, analysis.varying):
                rule = f"RevealCancel of the elementwise unit [{' '.join(prims)}]"
            else:
                rule = f"rescale of the elementwise unit [{' '.join(prims)}]"
            calls[scope].rules[rule] += 1
            continue
        scope = module_scope_of(eqn.scope, scopes)
        name = _rule_name(eqn.name)
        if scope is None or name is None or name in LINEAR_RULES:
            continue
        if name == "bilinear.product" and len(varying_in) < 2:
            continue  # a product with a constant (a weight) is linear
        calls[scope].rules[RULE_DESCRIPTIONS.get(name, name) + f" [{eqn.name}]"] += 1
    return ModelSummary(model_name, rules, list(calls.values()))


def summary(converted, rules: str = "complete", model_name: str | None = None) -> ModelSummary:
    """``xshap.summary(converters.from_torch(model, x))``: the layer-by-layer view of a converted model, each
    module call with its torch ops, JAX primitives and DeepLIFT rules (DeepLIFT prepared on the converted
    function; the converter itself knows nothing of DeepLIFT)."""
    import jax.numpy as jnp

    from xshap.engine.rulesets import module_scopes
    from xshap.engine.transform import DeepLift

    def fn(params, *rows):
        return jnp.reshape(converted.apply_row(params, *rows), (-1,))

    examples = [np.zeros(shape, dtype=dtype) for shape, dtype in zip(converted.input_shapes, converted.input_dtypes)]
    deeplift = DeepLift(fn, converted.params, examples, module_scopes(rules, converted))
    name = model_name or converted.capture.root_type.rsplit(".", 1)[-1]
    return summarize(converted, deeplift, rules, name)
