"""Neuron attributions: one neuron of a layer as the model's output, attributed to the model's inputs.

``neuron_model(model, layer, selector)`` is the model up to the layer followed by Captum's selector: for a torch
module, a module that runs the model with a hook that only reads the layer's value (its ``call``-th call, its
output or its input) and returns the selected neuron, so that it is exported and converted like any model (the
ops after the layer are left out of the conversion: the output does not need them); for a JAX pair
``(first, rest)``, ``selector(first(x))``. ``NeuronExplainer`` is DeepSHAP of that model (``DeepExplainer``).
"""

from __future__ import annotations

from xshap.errors import InputError
from xshap.explain.explainer import DeepExplainer
from xshap.explain.layers import INPUT, OUTPUT


class SelectorError(InputError):
    """A neuron selector that does not fit the layer's value."""


def select_neuron(value: tuple, selector):
    """Captum's selection: ``selector(value)`` for a callable; else an int or a tuple of ints and slices over the
    non-batch axes, a slice summing the neurons it selects. ``value``: the layer's tensors (a tuple)."""
    if callable(selector):
        return selector(value if len(value) > 1 else value[0])
    if len(value) != 1:
        raise SelectorError("cannot select a neuron index in a layer of several tensors; give a selector function")
    index = (selector,) if isinstance(selector, int) else tuple(selector)
    if not all(isinstance(i, (int, slice)) for i in index):
        raise SelectorError(f"neuron selector {selector!r} is not an int, a tuple of ints and slices, or a callable")
    if len(index) > value[0].ndim - 1:
        raise SelectorError(f"cannot choose neuron {selector!r} in a layer value of shape {tuple(value[0].shape)}")
    picked = value[0][(slice(None), *index)]
    if any(isinstance(i, slice) for i in index):
        return picked.reshape(picked.shape[0], -1).sum(1)
    return picked


def neuron_model(model, layer, selector, side: str = OUTPUT, call: int = 0):
    """The neuron ``selector`` of ``layer`` (its output, or its input with ``side="input"``) as a model of the
    model's inputs: a torch module, or a JAX callable for a pair of JAX callables (module docstring)."""
    if side not in (OUTPUT, INPUT):
        raise InputError(f"side must be 'output' or 'input', got {side!r}")
    from xshap.explain.model import _is_torch_module

    if _is_torch_module(model):
        if isinstance(layer, str):
            layer = model.get_submodule(layer)
        return _torch_neuron(model, layer, selector, side, call)
    if callable(model) and callable(layer):
        if side != OUTPUT or call:
            raise InputError("a JAX (first, rest) pair has one layer value: first's output")

        def neuron(*rows):
            out = model(*rows)
            return select_neuron(tuple(out) if isinstance(out, (tuple, list)) else (out,), selector)

        return neuron
    raise InputError("neuron attributions take a torch module and a submodule, or two JAX callables (first, rest)")


def _torch_neuron(model, layer, selector, side: str, call: int):
    import torch

    class Neuron(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self._layer = [layer]  # the model's own submodule, not registered twice

        def forward(self, *inputs):
            seen: list = []
            target = self._layer[0]
            if side == INPUT:
                handle = target.register_forward_pre_hook(lambda _m, args: seen.append(args))
            else:
                handle = target.register_forward_hook(lambda _m, _args, out: seen.append(out))
            try:
                self.model(*inputs)
            finally:
                handle.remove()
            if len(seen) <= call:
                raise SelectorError(f"the layer is called {len(seen)} time(s); there is no call {call}")
            value = seen[call]
            return select_neuron(tuple(value) if isinstance(value, (tuple, list)) else (value,), selector)

    return Neuron()


class NeuronExplainer(DeepExplainer):
    """DeepSHAP of one neuron of a layer, attributed to the model's inputs: ``NeuronExplainer(model, layer,
    neuron, data)``; ``attribute_to="input"`` selects the neuron in the layer's input. Every ``DeepExplainer``
    option applies; the values add up to neuron(x) - E neuron(background)."""

    def __init__(self, model, layer, neuron, data, *, attribute_to: str = OUTPUT, call: int = 0, **options):
        super().__init__(neuron_model(model, layer, neuron, attribute_to, call), data, **options)
