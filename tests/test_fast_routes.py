"""The two shortcuts the explainer takes for speed give the numbers of the routes they replace:

- pooling whose windows tile the input: one-hot masks instead of the general selection rule's JVPs;
- the reference half of every value computed once per background row instead of once per chunk;
- on an accelerator, one vmapped pullback over the outputs, and the results written to pinned host memory.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax import lax

import xshap
import xshap.engine.rules.selection as selection
from xshap.explain.devices import PINNED_HOST, RowSharding


def _cnn(pool: torch.nn.Module, conv: type | None = torch.nn.Conv2d) -> torch.nn.Module:
    torch.manual_seed(0)
    if conv is None:  # pooling the input itself: the integer rows below tie inside windows
        return torch.nn.Sequential(pool, torch.nn.Flatten(), torch.nn.LazyLinear(3)).eval()
    return torch.nn.Sequential(
        conv(1, 4, 3),
        torch.nn.ReLU(),  # zeros in every window that is all negative: ties for the pool
        pool,
        torch.nn.Flatten(),
        torch.nn.LazyLinear(3),
    ).eval()


def _rows(shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    background, X = torch.randn(6, *shape), torch.randn(5, *shape)
    X[0] = background[2]  # a row equal to a background row: Delta z = 0 at every element
    X[1, ..., :4] = background[0, ..., :4]  # partly equal
    X[2:4] = torch.round(X[2:4])  # integer values: ties inside windows
    background[3:] = torch.round(background[3:])
    return background, X


def _general_route(monkeypatch) -> None:
    monkeypatch.setattr(selection._Tiling, "of", classmethod(lambda cls, eqn, shape: None))


def _count_tiled_calls(monkeypatch) -> list:
    calls: list = []
    original = selection._tiled_select_rule

    def counted(*args, **kwargs):
        calls.append(args[0].name)
        return original(*args, **kwargs)

    monkeypatch.setattr(selection, "_tiled_select_rule", counted)
    return calls


@pytest.mark.parametrize(
    "pool, conv, shape",
    [
        (torch.nn.MaxPool2d(2), torch.nn.Conv2d, (1, 10, 10)),
        (torch.nn.MaxPool2d((2, 4)), torch.nn.Conv2d, (1, 10, 10)),
        (torch.nn.MaxPool1d(3), torch.nn.Conv1d, (1, 14)),
        (torch.nn.MaxPool2d(2), None, (2, 8, 8)),
    ],
    ids=["2x2", "2x4", "1d-3", "2x2-on-input"],
)
def test_tiled_max_pool_equals_the_general_route(monkeypatch, pool, conv, shape):
    model = _cnn(pool, conv)
    background, X = _rows(shape)
    model(background)  # materialise the lazy layer
    with monkeypatch.context() as patch:
        calls = _count_tiled_calls(patch)
        tiled = xshap.DeepExplainer(model, background).explain(X)
        assert set(calls) == {"reduce_window_max"}  # the shortcut was taken
    with monkeypatch.context() as patch:
        _general_route(patch)
        calls = _count_tiled_calls(patch)
        general = xshap.DeepExplainer(model, background).explain(X)
        assert calls == []
    scale = np.abs(general.values[0]).max()
    np.testing.assert_allclose(tiled.values[0], general.values[0], rtol=0, atol=1e-6 * scale)
    assert np.abs(tiled.gaps).max() <= tiled.tolerance.max()


def test_windows_that_do_not_tile_take_the_general_route(monkeypatch):
    """Overlapping windows (stride < window) and padding keep the select_and_scatter route."""
    for pool in (torch.nn.MaxPool2d(3, stride=2), torch.nn.MaxPool2d(2, padding=1)):
        model = _cnn(pool)
        background, X = _rows((1, 10, 10))
        model(background)
        with monkeypatch.context() as patch:
            calls = _count_tiled_calls(patch)
            attribution = xshap.DeepExplainer(model, background).explain(X)
            assert calls == []
        assert np.abs(attribution.gaps).max() <= attribution.tolerance.max()


def test_tiled_min_pool_equals_the_general_route(monkeypatch):
    """A JAX function with a min pool (reduce_window_min): the first minimum, as XLA picks it."""
    rng = np.random.default_rng(0)
    weight = jnp.asarray(rng.normal(size=(3, 8)), jnp.float32)

    def model(x):  # x: (N, 4, 8) -> (N, 3)
        pooled = lax.reduce_window(jnp.tanh(x), jnp.inf, lax.min, (1, 2, 2), (1, 2, 2), "VALID")
        return pooled.reshape(len(x), -1) @ weight.T

    background = np.round(rng.normal(size=(5, 4, 8)), 0).astype(np.float32)  # ties
    X = np.round(rng.normal(size=(4, 4, 8)), 0).astype(np.float32)
    with monkeypatch.context() as patch:
        calls = _count_tiled_calls(patch)
        tiled = xshap.DeepExplainer(model, background).explain(X)
        assert set(calls) == {"reduce_window_min"}
    with monkeypatch.context() as patch:
        _general_route(patch)
        general = xshap.DeepExplainer(model, background).explain(X)
    np.testing.assert_allclose(tiled.values[0], general.values[0], rtol=0, atol=1e-6)


def test_precomputed_references_equal_references_computed_per_chunk():
    model = _cnn(torch.nn.MaxPool2d(2))
    background, X = _rows((1, 10, 10))
    model(background)
    once = xshap.DeepExplainer(model, background, batch_size=2)
    assert once._references is not None
    # a budget too small to hold the references: each chunk computes them
    per_chunk = xshap.DeepExplainer(model, background, batch_size=2, max_memory=1)
    assert per_chunk._references is None
    a, b = once.explain(X), per_chunk.explain(X)
    np.testing.assert_allclose(a.values[0], b.values[0], rtol=1e-6, atol=1e-6 * np.abs(b.values[0]).max())
    np.testing.assert_allclose(a.outputs, b.outputs, rtol=1e-6, atol=1e-7)
    assert np.abs(a.gaps).max() <= a.tolerance.max()


def test_only_the_references_rules_read_are_kept_and_f_of_the_background_is_the_forward():
    """The reference program returns the values nonlinear rules read and the output (f(r), E f's source), fewer
    than every input-dependent value; f(r) from it equals the forward pass compiled on its own."""
    model = _cnn(torch.nn.MaxPool2d(2))
    background, X = _rows((1, 10, 10))
    model(background)
    explainer = xshap.DeepExplainer(model, background)
    deeplift = explainer._deeplift
    kept = set(explainer._references)
    assert kept <= deeplift.reference_reads | set(deeplift.program.outputs)
    assert deeplift.program.outputs[0] in kept and len(kept) < len(deeplift.analysis.varying)
    forward = np.asarray(explainer._forward(explainer.model.params, *explainer.background))
    np.testing.assert_allclose(explainer._background_outputs, forward, rtol=1e-6, atol=1e-7)


def test_vmapped_output_pullbacks_equal_the_unrolled_loop():
    """The vmapped form (one pullback vmapped over the one-hot cotangents: accelerators, and small models on a CPU)
    equals the unrolled loop (real CNNs on a CPU), each forced here."""
    model = _cnn(torch.nn.MaxPool2d(2))
    background, X = _rows((1, 10, 10))
    model(background)
    unrolled = xshap.DeepExplainer(model, background)
    unrolled._vmap_outputs = False
    assert not unrolled._vmap_outputs
    vmapped = xshap.DeepExplainer(model, background)
    vmapped._vmap_outputs = True
    a, b = unrolled.explain(X), vmapped.explain(X)
    np.testing.assert_allclose(b.values[0], a.values[0], rtol=1e-6, atol=1e-6 * np.abs(a.values[0]).max())


def test_results_written_to_pinned_host_memory_equal_the_default_route(monkeypatch):
    """The accelerator route (the chunk's results written to pinned host memory by the program itself), forced on
    the CPU, which has that memory kind too: the same numbers, pair totals included, as writable arrays."""
    model = _cnn(torch.nn.MaxPool2d(2))
    background, X = _rows((1, 10, 10))
    model(background)
    default = xshap.DeepExplainer(model, background, batch_size=2)
    assert default.sharding.pinned_host_rows() is None  # a CPU keeps its results where they are
    pinned_rows = default.sharding.rows.with_memory_kind(PINNED_HOST)
    monkeypatch.setattr(RowSharding, "pinned_host_rows", lambda self: pinned_rows)
    pinned = xshap.DeepExplainer(model, background, batch_size=2)
    a, b = default.explain(X, pair_totals=True), pinned.explain(X, pair_totals=True)
    for got, want in [(b.values[0], a.values[0]), (b.outputs, a.outputs), (b.pair_totals, a.pair_totals)]:
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * np.abs(want).max())
    assert b.values[0].flags.writeable and pinned.shap_values(X).flags.writeable  # as shap's own arrays are
