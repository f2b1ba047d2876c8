"""A model as the head and tail of one row: the form in which layer and neuron attributions are computed.

``head(params, *rows) -> (values, held)`` and ``tail(params, held, *values) -> output row``: ``values`` are what
is explained (the model's float inputs, or a layer's output or input), ``held`` everything else the tail reads
(attention masks, position embeddings, inputs that go around the layer, Captum's ``additional_forward_args``).
DeepLIFT runs on the tail with ``held`` as constants taken from the EXPLAINED row, on the input side and the
reference side alike: Captum's layer methods hold ``additional_forward_args`` that way, and xshap holds
everything that does not flow through the layer the same way, so that

    sum(attributions) = tail(values(x), held(x)) - tail(values(r), held(x)) = f(x) - f_r(x)

where ``f_r(x)`` is the model at the reference's layer values with the row's own held values. Where the held
values do not depend on the row (nothing goes around the layer) that is f(r); where they do (a residual around
the layer, a row's own padding mask) it is what the layer alone changes, and ``f(x) - f(r)`` would include
changes that do not pass through the layer. ``Split.held_names`` says what was held.

Built from a torch module (``converters.split``: the converted graph cut at a module call), from a JAX pair
``(first, rest)`` (``rest(first(x))`` is the model; ``first``'s output is the layer), or from a plain model (the
values are its inputs). A neuron is one more tail: the selected entry of the layer, attributed to the inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import jax.numpy as jnp
import numpy as np

from xshap.errors import InputError

OUTPUT, INPUT = "output", "input"


@dataclass(eq=False)
class LayerFunction:
    """One row of a model split into what is explained and what is held (module docstring)."""

    head: Callable  # head(params, *rows) -> (values tuple, held tuple); rows without the batch axis
    tail: Callable  # tail(params, held, *values) -> (n_outputs,)
    params: object
    converted: object | None = None
    layer: str | None = None
    side: str = INPUT
    call: int | None = None
    calls: int = 1
    held_names: list[str] = field(default_factory=list)
    batch_axis: bool = True  # the values carry the exported batch-of-one axis (stripped in results)
    value_names: list[str] = field(default_factory=list)  # the layer's values in the exported graph

    def model_output(self, params, *rows):
        """f(row): the tail at the row's own values and held values."""
        values, held = self.head(params, *rows)
        return self.tail(params, held, *values)


def _flat(output):
    return jnp.reshape(output, (-1,))


def torch_layer_function(
    model,
    layer,
    examples: list[np.ndarray],
    side: str = OUTPUT,
    call: int | None = None,
    output=None,
    prefix: str = "",
    decompose: str = "always",
) -> LayerFunction:
    """A torch module split at the ``side`` of call ``call`` of ``layer`` (a submodule or its path).

    The layer is marked while the model is exported (``converters.split.MarkedModel``), so that a module that
    emits no op of its own, or whose result the model never uses, is cut like any other. ``prefix``: the path of
    the user's model inside ``model`` (when ``model`` wraps it to bind arguments)."""
    return torch_layer_functions(model, layer, examples, side, call, output, prefix, decompose)[0]


def torch_layer_functions(
    model,
    layer,
    examples: list[np.ndarray],
    side: str = OUTPUT,
    call: int | str | None = None,
    output=None,
    prefix: str = "",
    decompose: str = "always",
) -> list[LayerFunction]:
    """``torch_layer_function`` for one call (an int, or None for a module called once), or for every call of
    the module (``call`` a string: ``"each"`` / ``"sum"``), from one conversion of the model."""
    import converters
    from converters.errors import ConversionError
    from converters.interim import resolve_layer
    from converters.split import MarkedModel, module_calls, split_at_module
    from xshap.explain.data import to_torch

    inner = model.get_submodule(prefix.rstrip(".")) if prefix else model
    try:
        relative = resolve_layer(inner, layer)
    except ConversionError as error:
        raise InputError(str(error)) from None
    module = inner.get_submodule(relative)
    aliases = [relative] + [p for p in _aliases(inner, module) if p != relative]
    marked = MarkedModel(model, module, output).train(model.training)
    converted = converters.from_torch(marked, tuple(to_torch(e[:4]) for e in examples), output="0", decompose=decompose)
    paths = ["model." + prefix + p for p in aliases]
    program = converted.capture.program
    calls = sorted(set(module_calls(program, paths).values())) if isinstance(call, str) else [call]
    functions = []
    for index in calls or [None]:  # a module never called: split_at_module says so
        try:
            split = split_at_module(converted.graph, program, paths, side, index)
        except ConversionError as error:
            raise InputError(str(error).replace("model." + prefix, "")) from None
        functions.append(_from_split(split, converted, relative, side))
    return functions


