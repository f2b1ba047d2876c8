"""LayerExplainer: DeepSHAP values of a layer's output (or input), what bypasses the layer held at the row's value.

shap's ``DeepExplainer((model, layer), data)`` explains a layer's input and needs that input alone to determine
the output (``converters.interim`` refuses anything around the layer). Researchers explain token models at the
embedding output, where the attention mask, the position embeddings and the padding are computed beside the layer:
here everything the rest of the model reads that does not flow through the layer is held at the explained row's
own value, for the row and for every background row (``xshap.explain.layers``, Captum's semantics). So for row x

    sum(values) = f(x) - mean_j tail(layer(bg_j), held(x))      (``LayerAttribution.reference_outputs``)

which is f(x) - E f(background) wherever the held values are the same for x and the background (the same mask,
nothing around the layer), and otherwise what the layer's change alone accounts for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from xshap.engine.transform import DeepLift
from xshap.errors import InputError, NonFiniteError, XShapIncompleteError
from xshap.explain import fingerprint as fingerprints
from xshap.explain.compiling import jit
from xshap.explain.completeness import completeness_tolerance, incomplete, tolerance_precision
from xshap.explain.data import as_input_list, check_background, check_inputs
from xshap.explain.layers import INPUT, OUTPUT, LayerFunction, jax_layer_function, torch_layer_functions
from xshap.explain.precision import FLOAT64, cast_floats, model_float_dtype, needs_x64, precision

EACH, SUM = "each", "sum"


@dataclass
class LayerAttribution:
    """Layer attributions with what they add up to.

    values: one array per layer value (a module returning a tuple has several), each (N, n_outputs, *value_shape).
    outputs: f(x), (N, n_outputs). reference_outputs: mean over the background of the model at the background's
    layer values with the row's own held values, (N, n_outputs): sum(values) = outputs - reference_outputs.
    expected_value: E f(background), (n_outputs,). gaps, tolerance: the completeness check, (N, n_outputs).
    held: the graph values held at each row's own value (masks, position embeddings, inputs around the layer).
    """

    values: list[np.ndarray]
    outputs: np.ndarray
    reference_outputs: np.ndarray
    expected_value: np.ndarray
    gaps: np.ndarray
    tolerance: np.ndarray
    held: list[str] = field(default_factory=list)
    recomputed: np.ndarray | None = None  # (N,) rows recomputed in float64
    call: int | None = None  # the module call these values belong to


class LayerExplainer:
    """DeepSHAP at a layer: ``LayerExplainer(model, layer, data)`` (module docstring).

    ``model``: a ``torch.nn.Module`` with ``layer`` a submodule (object or path), or a JAX callable ``first`` with
    ``layer`` a JAX callable ``rest`` (the model is ``rest(first(x))``, the layer value is ``first``'s output).
    ``data``: the background, an array/tensor or a list of them for several inputs (integer ids and masks are
    fine: only the layer's value must be float). ``attribute_to``: ``"output"`` (default, as Captum) or
    ``"input"`` of the layer. ``call``: which call of a module used more than once (an int); ``"each"`` gives every
    call's attributions (a list from ``explain``), ``"sum"`` their sum; each call's attributions are complete on
    their own, their sum is not in general (each call is explained with the others held).
    ``output``: the output of a model returning a dict / ``ModelOutput`` / tuple (default ``logits``).
    """

    def __init__(
        self,
        model,
        layer,
        data,
        *,
        attribute_to: str = OUTPUT,
        call: int | str | None = None,
        output: str | int | None = None,
        batch_size: int | None = None,
    ):
        if attribute_to not in (OUTPUT, INPUT):
            raise InputError(f"attribute_to must be 'output' or 'input', got {attribute_to!r}")
        if not (call is None or call in (EACH, SUM) or (isinstance(call, (int, np.integer)) and call >= 0)):
            raise InputError(f"call must be a call index (0, 1, ...), 'each' or 'sum', got {call!r}")
        given, self.multi_input = as_input_list(data)
        check_background(given)
        self._given = [np.empty((0, *b.shape[1:]), dtype=b.dtype) for b in given]
        self._source = (model, layer)
        self._dtype = model_float_dtype(model)
        self._background = cast_floats(given, self._dtype)
        self._x64 = needs_x64([self._dtype, *(b.dtype for b in self._background)])
        self.attribute_to, self.call, self.output, self.batch_size = attribute_to, call, output, batch_size
        self._twin: LayerExplainer | None = None
        with precision(self._x64):
            self._functions = self._build(model, layer)
            self._fingerprint_of = _fingerprinter(model, layer)
            self._state = self._fingerprint_of()
            self._parts = [_Part(f, self._background) for f in self._functions]
        self.n_outputs = self._parts[0].n_outputs
        self.expected_value = self._parts[0].expected_value

    def _build(self, model, layer) -> list[LayerFunction]:
        from xshap.explain.model import _is_torch_module

        if _is_torch_module(model):
            return torch_layer_functions(model, layer, self._background, self.attribute_to, self.call, self.output)
        if callable(model) and callable(layer):
            if self.call is not None or self.attribute_to != OUTPUT:
                raise InputError("a JAX (first, rest) pair is explained at first's output: no call= or attribute_to=")
            return [jax_layer_function(model, layer, self.output)]
        raise InputError(
            "LayerExplainer takes a torch module and one of its submodules (or its path), or two JAX callables "
            f"(first, rest); got ({type(model).__name__}, {type(layer).__name__})"
        )

    @property
    def held(self) -> list[str]:
        """The graph values held at the explained row's own value (names in the exported graph)."""
        return list(self._functions[0].held_names)

    def _check_unchanged(self) -> None:
        from xshap.errors import ModelChangedError

        changed = fingerprints.changes(self._state, self._fingerprint_of())
        if changed:
            raise ModelChangedError(
                "the model changed after xshap converted it: " + "; ".join(changed) + ". Build a new explainer"
            )

    def explain(self, X, *, rows_of_other_inputs=None, check_additivity: bool = True):
        """The layer attributions of the rows of ``X`` (a list of ``LayerAttribution`` for ``call="each"``).

        ``rows_of_other_inputs``: the model's last inputs (an array or a list, one row per row of ``X`` or one row
        for all), held at the explained row's own value on both sides of every pair, as Captum holds
        ``additional_forward_args``: ``X`` is then the model's first inputs. Without it every input comes from
        ``X``; what does not flow through the layer is held at the row's value either way, so the two differ only
        where an other input flows into the layer (the background's layer values are computed under the row's
        own other inputs with it, under the background's own without)."""
        arrays, several = as_input_list(X)
        n_other = 0
        if rows_of_other_inputs is not None:
            arrays, n_other = self._with_other_inputs(arrays, rows_of_other_inputs)
            several = True
        if several != self.multi_input:
            raise InputError(f"the explainer was built with {'several inputs' if self.multi_input else 'one input'}")
        check_inputs(arrays, self._given)
        arrays = cast_floats(arrays, self._dtype)
        self._check_unchanged()
        with precision(self._x64):
            results = [part.explain(arrays, self.batch_size, n_other) for part in self._parts]
        for k, result in enumerate(results):
            result.call = self._functions[k].call
            self._settle(result, arrays, k, check_additivity, n_other)
        if self.call == EACH:
            return results
        if self.call == SUM:
            return _summed(results)
        return results[0]

    def _with_other_inputs(self, arrays: list[np.ndarray], others) -> tuple[list[np.ndarray], int]:
        """``X`` and ``rows_of_other_inputs`` as the model's inputs (one row of the others repeated for all)."""
        others, _ = as_input_list(others)
        total = len(self._given)
        if not others or len(arrays) + len(others) != total:
            raise InputError(
                f"the model takes {total} input(s) (as the background has): X gives {len(arrays)} and "
                f"rows_of_other_inputs {len(others)}"
            )
        n = arrays[0].shape[0] if arrays[0].ndim else 0
        rows = []
        for i, other in enumerate(others):
            if other.ndim and other.shape[0] == 1 and n > 1:
                other = np.repeat(other, n, axis=0)
            if not other.ndim or other.shape[0] != n:
                raise InputError(
                    f"rows_of_other_inputs[{i}] has shape {other.shape}: it needs one row per row of X ({n}) or one row"
                )
            rows.append(other)
        return arrays + rows, len(others)

    def _settle(self, result: LayerAttribution, arrays, part: int, check_additivity: bool, n_other: int = 0) -> None:
        """Rows that miss float32's tolerance: recomputed by the float64 twin; float64 rows that miss raise."""
        result.recomputed = np.zeros(len(result.outputs), dtype=bool)
        if not np.all(np.isfinite(result.outputs)):
            raise NonFiniteError("f(x) is not finite for some rows")
        bad = incomplete(result.gaps, result.tolerance).any(axis=1)
        if not bad.any():
            return
        if tolerance_precision(self._parts[part].compute_dtype) != FLOAT64 and self._source_is_torch():
            twin = self._float64_twin()
            rows = np.flatnonzero(bad)
            high = twin._parts[part].explain(
                [a[rows].astype(np.float64) if a.dtype.kind == "f" else a[rows] for a in arrays],
                self.batch_size,
                n_other,
            )
            for mine, theirs in zip(result.values, high.values):
                mine[rows] = theirs.astype(mine.dtype)
            result.gaps[rows], result.tolerance[rows] = high.gaps, high.tolerance
            result.recomputed[rows] = True
            bad = incomplete(result.gaps, result.tolerance).any(axis=1)
        if bad.any() and check_additivity:
            row = int(np.flatnonzero(bad)[0])
            raise XShapIncompleteError(
                f"xshap's layer attributions do not add up for {int(bad.sum())} row(s); first: row {row}, gap "
                f"{np.abs(result.gaps[row]).max():.3e} > {result.tolerance[row].min():.1e}. This is a bug in xshap"
            )

    def _source_is_torch(self) -> bool:
        from xshap.explain.model import _is_torch_module

        return _is_torch_module(self._source[0])

    def _float64_twin(self) -> LayerExplainer:
        if self._twin is None:
            import copy

            from converters.interim import resolve_layer

            model, layer = self._source
            path = resolve_layer(model, layer)
            data = [b.astype(np.float64) if b.dtype.kind == "f" else b for b in self._background]
            self._twin = LayerExplainer(
                copy.deepcopy(model).double(),
                path,
                data if self.multi_input else data[0],
                attribute_to=self.attribute_to,
                call=self.call,
                output=self.output,
                batch_size=self.batch_size,
            )
        return self._twin

    def shap_values(self, X, check_additivity: bool = True):
        """shap's layout: (N, *value_shape, n_outputs) per layer value (a list for several values or calls)."""
        result = self.explain(X, check_additivity=check_additivity)
        results = result if isinstance(result, list) else [result]
        arrays = [np.moveaxis(v, 1, -1) for r in results for v in r.values]
        return arrays if len(arrays) > 1 else arrays[0]


def _summed(results: list[LayerAttribution]) -> LayerAttribution:
    shapes = {tuple(v.shape) for r in results for v in r.values}
    if len(shapes) > 1:
        raise InputError(f"call='sum' needs every call's values to have one shape; they have {sorted(shapes)}")
    first = results[0]
    values = [sum(r.values[i] for r in results) for i in range(len(first.values))]
    total = sum(v.reshape(v.shape[0], v.shape[1], -1).sum(axis=2) for v in values)
    gaps = total - (first.outputs - first.reference_outputs)
    return LayerAttribution(
        values,
        first.outputs,
        first.reference_outputs,
        first.expected_value,
        gaps,
        np.full_like(gaps, np.inf),
        first.held,
    )


def _fingerprinter(model, layer):
    from xshap.explain.model import _is_torch_module

    if _is_torch_module(model):
        return lambda: fingerprints.torch_fingerprint(model)
    return lambda: {
        **fingerprints.callable_fingerprint(model),
        **{f"rest {k}": v for k, v in fingerprints.callable_fingerprint(layer).items()},
    }


class _Part:
    """One layer function over the background: its reference values computed once, chunks compiled per size."""

    def __init__(self, function: LayerFunction, background: list[np.ndarray]):
        self.function = function
        params = function.params
        head_rows = jit(jax.vmap(function.head, in_axes=(None,) + (0,) * len(background)))
        values, held = head_rows(params, *background)
        for v in values:
            if not jnp.issubdtype(v.dtype, jnp.floating):
                raise InputError(f"the layer's value has dtype {v.dtype}: explain a layer with a float value")
        self.background_values = tuple(values)
        self._background = tuple(jnp.asarray(b) for b in background)
        tail_rows = jit(jax.vmap(function.tail, in_axes=(None, 0) + (0,) * len(values)))
        bg_out = np.asarray(tail_rows(params, held, *values))
        if not np.all(np.isfinite(bg_out)):
            raise NonFiniteError("f(background) is not finite for some background rows")
        self.expected_value = bg_out.mean(axis=0)
        self.n_outputs = bg_out.shape[1]
        example_values = [np.asarray(v[0]) for v in values]
        example_held = tuple(np.asarray(h[0]) for h in held)
        tail = function.tail
        self.deeplift = DeepLift(lambda p, *z: tail(p[0], p[1], *z), (params, example_held), example_values)
        self.compute_dtype = self.deeplift.compute_dtype
        self._chunk = jit(self._explain_chunk)
        self._value_bytes = sum(v.size * v.itemsize for v in example_values)

    def _explain_chunk(self, params, x_rows: tuple, background_values: tuple, background_inputs: tuple = ()):
        """``background_inputs``: the background's first inputs, when the row's own last inputs replace the
        background's (``rows_of_other_inputs``): its layer values are then computed per row."""
        head, tail, deeplift, n_out = self.function.head, self.function.tail, self.deeplift, self.n_outputs

        def per_row(x):
            zx, cx = head(params, *x)
            if background_inputs:
                own = x[len(background_inputs) :]
                layer_values = jax.vmap(lambda *b: tuple(head(params, *b, *own)[0]))(*background_inputs)
            else:
                layer_values = background_values

            def per_pair(zb):
                # the reference output tail(zb, held(x)) is the reference half DeepLIFT computes with the pair (no
                # forward pass of its own in the program); f(x) below is the plain forward, once per row
                out, pullback, reference = jax.vjp(
                    lambda z: deeplift.paired((params, cx), z, zb, with_reference=True), tuple(zx), has_aux=True
                )
                # one pullback vmapped over the outputs' one-hot cotangents: a program one output's size (a loop
                # of pullbacks compiles one backward pass per output, and compiling is most of a short run's cost)
                multipliers = list(jax.vmap(pullback)(jnp.eye(n_out, dtype=out.dtype))[0])
                contributions = tuple((a - b)[None] * m for a, b, m in zip(zx, zb, multipliers))
                return contributions, reference

            contributions, references = jax.vmap(per_pair)(layer_values)
            means = tuple(c.mean(axis=0) for c in contributions)
            mass = sum(jnp.abs(m).reshape(n_out, -1).sum(axis=1) for m in means)
            return means, tail(params, cx, *zx), references.mean(axis=0), mass

        return jax.vmap(per_row)(x_rows)

    def chunk_rows(self, batch_size: int | None) -> int:
        if batch_size is not None:
            return max(1, int(batch_size))
        per_row = max(1, self._value_bytes * len(self.background_values[0]) * self.n_outputs * 4)
        rows = int(max(1, min(256, (1 << 28) // per_row)))
        return 1 << (rows.bit_length() - 1)

    def explain(self, arrays: list[np.ndarray], batch_size: int | None, n_other: int = 0) -> LayerAttribution:
        """``n_other``: the last inputs are the rows' own on both sides of each pair (``rows_of_other_inputs``)."""
        n = arrays[0].shape[0]
        background_inputs = self._background[: len(self._background) - n_other] if n_other else ()
        size = self.chunk_rows(batch_size)
        parts = []
        for start in range(0, n, size):
            chunk = [a[start : start + size] for a in arrays]
            rows = chunk[0].shape[0]
            padded = size if n > size else 1 << max(0, (rows - 1).bit_length())
            if padded > rows:
                chunk = [np.concatenate([c, np.repeat(c[:1], padded - rows, axis=0)]) for c in chunk]
            result = self._chunk(self.function.params, tuple(chunk), self.background_values, background_inputs)
            parts.append(jax.tree_util.tree_map(lambda a, r=rows: np.asarray(a)[:r], result))
        means = [np.concatenate([p[0][i] for p in parts]) for i in range(len(parts[0][0]))]
        outputs, references, mass = (np.concatenate([p[k] for p in parts]) for k in (1, 2, 3))
        strip = self.function.batch_axis and all(m.shape[2] == 1 for m in means)
        values = [m[:, :, 0] if strip else m for m in means]
        total = sum(v.reshape(n, self.n_outputs, -1).sum(axis=2, dtype=np.float64) for v in values)
        gaps = total - (outputs.astype(np.float64) - references)
        tolerance = completeness_tolerance(self.compute_dtype, outputs, references, mass=mass)
        return LayerAttribution(
            values, outputs, references, self.expected_value, gaps, tolerance, list(self.function.held_names)
        )
