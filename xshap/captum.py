"""Captum 0.9's DeepLIFT classes, computed by xshap: ``from xshap.captum import DeepLift, LayerDeepLift, ...``.

The signatures are Captum's (the model in the constructor; ``baselines``, ``target``, ``additional_forward_args``,
``return_convergence_delta``, ``custom_attribution_func`` in ``attribute``; ``multiply_by_inputs`` in the
constructor), and so is the order of the work: DeepLiftShap expands every (input, baseline) pair, runs DeepLift on
the pairs and averages; the convergence delta is ``sum(attributions) - (f(inputs) - f(baselines))`` with f the
torch model's own forward. What differs is where the multipliers come from: the whole exported graph with
xshap's rules (functional nonlinearities, reused modules, products and norms included), not module hooks.

A layer is cut in the converted graph (``converters.split``): whatever does not flow through the layer is held
at the explained row's own value on both sides (``xshap.explain.layers``), as Captum holds
``additional_forward_args``. Where nothing goes around the layer that is Captum's semantics exactly; where
something does (a residual around the layer) Captum's delta includes the bypassed change and so does this one.

Conversion and compilation are cached on each object, per input shapes and dtypes, per non-tensor argument and
per layer side; the cache is dropped when the model's content fingerprint changes (``xshap.explain.fingerprint``),
so an edited model is converted again. The programs are also kept in a bounded process-wide cache keyed by the
model's content (its class objects, weights, attributes and module structure, no object identities), so a new
object of an equal model (Captum's tests build one per test) reuses them; ``clear_cache()`` empties it. Arguments Captum refuses with an ``AssertionError`` raise
``CaptumArgumentError``, which is one.
"""

from __future__ import annotations

import copy
import functools
import inspect
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from xshap.errors import InputError
from xshap.explain import fingerprint as fingerprints
from xshap.explain.cache import ContentCache, content
from xshap.explain.data import to_numpy
from xshap.explain.layers import INPUT, OUTPUT, LayerFunction, torch_input_function, torch_layer_function
from xshap.explain.model import DECOMPOSE, dtype_free
from xshap.explain.neurons import SelectorError, neuron_model
from xshap.explain.pairs import PairProgram
from xshap.explain.precision import model_float_dtype, needs_x64, precision

__all__ = [
    "CaptumArgumentError",
    "clear_cache",
    "DeepLift",
    "DeepLiftShap",
    "LayerDeepLift",
    "LayerDeepLiftShap",
    "NeuronDeepLift",
    "NeuronDeepLiftShap",
]

_PREFIX = "model."


class CaptumArgumentError(InputError, AssertionError):
    """An argument Captum refuses with an assertion (baselines, targets, selectors of the wrong form)."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise CaptumArgumentError(message)


def _logged(method):
    """Captum's methods carry ``__wrapped__`` (its usage logger); NoiseTunnel and the metrics call through it."""

    @functools.wraps(method)
    def call(*args, **kwargs):
        return method(*args, **kwargs)

    return call


# -- the model with its non-tensor arguments bound ------------------------------------------------------------
class _Bound(torch.nn.Module):
    """``model(*inputs, *additional_forward_args)`` as a module of tensors only: tensors with a row per input row
    are inputs of the export, everything else (numbers, flags, None, other tensors) is bound as given."""

    def __init__(self, model: torch.nn.Module, n_inputs: int, extra: tuple, per_row: tuple[int, ...]):
        super().__init__()
        self.model = model
        self._n_inputs, self._extra, self._per_row = n_inputs, extra, per_row

    def forward(self, *tensors):
        rows = iter(tensors[self._n_inputs :])
        extra = [next(rows) if i in self._per_row else a for i, a in enumerate(self._extra)]
        return self.model(*tensors[: self._n_inputs], *extra)


# -- argument forms, as Captum reads them ---------------------------------------------------------------------
def _tuple(value) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def _extra_args(additional_forward_args) -> tuple:
    if additional_forward_args is None:
        return ()
    return additional_forward_args if isinstance(additional_forward_args, tuple) else (additional_forward_args,)


