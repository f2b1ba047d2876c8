"""The attacks of issue 15 through ``xshap check`` in a fresh process, as a CI gate would run it on a stranger's
file: each is refused with exit 2, its payload never runs (no marker file), nothing is written outside the
process's own temporary folder (TMPDIR is a watched folder here, and so is the working directory), and a
decompression bomb is refused quickly, before it inflates (peak memory of the process close to a run that
refused a small file).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests import attacks

ROOT = Path(__file__).resolve().parents[1]
BOMB = 1 << 30  # 1 GiB of zeros in about a megabyte


@dataclass
class Run:
    returncode: int
    stderr: str
    peak_rss_mb: float
    seconds: float
    new_files: set[str]
    marker_ran: bool


def _files(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


def run_check(folder: Path, model: str, background: str = "bg.npy", inputs: str = "x.npy") -> Run:
    """``python -m xshap check`` in ``folder/work`` with TMPDIR ``folder/tmp``; its peak RSS and CPU seconds from
    wait4."""
    work, temp = folder / "work", folder / "tmp"
    before = _files(folder)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg", "TMPDIR": str(temp)}
    command = [sys.executable, "-m", "xshap", "check", model, "-b", background, "-x", inputs, "--references", "none"]
    with open(folder / "stderr.txt", "w") as err:
        process = subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=err)
        watchdog = threading.Timer(300, process.kill)
        watchdog.start()
        _, status, usage = os.wait4(process.pid, 0)
        watchdog.cancel()
        seconds = usage.ru_utime + usage.ru_stime  # CPU time: what inflating costs, whatever else the machine runs
    stderr = (folder / "stderr.txt").read_text()
    new = _files(folder) - before - {"stderr.txt"}
    return Run(
        os.waitstatus_to_exitcode(status), stderr, usage.ru_maxrss / 1024, seconds, new, (folder / "ran").exists()
    )


def _prepare(folder: Path, files: dict[str, bytes]) -> Path:
    (folder / "work").mkdir(parents=True)
    (folder / "tmp").mkdir()
    rng = np.random.default_rng(0)
    np.save(folder / "work" / "bg.npy", rng.normal(size=(8, 4)).astype(np.float32))
    np.save(folder / "work" / "x.npy", rng.normal(size=(3, 4)).astype(np.float32))
    for name, data in files.items():
        (folder / "work" / name).write_bytes(data)
    return folder


ATTACKS = {
    # name: (files to write given the marker path, MODEL, BG)
    "second program": (lambda clean, marker: {"m.pt2": attacks.second_program(clean, marker)}, "m.pt2", "bg.npy"),
    "shared library": (
        lambda clean, marker: {"m.pt2": attacks.aoti_library(clean, attacks.shared_library(marker))},
        "m.pt2",
        "bg.npy",
    ),
    "two end records": (lambda clean, marker: {"m.pt2": attacks.ambiguous_zip64(clean, marker)}, "m.pt2", "bg.npy"),
    "path traversal": (lambda clean, marker: {"m.pt2": attacks.traversal(clean, depth=5)}, "m.pt2", "bg.npy"),
    "pt2 bomb": (lambda clean, marker: {"m.pt2": attacks.bomb_program(clean, BOMB)}, "m.pt2", "bg.npy"),
    "pt bomb": (
        lambda clean, marker: {"m.pt2": clean, "bg.pt": attacks.bomb_tensor_file(BOMB)},
        "m.pt2",
        "bg.pt",
    ),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Run]:
    """Every attack run once, each in its own folder (the marker path is that folder's ``ran``)."""
    clean = attacks.clean_program()
    results = {}
    for name, (build, model, background) in ATTACKS.items():
        folder = tmp_path_factory.mktemp(name.replace(" ", "_"))
        _prepare(folder, build(clean, folder / "ran"))
        results[name] = run_check(folder, model, background)
    return results


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_is_refused_with_exit_2_and_nothing_runs_or_is_written(runs, name):
    run = runs[name]
    assert run.returncode == 2, run.stderr
    assert "xshap check: bad input:" in run.stderr and "refusing" in run.stderr, run.stderr
    assert not run.marker_ran, "the payload ran"
    assert run.new_files == set(), f"files written: {run.new_files}"


def test_the_shared_library_is_refused_by_name_before_anything_is_extracted(runs):
    assert "AOTInductor compiled code" in runs["shared library"].stderr


def test_path_traversal_is_refused_by_its_name(runs, tmp_path_factory):
    assert "'..' components" in runs["path traversal"].stderr
    assert not any(p.name == "escaped.so" for p in tmp_path_factory.getbasetemp().rglob("escaped.so"))


def test_two_end_records_are_refused_as_ambiguous(runs):
    assert "ZIP64 locator points elsewhere" in runs["two end records"].stderr


@pytest.mark.parametrize("bomb", ["pt2 bomb", "pt bomb"])
def test_bombs_are_refused_before_inflating(runs, bomb):
    """Peak memory within 100 MB of a run refused for a small crafted file (inflating would add 1 GiB), and no
    costlier in CPU time than such a run by more than a few seconds (CPU time, not wall time: a loaded machine
    stretches the wall time of every run)."""
    baseline = min(runs[name].peak_rss_mb for name in ("second program", "two end records"))
    run = runs[bomb]
    assert "decompression bomb" in run.stderr or "over the limit" in run.stderr, run.stderr
    assert run.peak_rss_mb < baseline + 100, (run.peak_rss_mb, baseline)
    assert run.seconds < min(r.seconds for r in runs.values()) + 10
