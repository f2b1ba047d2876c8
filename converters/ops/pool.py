"""Pooling: max, average and adaptive pooling over the last 1, 2 or 3 axes, as torch computes them.

Written so that the DeepLIFT rules see the primitives they know: max pooling is one
``lax.reduce_window`` with ``lax.max`` and an initial value of -inf (reduce_window_max), average
pooling a ``lax.reduce_window`` sum (reduce_window_sum) divided by a constant count, and adaptive
pooling with uneven windows sums (divided by constant counts) or ``jnp.max`` over static slices, stacked.
Adaptive pooling with even windows is a plain max or average pooling. The indices of the
``*_with_indices`` ops (integers, no gradient) come from an argmax over the extracted windows; they are
the flat index of the maximum within each channel's spatial plane, as torch returns them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from converters.registry import register

# -- geometry ------------------------------------------------------------------------------------------------


def _tuple(value, n: int, name: str, default=None) -> tuple[int, ...]:
    """torch's int-or-list pooling arguments as an n-tuple; an empty list means ``default``."""
    if isinstance(value, int):
        return (value,) * n
    value = tuple(int(v) for v in value)
    if not value and default is not None:
        return default
    if len(value) == 1:
        return value * n
    if len(value) != n:
        raise ValueError(f"pooling: {name} {list(value)} does not fit {n} spatial dimension(s)")
    return value


def _output_size(size: int, kernel: int, stride: int, pad: int, dilation: int, ceil_mode: bool) -> int:
    """torch's pooling_output_shape."""
    span = size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = span // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1  # the last window must start inside the input or its left padding
    return out


class _Windows:
    """Sizes, strides, paddings and output sizes of a pooling over the last n axes of ``shape``."""

    def __init__(self, shape, n, kernel, stride, padding, dilation, ceil_mode, op):
        if len(shape) < n + 1:
            raise ValueError(f"{op}: expected an input with at least {n + 1} dimensions, got shape {tuple(shape)}")
        self.n = n
        self.lead = len(shape) - n
        self.sizes = tuple(shape[-n:])
        self.kernel = _tuple(kernel, n, "kernel_size")
        self.stride = _tuple(stride, n, "stride", default=self.kernel)
        self.padding = _tuple(padding, n, "padding")
        self.dilation = _tuple(dilation, n, "dilation")
        self.out = tuple(
            _output_size(*args, bool(ceil_mode))
            for args in zip(self.sizes, self.kernel, self.stride, self.padding, self.dilation)
        )
        # the right padding that covers every window (ceil mode may need more than ``padding``)
        self.pads = tuple(
            (p, max(p, (o - 1) * s + d * (k - 1) + 1 - size - p))
            for size, k, s, p, d, o in zip(self.sizes, self.kernel, self.stride, self.padding, self.dilation, self.out)
        )

    def reduce(self, x, init, computation):
        """``lax.reduce_window`` over the windows, cut to torch's output size."""
        ones = (1,) * self.lead
        y = lax.reduce_window(
            x,
            init,
            computation,
            ones + self.kernel,
            ones + self.stride,
            [(0, 0)] * self.lead + list(self.pads),
            window_dilation=ones + self.dilation,
        )
        return y[(Ellipsis, *(slice(0, o) for o in self.out))]


def _lowest(dtype):
    """The identity of max: -inf for floating dtypes, the smallest value for integers."""
    if jnp.issubdtype(dtype, jnp.floating):
        return -np.inf
    if jnp.issubdtype(dtype, jnp.bool_):
        return False
    return jnp.iinfo(dtype).min


def _torch_argmax(values, axis: int):
    """The position torch's max pooling keeps: the first maximum, or the last NaN if there is one
    (torch scans the window and takes any element that is larger or NaN)."""
    first = jnp.argmax(values, axis=axis)
    if not jnp.issubdtype(values.dtype, jnp.inexact):
        return first
    nan = jnp.isnan(values)
    last_nan = values.shape[axis] - 1 - jnp.argmax(jnp.flip(nan, axis=axis), axis=axis)
    return jnp.where(jnp.any(nan, axis=axis), last_nan, first)


def _window_table(per_axis, sizes):
    """Combine per-axis window tables into flat ones over the spatial plane.

    ``per_axis[a]`` is (coords, first): coords (out_a, k_a) the coordinate of every window element
    along axis a (outside [0, size) for padding), first (out_a,) the window's first real coordinate.
    Returns (positions, report), both (*out, K) with K the window elements in row-major order:
    positions the element's flat index in the plane, or the plane size for padding; report the flat
    index torch reports when that element is the maximum (for padding: the window's first real element,
    which torch keeps when no element beats -inf).
    """
    n = len(sizes)
    out = tuple(coords.shape[0] for coords, _ in per_axis)
    kernel = tuple(coords.shape[1] for coords, _ in per_axis)
    flat = np.zeros(out + kernel, np.int64)
    valid = np.ones(out + kernel, bool)
    fallback = np.zeros(out, np.int64)
    for axis, ((coords, first), size) in enumerate(zip(per_axis, sizes)):
        shape = [1] * (2 * n)
        shape[axis], shape[n + axis] = coords.shape
        flat = flat * size + np.reshape(coords, shape)
        valid &= np.reshape((coords >= 0) & (coords < size), shape)
        fallback = fallback * size + np.reshape(first, shape[:n])
    plane = math.prod(sizes)
    fallback = np.broadcast_to(np.reshape(fallback, out + (1,) * n), flat.shape)
    positions = np.where(valid, flat, plane).reshape(out + (-1,))
    report = np.where(valid, flat, fallback).reshape(out + (-1,))
    return positions, report