def _call_baselines(baselines, inputs):
    if callable(baselines):
        return baselines(inputs) if len(inspect.signature(baselines).parameters) > 0 else baselines()
    return baselines


def _format_baselines(baselines, inputs: tuple) -> tuple:
    if baselines is None:
        return (0.0,) * len(inputs)
    baselines = _tuple(baselines)
    _check(
        len(baselines) == len(inputs),
        f"the {len(inputs)} input(s) need as many baselines, got {len(baselines)}",
    )
    for x, b in zip(inputs, baselines):
        if isinstance(b, (int, float)):
            continue
        _check(
            isinstance(b, torch.Tensor) and (b.shape == x.shape or (b.shape[0] == 1 and b.shape[1:] == x.shape[1:])),
            "Baseline can be provided as a tensor for just one input and broadcasted to the batch or input and baseline "
            f"must have the same shape or the baseline corresponding to each input tensor must be a scalar. Found "
            f"baseline: {b} and input: {x}",
        )
    return baselines


def _tensorize(inputs: tuple, baselines: tuple) -> tuple:
    out = []
    for x, b in zip(inputs, baselines):
        if isinstance(b, (int, float)):
            out.append(torch.full_like(x, float(b)))
        elif b.shape[0] == 1 and x.shape[0] > 1:
            out.append(b.expand_as(x).contiguous())
        else:
            out.append(b)
    return tuple(out)


def _distribution(baselines, inputs: tuple, name: str) -> tuple:
    baselines = _tuple(_call_baselines(baselines, inputs))
    _check(
        isinstance(baselines[0], torch.Tensor) and baselines[0].shape[0] > 1,
        "Baselines distribution has to be provided in form of a torch.Tensor with more than one example but found: "
        f"{baselines[0]}. If baselines are provided in shape of scalars or with a single baseline example, `{name}` "
        "approach can be used instead.",
    )
    return baselines


def _row_targets(target, n: int) -> list[tuple]:
    """Captum's target per row as a tuple of leading indexes after the batch axis (() selects the whole row)."""
    if target is None:
        return [()] * n
    if isinstance(target, torch.Tensor):
        if target.numel() == 1:
            return [(int(target.item()),)] * n
        _check(target.dim() == 1 and target.numel() == n, f"Tensor target dimension {tuple(target.shape)} is not valid")
        return [(int(t),) for t in target.tolist()]
    if isinstance(target, (int, np.integer)):
        return [(int(target),)] * n
    if isinstance(target, tuple):
        return [tuple(int(t) for t in target)] * n
    if isinstance(target, list):
        _check(len(target) == n, "Target list length does not match output!")
        return [(int(t),) if isinstance(t, (int, np.integer)) else tuple(t) for t in target]
    raise CaptumArgumentError(f"Target type {type(target)} is not valid.")


def _target_mask(target, output_shape: tuple[int, ...], n: int) -> np.ndarray:
    """(n, *output_shape): 1 where the target selects the output (Captum differentiates their sum)."""
    mask = np.zeros((n, *output_shape), dtype=np.float32)
    for row, index in enumerate(_row_targets(target, n)):
        _check(len(index) <= len(output_shape), f"Cannot choose target column with output shape {(n, *output_shape)}.")
        _check(
            all(-s <= i < s for i, s in zip(index, output_shape)),
            f"target {index} is out of range for outputs of shape {output_shape}",
        )
        mask[(row, *index)] = 1.0
    return mask


def _repeat_interleave_args(extra: tuple, times: int, n: int) -> tuple:
    return tuple(a.repeat_interleave(times, dim=0) if _is_row_tensor(a, n) else a for a in extra)


def _repeat_interleave_target(target, times: int):
    if isinstance(target, list):
        return [t for t in target for _ in range(times)]
    if isinstance(target, torch.Tensor) and target.numel() > 1:
        return target.repeat_interleave(times, dim=0)
    return target


def _is_row_tensor(value, n: int) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == n


