"""The explained model as a JAX function of (params, *rows) -> output row (n_outputs,).

A torch.nn.Module is converted with ``converters.from_torch``; a JAX callable (a Flax module included)
is used as it is. Either way the function sees one row at a time, without the batch axis. A model that returns
a dict, a Hugging Face ``ModelOutput`` or a tuple is explained at one of its outputs (``output=``; by default
``logits`` where there is one).

The model explained is the model as it is now: a content fingerprint (``xshap.explain.fingerprint``) taken at
conversion is compared before every explanation, and an edit made since is refused with what changed.

A torch module's conversion is kept in ``CONVERSIONS`` (``xshap.explain.cache``), keyed by the model's content,
the example rows, the output and the precision, with the programs compiled on it: a second explainer of the same
(or an equal) model converts and compiles nothing. An edited model has another content and is converted again;
an entry whose exported program's tensors (the first model's own) were edited in place since is refused.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import jax.numpy as jnp
import numpy as np

from xshap.errors import InputError, ModelChangedError
from xshap.explain import fingerprint as fingerprints
from xshap.explain.cache import ContentCache, content
from xshap.explain.data import is_float, to_numpy, to_torch

# torch.export's functionalising pass is skipped where the exported graph is functional already (no op mutates,
# every op is one the converter knows: ``converters.export.capture``), by DeepExplainer and xshap.captum alike: the
# pass would return the same computation, and on ResNet-18 it was 1.1-2.2 s of a 2.9 s export.
DECOMPOSE = "as_needed"


@dataclass(eq=False)
class ExplainedModel:
    fn: Callable  # fn(params, *rows) -> (n_outputs,)
    params: object
    converted: object | None = None  # converters.Converted for torch models
    torch_model: object | None = None
    source: object = None  # the model as the user gave it (for its float64 twin)
    output: str | int | None = None  # the output explained, for a model that returns several
    _fingerprint: Callable[[], dict] | None = field(default=None, repr=False)
    _state: dict = field(default_factory=dict, repr=False)
    # for (model, layer): the layer's input rows from the model's input rows; fn then maps those to the output
    head: Callable | None = None
    layer: str | None = None
    _compiled_heads: dict = field(default_factory=dict, repr=False)
    # compiled programs by rule set and shapes: shared by every explainer of one cached conversion (a torch
    # model's ``Conversion.programs``), this model's own otherwise
    programs: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self._fingerprint is not None:
            self._state = self._take_fingerprint()

    def _take_fingerprint(self) -> dict:
        """The fingerprint, taken while no torch.export runs in another thread (its tracing state is global)."""
        if self.torch_model is None:
            return self._fingerprint()
        from converters.export import CAPTURE_LOCK

        with CAPTURE_LOCK:
            return self._fingerprint()

    def to_interim(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """The explained values for model inputs: the inputs themselves, or the layer's inputs (interim)."""
        if self.head is None:
            return arrays
        rows = self._head_rows(len(arrays))(self.params, *arrays)
        return [np.asarray(r) for r in rows]

    def _head_rows(self, n_inputs: int) -> Callable:
        """The head vmapped over rows and compiled, once per model (kept on the instance, not in a global cache)."""
        if n_inputs not in self._compiled_heads:
            import jax

            from xshap.explain.compiling import jit

            self._compiled_heads[n_inputs] = jit(jax.vmap(self.head, in_axes=(None,) + (0,) * n_inputs))
        return self._compiled_heads[n_inputs]

    def check_unchanged(self) -> None:
        """Refuse to explain a model that was edited after it was converted (weights, submodules, attributes)."""
        if self._fingerprint is None:
            return
        changed = fingerprints.changes(self._state, self._take_fingerprint())
        if changed:
            raise ModelChangedError(
                "the model changed after xshap converted it: " + "; ".join(changed) + ". Its attributions would "
                "be those of the model as it was; build a new explainer for the model as it is now"
            )

    def weights_float_dtype(self) -> np.dtype | None:
        """The widest floating dtype of the weights (``xshap.explain.precision.model_float_dtype``)."""
        import jax

        dtypes = {np.dtype(a.dtype) for a in jax.tree_util.tree_leaves(self.params) if is_float(np.dtype(a.dtype))}
        return max(dtypes, key=lambda d: d.itemsize) if dtypes else None

    def twin(self, dtype):
        """The same model computing in ``dtype`` (float64 or float32), in the form ``DeepExplainer`` takes: the
        converted graph itself with its weights cast (``graph_twin``) where it can be; else a deep copy of a torch
        module cast to it (with the layer's path for an interim explanation), a saved program re-exported in it,
        or the JAX callable itself (it computes in the precision of its inputs)."""
        same_graph = self.graph_twin(dtype)
        if same_graph is not None:
            return same_graph
        source = self.source
        if isinstance(source, tuple):
            model, _ = source
            if _is_torch_module(model):
                return (_cast_module(model, dtype), self.layer)
            return source
        if _is_torch_module(source):
            return _cast_module(source, dtype)
        if is_exported_program(source):
            return _cast_program(source, self.converted, dtype)
        return source

    def graph_twin(self, dtype) -> ExplainedModel | None:
        """The converted graph of a torch model with its floating weights cast to ``dtype``, where the graph names
        no dtype of its own (``dtype_free``): it then computes in its weights' and inputs' type, as the torch module
        cast to ``dtype`` and converted again would, without a second torch.export. None for an interim cut or a
        graph that fixes a dtype somewhere. The twin shares this model's compiled programs (their keys hold the
        precision); it is only ever run by the explainer that made it, which checks the model first."""
        if self.converted is None or self.head is not None or not dtype_free(self.converted):
            return None
        import jax

        params = jax.tree_util.tree_map(
            lambda a: np.asarray(a, dtype=dtype) if is_float(np.dtype(a.dtype)) else np.asarray(a), self.params
        )
        return ExplainedModel(
            self.fn, params, self.converted, self.torch_model, source=self.source, output=self.output,
            programs=self.programs,
        )  # fmt: skip


