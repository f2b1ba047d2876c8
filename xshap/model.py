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
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    return tuple((name, t.data_ptr(), t._version) for name, t in tensors)


def _flat_row(output):
    return jnp.reshape(output, (-1,))


def _is_torch_module(model) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        return False
    return isinstance(model, torch.nn.Module)


def wrap_model(model, background: list[np.ndarray]) -> ExplainedModel:
    """An ExplainedModel for a torch module or a JAX callable of batched inputs."""
    if _is_torch_module(model):
        import torch

        import converters

        converted = converters.from_torch(model, tuple(torch.as_tensor(b[:4]) for b in background))

        def torch_fn(params, *rows):
            return _flat_row(converted.graph(params, *(r[None] for r in rows))[0])

        return ExplainedModel(torch_fn, converted.params, converted, model, _torch_state(model))
    if callable(model):

        def jax_fn(_params, *rows):
            out = model(*(r[None] for r in rows))
            if not hasattr(out, "shape") or out.ndim == 0:
                raise InputError("the model must return an array with a leading batch axis")
            return _flat_row(out[0])

        return ExplainedModel(jax_fn, ())
    raise InputError(f"cannot explain a {type(model).__name__}: pass a torch.nn.Module or a JAX callable")