def _sum_rows(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).sum(1)


def _signature(value) -> object:
    """What a bound (non-row) argument contributes to the cache key."""
    if isinstance(value, torch.Tensor):
        return ("tensor", fingerprints.digest_array(value))
    if isinstance(value, (int, float, bool, str, type(None))):
        return (type(value).__name__, value)
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(_signature(v) for v in value))
    if isinstance(value, slice):
        return ("slice", value.start, value.stop, value.step)
    return ("object", id(value))


def _layer_key(model: torch.nn.Module, layer) -> object:
    """A layer in a cache key: its first path in the model (the same in every object of one content)."""
    if isinstance(layer, str):
        return ("path", layer)
    for path, module in model.named_modules(remove_duplicate=False):
        if module is layer:
            return ("path", path)
    return ("object", id(layer))


# -- the shared machinery -------------------------------------------------------------------------------------
_SHARED = ContentCache(64)  # (model content, program key) -> program, across objects


def clear_cache() -> None:
    """Forget the programs shared across objects (each object's own are kept while it lives)."""
    _SHARED.clear()


class _Cached:
    """Converted and compiled programs of one model, kept while its fingerprint is unchanged. Programs are also
    shared across objects whose models have the same content (``xshap.explain.cache.content``; a bounded
    process-wide cache), as a test suite or a notebook builds the same model again and again."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self._programs: dict = {}
        self._fingerprint = None
        self._content: tuple | None = None

    def _check(self) -> None:
        state = fingerprints.torch_fingerprint(self.model)
        if state != self._fingerprint:
            self._programs.clear()
            self._fingerprint = state
            self._content = None

    def get(self, key, build: Callable[[], object], shared: bool = False):
        """The entry ``key`` (a program, the float64 copy of the model ...), built once per model content.
        ``shared``: the entry depends on the model's content only (a converted program), never on the object."""
        self._check()
        if key not in self._programs:
            if not shared:
                self._programs[key] = build()
                return self._programs[key]
            if self._content is None:
                self._content = content(self._fingerprint, self.model)
            origin, state = weakref.ref(self.model), self._fingerprint
            shared = _SHARED.get(
                (self._content, key), lambda: _SharedEntry(build(), origin, state), still_valid=_SharedEntry.still_valid
            )
            self._programs[key] = shared.entry
        return self._programs[key]


@dataclass(frozen=True)
class _SharedEntry:
    """A program shared across objects, with the model it was built from and that model's fingerprint then: a
    program may refer to its model's own tensors (a float64 copy, the exported graph), so once that model is
    edited in place the entry is refused for every other object and built again."""

    entry: object
    origin: weakref.ref
    state: object

    def still_valid(self) -> bool:
        model = self.origin()
        return model is None or fingerprints.torch_fingerprint(model) == self.state


