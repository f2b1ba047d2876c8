"""A flat view of a jaxpr: every call (jit, custom_jvp, custom_vjp, remat) inlined, values numbered.

DeepLIFT needs to see the primitives themselves: the user's custom derivative rules (jax.nn.relu's
custom_jvp, for one) describe gradients, not differences, so they are inlined and replaced by the
DeepLIFT rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import numpy as np
from jax.extend.core import ClosedJaxpr, Jaxpr, Literal

# Primitives that only wrap a sub-jaxpr: their body is inlined.
_CALL_PRIMITIVES = {
    "pjit",
    "jit",
    "closed_call",
    "core_call",
    "custom_jvp_call",
    "custom_vjp_call",
    "custom_vjp_call_jaxpr",
    "remat",
    "checkpoint",
    "custom_lin",
}
_BODY_PARAMS = ("jaxpr", "call_jaxpr", "fun_jaxpr")


@dataclass(frozen=True)
class Const:
    """A literal operand of an equation."""

    value: object


Atom = int | Const  # a numbered value or a literal


@dataclass
class Eqn:
    """One primitive application in the flat program."""

    primitive: jax.extend.core.Primitive
    inputs: list[Atom]
    outputs: list[int]
    params: dict
    scope: str  # the name stack: the module path set by converters via jax.named_scope

    @property
    def name(self) -> str:
        return self.primitive.name


@dataclass
class Program:
    """Inputs, constants, equations and outputs; ``avals[i]`` is the shape/dtype of value ``i``."""

    inputs: list[int]
    consts: dict[int, object]
    eqns: list[Eqn]
    outputs: list[Atom]
    avals: dict[int, jax.core.ShapedArray] = field(default_factory=dict)

    def aval(self, atom: Atom):
        if isinstance(atom, Const):
            return jax.core.get_aval(atom.value)
        return self.avals[atom]


def _body(eqn) -> tuple[Jaxpr, list] | None:
    if eqn.primitive.name not in _CALL_PRIMITIVES:
        return None
    for key in _BODY_PARAMS:
        body = eqn.params.get(key)
        if isinstance(body, ClosedJaxpr):
            return body.jaxpr, list(body.consts)
        if isinstance(body, Jaxpr):
            return body, []
    return None


def flatten(closed: ClosedJaxpr) -> Program:
    """Number every value of ``closed`` and inline every call primitive."""
    program = Program(inputs=[], consts={}, eqns=[], outputs=[])
    counter = iter(range(1 << 62))

    def fresh(var) -> int:
        index = next(counter)
        program.avals[index] = var.aval
        return index

    def atom(env, var) -> Atom:
        if isinstance(var, Literal):
            return Const(var.val)
        return env[var]

    def emit(jaxpr: Jaxpr, consts: list, env: dict, scope: str) -> None:
        for var, value in zip(jaxpr.constvars, consts):
            env[var] = fresh(var)
            program.consts[env[var]] = value
        for eqn in jaxpr.eqns:
            eqn_scope = "/".join(part for part in (scope, str(eqn.source_info.name_stack)) if part)
            body = _body(eqn)
            if body is not None:
                inner, inner_consts = body
                inner_env = {}
                args = [atom(env, v) for v in eqn.invars]
                for var, value in zip(inner.invars, args):
                    inner_env[var] = value if isinstance(value, int) else _materialise(program, fresh, var, value)
                emit(inner, inner_consts, inner_env, eqn_scope)
                for outer, inner_out in zip(eqn.outvars, inner.outvars):
                    env[outer] = _alias(program, fresh, outer, atom(inner_env, inner_out))
                continue
            outputs = [fresh(v) for v in eqn.outvars]
            env.update(zip(eqn.outvars, outputs))
            program.eqns.append(
                Eqn(eqn.primitive, [atom(env, v) for v in eqn.invars], outputs, dict(eqn.params), eqn_scope)
            )

    env: dict = {}
    for var in closed.jaxpr.invars:
        env[var] = fresh(var)
        program.inputs.append(env[var])
    emit(closed.jaxpr, list(closed.consts), env, "")
    program.outputs = [atom(env, v) for v in closed.jaxpr.outvars]
    return program


def _materialise(program: Program, fresh, var, literal: Const) -> int:
    """A literal passed into an inlined body becomes a constant value."""
    index = fresh(var)
    program.consts[index] = np.asarray(literal.value)
    return index


def _alias(program: Program, fresh, var, value: Atom) -> int:
    """The outer name of a body output (a literal output becomes a constant)."""
    return value if isinstance(value, int) else _materialise(program, fresh, var, value)
