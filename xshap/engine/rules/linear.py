"""Ops affine in their varying operands: the ordinary derivative is the exact DeepLIFT multiplier."""

from __future__ import annotations

from xshap.engine.rules import Paired, bind_both, rule
from xshap.errors import NoRuleError

LINEAR_PRIMITIVES = (
    "add", "sub", "neg", "reshape", "broadcast_in_dim", "transpose", "squeeze", "expand_dims",
    "concatenate", "slice", "pad", "reduce_sum", "convert_element_type", "copy", "copy_p", "rev",
    "cumsum", "reduce_precision", "real", "imag", "conj", "complex", "stack", "split", "reduce_window_sum",
    "tile", "fft",
)  # fmt: skip
# "fft" (every jnp.fft transform, forward or inverse, real or complex) and the complex parts ("real", "imag",
# "conj", "complex") are linear over the reals: exact for the real multipliers of a real input, whatever
# complex values flow in between.


@rule(*LINEAR_PRIMITIVES)
def linear(eqn, args):
    return bind_both(eqn, args)


@rule("stop_gradient")
def stop_gradient(eqn, args):
    # stop_gradient is an autodiff hint (softmax's max shift), not part of the function: DeepLIFT must
    # see the difference it carries, or completeness breaks.
    (value,) = args
    return [value]


def _require_constant(eqn, args, positions, reason: str) -> None:
    if any(i < len(args) and isinstance(args[i], Paired) for i in positions):
        raise NoRuleError([(eqn.name, eqn.scope, reason)])


@rule("dynamic_slice", "gather")
def indexed(eqn, args):
    # Linear in the operand as long as the indices are constants.
    _require_constant(eqn, args, range(1, len(args)), "indices that depend on the explained inputs")
    return bind_both(eqn, args)


@rule("dynamic_update_slice", "scatter-add", "scatter_add")
def indexed_update(eqn, args):
    first_index = 2 if eqn.name == "dynamic_update_slice" else 1
    _require_constant(eqn, args, range(first_index, len(args)), "indices that depend on the explained inputs")
    return bind_both(eqn, args)


@rule("select_n")
def select(eqn, args):
    # Linear in the cases when the predicate is a constant; an input-dependent predicate is only
    # handled inside an elementwise unit (one varying input), see xshap.engine.analysis.
    _require_constant(eqn, args, [0], "a selection predicate that depends on the explained inputs")
    return bind_both(eqn, args)


@rule("conv_general_dilated")
def convolution(eqn, args):
    if isinstance(args[0], Paired) and isinstance(args[1], Paired):
        raise NoRuleError([(eqn.name, eqn.scope, "input and kernel both depend on the explained inputs")])
    return bind_both(eqn, args)