class DeepLift:
    """Captum's ``DeepLift(model, multiply_by_inputs=True, eps=1e-10)``, computed by xshap (module docstring).

    ``eps`` is accepted for the signature; xshap's Rescale uses the derivative where a change is below
    ``sqrt(eps_float) * (|x| + |r|)`` of its own values instead of a fixed threshold."""

    _layer_name = "DeepLift"

    def __init__(self, model: torch.nn.Module, multiply_by_inputs: bool = True, eps: float = 1e-10) -> None:
        if not isinstance(model, torch.nn.Module):
            raise InputError(f"xshap.captum explains torch.nn.Module models, got {type(model).__name__}")
        self.model = model
        self.forward_func = model
        self.eps = eps
        self._multiply_by_inputs = multiply_by_inputs
        self._cache = _Cached(model)

    @property
    def multiplies_by_inputs(self) -> bool:
        return self._multiply_by_inputs

    def has_convergence_delta(self) -> bool:
        return True

    def attribute_future(self) -> None:
        raise NotImplementedError("attribute_future is not implemented for DeepLift")

    # -- the work -----------------------------------------------------------------------------------------------
    def _x64(self, inputs: tuple) -> bool:
        return needs_x64([model_float_dtype(self.model)]) or any(x.dtype == torch.float64 for x in inputs)

    def _rows_key(self, inputs: tuple, extra: tuple, per_row: tuple):
        return (
            tuple((tuple(x.shape[1:]), x.dtype) for x in inputs),
            tuple((tuple(a.shape[1:]), a.dtype) if i in per_row else _signature(a) for i, a in enumerate(extra)),
        )

    def _program(self, inputs: tuple, extra: tuple, layer=None, side=None, neuron=None):
        """The (LayerFunction, PairProgram) for these shapes and bound arguments, from the cache or built."""
        n = inputs[0].shape[0]
        per_row = tuple(i for i, a in enumerate(extra) if _is_row_tensor(a, n))
        key = (
            *self._rows_key(inputs, extra, per_row),
            None if layer is None else _layer_key(self.model, layer),
            side,
            None if neuron is None else _signature(neuron) if not callable(neuron) else ("callable", id(neuron)),
        )

        def build():
            bound = _Bound(self.model, len(inputs), extra, per_row)
            rows = [to_numpy(x.detach()) for x in inputs] + [to_numpy(extra[i].detach()) for i in per_row]
            module = neuron_model(bound, layer, neuron, side) if neuron is not None else bound
            try:
                with torch.no_grad():  # the model's own errors (and a bad selector) first, as Captum raises them
                    module(*(x[:1] for x in inputs), *(extra[i][:1] for i in per_row))
            except SelectorError as error:
                raise CaptumArgumentError(str(error)) from None
            with _quiet_eval_mode(self.model):
                if layer is not None and neuron is None:
                    function = torch_layer_function(bound, layer, rows, side, prefix=_PREFIX, decompose=DECOMPOSE)
                else:
                    function = torch_input_function(module, rows, len(inputs), decompose=DECOMPOSE)
            return function, PairProgram(function, rows)

        return self._cache.get(key, build, shared=True), per_row, key

    def _recompute(self, function: LayerFunction, key, x_rows, b_rows, mask):
        """The pairs' (multipliers, values at x, values at b) in float64 by the same converted graph with float64
        weights, where the graph names no dtype of its own (then it computes in the dtype it is given); None where
        it does."""
        if not dtype_free(function.converted):
            return None

        def build():
            import dataclasses

            import jax

            params = jax.tree_util.tree_map(
                lambda a: np.asarray(a, dtype=np.float64) if _floating(a) else a, function.params
            )
            twin = dataclasses.replace(function, params=params)
            return twin, PairProgram(twin, [_as64(r) for r in x_rows])

        with precision(True):
            _, program = self._cache.get((*key, "float64"), build, shared=True)
            multipliers, zx, zb, *_ = program([_as64(r) for r in x_rows], [_as64(r) for r in b_rows], mask)
        return [[a.astype(np.float32) for a in group] for group in (multipliers, zx, zb)]

    def _pairs(self, inputs: tuple, baselines: tuple, target, extra: tuple, layer=None, side=None, neuron=None):
        """Multipliers, values at the inputs and at the baselines, for pairs (input row p, baseline row p).

        Computed in float32, the pairs whose attributions miss float32's completeness tolerance (large
        cancellations: logits of 1e6 that differ by 0.1) are recomputed by a float64 copy of the model, as
        ``DeepExplainer`` recomputes such rows."""
        x64 = self._x64(inputs)
        with precision(x64):
            (function, program), per_row, key = self._program(inputs, extra, layer, side, neuron)
            n = inputs[0].shape[0]
            row_args = [to_numpy(extra[i].detach()) for i in per_row]
            x_rows = [to_numpy(x.detach()) for x in inputs] + row_args
            b_rows = [to_numpy(b.detach()) for b in baselines] + row_args
            output_shape = tuple(function.converted.output_shape) if neuron is None else (1,)
            mask = _target_mask(None if neuron is not None else target, output_shape, n).reshape(n, -1)
            multipliers, zx, zb, fx, reference = program(x_rows, b_rows, mask)
        if not x64:
            bad = _incomplete_pairs(multipliers, zx, zb, fx, reference, mask)
            if bad.any():
                high = self._recompute(function, key, [r[bad] for r in x_rows], [r[bad] for r in b_rows], mask[bad])
                if high is None:  # the graph fixes its dtypes: a float64 copy of the model, converted again
                    rows = torch.from_numpy(np.flatnonzero(bad))
                    twin = self._twin()
                    high = twin._pairs(
                        _float64(tuple(x[rows] for x in inputs)),
                        _float64(tuple(b[rows] for b in baselines)),
                        _subset_target(target, rows.tolist(), n),
                        _float64(tuple(a[rows] if i in per_row else a for i, a in enumerate(extra))),
                        twin._twin_layer(layer),
                        side,
                        neuron,
                    )
                    high = [[t.numpy() for t in group] for group in high]
                for mine, theirs in zip((multipliers, zx, zb), high):
                    for array, better in zip(mine, theirs):
                        array[bad] = np.asarray(better).reshape(array[bad].shape)
        strip = layer is not None and neuron is None

        def tensors(arrays, like):
            out = []
            for a, ref in zip(arrays, like):
                if strip:
                    _check(
                        a.shape[1] == 1, f"the layer's value has shape {a.shape[1:]} for one row: no batch axis first"
                    )
                    a = a[:, 0]
                out.append(torch.from_numpy(np.ascontiguousarray(a)).to(ref.dtype if ref is not None else None))
            return tuple(out)

        like = inputs if not strip else (None,) * len(multipliers)
        return tensors(multipliers, like), tensors(zx, like), tensors(zb, like)

    def _twin(self) -> DeepLift:
        """This attribution method on a float64 copy of the model (built once per model content)."""

        def build():
            twin = copy.copy(self)
            twin.model = copy.deepcopy(self.model).double()
            twin.forward_func = twin.model
            twin._cache = _Cached(twin.model)
            twin._paths = {id(m): name for name, m in self.model.named_modules(remove_duplicate=False)}
            return twin

        return self._cache.get("float64 twin", build)

    def _twin_layer(self, layer):
        return None if layer is None else self.model.get_submodule(self._paths[id(layer)])

    def _combine(self, multipliers, at_inputs, at_baselines, custom_attribution_func):
        if custom_attribution_func is not None:
            return _custom(custom_attribution_func, multipliers, at_inputs, at_baselines)
        if self.multiplies_by_inputs:
            return tuple((x - b) * m for x, b, m in zip(at_inputs, at_baselines, multipliers))
        return multipliers

    def _forward_selected(self, points: tuple, target, extra: tuple) -> torch.Tensor:
        """The sum of the target's outputs of f(points), f the model's forward in float64 (a copy, in eval mode as
        it was converted): the delta then measures the attributions against the model itself, not its float32
        rounding (Captum's own delta, in float32, calls a model with logits of 1e6 complete to 0.01)."""
        model64 = self._cache.get("float64 forward", lambda: copy.deepcopy(self.model).double().eval())
        with torch.no_grad():
            out = model64(*_float64(points), *_float64(extra))
        if not isinstance(out, torch.Tensor):
            raise InputError(f"the model returns a {type(out).__name__}; Captum's delta needs one tensor")
        n = out.shape[0]
        mask = torch.from_numpy(_target_mask(target, tuple(out.shape[1:]), n)).to(out.dtype)
        return (out * mask).reshape(n, -1).sum(1)

    def compute_convergence_delta(
        self, attributions, start_point, end_point, target=None, additional_forward_args=None
    ) -> torch.Tensor:
        """Captum's delta: sum(attributions) - (f(end_point) - f(start_point)) per example."""
        end_point = _tuple(end_point)
        attributions = _tuple(attributions)
        start = _tensorize(end_point, _format_baselines(start_point, end_point))
        extra = _extra_args(additional_forward_args)
        _check(
            attributions[0].shape[0] == end_point[0].shape[0],
            "Attributions tensor and the end_point must match on the first dimension but found attribution: "
            f"{attributions[0].shape[0]} and end_point: {end_point[0].shape[0]}",
        )
        end_out = self._forward_selected(end_point, target, extra)
        start_out = self._forward_selected(start, target, extra)
        total = sum(_sum_rows(a).to(torch.float64) for a in attributions)
        return (total - (end_out - start_out)).to(attributions[0].dtype)

    @_logged
    def attribute(
        self,
        inputs,
        baselines=None,
        target=None,
        additional_forward_args=None,
        return_convergence_delta: bool = False,
        custom_attribution_func: Callable | None = None,
    ):
        """Captum's ``DeepLift.attribute``: each input row against its own baseline row (or a broadcast one)."""
        is_tuple = isinstance(inputs, tuple)
        inputs = _tuple(inputs)
        baselines = _tensorize(inputs, _format_baselines(_call_baselines(baselines, inputs), inputs))
        extra = _extra_args(additional_forward_args)
        multipliers, at_x, at_b = self._pairs(inputs, baselines, target, extra)
        attributions = self._combine(multipliers, at_x, at_b, custom_attribution_func)
        result = attributions if is_tuple else attributions[0]
        if return_convergence_delta:
            return result, self.compute_convergence_delta(attributions, baselines, inputs, target, extra)
        return result


