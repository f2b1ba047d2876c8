"""One explanation over two processes with JAX's multi-controller runtime (jax.distributed, gloo collectives on
127.0.0.1), against the one-process result; and errors that make every process raise instead of hang.

Each test starts two fresh interpreters (JAX fixes its process group when it starts), bounded in time and
killed on failure.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import xshap

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 240

MODELS = textwrap.dedent(
    """
    import numpy as np, torch

    def one_input():
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(5, 12), torch.nn.ReLU(), torch.nn.Linear(12, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)
        ).eval()
        return model, torch.randn(7, 5), 2 * torch.randn(11, 5)  # 11 rows: 6 and 5 per process

    class TwoInputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(4, 6), torch.nn.Linear(3, 6)
            self.head = torch.nn.Linear(6, 2)

        def forward(self, x, y):
            return self.head(torch.relu(self.a(x)) * torch.sigmoid(self.b(y)))

    def two_inputs():
        torch.manual_seed(1)
        return TwoInputs().eval(), [torch.randn(6, 4), torch.randn(6, 3)], [torch.randn(9, 4), torch.randn(9, 3)]
    """
)

WORKER = MODELS + textwrap.dedent(
    """
    import sys, json, os
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    port, pid, out, case = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid)
    import xshap
    from xshap.explain.processes import ProcessFailedError

    def save(name, **arrays):
        np.savez(f"{out}/{name}-{pid}.npz", **arrays)

    if case == "all":
        model, bg, X = one_input()
        e = xshap.DeepExplainer(model, bg, batch_size=2)
        whole = e.explain(X)  # X whole in both; each explains its share, both get all
        save("all", values=whole.values[0], gaps=whole.gaps, expected=e.expected_value, outputs=whole.outputs)
        model2, bg2, X2 = two_inputs()
        e2 = xshap.DeepExplainer(model2, bg2, batch_size=2)
        mine = slice(0, 5) if pid == 0 else slice(5, 9)  # each its own rows, unevenly
        local = e2.shap_values([x[mine] for x in X2], rows="local")
        save("local", v0=local[0], v1=local[1], expected=e2.expected_value)
        stored = e.explain_to(f"{out}/store", X, block_rows=3)  # each process writes its own blocks
        print("OK", pid, stored.blocks_total, stored.blocks_computed, flush=True)
        X = X.clone()
        if pid == 1:
            X[2, 1] = float("nan")  # only process 1's rows are bad
        try:
            e.explain(X, rows="local")
        except Exception as error:
            print("RAISED", pid, type(error).__name__, str(error)[:300], flush=True)
        other = bg.clone() if pid == 0 else bg + 1  # the processes disagree on the background
        try:
            xshap.DeepExplainer(model, other)
        except Exception as error:
            print("RAISED", pid, type(error).__name__, str(error)[:300], flush=True)
        print("DONE", pid, flush=True)
        if pid == 1:
            os._exit(3)  # process 1 dies without a word
        try:
            e.explain(X)
        except Exception as error:
            print("LOST", type(error).__name__, str(error)[:200], flush=True)
        os._exit(0)  # JAX's shutdown barrier would abort this process: the other one is gone
    """
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run_two(case: str, out: Path) -> list[str]:
    """Both processes' stdout; both killed (and the test failed) if either is not done within TIMEOUT_S."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    # the workers compile as this process does (its XLA threads: the sums round in the same order), on one device
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "force_host_platform_device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags)
    port = _free_port()
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(port), str(pid), str(out), case],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pid in (0, 1)
    ]
    outputs = []
    try:
        for pid, worker in enumerate(workers):
            stdout, stderr = worker.communicate(timeout=TIMEOUT_S)
            assert worker.returncode == (3 if pid == 1 else 0), stderr[-3000:]  # process 1 dies at the end
            outputs.append(stdout)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    return outputs


def _lines(text: str, prefix: str) -> list[str]:
    """The worker's own lines (gloo prints its connections to stdout too)."""
    return [line for line in text.splitlines() if line.startswith(prefix)]


def _namespace() -> dict:
    space: dict = {}
    exec(MODELS, space)  # the same model builders as the workers'
    return space


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("distributed")
    return out, _run_two("all", out)