def dtype_free(converted) -> bool:
    """The converted graph passes no dtype to any op (no casts, no typed constants): it computes in whatever float
    type its weights and inputs have."""
    import torch

    def names_dtype(value) -> bool:
        if isinstance(value, torch.dtype):
            return True
        if isinstance(value, (list, tuple)):
            return any(names_dtype(v) for v in value)
        if isinstance(value, dict):
            return any(names_dtype(v) for v in value.values())
        return False

    return not any(names_dtype(step.args) or names_dtype(step.kwargs) for step in converted.graph.steps)


def _cast_module(model, dtype):
    import torch

    return copy.deepcopy(model).to(torch.float64 if np.dtype(dtype) == np.float64 else torch.float32)


def _cast_program(program, converted, dtype):
    """A saved program in another float type: its graph as a module, cast and exported again for one row."""
    import torch

    float_type = torch.float64 if np.dtype(dtype) == np.float64 else torch.float32
    module = copy.deepcopy(program.module()).to(float_type)
    examples = tuple(
        torch.zeros((1, *shape), dtype=float_type if is_float(kind) else getattr(torch, np.dtype(kind).name))
        for shape, kind in zip(converted.input_shapes, converted.input_dtypes)
    )
    return torch.export.export(module, examples, strict=False)


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


def _examples(background: list[np.ndarray]) -> tuple:
    return tuple(to_torch(b[:4]) for b in background)


