"""The precision an explanation runs in is the model's: decided once per explainer, scoped to xshap's own work.

JAX computes in float32 unless ``jax_enable_x64`` is on, and that flag is process-wide: a float64 torch model
converted with it off was computed in float32 without a word (0.57 off its own float64 output on a model with
cancellation). xshap never asks the user to flip it. A model with float64 weights or float64 inputs is traced,
compiled and run inside ``jax.enable_x64(True)`` (a context of this thread only, restored on exit), and every
call into its compiled programs enters the same context again, so nothing of the user's configuration changes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import jax
import numpy as np

from xshap.explain.data import is_float

FLOAT64 = np.dtype(np.float64)


def torch_float_dtype(model) -> np.dtype | None:
    """The widest floating dtype of a torch module's (or a saved program's) parameters and buffers; None if it
    has none (a model of functional ops only computes in the dtype of its inputs)."""
    if type(model).__name__ == "ExportedProgram":
        tensors = [*model.state_dict.values(), *model.constants.values()]
    else:
        tensors = [*model.parameters(), *model.buffers()]
    dtypes = {_numpy_dtype(t.dtype) for t in tensors if getattr(t, "is_floating_point", lambda: False)()}
    return max(dtypes, key=lambda d: d.itemsize) if dtypes else None


def model_float_dtype(model) -> np.dtype | None:
    """The floating dtype a model's weights are in (torch modules, saved programs, Flax NNX modules; the model of
    an interim pair), or None where the model does not say (a plain JAX function computes in its inputs')."""
    if isinstance(model, tuple) and model:
        return model_float_dtype(model[0])
    if hasattr(model, "weights_float_dtype"):  # an ExplainedModel (a twin on the same converted graph)
        return model.weights_float_dtype()
    if type(model).__name__ == "ExportedProgram" or _is_torch_module(model):
        return torch_float_dtype(model)
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover - flax is a core dependency
        return None
    if isinstance(model, nnx.Module):
        dtypes = {
            np.dtype(leaf.dtype) for leaf in jax.tree_util.tree_leaves(nnx.state(model)) if hasattr(leaf, "dtype")
        }
        dtypes = {d for d in dtypes if is_float(d)}
        return max(dtypes, key=lambda d: d.itemsize) if dtypes else None
    return None


def _is_torch_module(model) -> bool:
    return any(cls.__module__ == "torch.nn.modules.module" and cls.__name__ == "Module" for cls in type(model).__mro__)


def _numpy_dtype(torch_dtype) -> np.dtype:
    name = str(torch_dtype).replace("torch.", "")
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def needs_x64(dtypes: Sequence) -> bool:
    """Whether any of ``dtypes`` (None entries ignored) is a 64-bit float, which JAX computes only with x64."""
    return any(d is not None and np.dtype(d) == FLOAT64 for d in dtypes)


@contextlib.contextmanager
def precision(x64: bool) -> Iterator[None]:
    """``jax.enable_x64(True)`` for the duration when ``x64``; nothing otherwise (a float32 model is explained
    in float32 even where the user has turned x64 on: its arrays say float32 themselves)."""
    if not x64:
        yield
        return
    with jax.enable_x64(True):
        yield


def cast_floats(arrays: list[np.ndarray], dtype: np.dtype | None) -> list[np.ndarray]:
    """Floating arrays in ``dtype`` (the model's: a float64 DataFrame against a float32 model computes in
    float32, as the model does); integer and boolean arrays (token ids, masks) as they are."""
    if dtype is None:
        return arrays
    return [a.astype(dtype) if is_float(a.dtype) and a.dtype != dtype else a for a in arrays]
