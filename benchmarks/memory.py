"""Peak memory of an explanation beyond its result, for N from 1e3 to 1e5 rows under three max_memory budgets.

Each configuration runs in its own process (so one run's peak never hides another's): the explainer is built
and warmed up on one chunk (compiling it), then ``explain(X)`` runs while a thread samples the resident set
every 2 ms. Reported per row: the budget, N, the result's size (attributions, outputs, gaps, tolerances), the
peak RSS during the call above the RSS just before it, and that excess minus the result's size, which
``DeepExplainer``'s ``max_memory`` promises to bound (it sizes the chunks; nothing is kept per chunk).

    python -m benchmarks.memory [--rows 1000,10000,100000] [--budgets 4,64,256]   (budgets in MiB)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    """
    import json, os, sys, threading, time
    import numpy as np, torch
    import xshap

    rows, budget = int(sys.argv[1]), int(sys.argv[2]) << 20
    page = os.sysconf("SC_PAGE_SIZE")

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    torch.manual_seed(0)
    features, outputs = 64, 4
    model = torch.nn.Sequential(
        torch.nn.Linear(features, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64), torch.nn.Tanh(),
        torch.nn.Linear(64, outputs),
    ).eval()
    rng = np.random.default_rng(0)
    background = rng.normal(size=(32, features)).astype(np.float32)
    X = rng.normal(size=(rows, features)).astype(np.float32)
    explainer = xshap.DeepExplainer(model, background, max_memory=budget, progress=False)
    explainer.explain(X[: min(rows, explainer.chunk_rows())])  # compiles a chunk: sizes chunks by XLA's count
    chunk = explainer.chunk_rows()
    explainer.explain(X[: min(rows, chunk)])  # compiles the chunk every call of explain(X) uses
    if rows > chunk:
        explainer.explain(X[: chunk + 1])  # and the padded tail's shape
    before, peak, done = rss(), [0], [False]

    def sample():
        while not done[0]:
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    attribution = explainer.explain(X)
    done[0] = True
    sampler.join()
    peak[0] = max(peak[0], rss())
    result = sum(v.nbytes for v in attribution.values) + sum(
        a.nbytes for a in (attribution.outputs, attribution.gaps, attribution.tolerance, attribution.recomputed)
    )
    print(json.dumps({"budget_mib": budget >> 20, "rows": rows, "chunk_rows": chunk, "result_mib": result / 2**20,
                      "excess_mib": (peak[0] - before) / 2**20, "beyond_result_mib": (peak[0] - before - result) / 2**20}))
    """
)


def measure(rows: int, budget_mib: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(rows), str(budget_mib)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="1000,10000,100000")
    parser.add_argument("--budgets", default="4,64,256", help="max_memory values in MiB")
    args = parser.parse_args(argv)
    results = []
    print(
        f"{'budget MiB':>10} {'rows':>8} {'chunk':>6} {'result MiB':>11} {'peak-before MiB':>16} {'beyond result MiB':>18}"
    )
    for budget in (int(b) for b in args.budgets.split(",")):
        for rows in (int(r) for r in args.rows.split(",")):
            r = measure(rows, budget)
            results.append(r)
            print(
                f"{r['budget_mib']:>10} {r['rows']:>8} {r['chunk_rows']:>6} {r['result_mib']:>11.1f} "
                f"{r['excess_mib']:>16.1f} {r['beyond_result_mib']:>18.1f}",
                flush=True,
            )
    return results


if __name__ == "__main__":
    main()