class _quiet_eval_mode:
    """Conversion happens in eval mode; Captum runs the model as it is. Say so only where it matters: a model in
    training mode with dropout or batch norm (elsewhere the two modes compute the same function)."""

    def __init__(self, model: torch.nn.Module):
        self._matters = model.training and any(
            isinstance(m, (torch.nn.modules.dropout._DropoutNd, torch.nn.modules.batchnorm._NormBase))
            for m in model.modules()
        )

    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        if not self._matters:
            warnings.filterwarnings("ignore", message="model is in training mode")
        return self

    def __exit__(self, *exc):
        return self._catch.__exit__(*exc)


def _floating(array) -> bool:
    return np.issubdtype(np.asarray(array).dtype, np.floating)


def _as64(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float64) if _floating(array) else array


def _float64(values: tuple) -> tuple:
    return tuple(v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for v in values)


def _subset_target(target, rows: list[int], n: int):
    if isinstance(target, list):
        return [target[r] for r in rows]
    if isinstance(target, torch.Tensor) and target.numel() > 1:
        return target[rows]
    return target


def _incomplete_pairs(multipliers, zx, zb, fx, reference, mask) -> np.ndarray:
    """The pairs whose float32 attributions miss float32's completeness tolerance against the converted forward."""
    from xshap.explain.completeness import completeness_tolerance, incomplete

    n = len(mask)
    parts = [((a - b) * m).reshape(n, -1).astype(np.float64) for a, b, m in zip(zx, zb, multipliers)]
    total = sum(p.sum(axis=1) for p in parts)
    mass = sum(np.abs(p).sum(axis=1) for p in parts)
    at_x, at_r = (fx * mask).sum(axis=1), (reference * mask).sum(axis=1)
    tolerance = completeness_tolerance(np.float32, at_x, at_r, mass)
    return incomplete(total - (at_x - at_r), tolerance) & np.isfinite(total)