def wrap_model(model, background: list[np.ndarray], output: str | int | None = None) -> ExplainedModel:
    """An ExplainedModel for a torch module or a JAX callable of batched inputs, or for a pair: shap's
    ``(torch_model, layer)`` (the input of ``layer`` explained) or ``(first, rest)`` JAX callables (the input
    of ``rest`` explained, the model being ``rest(first(x))``). ``output``: the output to explain when the model
    returns a dict / ``ModelOutput`` / tuple."""
    if isinstance(model, ExplainedModel):  # a twin made by ``ExplainedModel.twin``
        return model
    if isinstance(model, tuple):
        return _wrap_interim(model, background, output)
    if _is_torch_module(model):
        _check_arity(model, len(background))
        return _wrap_torch(model, background, output)
    if is_exported_program(model):
        import converters

        converted = converters.from_exported(model, _examples(background), output=output)
        return _converted_model(converted, model, output, lambda: fingerprints.program_fingerprint(model))
    if callable(model):
        check_jax_rows_independent(model, background, output)
        return ExplainedModel(
            _jax_row_function(model, output),
            (),
            source=model,
            output=output,
            _fingerprint=lambda: fingerprints.callable_fingerprint(model),
        )
    raise InputError(f"cannot explain a {type(model).__name__}: pass a torch.nn.Module or a JAX callable")


@dataclass(eq=False)
class Conversion:
    """A converted torch model as the conversion cache keeps it: the ``converters.Converted``, the digests of the
    torch tensors its exported program refers to (the model's own parameters: ``still_valid`` refuses the entry
    once they were edited in place) and the compiled programs built on it (``programs``: rule set and shapes ->
    the explainer's programs; see ``DeepExplainer._set_rules``)."""

    converted: object
    digests: dict
    behaviour: list = field(default_factory=list)
    programs: dict = field(default_factory=dict)

    @staticmethod
    def of(converted, model, examples) -> Conversion:
        return Conversion(converted, _program_digests(converted), _torch_behaviour(model, examples))

    def still_valid(self, model=None, examples=()) -> bool:
        """The exported tensors are as they were, and (given the model) the model still computes what it computed
        when it was converted: code that the content key cannot see (a helper function the forward calls, a method
        replaced on the class) changed since then gives other outputs on the example rows, and a new conversion."""
        if _program_digests(self.converted) != self.digests:
            return False
        return model is None or _same_outputs(_torch_behaviour(model, examples), self.behaviour)

    def nbytes(self) -> int:
        import jax

        return sum(int(getattr(a, "nbytes", 0)) for a in jax.tree_util.tree_leaves(self.converted.params))


def _torch_behaviour(model, examples) -> list:
    """torch's own outputs on the example rows (every tensor the forward returns), as float64 numpy arrays."""
    import torch

    from converters.export import CAPTURE_LOCK, eval_mode

    try:  # under the conversion's lock: eval_mode sets and restores the modes, which threads must not interleave
        with CAPTURE_LOCK, torch.no_grad(), eval_mode(model, warn=False):
            out = model(*examples)
    except Exception:  # noqa: BLE001 - it ran when it was converted; now it does not: never the same model
        return [None]
    leaves = torch.utils._pytree.tree_leaves(out)
    return [
        leaf.detach().cpu().to(torch.float64).numpy() if leaf.is_floating_point() else leaf.detach().cpu().numpy()
        for leaf in leaves
        if isinstance(leaf, torch.Tensor)
    ]


def _same_outputs(now: list, then: list, rtol: float = 1e-6) -> bool:
    """The same outputs, to ``rtol`` of their scale (``converters.validate.relative_difference``: integers and
    non-finite entries exactly)."""
    from converters.validate import relative_difference

    if len(now) != len(then) or any(a is None or b is None for a, b in zip(now, then)):
        return False
    return all(a.dtype == b.dtype and relative_difference(a, b) <= rtol for a, b in zip(now, then))


def _program_digests(converted) -> dict:
    from converters.export import weights_of

    return {name: fingerprints.digest_array(t) for name, t in weights_of(converted.capture.program).items()}


# torch models converted in this process, by content (``xshap.explain.cache``): a second explainer of the same
# model (or an equal one) with the same example rows, output and precision is not exported again
CONVERSIONS = ContentCache(max_entries=8, max_bytes=2 << 30)


