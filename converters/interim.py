"""Cut a converted graph at the input of one module: ``head`` computes that input from the model's
inputs, ``tail`` computes the output from it (shap's interim-layer explanations, ``(model, layer)``).

The cut must separate the inputs from the output: if some path from the model's inputs reaches the output
without passing through the layer's input (a residual connection around the layer, a second input), the
layer's input alone does not determine the output and an attribution to it would not be complete. That is
refused, naming the op that bypasses the layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from converters.errors import ConversionError
from converters.graph import GraphFunction, _Ref, _resolve


def _refs(value) -> list[str]:
    """Names of the nodes a recorded argument refers to."""
    if isinstance(value, _Ref):
        return [value.name]
    if isinstance(value, (list, tuple)):
        return [name for v in value for name in _refs(v)]
    if isinstance(value, dict):
        return [name for v in value.values() for name in _refs(v)]
    return []


def resolve_layer(model: torch.nn.Module, layer) -> str:
    """The module path of ``layer``: a submodule of ``model`` (by object) or its dotted path."""
    paths = {id(m): name for name, m in model.named_modules(remove_duplicate=False)}
    if isinstance(layer, str):
        names = {name for name, _ in model.named_modules(remove_duplicate=False)}
        if layer not in names:
            close = sorted(n for n in names if n and (layer in n or n in layer))[:5]
            raise ConversionError(
                f"the model has no submodule {layer!r}" + (f" (did you mean {close}?)" if close else "")
            )
        return layer
    if isinstance(layer, torch.nn.Module):
        if id(layer) not in paths:
            raise ConversionError(f"the {type(layer).__name__} passed as layer is not a submodule of the model")
        path = paths[id(layer)]
        if path == "":
            raise ConversionError("the layer is the model itself: explain the model's input instead")
        return path
    raise ConversionError(f"layer must be a submodule or its path string, got {type(layer).__name__}")


@dataclass
class Cut:
    """The graph split at the input of one module call."""

    layer: str
    nodes: list[str]  # the layer's input values, as graph nodes (or input placeholders)
    graph: GraphFunction
    _head_steps: list
    _tail_steps: list

    def head(self, params: dict, *inputs):
        """The layer's input values (batch of one, as exported) from the model's inputs."""
        env = {name: params[name] for name in self.graph.param_names}
        env.update(zip(self.graph.input_names, inputs))
        for step in self._head_steps:
            env[step.name] = step.impl(*_resolve(step.args, env), **_resolve(step.kwargs, env))
        return tuple(env[name] for name in self.nodes)

    def tail(self, params: dict, *layer_inputs):
        """The model's output from the layer's input values."""
        import jax

        env = {name: params[name] for name in self.graph.param_names}
        env.update(zip(self.nodes, layer_inputs))
        for step in self._tail_steps:
            with jax.named_scope(step.provenance.scope):
                env[step.name] = step.impl(*_resolve(step.args, env), **_resolve(step.kwargs, env))
        outputs = _resolve(self.graph.output_refs, env)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


def cut_at_layer(graph: GraphFunction, provenance: dict, layer: str) -> Cut:
    """Split ``graph`` at the inputs of the first call of the module at path ``layer``."""
    steps = graph.exported_steps  # one per node: a folded convolution's output may be the layer's input
    inside = [s for s in steps if _within(s.provenance.module_path, layer) and s.provenance.call_index == 0]
    if not inside:
        raise ConversionError(f"module {layer!r} is never called in the exported graph (it computes nothing here)")
    inside_names = {s.name for s in inside}
    produced = {s.name for s in steps}
    nodes: list[str] = []
    for step in inside:
        for name in _refs(step.args) + _refs(step.kwargs):
            external = name not in inside_names and (name in produced or name in graph.input_names)
            if external and name not in nodes and name not in graph.param_names:
                nodes.append(name)
    if not nodes:
        raise ConversionError(f"module {layer!r} takes no input computed from the model's inputs")

    # which steps depend on the model's inputs other than through the cut. A model input that IS one of the
    # layer's inputs (the layer is the first to read it) is the cut itself: the head is the identity there.
    through_x = set(graph.input_names) - set(nodes)
    for step in steps:
        if step.name in nodes:
            continue
        if any(name in through_x for name in _refs(step.args) + _refs(step.kwargs)):
            through_x.add(step.name)
    needed: set[str] = set()
    frontier = _refs(graph.output_refs)
    by_name = {s.name: s for s in steps}
    while frontier:
        name = frontier.pop()
        if name in needed or name in nodes:
            continue
        needed.add(name)
        if name in by_name:
            frontier.extend(_refs(by_name[name].args) + _refs(by_name[name].kwargs))
    bypass = [name for name in needed if name in through_x]
    if bypass:
        first = next((by_name[n] for n in (s.name for s in steps) if n in bypass and n in by_name), None)
        where = first.provenance.describe() if first is not None else "a model input used directly by the output"
        raise ConversionError(
            f"the input of {layer!r} does not determine the output: {len(bypass)} op(s) reach the output from the "
            f"model's inputs without passing through it, first {first.name if first else bypass[0]} in {where} "
            "(a residual connection or another input around the layer). Choose a layer every path goes through."
        )
    last = max(steps.index(by_name[n]) for n in nodes if n in by_name) if any(n in by_name for n in nodes) else -1
    head_steps = steps[: last + 1]
    tail_steps = [s for s in steps if s.name in needed]
    return Cut(layer, nodes, graph, head_steps, tail_steps)


def _within(path: str, layer: str) -> bool:
    return path == layer or path.startswith(layer + ".")