def _indices_of_maxima(x, n: int, positions: np.ndarray, report: np.ndarray):
    """torch's index of every window's maximum, windows given by a constant table (see _window_table)."""
    lead = x.shape[: x.ndim - n]
    plane = jnp.reshape(x, lead + (-1,))
    # one -inf element after the plane stands for every padding position
    plane = jnp.pad(plane, [(0, 0)] * len(lead) + [(0, 1)], constant_values=np.array(_lowest(x.dtype), x.dtype))
    windows = lax.gather(
        plane,
        jnp.asarray(positions[..., None].astype(np.int32)),
        lax.GatherDimensionNumbers(
            offset_dims=tuple(range(len(lead))), collapsed_slice_dims=(len(lead),), start_index_map=(len(lead),)
        ),
        slice_sizes=lead + (1,),
        mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS,
    )  # (*lead, *out, K)
    choice = _torch_argmax(windows, axis=-1)
    one_hot = jnp.arange(report.shape[-1]) == choice[..., None]
    return jnp.sum(one_hot * report.astype(_index_dtype()), axis=-1)


# -- max pooling ---------------------------------------------------------------------------------------------


def _max_pool_values(x, w: _Windows):
    return w.reduce(x, np.array(_lowest(x.dtype), x.dtype), lax.max)


def _max_pool_indices(x, w: _Windows):
    """Flat index (within the spatial plane) of every window's maximum, the element torch picks."""
    per_axis = []
    for k, s, p, d, o in zip(w.kernel, w.stride, w.padding, w.dilation, w.out):
        start = np.arange(o) * s - p
        coords = start[:, None] + np.arange(k)[None, :] * d
        # torch starts each window at its first element on the dilation grid that is not padding
        first = start + np.maximum(-start + d - 1, 0) // d * d
        per_axis.append((coords, first))
    return _indices_of_maxima(x, w.n, *_window_table(per_axis, w.sizes))


class _ValuesAndIndices(Sequence):
    """A max pooling's (values, indices); the indices are only computed if the graph takes them."""

    def __init__(self, values, indices: Callable[[], jax.Array]):
        self._values = values
        self._indices = indices
        self._computed = None

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index):
        if index in (0, -2):
            return self._values
        if index in (1, -1):
            if self._computed is None:
                self._computed = self._indices()
            return self._computed
        raise IndexError(index)


def _index_dtype():
    return jax.dtypes.canonicalize_dtype(np.int64)  # int64 with jax_enable_x64, int32 otherwise