def _wrap_torch(model, background: list[np.ndarray], output) -> ExplainedModel:
    """A torch module converted (``converters.from_torch``), or its conversion from the cache where the model's
    content, the example rows, the output and the precision are those of a conversion made before."""
    import jax

    import converters
    from converters.export import CAPTURE_LOCK

    examples = _examples(background)
    with CAPTURE_LOCK:
        before = fingerprints.torch_fingerprint(model)
    key = (
        content(before, model),
        tuple(fingerprints.digest_array(e) for e in examples),
        output,
        bool(jax.config.jax_enable_x64),
    )
    entry = CONVERSIONS.get(
        key,
        lambda: Conversion.of(
            converters.from_torch(model, examples, output=output, decompose=DECOMPOSE), model, examples
        ),
        still_valid=lambda entry: entry.still_valid(model, examples),
        size=Conversion.nbytes,
    )
    converted = entry.converted
    explained = _converted_model(
        converted, model, output, lambda: fingerprints.torch_fingerprint(model), programs=entry.programs
    )
    if explained._state != before:  # the model changed while it was converted (its forward edits it): not kept
        CONVERSIONS.discard(key)
    return explained


def _converted_model(converted, model, output, fingerprint: Callable, programs: dict | None = None) -> ExplainedModel:
    """The ExplainedModel of a converted torch module or exported program; ``fingerprint`` reads the model's state
    now (``check_unchanged`` compares it with the state at conversion)."""
    extra = {} if programs is None else {"programs": programs}
    return ExplainedModel(
        _row_function(converted),
        converted.params,
        converted,
        model,
        source=model,
        output=output,
        _fingerprint=fingerprint,
        **extra,
    )


def _row_function(converted) -> Callable:
    def torch_fn(params, *rows):
        return _flat_row(converted.apply_row(params, *rows))  # a program of k rows: the row in every slot

    return torch_fn


def select_output(out, output: str | int | None):
    """One array of what a JAX callable returned: the array itself, or the entry ``output`` of a dict / tuple /
    dataclass-like result (by default ``logits`` where there is one)."""
    if hasattr(out, "shape"):
        if output not in (None, 0, "0"):
            raise InputError(f"the model returns one array; output={output!r} selects nothing in it")
        return out
    if isinstance(out, dict) or hasattr(out, "keys"):
        keys = list(out.keys())
        key = output if output is not None else ("logits" if "logits" in keys else None)
        if key is None or key not in keys:
            raise InputError(
                f"the model returns a {type(out).__name__} with keys {keys}; choose the output to explain with "
                f"output=<key>" + (f" (there is no {output!r})" if output is not None else "")
            )
        return out[key]
    if isinstance(out, (tuple, list)):
        if output is None or not str(output).isdigit() or int(output) >= len(out):
            raise InputError(
                f"the model returns a {type(out).__name__} of {len(out)} values; choose the output to explain with "
                "output=<position>"
            )
        return out[int(output)]
    raise InputError(f"the model returns a {type(out).__name__}; xshap explains an array with a leading batch axis")


def _jax_row_function(model: Callable, output) -> Callable:
    def jax_fn(_params, *rows):
        out = select_output(model(*(r[None] for r in rows)), output)
        if not hasattr(out, "shape") or out.ndim == 0:
            raise InputError("the model must return an array with a leading batch axis")
        return _flat_row(out[0])

    return jax_fn


