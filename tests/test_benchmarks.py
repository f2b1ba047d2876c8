"""The benchmark scripts (benchmarks/run.py, benchmarks/kernels.py) as smoke tests: quick sizes, honest rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "run.py"
IMPLEMENTATIONS = ("xshap", "floor", "torch", "shap", "captum")


def run_script(tmp_path, *options) -> tuple[str, dict]:
    out = tmp_path / "bench.json"
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), *options, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # the script finds its package wherever it is run from
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout, json.loads(out.read_text())


def test_quick_w1_every_implementation(tmp_path):
    pytest.importorskip("shap")
    pytest.importorskip("captum")
    stdout, record = run_script(tmp_path, "--quick", "--workloads", "W1")
    rows = {r["implementation"]: r for r in record["rows"]}
    assert set(rows) == set(IMPLEMENTATIONS)
    shapes = set()
    for name, row in rows.items():
        assert row["status"] == "ok", (name, row["detail"])
        assert row["workload"] == "W1" and row["n_outputs"] == 1
        assert row["setup_s"] >= 0 and row["first_s"] > 0 and row["median_s"] > 0, row
        assert len(row["reps_s"]) >= 3 and all(t > 0 for t in row["reps_s"])
        assert row["peak_mb"] > 0
        assert (row["again_s"] is not None and row["again_s"] > 0) == (name == "xshap"), (
            row
        )  # a second explainer: xshap's rows only
        shapes.add(tuple(row["output_shape"]))
        for base in ("shap", "captum", "floor", "torch"):
            assert row["ratios"][base] == pytest.approx(row["median_s"] / rows[base]["median_s"])
    assert shapes == {(row["n"], 16, 1)}  # every implementation returns (N, *row, n_outputs)
    table = [line for line in stdout.splitlines() if line.startswith("W1 ")]
    assert [line.split("|")[4].strip() for line in table] == list(IMPLEMENTATIONS)
    assert "t/floor" in stdout and "load average" in stdout


def test_skipped_and_killed_rows_are_reported(tmp_path):
    """A skipped implementation gets a 'skipped' row; one past its time limit is killed and says so."""
    stdout, record = run_script(
        tmp_path, "--quick", "--workloads", "W1", "--skip", "xshap,floor,shap", "--captum-max-seconds", "0.2"
    )
    rows = {r["implementation"]: r for r in record["rows"]}
    assert [rows[name]["status"] for name in ("xshap", "floor", "shap")] == ["skipped"] * 3
    assert rows["captum"]["status"] == "timeout" and "killed after" in rows["captum"]["detail"]
    assert rows["captum"]["median_s"] is None and all(v is None for v in rows["captum"]["ratios"].values())
    assert "skipped" in stdout and "timeout" in stdout


def test_table_ratios_and_estimates():
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.run import Row, add_ratios, format_table
    finally:
        sys.path.remove(str(ROOT))
    rows = [
        Row("W", "", 4, 2, 1, "xshap", first_s=2.0, median_s=0.5, reps_s=[0.5] * 3),
        Row("W", "", 4, 2, 1, "floor", first_s=1.0, median_s=0.25, reps_s=[0.25] * 3),
        Row("W", "", 4, 2, 1, "shap", status="timeout", detail="killed", first_s=10.0),
        Row("W", "", 4, 2, None, "captum", status="skipped"),
    ]
    add_ratios(rows)
    assert rows[0].ratios == {"shap": 0.05, "captum": None, "floor": 2.0, "torch": None}
    assert rows[0].info["ratio_estimates"] == ["shap"]  # shap known only from its first call
    table = format_table(rows)
    assert "~0.0500" in table and "(first call only)" in table and "skipped" in table


def test_kernel_profile_names_both_programs_and_the_host_parts(tmp_path):
    """benchmarks/kernels.py (where a call's time goes) runs: both programs' events, the host-side parts."""
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "kernels.py"), "--quick", "--workload", "W1", "--calls", "1"]
        + ["--top", "2", "--host", "--dump", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    out = completed.stdout
    for line in ("xshap:", "floor:", "shap_values(X)", "compiled chunk, results as numpy arrays", "cumulative"):
        assert line in out, out[-2000:]
    assert {p.name for p in tmp_path.glob("*.hlo.txt")} == {"W1-xshap.hlo.txt", "W1-floor.hlo.txt"}