def _max_pool_op(n: int, with_indices: bool):
    op = f"max_pool{n}d"

    def max_pool(x, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
        w = _Windows(x.shape, n, kernel_size, stride, padding, dilation, ceil_mode, op)
        values = _max_pool_values(x, w)
        if not with_indices:
            return values
        return _ValuesAndIndices(values, lambda: _max_pool_indices(x, w))

    max_pool.__name__ = op + ("_with_indices" if with_indices else "")
    return max_pool


for _n in (1, 2, 3):
    register(f"aten.max_pool{_n}d")(_max_pool_op(_n, with_indices=False))
    register(f"aten.max_pool{_n}d_with_indices")(_max_pool_op(_n, with_indices=True))


# -- average pooling -----------------------------------------------------------------------------------------


def _avg_divisor(w: _Windows, count_include_pad: bool) -> np.ndarray:
    """torch's per-window count: the window clipped to input + padding, or to the input alone."""
    per_axis = []
    for size, k, s, p, o in zip(w.sizes, w.kernel, w.stride, w.padding, w.out):
        start = np.arange(o) * s - p
        end = np.minimum(start + k, size + p)
        if count_include_pad:
            per_axis.append(end - start)
        else:
            per_axis.append(np.minimum(end, size) - np.maximum(start, 0))
    divisor = per_axis[0]
    for counts in per_axis[1:]:
        divisor = np.multiply.outer(divisor, counts)
    return divisor


def _avg_pool_op(n: int):
    op = f"avg_pool{n}d"

    def avg_pool(x, kernel_size, stride=(), padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
        w = _Windows(x.shape, n, kernel_size, stride, padding, 1, ceil_mode, op)
        total = w.reduce(x, np.array(0, x.dtype), lax.add)
        if divisor_override:
            return total / np.array(divisor_override, x.dtype)
        return total / _avg_divisor(w, bool(count_include_pad)).astype(x.dtype)

    avg_pool.__name__ = op
    return avg_pool


for _n in (1, 2, 3):
    register(f"aten.avg_pool{_n}d")(_avg_pool_op(_n))


# -- adaptive pooling ----------------------------------------------------------------------------------------


def _adaptive_sizes(x, n: int, output_size, op: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if x.ndim < n + 1:
        raise ValueError(f"{op}: expected an input with at least {n + 1} dimensions, got shape {tuple(x.shape)}")
    sizes = tuple(x.shape[-n:])
    if isinstance(output_size, int):
        output_size = (output_size,) * n
    out = tuple(size if o is None else int(o) for o, size in zip(output_size, sizes))
    if len(out) != n:
        raise ValueError(f"{op}: output size {list(output_size)} does not fit {n} spatial dimension(s)")
    return sizes, out


def _adaptive_windows(size: int, out: int) -> list[tuple[int, int]]:
    """torch's windows: start = floor(i * L / out), end = ceil((i + 1) * L / out)."""
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def _even(sizes, out) -> bool:
    return all(size % o == 0 for size, o in zip(sizes, out))


def _even_windows(x, n, sizes, out, op) -> _Windows:
    kernel = tuple(size // o for size, o in zip(sizes, out))
    return _Windows(x.shape, n, kernel, kernel, 0, 1, False, op)


def _adaptive_avg_op(n: int):
    op = f"adaptive_avg_pool{n}d"

    def adaptive_avg_pool(x, output_size):
        sizes, out = _adaptive_sizes(x, n, output_size, op)
        if _even(sizes, out):  # equal, disjoint windows: a plain average pooling
            w = _even_windows(x, n, sizes, out, op)
            return w.reduce(x, np.array(0, x.dtype), lax.add) / np.array(math.prod(w.kernel), x.dtype)
        # uneven windows: the mean over a box is the mean over each of its axes in turn
        y = x
        for axis, (size, o) in enumerate(zip(sizes, out)):
            axis = axis - n
            if size == o:
                continue
            windows = _adaptive_windows(size, o)
            sums = []
            for start, end in windows:
                index = [slice(None)] * y.ndim
                index[axis] = slice(start, end)
                sums.append(jnp.sum(y[tuple(index)], axis=axis))
            counts = np.array([end - start for start, end in windows], x.dtype).reshape((o,) + (1,) * (-axis - 1))
            y = jnp.stack(sums, axis=axis) / counts
        return y

    adaptive_avg_pool.__name__ = op
    return adaptive_avg_pool


def _box(x, cell):
    return x[(Ellipsis, *(slice(start, end) for start, end in cell))]


def _adaptive_max_indices(x, sizes, out):
    """Flat index (within the spatial plane) of every adaptive window's maximum, the element torch picks."""
    per_axis = []
    for size, o in zip(sizes, out):
        windows = _adaptive_windows(size, o)
        width = max(end - start for start, end in windows)
        starts = np.array([start for start, _ in windows])
        coords = starts[:, None] + np.arange(width)[None, :]
        ends = np.array([end for _, end in windows])
        coords = np.where(coords < ends[:, None], coords, -1)  # past a shorter window's end: padding
        per_axis.append((coords, starts))
    return _indices_of_maxima(x, len(sizes), *_window_table(per_axis, sizes))


def _adaptive_max_op(n: int):
    op = f"adaptive_max_pool{n}d"

    def adaptive_max_pool(x, output_size):
        sizes, out = _adaptive_sizes(x, n, output_size, op)
        if _even(sizes, out):  # equal, disjoint windows: a plain max pooling
            w = _even_windows(x, n, sizes, out, op)
            return _ValuesAndIndices(_max_pool_values(x, w), lambda: _adaptive_max_indices(x, sizes, out))
        cells = list(itertools.product(*(_adaptive_windows(size, o) for size, o in zip(sizes, out))))
        lead = x.shape[: x.ndim - n]
        spatial = tuple(range(x.ndim - n, x.ndim))
        values = [jnp.max(_box(x, cell), axis=spatial) for cell in cells]
        values = jnp.reshape(jnp.stack(values, axis=-1), lead + out)
        return _ValuesAndIndices(values, lambda: _adaptive_max_indices(x, sizes, out))

    adaptive_max_pool.__name__ = op
    return adaptive_max_pool


for _n in (1, 2, 3):
    register(f"aten.adaptive_avg_pool{_n}d")(_adaptive_avg_op(_n))
    register(f"aten.adaptive_max_pool{_n}d")(_adaptive_max_op(_n))
register("aten._adaptive_avg_pool2d")(_adaptive_avg_op(2))
register("aten._adaptive_avg_pool3d")(_adaptive_avg_op(3))
