"""Rule sets: which DeepLIFT rule an explanation uses where more than one is defensible.

``"complete"`` (the default) uses the rules of DESIGN.md everywhere: every elementwise nonlinearity is
rescaled as one unit, and everything else (softmax included) is split through its parts.
``"shap"`` makes shap 0.51's choices where they differ from those and shap's own rule is complete: a
module shap handles with ``nonlinear_1d`` is rescaled element by element as a whole (for nn.Softmax
that credits each output's change to its own input alone). Where shap's hooks are wrong instead
(functional calls, reused modules, modules it has no rule for), ``"shap"`` keeps the complete rules: it
reproduces shap's choices, not its bugs. It needs module boundaries, so it applies to torch models.
``"revealcancel"`` is "complete" with the RevealCancel rule (xshap.engine.rules.revealcancel) on every elementwise
nonlinearity fed by a linear layer (Dense or convolution); torch and JAX models alike.
"""

from __future__ import annotations

from xshap.errors import InputError

COMPLETE = "complete"
SHAP = "shap"
REVEALCANCEL = "revealcancel"
RULE_SETS = (COMPLETE, SHAP, REVEALCANCEL)

# shap 0.51's deep_pytorch.op_handler: the module types it rescales with nonlinear_1d.
SHAP_NONLINEAR_1D = frozenset({"ReLU", "ELU", "LeakyReLU", "Sigmoid", "Tanh", "Softplus", "Softmax", "SELU", "GELU"})


def module_scopes(rules: str, converted) -> frozenset[str]:
    """Name scopes of the module calls that ``rules`` rescales as one 1-D unit."""
    if rules not in RULE_SETS:
        raise InputError(f"unknown rule set {rules!r}; choose from {', '.join(RULE_SETS)}")
    if rules in (COMPLETE, REVEALCANCEL):
        return frozenset()
    if converted is None:
        raise InputError(
            'rules="shap" reproduces the rule choices shap makes per torch module; a JAX function has no '
            'modules to make them for (and shap cannot explain it): use rules="complete"'
        )
    return frozenset(
        prov.scope
        for prov in converted.ops
        if prov.module_type.startswith("torch.nn.") and prov.module_type.rsplit(".", 1)[-1] in SHAP_NONLINEAR_1D
    )
