"""Several devices: the explained rows are sharded over all of them, with the same results as on one.

JAX fixes its device count when it starts, so the check runs in a fresh interpreter with four CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=4).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import jax, numpy as np, torch
    import xshap

    assert len(jax.devices()) == 4, jax.devices()
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)
    ).eval()
    background, X = torch.randn(10, 6), 2 * torch.randn(11, 6)  # 11 rows: padded to the device count

    many = xshap.DeepExplainer(model, background, batch_size=4)
    one = xshap.DeepExplainer(model, background, batch_size=4, devices=jax.devices()[:1])
    assert many.sharding.count == 4 and one.sharding.count == 1
    placed = many.sharding.put_rows([np.zeros((8, 6), np.float32)])[0]
    assert len(placed.sharding.device_set) == 4 and placed.addressable_shards[0].data.shape == (2, 6)

    a, b = many.explain(X), one.explain(X)
    # the sharded program rounds differently from the one-device one; where a difference sits at a rule's
    # sqrt(eps) switch between quotient and derivative, that moves a value by ~sqrt(eps) of its contribution
    scale = np.max(np.abs(b.values[0]))
    assert np.max(np.abs(a.values[0] - b.values[0])) <= 1e-5 * scale, np.max(np.abs(a.values[0] - b.values[0]))
    assert np.all(np.abs(a.gaps) <= a.tolerance) and not a.recomputed.any()

    # sized by XLA's per-device count of the compiled chunk: each device's share of a chunk within max_memory,
    # with an estimate far too low, so that the count alone decides
    from xshap.explain.explainer import DeepExplainer, assigned_bytes

    DeepExplainer._values_per_pair = lambda self: 0.01
    budget = 64 << 10
    for devices in (jax.devices(), jax.devices()[:1]):
        sized = xshap.DeepExplainer(model, background, max_memory=budget, devices=devices)
        sized.explain(X)
        rows = sized.chunk_rows()
        compiled, _ = sized._compiled_chunk([np.repeat(sized.model_inputs(X)[0][:1], rows, axis=0)], False)
        used = assigned_bytes(compiled)
        assert used <= budget and used > budget / 16, (len(devices), rows, used)
    print("OK", many.chunk_rows(), np.max(np.abs(a.values[0] - b.values[0])))
    """
)


def test_four_devices_give_the_same_attributions_as_one():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, cwd=root, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("OK 4 ")  # batch_size 4 rounds to one row per device


def test_progress_bar_only_when_asked_or_interactive(capsys):
    import numpy as np
    import torch

    import xshap

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 1)).eval()
    background, X = torch.randn(6, 4), torch.randn(5, 4)
    quiet = xshap.DeepExplainer(model, background, batch_size=2).explain(X)  # pytest's stderr is no terminal
    assert "xshap" not in capsys.readouterr().err
    shown = xshap.DeepExplainer(model, background, batch_size=2, progress=True).explain(X)
    assert "xshap: 100%" in capsys.readouterr().err
    np.testing.assert_array_equal(quiet.values[0], shown.values[0])
