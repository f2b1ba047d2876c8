"""jax.jit with the XLA options that xshap's results depend on.

jaxlib 0.10.2 turned on XLA:CPU's YNNPACK fusions ("ynn fusion") by default, and two kinds of them miscompile:
with reduce fusions on, a LayerNorm's variance that feeds a mean and a 2-output head, differentiated once per
output, gets one output's gradient for both (found on the issue-4 transformer with 16 or more rows per chunk;
jaxlib 0.10.1 is correct); with elementwise fusions on (and dot fusions), the same program is wrong again.
jax-ml/jax#39257 reports crashes of these fusions in 0.10.2 and 0.11.0. Every program xshap compiles keeps only
the dot fusions (a YNNPACK matrix product per dot, the fast part on a CPU and correct in every test): an option
of that compilation only, so nothing else in the process changes. Off the CPU the option is ignored; before
0.10.2 the fusions were off by default and nothing is passed.
"""

from __future__ import annotations

from collections.abc import Callable

import jax

YNN_DOT_FUSIONS_ONLY = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}
FIRST_JAX_WITH_YNN_FUSIONS = (0, 10, 2)


def compiler_options() -> dict[str, str]:
    """The XLA options of every xshap compilation."""
    if tuple(jax.__version_info__[:3]) >= FIRST_JAX_WITH_YNN_FUSIONS:
        return dict(YNN_DOT_FUSIONS_ONLY)
    return {}


def jit(fn: Callable, **jit_options) -> Callable:
    """``jax.jit(fn, **jit_options)`` compiled with ``compiler_options()`` (none passed where there are none: an
    older jax.jit does not take the argument)."""
    options = compiler_options()
    return jax.jit(fn, compiler_options=options, **jit_options) if options else jax.jit(fn, **jit_options)