def _custom(func: Callable, multipliers: tuple, inputs: tuple, baselines: tuple) -> tuple:
    """``custom_attribution_func`` called with as many of (multipliers, inputs, baselines) as it takes."""
    count = len(inspect.signature(func).parameters)
    _check(count > 0, "custom_attribution_func must take at least one argument (the multipliers)")
    result = (
        func(multipliers)
        if count == 1
        else func(multipliers, inputs)
        if count == 2
        else func(multipliers, inputs, baselines)
    )
    return _tuple(result)


def _mean_over_baselines(attributions: tuple, n: int, b: int) -> tuple:
    return tuple(a.reshape(n, b, *a.shape[1:]).mean(dim=1) for a in attributions)


def _expand(inputs: tuple, baselines: tuple, target, extra: tuple):
    """Captum's expansion of DeepLiftShap: every input row with every baseline row, input-major."""
    n, b = inputs[0].shape[0], baselines[0].shape[0]
    exp_inputs = tuple(x.repeat_interleave(b, dim=0) for x in inputs)
    exp_baselines = tuple(r.repeat((n,) + (1,) * (r.dim() - 1)) for r in baselines)
    return exp_inputs, exp_baselines, _repeat_interleave_target(target, b), _repeat_interleave_args(extra, b, n)


class DeepLiftShap(DeepLift):
    """Captum's ``DeepLiftShap(model, multiply_by_inputs=True)``: DeepLift on every (input, baseline) pair, averaged
    over the baselines; the delta has one entry per pair."""

    def __init__(self, model: torch.nn.Module, multiply_by_inputs: bool = True) -> None:
        super().__init__(model, multiply_by_inputs=multiply_by_inputs)

    @_logged
    def attribute(
        self,
        inputs,
        baselines,
        target=None,
        additional_forward_args=None,
        return_convergence_delta: bool = False,
        custom_attribution_func: Callable | None = None,
    ):
        is_tuple = isinstance(inputs, tuple)
        inputs = _tuple(inputs)
        baselines = _distribution(baselines, inputs, "DeepLift")
        n, b = inputs[0].shape[0], baselines[0].shape[0]
        exp_inputs, exp_baselines, exp_target, exp_extra = _expand(
            inputs, baselines, target, _extra_args(additional_forward_args)
        )
        multipliers, at_x, at_b = self._pairs(exp_inputs, exp_baselines, exp_target, exp_extra)
        pair_attributions = self._combine(multipliers, at_x, at_b, custom_attribution_func)
        attributions = _mean_over_baselines(pair_attributions, n, b)
        result = attributions if is_tuple else attributions[0]
        if return_convergence_delta:
            delta = self.compute_convergence_delta(pair_attributions, exp_baselines, exp_inputs, exp_target, exp_extra)
            return result, delta
        return result