def check_jax_rows_independent(model: Callable, background: list[np.ndarray], output) -> None:
    """A JAX callable must compute each row alone, as the one-row function xshap explains: run it on a batch of
    probe rows and on each row alone (``converters.independence.probe_rows`` makes three rows at least)."""
    from converters.independence import probe_rows

    rows = [to_numpy(t) for t in probe_rows(list(_examples(background)))]
    n = len(rows[0])
    try:
        together = np.asarray(select_output(model(*(jnp.asarray(r) for r in rows)), output))
        alone = [np.asarray(select_output(model(*(jnp.asarray(r[i : i + 1]) for r in rows)), output)) for i in range(n)]
    except InputError:
        raise
    except Exception:  # noqa: BLE001 - it cannot run on a batch of probe rows: the explanation will say why
        return
    alone = np.concatenate(alone)
    if together.shape != alone.shape:
        raise InputError(
            f"the JAX model returns shape {together.shape} for {n} rows but {alone.shape} for the rows one by one: "
            "it must map a batch of rows to a batch of outputs"
        )
    if not rows_match(together, alone):
        raise InputError(
            "the JAX model's output for a row depends on the other rows of the batch (a softmax, mean or norm over "
            "axis 0?): DeepSHAP explains each row on its own, so its attributions would silently differ from the "
            "model's batched output. Compute over the feature axes instead."
        )


def rows_match(together: np.ndarray, alone: np.ndarray, rtol: float = 1e-4) -> bool:
    """Equal within ``rtol`` of the largest finite magnitude; NaN matches NaN and an infinity itself."""
    a, b = together.astype(np.float64), alone.astype(np.float64)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    finite = np.isfinite(a) & np.isfinite(b)
    if np.any(~same & ~finite):
        return False
    scale = max(float(np.max(np.abs(b[finite]), initial=0.0)), float(np.max(np.abs(a[finite]), initial=0.0)))
    return float(np.max(np.abs(a - b)[finite], initial=0.0)) <= rtol * scale


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


def _wrap_interim(pair: tuple, background: list[np.ndarray], output) -> ExplainedModel:
    if len(pair) != 2:
        raise InputError(f"an interim explanation takes (model, layer); got a tuple of {len(pair)}")
    model, layer = pair
    if _is_torch_module(model):
        import converters
        from converters.errors import ConversionError
        from converters.interim import cut_at_layer, resolve_layer

        path = resolve_layer(model, layer)
        converted = converters.from_torch(model, _examples(background), output=output, decompose=DECOMPOSE)
        try:
            cut = cut_at_layer(converted.graph, converted.provenance, path)
        except ConversionError as error:
            if "does not determine the output" not in str(error):
                raise
            raise ConversionError(
                f"{error} This is shap's (model, layer) form, which explains the layer's input alone; "
                "xshap.LayerExplainer(model, layer, data) explains a layer with what goes around it (masks, position "
                "embeddings, other inputs, residuals) held at each row's own value, as Captum's layer methods do"
            ) from None

        def head(params, *rows):
            return tuple(v[0] for v in cut.head(params, *(r[None] for r in rows)))

        def tail(params, *layer_rows):
            return _flat_row(cut.tail(params, *(z[None] for z in layer_rows))[0])

        return ExplainedModel(
            tail,
            converted.params,
            converted,
            model,
            source=pair,
            output=output,
            _fingerprint=lambda: fingerprints.torch_fingerprint(model),
            head=head,
            layer=path,
        )
    if callable(model) and callable(layer):
        first, rest = model, layer

        def jax_head(_params, *rows):
            out = first(*(r[None] for r in rows))
            outs = out if isinstance(out, (tuple, list)) else (out,)
            return tuple(o[0] for o in outs)

        def jax_tail(_params, *layer_rows):
            out = select_output(rest(*(z[None] for z in layer_rows)), output)
            if not hasattr(out, "shape") or out.ndim == 0:
                raise InputError("the model must return an array with a leading batch axis")
            return _flat_row(out[0])

        return ExplainedModel(
            jax_tail,
            (),
            source=pair,
            output=output,
            _fingerprint=lambda: {
                **fingerprints.callable_fingerprint(first),
                **{f"rest {k}": v for k, v in fingerprints.callable_fingerprint(rest).items()},
            },
            head=jax_head,
            layer=getattr(rest, "__name__", "rest"),
        )
    raise InputError(
        "an interim explanation takes (torch_model, layer) with layer a submodule or its path, or (first, rest): "
        f"two JAX callables; got ({type(model).__name__}, {type(layer).__name__})"
    )
