"""Which values depend on the explained inputs, and which elementwise subgraphs form one unit.

A connected elementwise subgraph whose only varying input is one value z is a function f(z) applied
elementwise (GELU, SiLU = z*sigmoid(z), ELU's where/expm1, softplus ...). Every complete DeepLIFT rule
gives such a unit the same multiplier, Delta f / Delta z, so it is rescaled as ONE unit. That holds
whether the function came from the converter or from native JAX (jax.nn.gelu is inlined into plain
primitives). Per-primitive rules would break completeness inside composites that route on comparisons
of their own input (ELU, hardtanh, clamp).

A *module unit* is the whole of one module call (all equations under its name scope), rescaled
element by element as shap's ``nonlinear_1d`` does for nn.Softmax: only used when a rule set asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax.numpy as jnp

from xshap.engine.program import Eqn, Program

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
ALWAYS_LINEAR = {"add", "sub", "neg", "convert_element_type", "copy", "copy_p", "reduce_precision"}


@dataclass
class Unit:
    """A connected elementwise subgraph driven by one varying value ``root``."""

    root: int
    eqns: list[Eqn] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)  # values used outside the unit
    linear: bool = True  # all eqns affine in the root: no rule needed
    module: str = ""  # for a module unit: the name scope of the module call


@dataclass
class Analysis:
    varying: set[int]
    units: dict[int, Unit]  # keyed by id(eqn) of each eqn that belongs to a unit
    unit_of_root: dict[int, Unit]


def is_linear_elementwise(eqn: Eqn, varying: set[int]) -> bool:
    """Affine in its varying operands: add/sub/neg/casts, mul by a constant, division by a constant."""
    n_varying = sum(isinstance(a, int) and a in varying for a in eqn.inputs)
    if eqn.name in ALWAYS_LINEAR:
        return True
    if eqn.name == "mul":
        return n_varying <= 1
    if eqn.name == "div":
        denominator = eqn.inputs[1]
        return not (isinstance(denominator, int) and denominator in varying)
    return False


def is_complex_to_real(eqn: Eqn, program: Program) -> bool:
    """A complex operand and a real result (``abs`` of a spectrum, a cast that drops the imaginary part): kept
    out of units, where the rescale's complex quotient would give a real value a complex tangent. ``abs`` gets
    the rule of a 2-norm of the real and imaginary parts (``xshap.engine.rules.complex``), a cast the linear one."""
    complex_in = any(jnp.issubdtype(program.aval(a).dtype, jnp.complexfloating) for a in eqn.inputs)
    return complex_in and not any(jnp.issubdtype(program.aval(o).dtype, jnp.complexfloating) for o in eqn.outputs)


def module_scope_of(scope: str, module_scopes: frozenset[str]) -> str | None:
    """The module call (one of ``module_scopes``) whose name scope contains ``scope``, if any."""
    parts = scope.split("/")
    for depth in range(len(parts), 0, -1):
        candidate = "/".join(parts[:depth])
        if candidate in module_scopes:
            return candidate
    return None


def analyse(program: Program, module_scopes: frozenset[str] = frozenset()) -> Analysis:
    """Varying values and units. ``module_scopes``: module calls each rescaled as one 1-D unit."""
    varying: set[int] = set(program.inputs)
    root_of: dict[int, int] = {}
    units: dict[int, Unit] = {}
    unit_of_root: dict[int, Unit] = {}
    module_units: dict[str, Unit] = {}
    made_in: dict[int, str] = {}  # value -> the module call whose unit computes it
    for eqn in program.eqns:
        varying_in = [a for a in eqn.inputs if isinstance(a, int) and a in varying]
        if not varying_in:
            continue
        varying.update(eqn.outputs)
        module = module_scope_of(eqn.scope, module_scopes) if module_scopes else None
        if module is not None:
            _add_to_module_unit(eqn, varying_in, module, module_units, units, made_in)
            continue
        roots = {root_of.get(a, a) for a in varying_in}
        out_shape = program.aval(eqn.outputs[0]).shape
        same_shape = all(program.aval(a).shape == out_shape for a in varying_in)
        if eqn.name in ELEMENTWISE and len(roots) == 1 and same_shape and not is_complex_to_real(eqn, program):
            root = roots.pop()
            unit = unit_of_root.setdefault(root, Unit(root))
            unit.eqns.append(eqn)
            unit.linear &= is_linear_elementwise(eqn, varying)
            units[id(eqn)] = unit
            for out in eqn.outputs:
                root_of[out] = root
    all_units = [*unit_of_root.values(), *module_units.values()]
    _mark_unit_outputs(program, units, all_units)
    _check_module_units(program, module_units)
    return Analysis(varying, units, unit_of_root)


def _add_to_module_unit(
    eqn, varying_in, module: str, module_units: dict[str, Unit], units: dict, made_in: dict[int, str]
) -> None:
    external = {a for a in varying_in if made_in.get(a) != module}
    unit = module_units.get(module)
    if unit is None:
        if len(external) != 1:
            raise ValueError(f"module call {module!r} has {len(external)} input-dependent inputs; a 1-D rule needs one")
        unit = module_units[module] = Unit(external.pop(), linear=False, module=module)
    elif external - {unit.root}:
        raise ValueError(f"module call {module!r} reads a second input-dependent value; a 1-D rule needs one")
    unit.eqns.append(eqn)
    units[id(eqn)] = unit
    made_in.update((out, module) for out in eqn.outputs)


def _check_module_units(program: Program, module_units: dict[str, Unit]) -> None:
    """A 1-D rule pairs output i with input i: every output must have the input's shape."""
    for unit in module_units.values():
        root_shape = program.aval(unit.root).shape
        shapes = {program.aval(o).shape for o in unit.outputs}
        if shapes - {root_shape}:
            raise ValueError(
                f"module call {unit.module!r} maps shape {root_shape} to {sorted(shapes)}; "
                "a 1-D rule needs its output to have its input's shape"
            )


def _mark_unit_outputs(program: Program, units: dict[int, Unit], all_units: list[Unit]) -> None:
    defined_in = {out: unit for unit in all_units for eqn in unit.eqns for out in eqn.outputs}
    used_outside: dict[int, set[int]] = {}
    for eqn in program.eqns:
        owner = units.get(id(eqn))
        for a in eqn.inputs:
            if isinstance(a, int) and a in defined_in and defined_in[a] is not owner:
                used_outside.setdefault(id(defined_in[a]), set()).add(a)
    for a in program.outputs:
        if isinstance(a, int) and a in defined_in:
            used_outside.setdefault(id(defined_in[a]), set()).add(a)
    for unit in all_units:
        wanted = used_outside.get(id(unit), set())
        unit.outputs = [out for eqn in unit.eqns for out in eqn.outputs if out in wanted]
