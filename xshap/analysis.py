"""Which values depend on the explained inputs, and which elementwise subgraphs form one unit.

A connected elementwise subgraph whose only varying input is one value z is a function f(z) applied
elementwise (GELU, SiLU = z*sigmoid(z), ELU's where/expm1, softplus ...). Every complete DeepLIFT rule
gives such a unit the same multiplier, Delta f / Delta z, so it is rescaled as ONE unit. That holds
whether the function came from the converter or from native JAX (jax.nn.gelu is inlined into plain
primitives). Per-primitive rules would break completeness inside composites that route on comparisons
of their own input (ELU, hardtanh, clamp).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xshap.program import Eqn, Program

# Primitives that act elementwise on operands of the output's shape (rank-0 operands broadcast).
ELEMENTWISE = {
    "abs", "acos", "acosh", "add", "and", "asin", "asinh", "atan", "atan2", "atanh", "cbrt", "ceil",
    "clamp", "convert_element_type", "copy", "copy_p", "cos", "cosh", "digamma", "div", "eq", "erf",
    "erf_inv", "erfc", "exp", "exp2", "expm1", "floor", "ge", "gt", "integer_pow", "is_finite", "le",
    "lgamma", "log", "log1p", "logistic", "lt", "max", "min", "mul", "ne", "neg", "nextafter", "not",
    "or", "pow", "reduce_precision", "rem", "round", "rsqrt", "select_n", "sign", "sin", "sinh", "sqrt",
    "square", "sub", "tan", "tanh", "xor",
}  # fmt: skip

# Elementwise primitives that are affine in their varying operands wherever they appear in a unit.
_ALWAYS_LINEAR = {"add", "sub", "neg", "convert_element_type", "copy", "copy_p", "reduce_precision"}


@dataclass
class Unit:
    """A connected elementwise subgraph driven by one varying value ``root``."""

    root: int
    eqns: list[Eqn] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)  # values used outside the unit
    linear: bool = True  # all eqns affine in the root: no rule needed


@dataclass
class Analysis:
    varying: set[int]
    units: dict[int, Unit]  # keyed by id(eqn) of each eqn that belongs to a unit
    unit_of_root: dict[int, Unit]


def is_linear_elementwise(eqn: Eqn, varying: set[int]) -> bool:
    """Affine in its varying operands: add/sub/neg/casts, mul by a constant, division by a constant."""
    n_varying = sum(isinstance(a, int) and a in varying for a in eqn.inputs)
    if eqn.name in _ALWAYS_LINEAR:
        return True
    if eqn.name == "mul":
        return n_varying <= 1
    if eqn.name == "div":
        denominator = eqn.inputs[1]
        return not (isinstance(denominator, int) and denominator in varying)
    return False


def analyse(program: Program) -> Analysis:
    varying: set[int] = set(program.inputs)
    root_of: dict[int, int] = {}
    units: dict[int, Unit] = {}
    unit_of_root: dict[int, Unit] = {}
    for eqn in program.eqns:
        varying_in = [a for a in eqn.inputs if isinstance(a, int) and a in varying]
        if not varying_in:
            continue
        varying.update(eqn.outputs)
        roots = {root_of.get(a, a) for a in varying_in}
        out_shape = program.aval(eqn.outputs[0]).shape
        same_shape = all(program.aval(a).shape == out_shape for a in varying_in)
        if eqn.name in ELEMENTWISE and len(roots) == 1 and same_shape:
            root = roots.pop()
            unit = unit_of_root.setdefault(root, Unit(root))
            unit.eqns.append(eqn)
            unit.linear &= is_linear_elementwise(eqn, varying)
            units[id(eqn)] = unit
            for out in eqn.outputs:
                root_of[out] = root
    _mark_unit_outputs(program, units, unit_of_root)
    return Analysis(varying, units, unit_of_root)


def _mark_unit_outputs(program: Program, units: dict[int, Unit], unit_of_root: dict[int, Unit]) -> None:
    defined_in = {out: unit for unit in unit_of_root.values() for eqn in unit.eqns for out in eqn.outputs}
    used_outside: dict[int, set[int]] = {}
    for eqn in program.eqns:
        owner = units.get(id(eqn))
        for a in eqn.inputs:
            if isinstance(a, int) and a in defined_in and defined_in[a] is not owner:
                used_outside.setdefault(id(defined_in[a]), set()).add(a)
    for a in program.outputs:
        if isinstance(a, int) and a in defined_in:
            used_outside.setdefault(id(defined_in[a]), set()).add(a)
    for unit in unit_of_root.values():
        wanted = used_outside.get(id(unit), set())
        unit.outputs = [out for eqn in unit.eqns for out in eqn.outputs if out in wanted]
