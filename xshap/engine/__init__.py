"""The DeepLIFT engine on jaxprs: a JAX function flattened to primitives (``program``), its input-dependent
values and elementwise units (``analysis``), the rule table keyed by primitive (``rules/``), the rule sets
(``rulesets``), the paired evaluation whose gradient is the DeepLIFT multipliers (``transform``) and the
op-by-op completeness diagnosis (``diagnose``).

It imports no torch: a torch model reaches it only as the JAX function ``converters`` made of it.
"""
