"""The op registry: ATen op name -> JAX implementation.

An implementation takes the node's arguments with every tensor already a JAX array and every other
argument as torch.export recorded it (ints, floats, lists, dtypes), and returns JAX arrays.
Adding an op means adding one entry with ``@register("aten.name.overload")``; a name without an
overload ("aten.relu") covers every overload of that op.
"""

from __future__ import annotations

from collections.abc import Callable

from converters.provenance import op_name

OpImpl = Callable[..., object]

_OPS: dict[str, OpImpl] = {}


def register(*names: str) -> Callable[[OpImpl], OpImpl]:
    """Register ``fn`` as the JAX implementation of the named ATen ops."""

    def decorate(fn: OpImpl) -> OpImpl:
        for name in names:
            if name in _OPS:
                raise ValueError(f"op {name} registered twice")
            _OPS[name] = fn
        return fn

    return decorate


def lookup(target) -> OpImpl | None:
    """The implementation for an fx call target: exact overload first, then the whole op."""
    name = op_name(target)
    if name in _OPS:
        return _OPS[name]
    packet = name.rsplit(".", 1)[0]
    return _OPS.get(packet)


def supported_ops() -> list[str]:
    """Every registered op name, sorted."""
    return sorted(_OPS)
