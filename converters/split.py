"""Split a converted graph at one call of a module, holding what bypasses it (Captum's layer semantics).

``split_at_module`` cuts the graph at the output (or the input) of the k-th call of the module at a path:
- ``values``: the layer's values there (the tensors the module call returns, or those it takes);
- ``tail``: every op downstream of those values that the output needs;
- ``held``: every other value the tail reads (attention masks and position embeddings computed from the ids,
  other inputs, a residual that goes around the layer): they are computed by ``head`` from the row's own
  inputs and enter the tail as constants, so an attribution to the layer is an attribution with everything
  else held at the explained row's value, as Captum's layer methods hold ``additional_forward_args``.

Unlike ``converters.interim.cut_at_layer`` (shap's ``(model, layer)``, which refuses any path around the layer:
there the layer's input alone must determine the output), nothing is refused for bypassing the layer; what
is held is listed (``Split.held_names``) so that a caller can say what the attributions leave out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from converters.errors import ConversionError
from converters.graph import GraphFunction, _resolve
from converters.interim import _refs

OUTPUT, INPUT = "output", "input"
_CALL = re.compile(r"@(\d+)$")


@dataclass
class Split:
    """The graph split at one module call: ``head`` gives the layer's values and the held values from the
    model's inputs, ``tail`` the output from them (batch-of-one shapes, as exported)."""

    layer: str
    side: str  # "output" or "input"
    call: int
    calls: int  # how many times the module is called in the graph
    value_names: list[str]
    held_names: list[str]
    graph: GraphFunction
    value_shapes: list[tuple[int, ...]] = field(default_factory=list)  # with the batch-of-one axis
    value_dtypes: list = field(default_factory=list)  # numpy dtypes
    unused: bool = False  # none of the layer's values reaches the output (its attributions are zero)
    _head_steps: list = field(default_factory=list, repr=False)
    _tail_steps: list = field(default_factory=list, repr=False)

    def head(self, params: dict, *inputs) -> tuple[tuple, tuple]:
        """(layer values, held values) from the model's inputs."""
        env = {name: params[name] for name in self.graph.param_names}
        env.update(zip(self.graph.input_names, inputs))
        for step in self._head_steps:
            env[step.name] = step.impl(*_resolve(step.args, env), **_resolve(step.kwargs, env))
        import jax.numpy as jnp

        values = tuple(  # a value the output does not need was not converted: it contributes nothing
            env[name] if name in env else jnp.zeros(shape, dtype)
            for name, shape, dtype in zip(self.value_names, self.value_shapes, self.value_dtypes)
        )
        return values, tuple(env[name] for name in self.held_names)

    def tail(self, params: dict, held: tuple, *values):
        """The model's output from the layer's values, the held values as given."""
        import jax

        env = {name: params[name] for name in self.graph.param_names}
        env.update(zip(self.held_names, held))
        env.update(zip(self.value_names, values))
        for step in self._tail_steps:
            with jax.named_scope(step.provenance.scope):
                env[step.name] = step.impl(*_resolve(step.args, env), **_resolve(step.kwargs, env))
        outputs = _resolve(self.graph.output_refs, env)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


class MarkedModel(torch.nn.Module):
    """``model`` with one module's values marked, so that a cut can find them in any module.

    While it runs, a pre-hook and a hook on ``layer`` pass the module's tensor inputs and outputs through an
    identity op (``x + 0``), which torch.export records inside the module call: a module that emits no op of its
    own (an identity, an input wrapper) has ops then. The marked outputs (not the inputs) are also returned after
    the model's own output, so that the export keeps them when the model never uses the module's result (its
    attributions are then zero, not an error). The hooks only add zeros: every value the model computes is unchanged.
    ``output``: which output of a model returning a dict / ``ModelOutput`` / tuple is the first one returned.
    """

    def __init__(self, model: torch.nn.Module, layer: torch.nn.Module, output=None):
        super().__init__()
        self.model = model
        self._layer = [layer]  # not a submodule of its own: it is one of the model's
        self._output = output

    def forward(self, *args):
        marked: list = []

        def mark(values, keep: bool):
            items = values if isinstance(values, tuple) else (values,)
            out = tuple(v + 0 if isinstance(v, torch.Tensor) and v.is_floating_point() else v for v in items)
            if keep:
                marked.extend(v for v in out if isinstance(v, torch.Tensor))
            return out if isinstance(values, tuple) else out[0]

        layer = self._layer[0]
        handles = [
            layer.register_forward_pre_hook(lambda _module, inputs: mark(tuple(inputs), keep=False)),
            layer.register_forward_hook(lambda _module, _inputs, output: mark(output, keep=True)),
        ]
        try:
            out = self.model(*args)
        finally:
            for handle in handles:
                handle.remove()
        return (pick_output(out, self._output), *marked)


def pick_output(out, output=None):
    """The tensor ``output`` names in what a model returned (by default: the tensor, or ``logits``)."""
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "keys"):
        key, keys = output if output is not None else "logits", list(out.keys())
        if key not in keys:
            raise ConversionError(f"the model returns keys {keys}; choose the output with output=<key>")
        return out[key]
    if isinstance(out, (tuple, list)) and output is not None and str(output).isdigit():
        return out[int(output)]
    raise ConversionError(f"the model returns a {type(out).__name__}; choose the output with output=<key or position>")


def module_calls(program, layer) -> dict[str, int]:
    """Node name -> which call of the module at ``layer`` emitted it, for every node inside that module (its
    submodules included), read from the nodes' module stacks. ``layer``: a path, or every path of one module
    object (a module registered twice, as T5's shared embeddings, is called under either)."""
    paths = {layer} if isinstance(layer, str) else set(layer)
    calls: dict[str, int] = {}
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        for key, (path, _type) in (node.meta.get("nn_module_stack") or {}).items():
            if _clean(path) in paths:
                match = _CALL.search(key)
                calls[node.name] = int(match.group(1)) if match else 0
                break
    return calls