def _from_split(split, converted, relative: str, side: str) -> LayerFunction:
    def head(params, *rows):
        return split.head(params, *(r[None] for r in rows))

    def tail(params, held, *values):
        return _flat(split.tail(params, held, *values)[0])

    return LayerFunction(
        head,
        tail,
        converted.params,
        converted,
        relative,
        side,
        split.call,
        split.calls,
        split.held_names,
        value_names=list(split.value_names),
    )


def _aliases(model, module) -> list[str]:
    """Every path at which ``module`` computes in ``model``: the paths of the object itself (a module registered
    twice) and of its tied copies, modules of the same type whose parameters are the very same tensors (Hugging
    Face ties a T5's ``shared`` embedding to ``encoder.embed_tokens`` that way, and only the copy is called)."""
    own = [id(p) for p in module.parameters()]
    found = []
    for path, other in model.named_modules(remove_duplicate=False):
        tied = own and type(other) is type(module) and [id(p) for p in other.parameters()] == own
        if other is module or tied:
            found.append(path)
    return found


def torch_input_function(
    model, examples: list[np.ndarray], n_explained: int, output=None, decompose: str = "always"
) -> LayerFunction:
    """A torch module whose first ``n_explained`` inputs are explained and the others held (Captum's
    ``additional_forward_args``)."""
    import converters
    from xshap.explain.data import to_torch

    converted = converters.from_torch(
        model, tuple(to_torch(e[:4]) for e in examples), output=output, decompose=decompose
    )

    def head(_params, *rows):
        return tuple(rows[:n_explained]), tuple(rows[n_explained:])

    def tail(params, held, *values):
        return _flat(converted.apply_row(params, *values, *held))

    return LayerFunction(head, tail, converted.params, converted, None, INPUT, batch_axis=False)


def jax_layer_function(first: Callable, rest: Callable, output=None) -> LayerFunction:
    """``rest(first(x))`` explained at ``first``'s output (one array or a tuple of them)."""
    from xshap.explain.model import select_output

    def head(_params, *rows):
        out = first(*(r[None] for r in rows))
        return (tuple(out) if isinstance(out, (tuple, list)) else (out,)), ()

    def tail(_params, _held, *values):
        out = select_output(rest(*values), output)
        if not hasattr(out, "shape") or out.ndim == 0:
            raise InputError("the model must return an array with a leading batch axis")
        return _flat(out[0])

    return LayerFunction(head, tail, (), layer=getattr(rest, "__name__", "rest"), side=OUTPUT)


def neuron_function(layer_function: LayerFunction, selector, n_explained: int | None = None) -> LayerFunction:
    """The neuron ``selector`` of a layer as the output, the model's inputs explained (Captum's neuron methods).

    ``selector``: an int (a column of a 2-D layer value), a tuple of ints and slices over the non-batch axes (a
    slice sums the entries it selects, as Captum does), or a callable taking the layer's value (a batch of one
    row; a tuple for several values) and returning one number per row, written with array indexing or
    ``jax.numpy`` (it is traced by JAX). The first ``n_explained`` inputs are explained (default: every one)."""
    source = layer_function

    def select(values):
        if callable(selector):
            value = values if len(values) > 1 else values[0]
            picked = selector(value if source.batch_axis else value[None])
            return jnp.reshape(jnp.asarray(picked), (-1,))[:1]
        value = values[0]
        if not source.batch_axis:
            value = value[None]
        index = (selector,) if isinstance(selector, (int, np.integer, slice)) else tuple(selector)
        if value.ndim - 1 != len(index):
            raise InputError(
                f"neuron_selector {selector!r} has {len(index)} index(es) for a layer value of shape "
                f"{tuple(value.shape[1:])} (without the batch axis): give one per axis"
            )
        return jnp.reshape(jnp.sum(value[(0, *index)]), (1,))

    def head(_params, *rows):
        k = len(rows) if n_explained is None else n_explained
        return tuple(rows[:k]), tuple(rows[k:])

    def tail(params, held, *values):
        layer_values, _ = source.head(params, *values, *held)
        return select(layer_values)

    return LayerFunction(
        head,
        tail,
        source.params,
        source.converted,
        source.layer,
        INPUT,
        source.call,
        source.calls,
        batch_axis=False,
    )


def example_shapes(function: LayerFunction, rows: list[np.ndarray]):
    """The (values, held) of one example row as ``jax.ShapeDtypeStruct``s (what the DeepLIFT program is traced
    for): evaluated abstractly, so nothing is compiled or run for them."""
    import jax

    values, held = jax.eval_shape(lambda *r: function.head(function.params, *r), *(jnp.asarray(r[0]) for r in rows))
    return list(values), list(held)
