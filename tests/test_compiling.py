"""Every program xshap compiles is compiled with XLA:CPU's YNN reduce and elementwise fusions off (xshap.explain.compiling).

jaxlib 0.10.2's YNN fusions miscompile a LayerNorm's variance that feeds a mean and a two-output head when
each output is differentiated in turn: both outputs get one output's gradient. These tests run that program
through xshap and fail on such a jaxlib if the option is not passed (checked by turning it off).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import xshap
import xshap.explain.compiling as compiling


class _LayerNormHead(torch.nn.Module):
    """LayerNorm over 64 features, mean over 32 positions, Linear to 2 outputs: the smallest part of the
    issue-4 transformer whose gradients jaxlib 0.10.2's YNN fusions got wrong."""

    def __init__(self):
        super().__init__()
        self.norm = torch.nn.LayerNorm(64)
        self.head = torch.nn.Linear(64, 2)

    def forward(self, x):
        return self.head(self.norm(x).mean(dim=1))


def _variance_head(x, weights):
    variance = ((x - x.mean(-1, keepdims=True)) ** 2).mean(-1, keepdims=True)
    return (x * variance).mean(1) @ weights


def _gradients_per_output(fn, x, weights, n_outputs):
    out, pullback = jax.vjp(lambda rows: fn(rows, weights), x)
    eye = jnp.eye(n_outputs, dtype=out.dtype)
    return jax.vmap(lambda hot: pullback(jnp.broadcast_to(hot, out.shape))[0])(eye)


def test_the_xshap_jit_compiles_the_miscompiled_program_correctly():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((64, 32, 64)), jnp.float32)
    weights = jnp.asarray(rng.standard_normal((64, 2)), jnp.float32)
    together = compiling.jit(lambda x, w: _gradients_per_output(_variance_head, x, w, 2))(x, weights)
    one_by_one = [
        compiling.jit(lambda x, w, o=o: jax.vjp(lambda rows: _variance_head(rows, w)[:, o], x)[1](jnp.ones(64))[0])(
            x, weights
        )
        for o in range(2)
    ]
    np.testing.assert_allclose(np.asarray(together), np.stack(one_by_one), rtol=1e-5, atol=1e-7)


@pytest.fixture
def layer_norm_rows():
    torch.manual_seed(0)
    model = _LayerNormHead().eval()
    with torch.no_grad():
        model.norm.weight.uniform_(0.5, 1.5)
        model.norm.bias.normal_(0.0, 0.1)
    rng = np.random.default_rng(0)
    background = rng.standard_normal((32, 32, 64)).astype(np.float32)
    X = rng.standard_normal((16, 32, 64)).astype(np.float32)
    return model, background, X


def test_chunks_of_many_rows_equal_chunks_of_one_and_add_up(layer_norm_rows):
    model, background, X = layer_norm_rows
    many = xshap.DeepExplainer(model, background, batch_size=16).explain(X)  # raises if incomplete
    one = xshap.DeepExplainer(model, background, batch_size=1).explain(X)
    for a, b in zip(many.values, one.values):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max())
    assert not np.allclose(many.values[0][:, 0], many.values[0][:, 1])  # the two outputs differ


def test_the_option_is_what_makes_them_correct(layer_norm_rows, monkeypatch):
    """With the option the answer is right; without it, on a CPU where jaxlib 0.10.2 miscompiles, it is wrong."""
    model, background, X = layer_norm_rows
    monkeypatch.setattr(compiling, "compiler_options", lambda: {})
    unprotected = xshap.DeepExplainer(model, background, batch_size=16).explain(X, check_additivity=False)
    monkeypatch.undo()
    protected = xshap.DeepExplainer(model, background, batch_size=16).explain(X)
    one_row = xshap.DeepExplainer(model, background, batch_size=1).explain(X)
    np.testing.assert_allclose(
        protected.values[0], one_row.values[0], rtol=1e-5, atol=1e-6 * np.abs(one_row.values[0]).max()
    )
    # Whether the unprotected program is wrong depends on the CPU's kernels: it was on the AVX-512 machine where the
    # bug was found, it is not on an AVX2-only one. Where it is wrong, the option is what makes it right.
    broken = not np.allclose(unprotected.values[0], protected.values[0], rtol=1e-5, atol=1e-7)
    if broken:
        assert not np.allclose(unprotected.values[0], one_row.values[0], rtol=1e-5, atol=1e-7)
    expected = compiling.YNN_DOT_FUSIONS_ONLY if jax.__version_info__ >= (0, 10, 2) else {}
    assert compiling.compiler_options() == expected


# the module loaded on its own (xshap's package would import torch: seconds per child process)
_CACHE_SCRIPT = """
import importlib.util, sys
import jax, jax.numpy as jnp
spec = importlib.util.spec_from_file_location("compiling", sys.argv[1])
compiling = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compiling)
f = compiling.jit(lambda x: jnp.sin(x) @ x.T)
f(jnp.ones((8, 8))).block_until_ready()
print("CACHE", jax.config.jax_compilation_cache_dir)
"""


def _run_cache_script(env_overrides: dict) -> str:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR", "XSHAP_COMPILATION_CACHE")}
    env.update(env_overrides, JAX_PLATFORMS="cpu", JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    done = subprocess.run(
        [sys.executable, "-c", _CACHE_SCRIPT, compiling.__file__], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return next(line for line in done.stdout.splitlines() if line.startswith("CACHE ")).split(" ", 1)[1]


def test_persistent_compilation_cache(tmp_path):
    """xshap's programs go to JAX's persistent cache in xshap's directory, made private to the user; a cache the
    user configured is used as it is."""
    ours, theirs = tmp_path / "xshap-cache", tmp_path / "user-cache"
    assert _run_cache_script({"XSHAP_COMPILATION_CACHE": str(ours)}) == str(ours)
    assert any(ours.iterdir()) and ours.stat().st_mode & 0o077 == 0
    used = _run_cache_script(
        {"XSHAP_COMPILATION_CACHE": str(tmp_path / "unused"), "JAX_COMPILATION_CACHE_DIR": str(theirs)}
    )
    assert used == str(theirs) and any(theirs.iterdir()) and not (tmp_path / "unused").exists()


def test_compilation_cache_directory_choice(monkeypatch, tmp_path):
    """XSHAP_COMPILATION_CACHE names the directory or turns the cache off; by default XDG_CACHE_HOME/xshap/jax."""
    monkeypatch.setenv("XSHAP_COMPILATION_CACHE", "off")
    assert compiling.default_cache_directory() is None
    monkeypatch.setenv("XSHAP_COMPILATION_CACHE", str(tmp_path / "mine"))
    assert compiling.default_cache_directory() == tmp_path / "mine"
    monkeypatch.delenv("XSHAP_COMPILATION_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compiling.default_cache_directory() == tmp_path / "xshap" / "jax"