def _clean(path: str) -> str:
    """A module stack's path as ``named_modules`` spells it ("layers.0", not "layers[0]" or "L['self'].layers")."""
    path = re.sub(r"^L\['self'\]\.?", "", path)
    return re.sub(r"\[(\d+)\]", r".\1", path).replace("['", ".").replace("']", "").strip(".")


def split_at_module(graph: GraphFunction, program, layer, side: str = OUTPUT, call: int | None = None) -> Split:
    """Split ``graph`` at the ``side`` ("output" or "input") of call ``call`` of the module at ``layer``.

    ``program``: the exported program the graph was converted from (its module stacks say which call each op
    belongs to, and the shapes of values the output does not need). ``call=None`` needs a module called once.
    ``layer``: the module's path, or all its paths (a list; the first names it in messages).
    """
    paths = [layer] if isinstance(layer, str) else list(layer)
    layer = paths[0]
    if side not in (OUTPUT, INPUT):
        raise ConversionError(f"side must be 'output' or 'input', got {side!r}")
    nodes = {node.name: node for node in program.graph.nodes}
    calls = module_calls(program, paths)
    indexes = sorted(set(calls.values()))
    if not indexes:
        raise ConversionError(f"module {layer!r} is never called in the exported graph (it computes nothing here)")
    if call is None:
        if len(indexes) > 1:
            raise ConversionError(
                f"module {layer!r} is called {len(indexes)} times: choose one call (call=0 ... {len(indexes) - 1}) "
                "for that call's attributions, or call='each' / call='sum' for every call's attributions or their sum"
            )
        call = indexes[0]
    if call not in indexes:
        raise ConversionError(f"module {layer!r} is called {len(indexes)} time(s); there is no call {call}")
    inside = {name for name, k in calls.items() if k == call}
    params = set(graph.param_names)
    values = _boundary(program, inside, side, params)
    if not values:
        what = "returns no tensor used outside it" if side == OUTPUT else "takes no tensor computed outside it"
        raise ConversionError(f"call {call} of module {layer!r} {what}")
    shapes, dtypes = [], []
    for name in values:
        value = nodes[name].meta.get("val") if name in nodes else None
        if not isinstance(value, torch.Tensor):
            raise ConversionError(f"the {side} of {layer!r} includes {name}, which is not a tensor")
        if not value.is_floating_point():
            raise ConversionError(
                f"the {side} of {layer!r} includes {name} of dtype {value.dtype}: DeepLIFT attributes changes of real "
                f"values; choose the layer's {'input' if side == OUTPUT else 'output'} or another layer"
            )
        shapes.append(tuple(value.shape))
        dtypes.append(_numpy_dtype(value.dtype))

    steps = graph.steps
    by_name = {s.name: s for s in steps}
    downstream = set(values)
    for step in steps:
        if any(name in downstream for name in _refs(step.args) + _refs(step.kwargs)):
            downstream.add(step.name)
    needed: set[str] = set()
    frontier = _refs(graph.output_refs)
    while frontier:
        name = frontier.pop()
        if name in needed or name in values:
            continue
        needed.add(name)
        if name in by_name and name in downstream:
            frontier.extend(_refs(by_name[name].args) + _refs(by_name[name].kwargs))
    tail_steps = [s for s in steps if s.name in needed and s.name in downstream]
    tail_names = {s.name for s in tail_steps}
    held: list[str] = []
    for ref in [r for s in tail_steps for r in _refs(s.args) + _refs(s.kwargs)] + _refs(graph.output_refs):
        if ref not in tail_names and ref not in values and ref not in params and ref not in held:
            held.append(ref)
    read = {r for s in tail_steps for r in _refs(s.args) + _refs(s.kwargs)} | set(_refs(graph.output_refs))
    unused = not set(values) & read
    head_steps = _upstream(steps, (set(held) | set(values)) - set(graph.input_names), by_name)
    return Split(layer, side, call, len(indexes), values, held, graph, shapes, dtypes, unused, head_steps, tail_steps)


def _boundary(program, inside: set[str], side: str, params: set[str]) -> list[str]:
    """The values crossing the module call's boundary: produced inside and used outside (output), or produced
    outside (graph ops or inputs, not weights) and used inside (input), in graph order."""
    found: list[str] = []
    user_inputs = _user_inputs(program)
    for node in program.graph.nodes:
        if side == OUTPUT and node.name in inside:
            outside_users = [u for u in node.users if u.name not in inside]
            if outside_users and node.name not in found:
                found.append(node.name)
        elif side == INPUT and node.name in inside:
            for arg in node.all_input_nodes:
                external = arg.name not in inside and (arg.op == "call_function" or arg.name in user_inputs)
                if external and arg.name not in params and arg.name not in found:
                    found.append(arg.name)
    return found


def _user_inputs(program) -> set[str]:
    from torch.export.graph_signature import InputKind

    return {s.arg.name for s in program.graph_signature.input_specs if s.kind == InputKind.USER_INPUT}


def _upstream(steps: list, wanted: set[str], by_name: dict) -> list:
    """The steps (in graph order) that ``wanted`` values need."""
    needed: set[str] = set()
    frontier = list(wanted)
    while frontier:
        name = frontier.pop()
        if name in needed or name not in by_name:
            continue
        needed.add(name)
        frontier.extend(_refs(by_name[name].args) + _refs(by_name[name].kwargs))
    return [s for s in steps if s.name in needed]


def _numpy_dtype(dtype: torch.dtype):
    import numpy as np

    name = str(dtype).replace("torch.", "")
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)
