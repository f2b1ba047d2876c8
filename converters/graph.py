"""Turn the exported fx graph into a pure JAX function, one registered op per node."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import jax
import torch
import torch.fx

from converters.errors import UnsupportedOperatorError
from converters.export import Capture, weights_of
from converters.fold import conv_arguments, conv_batch_norm, foldable_pairs
from converters.provenance import Provenance
from converters.registry import lookup


@dataclass(frozen=True)
class _Step:
    name: str
    impl: Callable
    args: tuple
    kwargs: dict
    provenance: Provenance


class _Ref:
    """A reference to the value of an earlier node, resolved at call time."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


def _template(value):
    """Replace fx nodes by _Ref placeholders, keep everything else as recorded."""
    return torch.fx.node.map_aggregate(value, lambda v: _Ref(v.name) if isinstance(v, torch.fx.Node) else v)


def _resolve(value, env: dict):
    if isinstance(value, _Ref):
        return env[value.name]
    if isinstance(value, (list, tuple)):
        return type(value)(_resolve(v, env) for v in value)
    if isinstance(value, dict):
        return {k: _resolve(v, env) for k, v in value.items()}
    return value


def retype(value, dtypes: Mapping):
    """A recorded argument with every torch dtype in it replaced by ``dtypes[dtype]`` where given: how a graph
    exported in float32 runs in float64 (its casts and tensor factories then make float64 too)."""
    if isinstance(value, torch.dtype):
        return dtypes.get(value, value)
    if isinstance(value, (list, tuple)):
        return type(value)(retype(v, dtypes) for v in value)
    if isinstance(value, dict):
        return {k: retype(v, dtypes) for k, v in value.items()}
    return value


def _getitem(container, index):
    return container[index]


def _needed(outputs: tuple) -> set[str]:
    """Names of every node the given output values depend on."""
    needed: set[str] = set()
    frontier = [v for v in outputs if isinstance(v, torch.fx.Node)]
    while frontier:
        node = frontier.pop()
        if node.name in needed:
            continue
        needed.add(node.name)
        frontier.extend(node.all_input_nodes)
    return needed


def _fold(steps: list[_Step], pairs: dict[str, str], graph: torch.fx.Graph) -> list[_Step]:
    """The steps with each folded convolution left out and its BatchNorm computing both (``converters.fold``)."""
    nodes = {node.name: node for node in graph.nodes}
    convolutions = set(pairs.values())
    folded = []
    for step in steps:
        if step.name in convolutions:
            continue
        if step.name in pairs:
            conv_args = _template(conv_arguments(nodes[pairs[step.name]]))
            step = _Step(step.name, conv_batch_norm, (conv_args, *step.args[1:]), step.kwargs, step.provenance)
        folded.append(step)
    return folded


class GraphFunction:
    """The exported graph as a JAX function of (params, *inputs), batch-of-one shapes as exported."""

    def __init__(self, captured: Capture, output_index: int | None = None, fold_batch_norm: bool = True):
        """``output_index``: explain only that leaf of the program's outputs; the ops no kept output needs are
        left out (they are neither converted nor given DeepLIFT rules). ``fold_batch_norm``: eval-mode BatchNorms
        folded into the convolution before them (``converters.fold``) in ``steps``, the steps run;
        ``exported_steps`` are one per node, as exported (what interim-layer cuts use)."""
        graph = captured.program.graph
        output = next(node for node in graph.nodes if node.op == "output")
        outputs = tuple(output.args[0])
        if output_index is not None:
            outputs = (outputs[output_index],)
        self.needed: set[str] = _needed(outputs)
        steps, unknown = [], []
        for node in graph.nodes:
            if node.op != "call_function" or node.name not in self.needed:
                continue
            provenance = captured.provenance[node.name]
            impl = _getitem if node.target is operator.getitem else lookup(node.target)
            if impl is None:
                unknown.append((provenance.op, provenance))
                continue
            steps.append(_Step(node.name, impl, _template(node.args), _template(dict(node.kwargs)), provenance))
        if unknown:
            raise UnsupportedOperatorError(unknown)
        self.exported_steps: list[_Step] = steps
        self.folded: dict[str, str] = {}  # BatchNorm node -> the convolution node folded into it
        if fold_batch_norm:
            self.folded = foldable_pairs(graph, set(captured.param_names), weights_of(captured.program))
        self.steps: list[_Step] = _fold(steps, self.folded, graph) if self.folded else steps
        self.param_names: list[str] = captured.param_names
        self.input_names: list[str] = captured.input_names
        self.output_refs = _template(outputs)

    def __call__(self, params: dict, *inputs, record: dict | None = None, dtypes: Mapping | None = None):
        """Evaluate the graph; with ``record`` given, store every node's value in it by node name. ``dtypes``:
        torch dtype -> torch dtype for the dtype arguments recorded in the graph (see ``retype``)."""
        if len(inputs) != len(self.input_names):
            raise TypeError(f"expected {len(self.input_names)} input(s), got {len(inputs)}")
        env = {name: params[name] for name in self.param_names}
        env.update(zip(self.input_names, inputs))
        for step in self.steps:
            args, kwargs = _resolve(step.args, env), _resolve(step.kwargs, env)
            if dtypes:
                args, kwargs = retype(args, dtypes), retype(kwargs, dtypes)
            with jax.named_scope(step.provenance.scope):
                value = step.impl(*args, **kwargs)
            env[step.name] = value
            if record is not None:
                record[step.name] = value
        outputs = _resolve(self.output_refs, env)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)
