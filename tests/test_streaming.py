"""Streamed explanations (DeepExplainer.explain_to): the same values as in memory from every kind of source, a
run killed half-way resumed to the same result without recomputing finished blocks, a torn block detected,
and stores of another explanation refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import xshap

ROOT = Path(__file__).resolve().parents[1]

MODEL = textwrap.dedent(
    """
    import numpy as np, torch

    def build():
        torch.manual_seed(3)
        model = torch.nn.Sequential(
            torch.nn.Linear(6, 10), torch.nn.ReLU(), torch.nn.Linear(10, 4), torch.nn.Softplus(), torch.nn.Linear(4, 2)
        ).eval()
        return model, torch.randn(8, 6), np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    """
)

KILLED_RUN = MODEL + textwrap.dedent(
    """
    import sys, time
    import xshap

    model, bg, X = build()
    e = xshap.DeepExplainer(model, bg, batch_size=2)

    def slow_batches():  # two rows at a time, slowly, so that the run is killed in the middle
        for start in range(0, len(X), 2):
            time.sleep(0.3)
            yield X[start : start + 2]

    e.explain_to(sys.argv[1], slow_batches(), n=len(X), block_rows=2)
    """
)


@pytest.fixture(scope="module")
def model_and_data():
    space: dict = {}
    exec(MODEL, space)
    model, bg, X = space["build"]()
    explainer = xshap.DeepExplainer(model, bg, batch_size=2)
    return explainer, X, explainer.shap_values(X)


def test_every_source_gives_the_in_memory_values(model_and_data, tmp_path):
    explainer, X, reference = model_and_data
    np.save(tmp_path / "x.npy", X)
    (tmp_path / "shards").mkdir()
    for k, part in enumerate(np.array_split(X, 3)):
        np.save(tmp_path / "shards" / f"part-{k:02d}.npy", part)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.from_numpy(X), torch.zeros(len(X))), batch_size=7
    )
    sources = {"array": X, "npy": tmp_path / "x.npy", "shards": tmp_path / "shards", "loader": loader}
    for name, rows in sources.items():
        stored = explainer.explain_to(tmp_path / f"store-{name}", rows, block_rows=6)
        np.testing.assert_array_equal(stored.values(), reference, err_msg=name)
        assert stored.n == 40 and stored.blocks_total == 7 and stored.incomplete_rows == 0
        np.testing.assert_array_equal(stored.array("gaps").shape, (40, 2))
        assert np.all(np.abs(stored.array("gaps")) <= stored.array("tolerance"))
        manifest = (tmp_path / f"store-{name}" / "manifest.json").read_text()
        assert '"expected_value"' in manifest


def test_a_killed_run_resumes_to_the_uninterrupted_result(model_and_data, tmp_path):
    explainer, X, reference = model_and_data
    store = tmp_path / "store"
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    run = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(store)], cwd=ROOT, env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and run.poll() is None:
            done = list((store / "done").glob("block-????????")) if (store / "done").exists() else []
            if len(done) >= 4:
                break
            time.sleep(0.05)
        assert run.poll() is None, run.stderr.read().decode()[-2000:]  # still running: killed in the middle
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    finished = sorted(p.name for p in (store / "done").glob("block-????????"))
    assert 4 <= len(finished) < 20
    # a block cut short after its marker (a torn write): its rows no longer match the marker's digest
    torn = int(finished[1].split("-")[1])
    values = np.load(store / "values_0.npy", mmap_mode="r+")
    values[2 * torn] = 12345.0
    values.flush()
    del values
    with pytest.raises(xshap.InputError, match="already holds attributions"):
        explainer.explain_to(store, X, block_rows=2)  # not without resume
    resumed = explainer.explain_to(store, X, block_rows=2, resume=True)
    np.testing.assert_array_equal(resumed.values(), reference)
    # only the blocks not finished (and the torn one) were computed again
    assert resumed.blocks_computed == 20 - len(finished) + 1
    assert "resumed" in resumed.summary()


def test_a_store_of_another_explanation_is_refused(model_and_data, tmp_path):
    explainer, X, _ = model_and_data
    explainer.explain_to(tmp_path / "store", X[:10], block_rows=4)
    other = xshap.DeepExplainer(explainer.model.torch_model, np.zeros((3, 6), np.float32), batch_size=2)
    with pytest.raises(xshap.InputError, match="another explanation.*background"):
        other.explain_to(tmp_path / "store", X[:10], block_rows=4, resume=True)
    with pytest.raises(xshap.InputError, match="another explanation.*n"):
        explainer.explain_to(tmp_path / "store", X[:12], block_rows=4, resume=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("not a store")
    with pytest.raises(xshap.InputError, match="not an xshap store"):
        explainer.explain_to(tmp_path / "other", X, block_rows=4)
    with pytest.raises(xshap.InputError, match="must be known up front"):
        explainer.explain_to(tmp_path / "gen", (x for x in [X[:2]]))


def test_the_explain_command_streams_and_resumes(model_and_data, tmp_path, capsys):
    from xshap.cli import main

    explainer, X, _ = model_and_data
    model = explainer.model.torch_model
    torch.export.save(torch.export.export(model, (torch.from_numpy(X[:1]),)), tmp_path / "m.pt2")
    background = explainer._model_inputs_np[0]
    np.save(tmp_path / "bg.npy", background)
    (tmp_path / "x").mkdir()
    np.save(tmp_path / "x" / "a.npy", X[:25])
    np.save(tmp_path / "x" / "b.npy", X[25:])
    command = ["explain", str(tmp_path / "m.pt2"), "-b", str(tmp_path / "bg.npy"), "-x", str(tmp_path / "x")]
    command += ["--out", str(tmp_path / "store"), "--batch-size", "8"]
    assert main(command) == 0
    printed = capsys.readouterr().out
    assert "40 row(s) explained" in printed and "complete: 40 of 40" in printed
    saved = xshap.DeepExplainer(torch.export.load(tmp_path / "m.pt2"), background, batch_size=8).shap_values(X)
    np.testing.assert_allclose(np.load(tmp_path / "store" / "values_0.npy"), saved, rtol=1e-6, atol=1e-7)
    assert main(command) == 2  # the store is there: refused without --resume
    assert "already holds attributions" in capsys.readouterr().err
    assert main(command + ["--resume"]) == 0
    assert "0 of 1 block(s) computed now" in capsys.readouterr().out  # 40 rows make one block


def test_a_background_function_is_not_streamed(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1)).eval()
    explainer = xshap.DeepExplainer(model, lambda row: np.zeros((2, 3), np.float32) + 0.5 * row[0])
    with pytest.raises(xshap.InputError, match="background function"):
        explainer.explain_to(tmp_path / "store", np.ones((4, 3), np.float32))
    with pytest.raises(xshap.InputError, match="background function"):
        explainer.shap_values(np.ones((4, 3), np.float32), rows="local")


def test_a_zarr_store_is_written_and_resumed_the_same_way(model_and_data, tmp_path):
    import zarr

    explainer, X, reference = model_and_data
    store = tmp_path / "attributions.zarr"
    stored = explainer.explain_to(store, X, block_rows=8)
    assert isinstance(stored.values(), zarr.Array) and stored.values().chunks[0] == 8  # one chunk per block
    np.testing.assert_array_equal(np.asarray(stored.values()), reference)
    group = zarr.open_group(str(store), mode="r+")
    group["values_0"][9] = 777.0  # block 1 torn
    (store / "done" / "block-00000003").unlink()  # block 3 never finished
    resumed = explainer.explain_to(store, X, block_rows=8, resume=True)
    assert resumed.blocks_computed == 2 and resumed.blocks_total == 5
    np.testing.assert_array_equal(np.asarray(resumed.values()), reference)
    np.testing.assert_array_equal(np.asarray(resumed.array("gaps")).shape, (40, 2))