class LayerDeepLift(DeepLift):
    """Captum's ``LayerDeepLift(model, layer, multiply_by_inputs=True)``: attributions to a layer's output (default)
    or input; what does not flow through the layer is held at the explained row's value (module docstring)."""

    def __init__(self, model: torch.nn.Module, layer: torch.nn.Module, multiply_by_inputs: bool = True) -> None:
        super().__init__(model, multiply_by_inputs=multiply_by_inputs)
        self.layer = layer

    def _layer_attributions(self, inputs, baselines, target, extra, attribute_to_layer_input, custom_attribution_func):
        side = INPUT if attribute_to_layer_input else OUTPUT
        multipliers, at_x, at_b = self._pairs(inputs, baselines, target, extra, layer=self.layer, side=side)
        return self._combine(multipliers, at_x, at_b, custom_attribution_func)

    @_logged
    def attribute(
        self,
        inputs,
        baselines=None,
        target=None,
        additional_forward_args=None,
        return_convergence_delta: bool = False,
        attribute_to_layer_input: bool = False,
        custom_attribution_func: Callable | None = None,
        grad_kwargs: dict | None = None,
    ):
        """Captum's ``LayerDeepLift.attribute`` (``grad_kwargs`` is accepted and unused: no autograd runs)."""
        inputs = _tuple(inputs)
        baselines = _tensorize(inputs, _format_baselines(_call_baselines(baselines, inputs), inputs))
        extra = _extra_args(additional_forward_args)
        attributions = self._layer_attributions(
            inputs, baselines, target, extra, attribute_to_layer_input, custom_attribution_func
        )
        result = attributions if len(attributions) > 1 else attributions[0]
        if return_convergence_delta:
            return result, self.compute_convergence_delta(attributions, baselines, inputs, target, extra)
        return result


