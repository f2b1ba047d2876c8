"""``xshap check``'s exit codes (issue 15): the table in ``--help`` and the README is ``cli.EXIT_CODES``, and each
row is reached, with exit 0 only after the verdict line saying every reference agrees. Run in this process
through ``cli.main`` (the same code path as the command); row 1 (a reference incomplete, for a factory and for
a .pt2) and row 0 against shap and Captum are tests/test_cli.py's, the refusals in a subprocess
tests/test_untrusted_cli.py's.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from xshap import cli
from xshap.errors import XShapIncompleteError

README = Path(__file__).resolve().parents[1] / "README.md"

FACTORIES = """
import sys
import torch

class Functional(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 6)
        self.out = torch.nn.Linear(6, 2)

    def forward(self, x):
        return self.out(torch.relu(self.fc(x)))

class Exits(Functional):
    def forward(self, x):
        sys.exit(0)

class Quit(BaseException):
    pass

def exits_zero():
    raise SystemExit(0)

def interrupted():
    raise KeyboardInterrupt

def quits():
    raise Quit("stop")

def exits_in_forward():
    return Exits().eval()
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exits")
    (folder / "factories.py").write_text(FACTORIES)
    (folder / "exitsonimport.py").write_text("raise SystemExit(0)\n")
    torch.manual_seed(0)
    sequential = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2)).eval()
    x = torch.randn(1, 4)
    torch.export.save(torch.export.export(sequential, (x,)), folder / "agrees.pt2")

    rng = np.random.default_rng(0)
    np.save(folder / "bg.npy", rng.normal(size=(8, 4)).astype(np.float32))
    np.save(folder / "x.npy", rng.normal(size=(3, 4)).astype(np.float32))
    torch.save(torch.from_numpy(rng.normal(size=(8, 4)).astype(np.float32)).to(torch.bfloat16), folder / "bf16.pt")
    torch.save(torch.zeros(8, 4).to_sparse(), folder / "sparse.pt")
    torch.save(torch.empty(8, 4, device="meta"), folder / "meta.pt")
    torch.save(torch.quantize_per_tensor(torch.ones(8, 4), 0.1, 0, torch.quint8), folder / "quantised.pt")
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (2000000, 2000000), }"
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    (folder / "huge.npy").write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header)
    return folder


@pytest.fixture
def check(folder, monkeypatch, capsys):
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))

    def run(model: str, *options: str, background: str = "bg.npy") -> subprocess.CompletedProcess:
        code = cli.main(["check", model, "-b", background, "-x", "x.npy", *options])
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(model, code, out, err)

    return run


def test_the_readme_table_is_the_cli_table():
    text = README.read_text(encoding="utf-8")
    table = cli.exit_code_table(markdown=True)
    assert table in text, "the README's exit-code table differs from cli.EXIT_CODES"
    help_text = " ".join(cli.build_parser()._subparsers._group_actions[0].choices["check"].format_help().split())
    for row in cli.EXIT_CODES:
        assert f"{row.code} {row.meaning}" in help_text


def test_row_0_only_after_the_verdict_line(check):
    """(with a bfloat16 background: converted to float32, with a note)"""
    result = check("agrees.pt2", background="bf16.pt")
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last == "xshap check: xshap complete; no culprit in the graph -> exit 0"
    assert "note: bf16.pt: bfloat16 values converted to float32" in result.stderr


@pytest.mark.parametrize(
    "model, options, background, needle",
    [
        ("sys:exit", (), "bg.npy", "SystemExit(None): it tried to end the process"),
        ("factories:exits_zero", (), "bg.npy", "'factories:exits_zero' raised SystemExit(0)"),
        ("factories:interrupted", (), "bg.npy", "raised KeyboardInterrupt (a BaseException"),
        ("factories:quits", (), "bg.npy", "raised Quit: stop (a BaseException"),
        ("exitsonimport:make", (), "bg.npy", "importing the module of MODEL 'exitsonimport:make' raised SystemExit(0)"),
        ("factories:exits_in_forward", (), "bg.npy", "stopped by SystemExit(0)"),
        ("..mod:make", (), "bg.npy", "neither a .pt2 file nor package.module:factory"),
        ("mod:", (), "bg.npy", "neither a .pt2 file nor package.module:factory"),
        ("factories:nothing", (), "bg.npy", "cannot import 'factories:nothing'"),
        ("agrees.pt2", (), "huge.npy", "claims a (2000000, 2000000) array of 32,000,000,000,000 bytes"),
        ("agrees.pt2", (), "sparse.pt", "a sparse tensor"),
        ("agrees.pt2", (), "meta.pt", "meta device"),
        ("agrees.pt2", (), "quantised.pt", "quantised tensor"),
        ("agrees.pt2", ("--max-bytes", "lots"), "bg.npy", "cannot read 'lots' as a size"),
        ("agrees.pt2", ("--max-bytes", "1KiB"), "bg.npy", "over the limit of 1,024"),
    ],
)
def test_row_2_bad_input_of_every_kind(check, model, options, background, needle):
    result = check(model, *options, background=background)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "xshap check: bad input:" in result.stderr and needle in result.stderr, result.stderr
    assert "-> exit" not in result.stdout


def test_row_2_an_output_path_that_cannot_be_written_claims_no_verdict(check, folder):
    result = check("agrees.pt2", "--json", str(folder / "no" / "such" / "dir" / "r.json"))
    assert result.returncode == 2 and "bad input" in result.stderr
    assert "-> exit" not in result.stdout


@pytest.mark.parametrize("error", [RuntimeError("boom"), XShapIncompleteError("sum off"), KeyError("k")])
def test_row_3_an_error_inside_xshap(check, monkeypatch, error):
    import xshap.check.crosscheck as crosscheck

    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(crosscheck, "crosscheck", broken)
    result = check("agrees.pt2")
    assert result.returncode == 3, result.stderr
    assert re.search(r"xshap check: internal error: \w+", result.stderr)
