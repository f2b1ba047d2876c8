"""General tensor ops: einsum, broadcasting and tiling, splitting and stacking, padding, selection (where,
masked_fill), elementwise math, cumulative sums, comparisons and logic, tensors made from other tensors,
and dtype conversions.

Everything is written with plain jnp / lax ops so that the DeepLIFT rules see the usual primitives.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from converters.ops.dtypes import to_jax_dtype
from converters.registry import register

_INT64_MAX = 9223372036854775807


def _dtype(dtype, default=None):
    """The JAX dtype for a torch dtype, canonical (int64 -> int32 while x64 is off); None -> ``default``."""
    dtype = to_jax_dtype(dtype)
    if dtype is None:
        return default
    return jax.dtypes.canonicalize_dtype(dtype)


def _float(x):
    """``x`` as a float array (torch promotes integer and bool inputs of float-valued math to float32)."""
    return x if jnp.issubdtype(x.dtype, jnp.inexact) else x.astype(jnp.float32)


# -- einsum ----------------------------------------------------------------------------------------------


@register("aten.einsum")
def einsum(equation, tensors, path=None):
    return jnp.einsum(equation.replace(" ", ""), *tensors)


# -- broadcasting and tiling -------------------------------------------------------------------------------


@register("aten.expand")
def expand(x, size, *, implicit=False):
    size = list(size)
    new = len(size) - x.ndim  # expand may prepend axes; -1 keeps an existing axis's size
    shape = tuple(x.shape[i - new] if s == -1 else s for i, s in enumerate(size))
    return jnp.broadcast_to(x, shape)


@register("aten.repeat")
def repeat(x, repeats):
    return jnp.tile(x, tuple(repeats))


# -- splitting and stacking -------------------------------------------------------------------------------------


def _pieces(x, sizes, dim):
    dim = dim % x.ndim
    pieces, start = [], 0
    for size in sizes:
        pieces.append(lax.slice_in_dim(x, start, start + size, axis=dim))
        start += size
    return tuple(pieces)


@register("aten.split.Tensor")
def split(x, split_size, dim=0):
    length = x.shape[dim % x.ndim]
    if split_size == 0:
        return (x,) if length == 0 else ()
    sizes = [min(split_size, length - start) for start in range(0, length, split_size)] or [0]
    return _pieces(x, sizes, dim)


@register("aten.split_with_sizes", "aten.split.sizes")
def split_with_sizes(x, split_sizes, dim=0):
    return _pieces(x, list(split_sizes), dim)


@register("aten.chunk")
def chunk(x, chunks, dim=0):
    length = x.shape[dim % x.ndim]
    return split(x, max(-(-length // chunks), 1), dim)


@register("aten.unbind")
def unbind(x, dim=0):
    dim = dim % x.ndim
    return tuple(lax.index_in_dim(x, i, axis=dim, keepdims=False) for i in range(x.shape[dim]))


@register("aten.stack")
def stack(tensors, dim=0):
    return jnp.stack(tensors, axis=dim % (tensors[0].ndim + 1))


# -- padding -----------------------------------------------------------------------------------------------------
# torch's pad list runs from the last axis backwards: (left_last, right_last, left_second_last, ...).

_PAD_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _widths(x, pad) -> list[tuple[int, int]]:
    pad = list(pad)
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ValueError(f"pad: padding {pad} does not fit a tensor of {x.ndim} dimensions")
    widths = [(0, 0)] * x.ndim
    for i in range(len(pad) // 2):
        widths[x.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    return widths


def _constant_pad(x, pad, value):
    # lax.pad takes negative widths too (they crop), as torch's constant padding does.
    config = [(lo, hi, 0) for lo, hi in _widths(x, pad)]
    return lax.pad(x, jnp.asarray(0 if value is None else value, x.dtype), config)


@register("aten.constant_pad_nd")
def constant_pad_nd(x, pad, value=0):
    return _constant_pad(x, pad, value)


@register("aten.pad")
def pad(x, pad, mode="constant", value=None):
    if mode == "constant":
        return _constant_pad(x, pad, value)
    if mode not in _PAD_MODES:
        raise ValueError(f"pad: unknown mode {mode!r}")
    widths = _widths(x, pad)
    # negative widths crop first; the rest pads the cropped tensor
    crop = tuple(slice(max(-lo, 0), x.shape[d] - max(-hi, 0)) for d, (lo, hi) in enumerate(widths))
    x = x[crop]
    return jnp.pad(x, [(max(lo, 0), max(hi, 0)) for lo, hi in widths], mode=_PAD_MODES[mode])


@register("aten.reflection_pad1d", "aten.reflection_pad2d", "aten.reflection_pad3d")
def reflection_pad(x, padding):
    return pad(x, padding, "reflect")


@register("aten.replication_pad1d", "aten.replication_pad2d", "aten.replication_pad3d")
def replication_pad(x, padding):
    return pad(x, padding, "replicate")


# -- selection ---------------------------------------------------------------------------------------------------


@register("aten.where.self", "aten.where.ScalarSelf", "aten.where.ScalarOther", "aten.where.Scalar")
def where(condition, a, b):
    return jnp.where(condition, a, b)


@register("aten.masked_fill.Scalar", "aten.masked_fill.Tensor")
def masked_fill(x, mask, value):
    return jnp.where(mask, jnp.asarray(value).astype(x.dtype), x)


@register("aten.copy")
def copy(x, src, non_blocking=False):
    """``x.copy_(src)`` made functional: src broadcast to x's shape, in x's dtype."""
    return jnp.broadcast_to(src, x.shape).astype(x.dtype)


# -- elementwise math -----------------------------------------------------------------------------------------------


@register("aten.pow.Tensor_Scalar", "aten.pow.Tensor_Tensor", "aten.pow.Scalar")
def pow_(base, exponent):
    return jnp.power(base, exponent)


def _unary(fn, name: str, promote: bool = True):
    """Register an elementwise function; ``promote`` turns integer / bool inputs to float32 first, as torch does."""

    def impl(x):
        return fn(_float(x) if promote else x)

    impl.__name__ = name
    register(f"aten.{name}")(impl)
    return impl


for _fn, _name in [
    (jnp.sqrt, "sqrt"),
    (lax.rsqrt, "rsqrt"),
    (jnp.exp, "exp"),
    (jnp.exp2, "exp2"),
    (jnp.log, "log"),
    (jnp.log2, "log2"),
    (jnp.log10, "log10"),
    (jnp.log1p, "log1p"),
    (jnp.expm1, "expm1"),
    (jnp.reciprocal, "reciprocal"),
    (jax.scipy.special.erf, "erf"),
    (jax.scipy.special.erfc, "erfc"),
    (jnp.sin, "sin"),
    (jnp.cos, "cos"),
    (jnp.tan, "tan"),
    (jnp.arctan, "atan"),
    (jnp.arcsin, "asin"),
    (jnp.arccos, "acos"),
    (jnp.sinh, "sinh"),
    (jnp.cosh, "cosh"),
]:
    _unary(_fn, _name)

for _fn, _name in [  # abs lives in complex.py (it is complex-aware)
    (jnp.sign, "sign"),
    (jnp.square, "square"),
    (jnp.floor, "floor"),
    (jnp.ceil, "ceil"),
    (jnp.trunc, "trunc"),
    (jnp.isnan, "isnan"),
    (jnp.isinf, "isinf"),
    (jnp.isfinite, "isfinite"),
]:
    _unary(_fn, _name, promote=False)


@register("aten.round.default")
def round_(x):
    return jnp.round(x)  # both round half to even


@register("aten.round.decimals")
def round_decimals(x, *, decimals=0):
    return jnp.round(x, decimals)


@register("aten.atan2")
def atan2(a, b):
    return jnp.arctan2(_float(a), _float(b))


@register("aten.fmod")
def fmod(a, b):
    return jnp.fmod(a, b)


@register("aten.remainder")
def remainder(a, b):
    return jnp.remainder(a, b)


@register("aten.nan_to_num")
def nan_to_num(x, nan=None, posinf=None, neginf=None):
    return jnp.nan_to_num(x, nan=0.0 if nan is None else nan, posinf=posinf, neginf=neginf)


@register("aten.maximum", "aten.max.other")
def maximum(a, b):
    return jnp.maximum(a, b)


@register("aten.minimum", "aten.min.other")
def minimum(a, b):
    return jnp.minimum(a, b)


@register("aten.cumsum")
def cumsum(x, dim, *, dtype=None):
    return jnp.cumsum(x, axis=dim % max(x.ndim, 1) if x.ndim else None, dtype=_dtype(dtype))


@register("aten.cumprod")
def cumprod(x, dim, *, dtype=None):
    return jnp.cumprod(x, axis=dim % max(x.ndim, 1) if x.ndim else None, dtype=_dtype(dtype))


@register("aten.flip")
def flip(x, dims):
    return jnp.flip(x, axis=tuple(d % x.ndim for d in dims)) if x.ndim else x


@register("aten.roll")
def roll(x, shifts, dims=()):
    dims = list(dims)
    if not dims:  # torch rolls the flattened tensor
        return jnp.reshape(jnp.roll(jnp.reshape(x, (-1,)), tuple(shifts)), x.shape)
    return jnp.roll(x, tuple(shifts), axis=tuple(dims))


@register("aten.tril")
def tril(x, diagonal=0):
    return jnp.tril(x, diagonal)


@register("aten.triu")
def triu(x, diagonal=0):
    return jnp.triu(x, diagonal)


# -- comparisons and logic -----------------------------------------------------------------------------------------


# Comparisons and logic: torch op -> the jnp function with the same semantics (all overloads).
_ELEMENTWISE_BINARY = {
    "aten.gt": jnp.greater,
    "aten.ge": jnp.greater_equal,
    "aten.lt": jnp.less,
    "aten.le": jnp.less_equal,
    "aten.eq": jnp.equal,
    "aten.ne": jnp.not_equal,
    "aten.logical_and": jnp.logical_and,
    "aten.logical_or": jnp.logical_or,
    "aten.logical_xor": jnp.logical_xor,
    "aten.bitwise_and": jnp.bitwise_and,
    "aten.__and__": jnp.bitwise_and,
    "aten.bitwise_or": jnp.bitwise_or,
    "aten.__or__": jnp.bitwise_or,
    "aten.bitwise_xor": jnp.bitwise_xor,
    "aten.__xor__": jnp.bitwise_xor,
}


def _binary(fn):
    def impl(a, b):
        return fn(a, b)

    impl.__name__ = fn.__name__
    return impl


for _name, _fn in _ELEMENTWISE_BINARY.items():
    register(_name)(_binary(_fn))


@register("aten.logical_not")
def logical_not(x):
    return jnp.logical_not(x)


@register("aten.bitwise_not")
def bitwise_not(x):
    return jnp.invert(x)


# -- tensors made in the graph ----------------------------------------------------------------------------------------


@register("aten.arange")
def arange(*args, dtype=None, **_):
    """arange(end), arange(start, end) and arange(start, end, step); int64 for whole numbers, else float32."""
    start, end, step = (0, args[0], 1) if len(args) == 1 else (*args, 1)[:3]
    default = jnp.int32 if all(isinstance(v, int) for v in (start, end, step)) else jnp.float32
    return jnp.arange(start, end, step, dtype=_dtype(dtype, default))


@register("aten.full_like")
def full_like(x, fill_value, *, dtype=None, **_):
    return jnp.full(x.shape, fill_value, _dtype(dtype, x.dtype))


@register("aten.empty_like")
def empty_like(x, *, dtype=None, **_):
    return jnp.zeros(x.shape, _dtype(dtype, x.dtype))


@register("aten.new_zeros", "aten.new_empty")
def new_zeros(x, size, *, dtype=None, **_):
    return jnp.zeros(tuple(size), _dtype(dtype, x.dtype))


@register("aten.new_ones")
def new_ones(x, size, *, dtype=None, **_):
    return jnp.ones(tuple(size), _dtype(dtype, x.dtype))


@register("aten.new_full")
def new_full(x, size, fill_value, *, dtype=None, **_):
    return jnp.full(tuple(size), fill_value, _dtype(dtype, x.dtype))


@register("aten.fill.Scalar", "aten.fill.Tensor")
def fill(x, value):
    return jnp.broadcast_to(jnp.asarray(value).astype(x.dtype), x.shape)


# -- dtype conversions (aten.to.dtype and aten._to_copy live in creation.py) ----------------------------------------


@register("aten.type_as")
def type_as(x, other):
    return x.astype(other.dtype)


@register("aten.to.other")
def to_other(x, other, *args, **kwargs):
    return x.astype(other.dtype)


@register("aten.to.device")
def to_device(x, device=None, dtype=None, *args, **kwargs):
    dtype = _dtype(kwargs.get("dtype", dtype))
    return x if dtype is None else x.astype(dtype)