class LayerDeepLiftShap(LayerDeepLift):
    """Captum's ``LayerDeepLiftShap``: LayerDeepLift on every (input, baseline) pair, averaged over the baselines."""

    @_logged
    def attribute(
        self,
        inputs,
        baselines,
        target=None,
        additional_forward_args=None,
        return_convergence_delta: bool = False,
        attribute_to_layer_input: bool = False,
        custom_attribution_func: Callable | None = None,
    ):
        inputs = _tuple(inputs)
        baselines = _distribution(baselines, inputs, "LayerDeepLift")
        n, b = inputs[0].shape[0], baselines[0].shape[0]
        exp_inputs, exp_baselines, exp_target, exp_extra = _expand(
            inputs, baselines, target, _extra_args(additional_forward_args)
        )
        pair_attributions = self._layer_attributions(
            exp_inputs, exp_baselines, exp_target, exp_extra, attribute_to_layer_input, custom_attribution_func
        )
        attributions = _mean_over_baselines(pair_attributions, n, b)
        result = attributions if len(attributions) > 1 else attributions[0]
        if return_convergence_delta:
            delta = self.compute_convergence_delta(pair_attributions, exp_baselines, exp_inputs, exp_target, exp_extra)
            return result, delta
        return result


class NeuronDeepLift(DeepLift):
    """Captum's ``NeuronDeepLift(model, layer, multiply_by_inputs=True)``: one neuron of a layer attributed to the
    model's inputs. ``neuron_selector``: an int, a tuple of ints and slices (a slice sums its neurons), or a
    callable of the layer's value returning one number per row."""

    def __init__(self, model: torch.nn.Module, layer: torch.nn.Module, multiply_by_inputs: bool = True) -> None:
        super().__init__(model, multiply_by_inputs=multiply_by_inputs)
        self.layer = layer

    def has_convergence_delta(self) -> bool:
        return False

    def _neuron_attributions(self, inputs, selector, baselines, extra, to_input, custom_attribution_func):
        if not callable(selector):
            index = (selector,) if isinstance(selector, int) else tuple(selector)
            _check(all(isinstance(i, (int, slice)) for i in index), f"neuron_selector {selector!r} is not valid")
        side = INPUT if to_input else OUTPUT
        multipliers, at_x, at_b = self._pairs(
            inputs, baselines, None, extra, layer=self.layer, side=side, neuron=selector
        )
        return self._combine(multipliers, at_x, at_b, custom_attribution_func)

    @_logged
    def attribute(
        self,
        inputs,
        neuron_selector,
        baselines=None,
        additional_forward_args=None,
        attribute_to_neuron_input: bool = False,
        custom_attribution_func: Callable | None = None,
    ):
        is_tuple = isinstance(inputs, tuple)
        inputs = _tuple(inputs)
        baselines = _tensorize(inputs, _format_baselines(_call_baselines(baselines, inputs), inputs))
        attributions = self._neuron_attributions(
            inputs, neuron_selector, baselines, _extra_args(additional_forward_args), attribute_to_neuron_input,
            custom_attribution_func,
        )  # fmt: skip
        return attributions if is_tuple else attributions[0]


class NeuronDeepLiftShap(NeuronDeepLift):
    """Captum's ``NeuronDeepLiftShap``: NeuronDeepLift on every (input, baseline) pair, averaged over the baselines."""

    @_logged
    def attribute(
        self,
        inputs,
        neuron_selector,
        baselines,
        additional_forward_args=None,
        attribute_to_neuron_input: bool = False,
        custom_attribution_func: Callable | None = None,
    ):
        is_tuple = isinstance(inputs, tuple)
        inputs = _tuple(inputs)
        baselines = _distribution(baselines, inputs, "NeuronDeepLift")
        n, b = inputs[0].shape[0], baselines[0].shape[0]
        exp_inputs, exp_baselines, _, exp_extra = _expand(inputs, baselines, None, _extra_args(additional_forward_args))
        pair_attributions = self._neuron_attributions(
            exp_inputs, neuron_selector, exp_baselines, exp_extra, attribute_to_neuron_input, custom_attribution_func
        )
        attributions = _mean_over_baselines(pair_attributions, n, b)
        return attributions if is_tuple else attributions[0]
