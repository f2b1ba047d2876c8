"""The completeness check: sum(phi) must equal f(x) - E f, within a tolerance made of the values' own scale.

A model computing in float32 (or float16 / bfloat16, held to float32's standard) is checked against what it
explains, the change of the output:

    tolerance32 = 1e-4 * |f(x) - E f|  +  16 eps32 * (|f(x)| + |E f| + sum |phi|)

the second term being the rounding no float32 computation can avoid: of f at its own level (an output of 100
that moves by 0.1 is known to eps * 100, not eps * 0.1) and of a sum of attributions that cancel. A row that
misses it is ill-conditioned in float32 (intermediate values far larger than their changes, a division near
0, logits of 1e6 that differ by 0.1) and is recomputed in float64 (``DeepExplainer.explain``). float64 is the
arbiter, held to its rounding at the output's level:

    tolerance64 = 1e-9 * max(|f(x)|, |E f|)  +  16 eps64 * sum |phi|

Neither has an absolute term: an earlier ``max(1, |f(x)|, |E f|)`` let a model whose outputs are of size 1e-4
be 68 % off unnoticed. A row that misses tolerance64 raises ``XShapIncompleteError``: a bug in xshap.
"""

from __future__ import annotations

import numpy as np

ROUNDING_FACTOR = 16  # ulps of rounding allowed per unit of magnitude
FLOAT32_RTOL, FLOAT64_RTOL = 1e-4, 1e-9


def tolerance_precision(dtype) -> np.dtype:
    """The precision a model computing in ``dtype`` is held to: float64's if float64, float32's otherwise."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


def completeness_tolerance(dtype, outputs, expected, mass=0.0) -> np.ndarray:
    """The allowed |sum(phi) - (f(x) - E f)| per (row, output) (module docstring). ``dtype``: the least precise
    float type the model computes in; ``mass``: sum(|phi|) per (row, output)."""
    outputs, expected = np.asarray(outputs, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    mass = np.asarray(mass, dtype=np.float64)
    if tolerance_precision(dtype) == np.float64:
        eps = float(np.finfo(np.float64).eps)
        return FLOAT64_RTOL * np.maximum(np.abs(outputs), np.abs(expected)) + ROUNDING_FACTOR * eps * mass
    eps = float(np.finfo(np.float32).eps)
    level = np.abs(outputs) + np.abs(expected) + mass
    return FLOAT32_RTOL * np.abs(outputs - expected) + ROUNDING_FACTOR * eps * level


def incomplete(gaps: np.ndarray, tolerance: np.ndarray) -> np.ndarray:
    """True where |gap| is NOT within the tolerance: a NaN gap is incomplete (``abs(nan) > tol`` is False)."""
    return ~(np.abs(gaps) <= tolerance)
