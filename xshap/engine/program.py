"""A flat view of a jaxpr: every call (jit, custom_jvp, custom_vjp, remat) inlined, scans unrolled,
values numbered.

DeepLIFT needs to see the primitives themselves: the user's custom derivative rules (jax.nn.relu's
custom_jvp, for one) describe gradients, not differences, so they are inlined and replaced by the
DeepLIFT rules. A ``lax.scan`` (recurrent nets) has a fixed length, so it is unrolled into its steps and
every step gets the rules like any other op.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
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
            return jax.typeof(atom.value)
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


class _Flattener:
    def __init__(self):
        self.program = Program(inputs=[], consts={}, eqns=[], outputs=[])
        self._counter = iter(range(1 << 62))

    def fresh(self, aval) -> int:
        index = next(self._counter)
        self.program.avals[index] = aval
        return index

    def constant(self, value, aval=None) -> int:
        index = self.fresh(aval if aval is not None else jax.typeof(np.asarray(value)))
        self.program.consts[index] = value
        return index

    def emit(self, jaxpr: Jaxpr, consts: list, inputs: list[Atom], scope: str) -> list[Atom]:
        """Append the equations of ``jaxpr`` applied to ``inputs``; returns its outputs."""
        env: dict = {}

        def atom(var) -> Atom:
            return Const(var.val) if isinstance(var, Literal) else env[var]

        for var, value in zip(jaxpr.constvars, consts):
            env[var] = self.constant(value, var.aval)
        for var, value in zip(jaxpr.invars, inputs):
            env[var] = value if isinstance(value, int) else self.constant(value.value, var.aval)
        for eqn in jaxpr.eqns:
            eqn_scope = "/".join(part for part in (scope, str(eqn.source_info.name_stack)) if part)
            args = [atom(v) for v in eqn.invars]
            body = _body(eqn)
            if body is not None:
                outs = self.emit(body[0], body[1], args, eqn_scope)
            elif eqn.primitive.name == "scan":
                outs = self._unroll_scan(eqn, args, eqn_scope)
            else:
                outs = [self.fresh(v.aval) for v in eqn.outvars]
                self.program.eqns.append(Eqn(eqn.primitive, args, outs, dict(eqn.params), eqn_scope))
            for var, value in zip(eqn.outvars, outs):
                env[var] = value
        return [atom(v) for v in jaxpr.outvars]

    def emit_function(self, fn, inputs: list[Atom], scope: str) -> list[Atom]:
        """Trace ``fn`` on the avals of ``inputs`` and append its equations."""
        shapes = [jax.ShapeDtypeStruct(self.program.aval(a).shape, self.program.aval(a).dtype) for a in inputs]
        closed = jax.make_jaxpr(fn)(*shapes)
        return self.emit(closed.jaxpr, list(closed.consts), inputs, scope)

    def _unroll_scan(self, eqn, args: list[Atom], scope: str) -> list[Atom]:
        params = eqn.params
        n_consts, n_carry, length = params["num_consts"], params["num_carry"], params["length"]
        body: ClosedJaxpr = params["jaxpr"]
        consts, carry, xs = args[:n_consts], args[n_consts : n_consts + n_carry], args[n_consts + n_carry :]
        steps = range(length - 1, -1, -1) if params["reverse"] else range(length)
        ys_per_step: dict[int, list[Atom]] = {}
        for t in steps:
            x_t = [self.emit_function(lambda a, t=t: a[t], [x], scope)[0] for x in xs]
            outs = self.emit(body.jaxpr, list(body.consts), [*consts, *carry, *x_t], f"{scope}/step{t}")
            carry, ys_per_step[t] = outs[:n_carry], outs[n_carry:]
        n_ys = len(eqn.outvars) - n_carry
        stacked = []
        for k in range(n_ys):
            column = [ys_per_step[t][k] for t in range(length)]
            stacked.append(self.emit_function(lambda *ys: jnp.stack(ys), column, scope)[0])
        return [*carry, *stacked]


def flatten(closed: ClosedJaxpr) -> Program:
    """Number every value of ``closed``, inline every call primitive and unroll every scan."""
    flattener = _Flattener()
    program = flattener.program
    program.inputs = [flattener.fresh(var.aval) for var in closed.jaxpr.invars]
    program.outputs = flattener.emit(closed.jaxpr, list(closed.consts), list(program.inputs), "")
    return program
