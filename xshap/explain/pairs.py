"""DeepLIFT multipliers for (input, baseline) pairs: Captum's unit of work, compiled once per shape.

Each pair p has model input rows x_p and baseline rows b_p (held inputs included: Captum repeats its
``additional_forward_args`` for the baseline) and a cotangent c_p over the flattened output row (one-hot for a
target, ones for none: Captum then differentiates the sum of the outputs). For each pair the program returns the
multipliers m_p = d(c_p . tail)/d values at (values(x_p), values(b_p)) with the held values of x_p, the values at
both ends, f(x_p) and the reference output tail(values(b_p), held(x_p)) that the attributions add up to against
(``xshap.explain.layers``), the latter the reference half DeepLIFT computes with the pair (no forward pass of its
own; Captum's delta is measured against the torch model's forward). The number of pairs is padded to a power of two, so a loop of calls of varying sizes
compiles a few programs, not one per call.
"""

from __future__ import annotations

import jax
import numpy as np

from xshap.engine.transform import DeepLift
from xshap.explain.compiling import jit
from xshap.explain.layers import LayerFunction, example_shapes


class PairProgram:
    """The compiled pair computation for one ``LayerFunction`` and one set of row shapes."""

    def __init__(self, function: LayerFunction, example_rows: list[np.ndarray]):
        self.function = function
        values, held = example_shapes(function, example_rows)
        self.value_shapes = [v.shape for v in values]
        self.value_dtypes = [v.dtype for v in values]
        tail = function.tail
        self.deeplift = DeepLift(lambda p, *z: tail(p[0], p[1], *z), (function.params, tuple(held)), values)
        self.n_outputs = int(self.deeplift.output_aval.shape[0]) if self.deeplift.output_aval.ndim else 1
        self._run = jit(self._pairs)

    def _pairs(self, params, x_rows: tuple, b_rows: tuple, cotangents):
        head, deeplift = self.function.head, self.deeplift

        def one(x, b, cotangent):
            zx, cx = head(params, *x)
            zb, _ = head(params, *b)
            # the reference output tail(values(b), held(x)) is the pair's own reference half: no extra forward pass
            out, pullback, reference = jax.vjp(
                lambda z: deeplift.paired((params, cx), z, zb, with_reference=True), tuple(zx), has_aux=True
            )
            (multipliers,) = pullback(cotangent.astype(out.dtype))
            return multipliers, tuple(zx), tuple(zb), out, reference

        return jax.vmap(one)(x_rows, b_rows, cotangents)

    def __call__(self, x_rows: list[np.ndarray], b_rows: list[np.ndarray], cotangents: np.ndarray):
        """(multipliers, values at x, values at b, f(x), reference outputs) for every pair, numpy arrays with
        the pairs first (the outputs flattened per row)."""
        n = len(cotangents)
        padded = 1 << max(0, (n - 1).bit_length())
        if padded > n:
            x_rows = [np.concatenate([a, np.repeat(a[:1], padded - n, axis=0)]) for a in x_rows]
            b_rows = [np.concatenate([a, np.repeat(a[:1], padded - n, axis=0)]) for a in b_rows]
            cotangents = np.concatenate([cotangents, np.zeros((padded - n, *cotangents.shape[1:]), cotangents.dtype)])
        result = self._run(
            self.function.params,
            tuple(x_rows),
            tuple(b_rows),
            cotangents,
        )
        # sliced as numpy arrays: a slice of a jax array would compile a program of its own per shape
        multipliers, zx, zb, fx, reference = jax.tree_util.tree_map(lambda a: np.array(np.asarray(a)[:n]), result)
        return list(multipliers), list(zx), list(zb), fx, reference
