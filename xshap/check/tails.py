"""A torch model split at a layer for shap and Captum: the rest of the model as a module of the layer's value.

shap's DeepExplainer and Captum's DeepLiftShap take float inputs, and a token model's input is integer ids; so
the references explain the model after a layer (its embeddings), with the layer's float output as their input.
``LayerTail(model, layer, row)`` is that module: it runs the user's own model on one row's inputs (repeated to
the batch the reference passes) with a forward hook that replaces the layer's output by the reference's
input ``z``. Everything computed beside the layer (a padding mask computed from the ids, position ids, other
inputs) is computed from the row's own inputs, i.e. held at the row's value, as xshap's graph split holds it
(``converters.split``), so xshap and the references explain one and the same function of the layer's value.

It is the user's modules that run, not a module rebuilt from the exported ATen graph: shap's and Captum's rules
are hooks on module types (``nn.ReLU``, ``nn.Softmax`` ...), and a ``torch.fx`` graph of ATen ops has none of
those modules, so both references would fall back to plain gradients there and check a model nobody wrote.
``torch.export.unflatten`` has the same defect (its submodules are ``InterpreterModule``s). The exported graph
is also specialised to a batch of one row, which the references' batches of background rows would not fit.

What cannot be split this way raises ``TailError`` saying why: a layer that returns no single tensor, a layer
called other than once in the model's forward, a value of another shape than the layer's own.
"""

from __future__ import annotations

import torch

from converters.split import pick_output
from xshap.errors import InputError


class TailError(InputError):
    """The model cannot be split at the layer for the references (the message says why)."""


class LayerTail(torch.nn.Module):
    """``model(*row)`` with the output of ``layer`` replaced by the input ``z``: f as a function of the layer's
    value, one row's other inputs held (module docstring).

    ``model``: called with the row's tensors by position. ``layers``: the module objects at which the layer
    computes (a module and its tied copies: exactly one of them must be called, once). ``row``: the row's
    inputs, each with a leading batch axis of one. ``output``: which output of a dict / tuple to return.
    """

    def __init__(self, model: torch.nn.Module, layers: list[torch.nn.Module], row: tuple, output=None):
        super().__init__()
        self.model = model
        self._layers = list(layers)  # the model's own submodules (deepcopy of the tail keeps them the model's)
        self._row = tuple(torch.as_tensor(r) for r in row)
        self._output = output

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        calls: list[str] = []

        def replace(module, _inputs, out):
            calls.append(type(module).__name__)
            if not isinstance(out, torch.Tensor):
                raise TailError(
                    f"the layer ({type(module).__name__}) returns a {type(out).__name__}, not one tensor: the "
                    "references' input would be only part of its value"
                )
            if tuple(out.shape) != tuple(z.shape):
                raise TailError(
                    f"the layer's value has shape {tuple(out.shape)} for {z.shape[0]} row(s), the references' input "
                    f"{tuple(z.shape)}"
                )
            return z.to(out.dtype)

        handles = [layer.register_forward_hook(replace) for layer in self._layers]
        try:
            out = self.model(*(r.repeat(z.shape[0], *([1] * (r.ndim - 1))) for r in self._row))
        finally:
            for handle in handles:
                handle.remove()
        if len(calls) != 1:
            raise TailError(
                f"the layer is called {len(calls)} time(s) in the model's forward: one input of the references "
                "cannot stand for " + ("each call" if calls else "a value the model never computes")
            )
        return pick_output(out, self._output)


def layer_values(model: torch.nn.Module, layers: list[torch.nn.Module], rows: tuple) -> torch.Tensor:
    """The layer's output on ``rows`` (a batch of the model's inputs), read by a hook from torch's own forward."""
    seen: list = []
    handles = [layer.register_forward_hook(lambda _m, _i, out: seen.append(out)) for layer in layers]
    try:
        with torch.no_grad():
            model(*(torch.as_tensor(r) for r in rows))
    finally:
        for handle in handles:
            handle.remove()
    if len(seen) != 1 or not isinstance(seen[0], torch.Tensor):
        raise TailError(
            f"the layer is called {len(seen)} time(s) in the model's forward"
            if len(seen) != 1
            else f"the layer returns a {type(seen[0]).__name__}, not one tensor"
        )
    return seen[0].detach()
