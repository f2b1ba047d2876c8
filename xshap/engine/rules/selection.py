"""Max / min reductions and max pooling: shap's rule, written once for every selecting reduction.

For y = max over a window of z, with y_x on the input and y_r on the reference:
    Delta y = [max(y_x, y_r) - y_r]  +  [y_x - max(y_x, y_r)]
The first part (>= 0) goes to the argmax of the input window, the second (<= 0) to the argmax of the
reference window, each divided by that element's Delta z. Where that Delta z is 0 the part is 0 too, so
the rule is complete. "The value of a tangent at the argmax" is the JVP of the reduction itself (ties are
split evenly by JAX), so the rule needs no index bookkeeping and covers reduce_max, reduce_window_max
(every max pooling) and their min counterparts alike.

Pooling whose windows tile the input (window == stride, no padding or dilation, sizes divisible: the usual
nn.MaxPool2d(k)) gets the same numbers by a faster route. Seen as a reshape to (H/k, k, W/k, k), the two
selections become one-hot masks over each window's first maximum (the element XLA's select_and_scatter, and
torch, pick on ties), and the tangent rule is one elementwise product with
    coefficient_x * mask_x + coefficient_r * mask_r,
built once per pair. Its transpose, the backward pass run once per pair and output, is then a broadcast
product, where the general route runs select_and_scatter twice.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from xshap.engine.rules import Paired, bind, bind_both, operand, rule
from xshap.engine.rules.threshold import difference


def _selection_rule(z: Paired, reduce, pick, tangent) -> Paired:
    """y = reduce(z) with shap's rule as its JVP. ``tangent(zx, zr, dz, part_x, part_r)`` sends the part of
    Delta y that belongs to the input's selected element (``part_x``) and the reference's (``part_r``) there."""

    @jax.custom_jvp
    def selected(zx, zr):
        return reduce(zx)

    @selected.defjvp
    def selected_jvp(primals, tangents):
        zx, zr = primals
        dz, _ = tangents
        yx, yr = reduce(zx), reduce(zr)
        both = pick(yx, yr)
        return yx, tangent(zx, zr, dz, difference(both, yr), difference(yx, both))

    return Paired(selected(z.x, z.r), reduce(z.r))


def _select_rule(eqn, z: Paired, others: list, pick) -> Paired:
    """Any selecting reduction: the tangent and Delta z at each selected element are JVPs of the reduction."""

    def reduce(u):
        return bind(eqn, [u, *others])[0]

    def at(u, t):  # t at the elements of u that the reduction selects
        return jax.jvp(reduce, (u,), (t,))[1]

    def tangent(zx, zr, dz, part_x, part_r):
        delta = difference(zx, zr)
        return _ratio(part_x, at(zx, delta)) * at(zx, dz) + _ratio(part_r, at(zr, delta)) * at(zr, dz)

    return _selection_rule(z, reduce, pick, tangent)


def _tiled_select_rule(eqn, z: Paired, tiling: _Tiling, pick) -> Paired:
    """Windows that tile the input: the selections as one-hot masks, one weight per element (module docstring)."""

    def tangent(zx, zr, dz, part_x, part_r):
        delta = tiling.view(difference(zx, zr))
        mask_x, mask_r = tiling.first_mask(zx, pick), tiling.first_mask(zr, pick)
        weight_x = tiling.spread(_ratio(part_x, tiling.sum(delta * mask_x)))
        weight_r = tiling.spread(_ratio(part_r, tiling.sum(delta * mask_r)))
        return tiling.sum(tiling.view(dz) * (weight_x * mask_x + weight_r * mask_r))

    return _selection_rule(z, lambda u: tiling.reduce(u, pick), pick, tangent)


class _Tiling:
    """Windows that tile an array exactly, seen through a reshape: shape (s0/w0, w0, s1/w1, w1, ...)."""

    def __init__(self, shape: tuple[int, ...], window: tuple[int, ...]):
        self.shape, self.window = tuple(shape), tuple(window)
        self.outer = tuple(size // w for size, w in zip(shape, window))
        self.split = tuple(n for pair in zip(self.outer, self.window) for n in pair)
        self.window_axes = tuple(range(1, 2 * len(shape), 2))

    @classmethod
    def of(cls, eqn, shape: tuple[int, ...]) -> _Tiling | None:
        params = eqn.params
        window = params.get("window_dimensions")
        if (
            window is None
            or tuple(params["window_strides"]) != tuple(window)
            or any(low or high for low, high in params["padding"])
            or any(d != 1 for d in (*params["base_dilation"], *params["window_dilation"]))
            or len(window) != len(shape)
            or any(size % w for size, w in zip(shape, window))
        ):
            return None
        return cls(shape, window)

    def view(self, u):
        return u.reshape(self.split)

    def sum(self, windows):
        return windows.sum(axis=self.window_axes)

    def spread(self, per_window):
        """A per-window value broadcast over its window's elements (in the view's shape)."""
        return jnp.expand_dims(per_window, self.window_axes)

    def reduce(self, u, pick):
        return (jnp.max if pick is jnp.maximum else jnp.min)(self.view(u), axis=self.window_axes)

    def first_mask(self, u, pick):
        """1 at each window's first maximum (minimum) in row-major order within the window, else 0."""
        rank = len(self.shape)
        order = (*range(0, 2 * rank, 2), *self.window_axes)
        width = int(np.prod(self.window))
        flat = self.view(u).transpose(order).reshape(*self.outer, width)
        first = (jnp.argmax if pick is jnp.maximum else jnp.argmin)(flat, axis=-1)
        mask = jax.nn.one_hot(first, width, dtype=u.dtype).reshape(*self.outer, *self.window)
        return mask.transpose(np.argsort(order))


def _ratio(part, delta):
    zero = delta == 0
    return jnp.where(zero, 0.0, part / jnp.where(zero, 1.0, delta))


@rule("reduce_max", "reduce_window_max")
def maximum(eqn, args):
    return _reduce(eqn, args, jnp.maximum)


@rule("reduce_min", "reduce_window_min")
def minimum(eqn, args):
    return _reduce(eqn, args, jnp.minimum)


def _reduce(eqn, args, pick):
    z, *others = args
    if not isinstance(z, Paired):
        return bind_both(eqn, args)
    if any(isinstance(o, Paired) for o in others):  # e.g. an input-dependent init value
        from xshap.errors import NoRuleError

        raise NoRuleError([(eqn.name, eqn.scope, "an input-dependent initial value")])
    tiling = _Tiling.of(eqn, jnp.shape(z.x))
    if tiling is not None:
        return [_tiled_select_rule(eqn, z, tiling, pick)]
    return [_select_rule(eqn, z, [operand(o) for o in others], pick)]