def test_two_processes_equal_one_process_for_whole_and_local_rows(two_process_run):
    out, stdout = two_process_run
    assert all(_lines(text, "OK") for text in stdout)
    space = _namespace()
    model, bg, X = space["one_input"]()
    one = xshap.DeepExplainer(model, bg, batch_size=2)
    reference = one.explain(X)
    scale = np.max(np.abs(reference.values[0]))
    workers = [np.load(out / f"all-{pid}.npz") for pid in (0, 1)]
    np.testing.assert_array_equal(workers[0]["expected"], workers[1]["expected"])  # the same in every process
    np.testing.assert_array_equal(workers[0]["values"], workers[1]["values"])  # both hold the same gathered rows
    for got in workers:
        assert got["values"].shape == reference.values[0].shape  # every process holds all 11 rows
        assert np.max(np.abs(got["values"] - reference.values[0])) <= 1e-6 * scale
        np.testing.assert_allclose(got["outputs"], reference.outputs, rtol=1e-6, atol=1e-6 * scale)
        # against this process (its XLA threads are the test worker's, so sums may round in another order)
        np.testing.assert_allclose(got["expected"], one.expected_value, rtol=1e-6, atol=1e-6 * scale)
        assert np.all(np.abs(got["gaps"]) <= np.abs(reference.tolerance) * 1.5)
    model2, bg2, X2 = space["two_inputs"]()
    two = xshap.DeepExplainer(model2, bg2, batch_size=2)
    want = two.shap_values(X2)
    parts = [np.load(out / f"local-{pid}.npz") for pid in (0, 1)]
    assert parts[0]["v0"].shape[0] == 5 and parts[1]["v0"].shape[0] == 4  # each got its own rows back
    for key, whole in (("v0", want[0]), ("v1", want[1])):
        joined = np.concatenate([p[key] for p in parts])
        assert np.max(np.abs(joined - whole)) <= 1e-6 * np.max(np.abs(whole))


def test_two_processes_write_one_store(two_process_run):
    out, stdout = two_process_run
    # 11 rows in blocks of 3: 4 blocks, 2 written by each process, 4 computed in all
    assert [_lines(text, "OK")[0].split() for text in stdout] == [["OK", str(pid), "4", "4"] for pid in (0, 1)]
    space = _namespace()
    model, bg, X = space["one_input"]()
    reference = xshap.DeepExplainer(model, bg, batch_size=2).shap_values(X)
    stored = np.load(out / "store" / "values_0.npy")
    assert np.max(np.abs(stored - reference)) <= 1e-6 * np.max(np.abs(reference))
    assert sorted(os.listdir(out / "store" / "done")) == [f"block-{k:08d}" for k in range(4)]


def test_an_error_in_one_process_raises_in_every_process(two_process_run):
    _, stdout = two_process_run
    raised = [[line.split(maxsplit=3) for line in _lines(text, "RAISED")] for text in stdout]
    assert all(_lines(text, f"DONE {pid}") for pid, text in enumerate(stdout))  # nobody hung
    # a NaN in process 1's rows: process 1 raises the InputError, process 0 says which process failed and why
    assert raised[1][0][2] == "InputError" and "NaN" in raised[1][0][3]
    assert raised[0][0][2] == "ProcessFailedError" and "process 1" in raised[0][0][3] and "NaN" in raised[0][0][3]
    # different backgrounds: every process refuses
    assert all(r[1][2] == "InputError" and "background differs between processes" in r[1][3] for r in raised)
    # process 1 dies: process 0's next explanation raises at once instead of waiting for it
    (lost,) = _lines(stdout[0], "LOST")
    assert lost.split()[1] == "ProcessFailedError" and "lost another process" in lost


def test_rows_split_in_proportion_to_devices():
    from xshap.explain.processes import split_rows

    assert split_rows(11, [1, 1]) == [(0, 6), (6, 11)]
    assert split_rows(10, [1, 3]) == [(0, 3), (3, 10)]  # a tie in the remainder goes to the first
    assert split_rows(1, [1, 1]) == [(0, 1), (1, 1)]  # a process may have no rows
    for n in range(0, 30):
        blocks = split_rows(n, [2, 1, 3])
        assert blocks[0][0] == 0 and blocks[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
    with pytest.raises(xshap.InputError, match="rows must be"):
        xshap.DeepExplainer(torch.nn.Linear(3, 1), torch.zeros(2, 3)).explain(torch.ones(1, 3), rows="mine")
