"""Scale-out figures (issue 20): throughput of one explanation over 1, 2 and 4 local processes
(``jax.distributed`` with gloo on 127.0.0.1) and over 1, 2 and 4 forced host devices in one process; and the
peak resident memory of a 10^5-row run streamed to disk under a 256 MiB budget.

Every configuration runs in fresh processes. Throughput: the explainer is built and warmed on the same X (so
compilation is not timed), then ``explain(X)`` (rows="all": every process gets every row) is timed, best of
three; rows/s is N over that time. On a machine with fewer cores than processes the processes share cores, so
read the figures against the core count printed with them.

    python -m benchmarks.distributed [--rows 2048] [--processes 1,2,4] [--devices 1,2,4] [--stream-rows 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MODEL = textwrap.dedent(
    """
    import numpy as np, torch

    def build(rows):
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128), torch.nn.Tanh(),
            torch.nn.Linear(128, 10),
        ).eval()
        rng = np.random.default_rng(0)
        return model, rng.normal(size=(32, 64)).astype(np.float32), rng.normal(size=(rows, 64)).astype(np.float32)
    """
)

THROUGHPUT = MODEL + textwrap.dedent(
    """
    import json, sys, time
    import jax
    rows, processes, pid, port = (int(a) for a in sys.argv[1:5])
    if processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=processes, process_id=pid)
    import xshap
    model, bg, X = build(rows)
    e = xshap.DeepExplainer(model, bg, progress=False)
    e.explain(X)  # compiles
    times = []
    for _ in range(3):
        start = time.perf_counter()
        e.explain(X)
        times.append(time.perf_counter() - start)
    print("RESULT", json.dumps({"pid": pid, "seconds": min(times), "devices": len(e.sharding.devices),
                                "chunk": e.chunk_rows()}), flush=True)
    """
)

STREAM = MODEL + textwrap.dedent(
    """
    import json, os, sys, threading, time
    import xshap
    rows, budget, store, data = int(sys.argv[1]), int(sys.argv[2]) << 20, sys.argv[3], sys.argv[4]
    page = os.sysconf("SC_PAGE_SIZE")

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    model, bg, X = build(rows)
    np.save(data, X)
    del X
    e = xshap.DeepExplainer(model, bg, max_memory=budget, progress=False)
    e.explain(np.load(data, mmap_mode="r")[: e.chunk_rows()])  # compiles the chunk
    before, peak, running = rss(), [0], True

    def sample():
        while running:
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    stored = e.explain_to(store, data)
    seconds = time.perf_counter() - start
    running = False
    sampler.join()
    size = sum(os.path.getsize(os.path.join(store, f)) for f in os.listdir(store) if f.endswith(".npy"))
    print("RESULT", json.dumps({"rows": rows, "budget_mib": budget >> 20, "rss_before_mib": before / 2**20,
        "peak_mib": peak[0] / 2**20, "excess_mib": (peak[0] - before) / 2**20, "store_mib": size / 2**20,
        "seconds": seconds, "chunk": e.chunk_rows(), "summary": stored.summary()}), flush=True)
    """
)


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _results(outputs: list[str]) -> list[dict]:
    return [json.loads(line[7:]) for text in outputs for line in text.splitlines() if line.startswith("RESULT ")]


def _run(script: str, args_per_process: list[list[str]], env: dict, timeout: int = 1200) -> list[dict]:
    workers = [
        subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        for args in args_per_process
    ]
    try:
        outputs = [w.communicate(timeout=timeout)[0] for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    if any(w.returncode for w in workers):
        raise RuntimeError(f"a worker failed: {[w.returncode for w in workers]}")
    return _results(outputs)


def throughput(rows: int, processes: int, devices: int) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    port = str(_port())
    found = _run(THROUGHPUT, [[str(rows), str(processes), str(p), port] for p in range(processes)], env)
    seconds = max(r["seconds"] for r in found)  # the explanation is done when the slowest process is
    return {
        "processes": processes,
        "devices_per_process": devices,
        "rows": rows,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "chunk": found[0]["chunk"],
    }


def streamed(rows: int, budget_mib: int) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    env.pop("XLA_FLAGS", None)
    with tempfile.TemporaryDirectory() as folder:
        store, data = os.path.join(folder, "store"), os.path.join(folder, "x.npy")
        return _run(STREAM, [[str(rows), str(budget_mib), store, data]], env)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--devices", default="1,2,4")
    parser.add_argument("--stream-rows", type=int, default=100_000)
    parser.add_argument("--budget-mib", type=int, default=256)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}; model 64-256-128-10 MLP, background 32 rows, float32")
    print("| processes | devices per process | rows | seconds | rows/s |")
    print("|---|---|---|---|---|")
    configurations = [(int(p), 1) for p in args.processes.split(",") if p]
    configurations += [(1, int(d)) for d in args.devices.split(",") if d and int(d) > 1]
    for processes, devices in configurations:
        r = throughput(args.rows, processes, devices)
        print(f"| {processes} | {devices} | {r['rows']} | {r['seconds']:.3f} | {r['rows_per_s']:.0f} |", flush=True)
    if args.stream_rows:
        r = streamed(args.stream_rows, args.budget_mib)
        print(
            f"streamed: {r['rows']} rows under max_memory {r['budget_mib']} MiB (chunk {r['chunk']} rows): peak RSS "
            f"{r['peak_mib']:.0f} MiB ({r['excess_mib']:.1f} MiB above the {r['rss_before_mib']:.0f} MiB before the "
            f"run), store {r['store_mib']:.0f} MiB on disk, {r['seconds']:.1f} s; {r['summary']}"
        )


if __name__ == "__main__":
    main()
