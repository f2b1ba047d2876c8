"""The FFT family: torch.fft as exported (``fft_rfft``, ``fft_irfft``, ... ``fft_ihfftn``, the shifts and the
frequency grids) and the primitives torch's default decompositions turn them into (``_fft_r2c``, ``_fft_c2r``,
``_fft_c2c``, found in programs saved after ``run_decompositions()``).

Every transform is linear in its input, and jnp.fft lowers each to JAX's one ``fft`` primitive, which DeepLIFT
treats as linear. torch and NumPy share the conventions (``n`` / ``s`` pad or truncate the input, ``norm`` is
"backward", "ortho" or "forward", the last transformed axis is the one-sided axis of rfftn / irfftn), so the
high-level ops map one to one onto jnp.fft. The Hermitian 2-D and n-D transforms, which jnp.fft lacks, are
conjugates of the real ones with the normalisation mirrored, as torch defines them.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from converters.ops.dtypes import to_jax_dtype
from converters.registry import register

# the normalisation of the inverse direction that gives the same scaling (hfft is irfft of the conjugate)
_MIRRORED = {None: "forward", "backward": "forward", "forward": "backward", "ortho": "ortho"}


def _axes(x, dim, s=None) -> tuple[int, ...] | None:
    """torch's ``dim`` of an n-D transform as axes; None means every axis (or, with ``s``, the last len(s))."""
    if dim is None:
        return None if s is None else tuple(range(x.ndim - len(s), x.ndim))
    dims = [dim] if isinstance(dim, int) else list(dim)
    return tuple(d % x.ndim for d in dims)


def _shape(s):
    return None if s is None else tuple(s)


# -- one-dimensional ---------------------------------------------------------------------------------------


@register("aten.fft_fft")
def fft_fft(x, n=None, dim=-1, norm=None):
    return jnp.fft.fft(x, n=n, axis=dim, norm=norm)


@register("aten.fft_ifft")
def fft_ifft(x, n=None, dim=-1, norm=None):
    return jnp.fft.ifft(x, n=n, axis=dim, norm=norm)


@register("aten.fft_rfft")
def fft_rfft(x, n=None, dim=-1, norm=None):
    return jnp.fft.rfft(x, n=n, axis=dim, norm=norm)


@register("aten.fft_irfft")
def fft_irfft(x, n=None, dim=-1, norm=None):
    return jnp.fft.irfft(x, n=n, axis=dim, norm=norm)


@register("aten.fft_hfft")
def fft_hfft(x, n=None, dim=-1, norm=None):
    return jnp.fft.hfft(x, n=n, axis=dim, norm=norm)


@register("aten.fft_ihfft")
def fft_ihfft(x, n=None, dim=-1, norm=None):
    return jnp.fft.ihfft(x, n=n, axis=dim, norm=norm)


# -- two- and n-dimensional --------------------------------------------------------------------------------


@register("aten.fft_fftn")
def fft_fftn(x, s=None, dim=None, norm=None):
    return jnp.fft.fftn(x, s=_shape(s), axes=_axes(x, dim, s), norm=norm)


@register("aten.fft_ifftn")
def fft_ifftn(x, s=None, dim=None, norm=None):
    return jnp.fft.ifftn(x, s=_shape(s), axes=_axes(x, dim, s), norm=norm)


@register("aten.fft_rfftn")
def fft_rfftn(x, s=None, dim=None, norm=None):
    return jnp.fft.rfftn(x, s=_shape(s), axes=_axes(x, dim, s), norm=norm)


@register("aten.fft_irfftn")
def fft_irfftn(x, s=None, dim=None, norm=None):
    return jnp.fft.irfftn(x, s=_shape(s), axes=_axes(x, dim, s), norm=norm)


@register("aten.fft_hfftn")
def fft_hfftn(x, s=None, dim=None, norm=None):
    """The real signal of a Hermitian spectrum: irfftn of the conjugate, with the normalisation mirrored."""
    return jnp.fft.irfftn(jnp.conj(x), s=_shape(s), axes=_axes(x, dim, s), norm=_MIRRORED[norm])


@register("aten.fft_ihfftn")
def fft_ihfftn(x, s=None, dim=None, norm=None):
    return jnp.conj(jnp.fft.rfftn(x, s=_shape(s), axes=_axes(x, dim, s), norm=_MIRRORED[norm]))


# torch's 2-D transforms default to the last two axes (the n-D ones to every axis)
for _nd, _name in [
    (fft_fftn, "fft2"),
    (fft_ifftn, "ifft2"),
    (fft_rfftn, "rfft2"),
    (fft_irfftn, "irfft2"),
    (fft_hfftn, "hfft2"),
    (fft_ihfftn, "ihfft2"),
]:

    def _two_d(x, s=None, dim=(-2, -1), norm=None, _nd=_nd):
        return _nd(x, s, dim, norm)

    _two_d.__name__ = f"fft_{_name}"
    register(f"aten.fft_{_name}")(_two_d)


# -- shifts and frequency grids ----------------------------------------------------------------------------


@register("aten.fft_fftshift")
def fft_fftshift(x, dim=None):
    return jnp.fft.fftshift(x, axes=_axes(x, dim))


@register("aten.fft_ifftshift")
def fft_ifftshift(x, dim=None):
    return jnp.fft.ifftshift(x, axes=_axes(x, dim))


def _grid_dtype(dtype):
    return jax.dtypes.canonicalize_dtype(to_jax_dtype(dtype) or jnp.float32)


@register("aten.fft_fftfreq")
def fft_fftfreq(n, d=1.0, *, dtype=None, **_):
    return jnp.fft.fftfreq(n, d, dtype=_grid_dtype(dtype))


@register("aten.fft_rfftfreq")
def fft_rfftfreq(n, d=1.0, *, dtype=None, **_):
    return jnp.fft.rfftfreq(n, d, dtype=_grid_dtype(dtype))


# -- the decomposed primitives ---------------------------------------------------------------------------
# ``normalization``: 0 none, 1 by 1/sqrt(n), 2 by 1/n, n the number of points of the transformed signal.


def _normalised(y, n_points: int, normalization: int):
    if normalization == 0:
        return y
    if normalization == 1:
        return y * (1.0 / math.sqrt(n_points))
    if normalization == 2:
        return y * (1.0 / n_points)
    raise ValueError(f"FFT: unknown normalization mode {normalization}")


@register("aten._fft_r2c")
def fft_r2c(x, dim, normalization, onesided):
    axes = _axes(x, dim)
    y = jnp.fft.rfftn(x, axes=axes) if onesided else jnp.fft.fftn(x, axes=axes)
    return _normalised(y, math.prod(x.shape[a] for a in axes), normalization)


@register("aten._fft_c2r")
def fft_c2r(x, dim, normalization, last_dim_size):
    axes = _axes(x, dim)
    sizes = [x.shape[a] for a in axes[:-1]] + [last_dim_size]
    y = jnp.fft.irfftn(x, s=sizes, axes=axes, norm="forward")  # "forward": no scaling on the inverse
    return _normalised(y, math.prod(sizes), normalization)


@register("aten._fft_c2c")
def fft_c2c(x, dim, normalization, forward):
    axes = _axes(x, dim)
    y = jnp.fft.fftn(x, axes=axes) if forward else jnp.fft.ifftn(x, axes=axes, norm="forward")
    return _normalised(y, math.prod(x.shape[a] for a in axes), normalization)
