"""The explained model as a JAX function of (params, *rows) -> output row (n_outputs,).

A torch.nn.Module is converted with ``converters.from_torch``; a JAX callable (a Flax module included)
is used as it is. Either way the function sees one row at a time, without the batch axis.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import jax.numpy as jnp
import numpy as np

from xshap.errors import InputError


@dataclass
class ExplainedModel:
    fn: Callable  # fn(params, *rows) -> (n_outputs,)
    params: object
    converted: object | None = None  # converters.Converted for torch models
    torch_model: object | None = None
    _state: tuple = field(default=(), repr=False)
    # for (model, layer): the layer's input rows from the model's input rows; fn then maps those to the output
    head: Callable | None = None
    layer: str | None = None

    def to_interim(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """The explained values for model inputs: the inputs themselves, or the layer's inputs (interim)."""
        if self.head is None:
            return arrays
        import jax

        from xshap.explain.compiling import jit

        rows = jit(jax.vmap(self.head, in_axes=(None,) + (0,) * len(arrays)))(
            self.params, *(jnp.asarray(a) for a in arrays)
        )
        return [np.asarray(r) for r in rows]

    def check_unchanged(self) -> None:
        """Refuse to explain a torch model whose weights changed since it was converted."""
        if self.torch_model is None:
            return
        if _torch_state(self.torch_model) != self._state:
            raise InputError(
                "the torch model's parameters or buffers changed after xshap converted it (training step or "
                "in-place edit); build a new explainer so the attributions are not computed on stale weights"
            )


def _torch_state(model) -> tuple:
    """Identity and version counter of every parameter and buffer: changes on any in-place update."""
    if is_exported_program(model):
        tensors = sorted({**model.state_dict, **model.constants}.items(), key=lambda item: item[0])
        tensors = [(name, t) for name, t in tensors if hasattr(t, "data_ptr")]
    else:
        tensors = list(model.named_parameters()) + list(model.named_buffers())
    return tuple((name, t.data_ptr(), t._version) for name, t in tensors)


def is_exported_program(model) -> bool:
    """A ``torch.export.ExportedProgram`` (a saved ``.pt2``), without importing torch for JAX users."""
    return type(model).__name__ == "ExportedProgram" and type(model).__module__.startswith("torch.export")


def _flat_row(output):
    return jnp.reshape(output, (-1,))


def _is_torch_module(model) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        return False
    return isinstance(model, torch.nn.Module)


def wrap_model(model, background: list[np.ndarray]) -> ExplainedModel:
    """An ExplainedModel for a torch module or a JAX callable of batched inputs, or for a pair: shap's
    ``(torch_model, layer)`` (the input of ``layer`` explained) or ``(first, rest)`` JAX callables (the input
    of ``rest`` explained, the model being ``rest(first(x))``)."""
    if isinstance(model, tuple):
        return _wrap_interim(model, background)
    if _is_torch_module(model):
        import torch

        import converters

        _check_arity(model, len(background))
        converted = converters.from_torch(model, tuple(torch.as_tensor(b[:4]) for b in background))

        def torch_fn(params, *rows):
            return _flat_row(converted.graph(params, *(r[None] for r in rows))[0])

        return ExplainedModel(torch_fn, converted.params, converted, model, _torch_state(model))
    if is_exported_program(model):
        import torch

        import converters

        converted = converters.from_exported(model, tuple(torch.as_tensor(b[:4]) for b in background))

        def program_fn(params, *rows):
            return _flat_row(converted.apply_row(params, *rows))  # a program of k rows: the row in every slot

        return ExplainedModel(program_fn, converted.params, converted, model, _torch_state(model))
    if callable(model):

        def jax_fn(_params, *rows):
            out = model(*(r[None] for r in rows))
            if not hasattr(out, "shape") or out.ndim == 0:
                raise InputError("the model must return an array with a leading batch axis")
            return _flat_row(out[0])

        return ExplainedModel(jax_fn, ())
    raise InputError(f"cannot explain a {type(model).__name__}: pass a torch.nn.Module or a JAX callable")


def _check_arity(model, n_inputs: int) -> None:
    """The background must give the model's forward its positional inputs, no more and no fewer."""
    import inspect

    try:
        signature = inspect.signature(model.forward)
    except (TypeError, ValueError):  # a forward inspect cannot read: let torch.export judge
        return
    try:
        signature.bind(*range(n_inputs))
    except TypeError as error:
        raise InputError(
            f"{type(model).__name__}.forward{signature} cannot take the {n_inputs} input(s) given ({error}); pass one "
            "array for a model of one input, a list of arrays for a model of several"
        ) from None


def _wrap_interim(pair: tuple, background: list[np.ndarray]) -> ExplainedModel:
    if len(pair) != 2:
        raise InputError(f"an interim explanation takes (model, layer); got a tuple of {len(pair)}")
    model, layer = pair
    if _is_torch_module(model):
        import torch

        import converters
        from converters.interim import cut_at_layer, resolve_layer

        path = resolve_layer(model, layer)
        converted = converters.from_torch(model, tuple(torch.as_tensor(b[:4]) for b in background))
        cut = cut_at_layer(converted.graph, converted.provenance, path)

        def head(params, *rows):
            return tuple(v[0] for v in cut.head(params, *(r[None] for r in rows)))

        def tail(params, *layer_rows):
            return _flat_row(cut.tail(params, *(z[None] for z in layer_rows))[0])

        return ExplainedModel(tail, converted.params, converted, model, _torch_state(model), head=head, layer=path)
    if callable(model) and callable(layer):
        first, rest = model, layer

        def jax_head(_params, *rows):
            out = first(*(r[None] for r in rows))
            outs = out if isinstance(out, (tuple, list)) else (out,)
            return tuple(o[0] for o in outs)

        def jax_tail(_params, *layer_rows):
            out = rest(*(z[None] for z in layer_rows))
            if not hasattr(out, "shape") or out.ndim == 0:
                raise InputError("the model must return an array with a leading batch axis")
            return _flat_row(out[0])

        return ExplainedModel(jax_tail, (), head=jax_head, layer=getattr(rest, "__name__", "rest"))
    raise InputError(
        "an interim explanation takes (torch_model, layer) with layer a submodule or its path, or (first, rest): "
        f"two JAX callables; got ({type(model).__name__}, {type(layer).__name__})"
    )
