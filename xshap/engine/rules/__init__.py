"""The DeepLIFT rule table: primitive name -> rule, the way JAX keeps ``ad.primitive_jvps``.

A rule takes one equation and its operands, each either a ``Paired`` value (it depends on the
explained inputs: its value on the input x and on the reference r) or a plain constant, and returns
the ``Paired`` outputs. The x half of every nonlinear rule is a ``jax.custom_jvp`` whose tangent is the
DeepLIFT multiplier times the input tangent, so ``jax.grad`` of the x half yields DeepLIFT multipliers.
Elementwise units (one varying input) are rescaled as a whole; see ``xshap.engine.analysis``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax

from xshap.engine.program import Const, Eqn


@dataclass(frozen=True)
class Paired:
    """A value that depends on the explained inputs: on the input (x) and on the reference (r)."""

    x: jax.Array
    r: jax.Array


Rule = Callable[[Eqn, list], list]

_RULES: dict[str, Rule] = {}


def rule(*primitive_names: str) -> Callable[[Rule], Rule]:
    """Register a DeepLIFT rule for the named primitives."""

    def decorate(fn: Rule) -> Rule:
        for name in primitive_names:
            if name in _RULES:
                raise ValueError(f"rule for {name} registered twice")
            _RULES[name] = fn
        return fn

    return decorate


def lookup(primitive_name: str) -> Rule | None:
    return _RULES.get(primitive_name)


def known_primitives() -> list[str]:
    return sorted(_RULES)


def operand(value):
    """The operand as bind() wants it: literals unwrapped."""
    return value.value if isinstance(value, Const) else value


def x_half(value):
    return value.x if isinstance(value, Paired) else operand(value)


def r_half(value):
    return value.r if isinstance(value, Paired) else operand(value)


def bind(eqn: Eqn, args: list) -> list:
    """Apply the equation's primitive to ``args``; always returns a list of outputs."""
    out = eqn.primitive.bind(*(operand(a) for a in args), **eqn.params)
    return list(out) if eqn.primitive.multiple_results else [out]


def bind_both(eqn: Eqn, args: list) -> list[Paired]:
    """Apply the primitive to the x halves and to the r halves: exact for ops affine in their varying operands."""
    xs = bind(eqn, [x_half(a) for a in args])
    rs = bind(eqn, [r_half(a) for a in args])
    return [Paired(x, r) for x, r in zip(xs, rs)]


def _load_rule_modules() -> None:
    """Import every module of this package: each registers its rules with @rule."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_load_rule_modules()
