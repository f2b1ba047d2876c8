"""`xshap check`: a .pt2 of each seed net and a package.module:factory, with the documented exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from xshap import cli

ROOT = Path(__file__).resolve().parents[1]
FACTORY_MODULE = """
import torch
from xshap.seed import SEED_NETS

def _load(name):
    net = SEED_NETS[name]()
    net.load_state_dict(torch.load(f"{name}.state.pt", weights_only=True))
    return net.eval()

def sequential():
    return _load("Sequential")

def functional():
    return _load("FunctionalTestNet")

def reused():
    return _load("ModuleTestNet")

def not_a_module():
    return 42
"""


@pytest.fixture(scope="module")
def workdir(seed, tmp_path_factory):
    """The trained seed nets saved three ways: .pt2 programs, state dicts behind factories, and data files."""
    nets, data = seed
    folder = tmp_path_factory.mktemp("cli")
    for name, net in nets.items():
        torch.export.save(torch.export.export(net, (data.X_train[:1],)), folder / f"{name}.pt2")
        torch.save(net.state_dict(), folder / f"{name}.state.pt")
    (folder / "seedfactories.py").write_text(FACTORY_MODULE)
    np.save(folder / "bg.npy", data.X_train.numpy())
    np.save(folder / "x.npy", data.X_test[:12].numpy())
    torch.save(data.X_test[:12].clone(), folder / "x.pt")
    return folder


def run_cli(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m xshap ...`` in a fresh process, as a pipeline would run it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, "-m", "xshap", *args], cwd=folder, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture
def in_process(workdir, monkeypatch, capsys):
    """``cli.main`` in this process (same code path, without a new interpreter's imports), run in ``workdir``."""
    monkeypatch.chdir(workdir)
    monkeypatch.syspath_prepend(str(workdir))

    def run(*args: str) -> subprocess.CompletedProcess:
        code = cli.main(list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    return run


def check_help() -> str:
    return cli.build_parser()._subparsers._group_actions[0].choices["check"].format_help()


def test_help_documents_model_forms_and_exit_codes():
    text = check_help()
    for needle in (".pt2", "package.module:factory", "--background", "--inputs", "--html", "--json", "weights_only"):
        assert needle in text
    for needle in ("dynamic batch", "static batch", "--max-bytes", "untrusted"):
        assert needle in text
    flat = " ".join(text.split())
    assert [e.code for e in cli.EXIT_CODES] == [0, 1, 2, 3]
    for row in cli.EXIT_CODES:
        assert f"{row.code} {row.meaning}" in flat, row


@pytest.mark.parametrize(
    "factory, code",
    [("seedfactories:sequential", 0), ("seedfactories:functional", 1), ("seedfactories:reused", 1)],
)
def test_factory_exit_codes_follow_the_references(workdir, in_process, factory, code, tmp_path):
    out_json, out_html = tmp_path / "r.json", tmp_path / "r.html"
    args = ("check", factory, "-b", "bg.npy", "-x", "x.npy", "--json", str(out_json), "--html", str(out_html))
    # one of them end to end in a fresh interpreter, the others through the same entry point in this process
    result = run_cli(workdir, *args) if factory.endswith("functional") else in_process(*args)
    assert result.returncode == code, result.stdout + result.stderr
    record = json.loads(out_json.read_text())
    assert record["exit_code"] == code
    assert record["xshap_max_abs_gap"] <= 1e-4 * 200
    verdicts = {k: v["verdict"] for k, v in record["references"].items()}
    if code == 0:
        assert verdicts == {"shap": "AGREE", "captum": "AGREE"}
        assert record["culprits"] == []
    else:
        assert verdicts["shap"] == "REFERENCE_INCOMPLETE"
        assert record["references"]["shap"]["max_abs_gap"] > 1.0
        (culprit,) = record["culprits"]
        assert culprit["op"] == "relu" and len(culprit["sites"]) == 2
        assert all(site["source"].split(":")[0].endswith("seed.py") for site in culprit["sites"])
    page = out_html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "data:image/png;base64," in page
    assert ("AGREE" if code == 0 else "REFERENCE_INCOMPLETE") in page


@pytest.mark.parametrize(
    "name, code, kind",
    [("Sequential", 0, None), ("FunctionalTestNet", 1, "functional call"), ("ModuleTestNet", 1, "reused module")],
)
def test_saved_program_of_each_seed_net(workdir, in_process, seed, name, code, kind, tmp_path):
    out_json = tmp_path / "r.json"
    args = ("check", f"{name}.pt2", "-b", "bg.npy", "-x", "x.pt", "--json", str(out_json))
    result = run_cli(workdir, *args) if name == "ModuleTestNet" else in_process(*args)
    assert result.returncode == code, result.stdout + result.stderr
    record = json.loads(out_json.read_text())
    assert record["references"] == {}  # nothing to hook in a saved program: not run, said so
    assert any("saved program" in note for note in record["notes"])
    # xshap on the saved program gives the attributions of the live module
    nets, data = seed
    import xshap

    live = xshap.DeepExplainer(nets[name], data.X_train).shap_values(data.X_test[:12])
    saved = xshap.DeepExplainer(torch.export.load(workdir / f"{name}.pt2"), data.X_train).shap_values(data.X_test[:12])
    np.testing.assert_allclose(saved, live, rtol=1e-6, atol=1e-6)
    kinds = {c["kind"] for c in record["culprits"]}
    if kind is None:
        assert kinds == set()
    else:
        assert kind in kinds
        # the prediction read from the graph matches what the real reference does on the live module
        report = xshap.crosscheck(nets[name], data.X_train, data.X_test[:12], references=["shap"])
        assert report.reference("shap").verdict == "REFERENCE_INCOMPLETE"


@pytest.mark.parametrize(
    "args, needle",
    [
        (["missing.pt2", "-b", "bg.npy", "-x", "x.npy"], "does not exist"),
        (["seedfactories:nothing_here", "-b", "bg.npy", "-x", "x.npy"], "cannot import"),
        (["seedfactories:not_a_module", "-b", "bg.npy", "-x", "x.npy"], "not a torch.nn.Module"),
        (["Sequential.pt2", "-b", "bg.npy", "-x", "wrong.npy"], "rows of shape"),
        (["Sequential.pt2", "-b", "bg.npy", "-x", "objects.npy"], "allow_pickle"),
        (["Sequential.pt2", "-b", "bg.npy", "-x", "x.txt"], "unknown data file type"),
        (["evil.pt2", "-b", "bg.npy", "-x", "x.npy"], "not a ZIP archive"),
    ],
)
def test_bad_input_exits_2_with_the_problem_named(workdir, in_process, args, needle):
    np.save(workdir / "wrong.npy", np.zeros((3, 5), dtype=np.float32))
    np.save(workdir / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (workdir / "x.txt").write_text("1 2 3")
    (workdir / "evil.pt2").write_bytes(b"\x80\x04K\x01.")
    result = in_process("check", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "bad input" in result.stderr and needle in result.stderr


def test_pickled_object_in_pt_file_is_refused(workdir, in_process, tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned > pwned.txt",))

    torch.save({"x": Payload()}, workdir / "evil.pt")
    result = in_process("check", "Sequential.pt2", "-b", "bg.npy", "-x", "evil.pt")
    assert result.returncode == 2
    assert "weights_only=True" in result.stderr
    assert not (workdir / "pwned.txt").exists()


def test_pickled_object_inside_pt2_is_refused(workdir, in_process, seed, tmp_path):
    """A .pt2 whose sample inputs are a code-running pickle: refused before torch.export.load runs it."""
    import zipfile

    source = workdir / "Sequential.pt2"
    evil = tmp_path / "evil.pt2"
    marker = tmp_path / "pwned.txt"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"echo pwned > {marker}",))

    import io

    buffer = io.BytesIO()
    torch.save(Payload(), buffer)
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(evil, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if "sample_inputs" in item.filename:
                data = buffer.getvalue()
            zout.writestr(item, data)
    from xshap.loading import UnsafeFileError, load_program

    with pytest.raises(UnsafeFileError, match="sample_inputs"):
        load_program(evil)
    assert not marker.exists()
    result = in_process("check", str(evil), "-b", "bg.npy", "-x", "x.npy")
    assert result.returncode == 2 and "refusing to load" in result.stderr
    assert not marker.exists()


def test_a_factory_that_raises_is_bad_input(workdir, in_process):
    (workdir / "brokenfactory.py").write_text("def make():\n    raise RuntimeError('no weights here')\n")
    result = in_process("check", "brokenfactory:make", "-b", "bg.npy", "-x", "x.npy")
    assert result.returncode == 2 and "no weights here" in result.stderr
