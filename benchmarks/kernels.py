"""Where the time of one compiled call goes: per-kernel device time of xshap's chunk and of the floor.

    python -m benchmarks.kernels --workload W3 [--device gpu] [--top 25] [--host] [--dump DIR] [--quick]

Builds the workload, compiles xshap's chunk over all N rows (one chunk) and the floor (benchmarks.run's), runs
each a few times under ``jax.profiler.trace`` (Perfetto JSON), and prints, for each, the total device time of
one call and its most expensive kernels (XLA fusion names, mean microseconds per call, count). ``--dump`` also
writes each program's optimised HLO and its trace there, to read a kernel's body by its name. ``--host`` then
times a whole ``shap_values(X)`` against its parts (the compiled chunk, its results' transfer to numpy, the rows'
transfer to the device) and the floor, and profiles the host side with cProfile. A developer's tool for issue
4's GPU target: the benchmark says how fast, this says where the time goes.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

if not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import workloads  # noqa: E402


def _compiled_floor(w) -> tuple:
    from benchmarks.run import floor_program

    floor, floor_args = floor_program(w)
    return floor.lower(*floor_args).compile(), floor_args


def _kernel_times(trace_dir: str, calls: int, keep: str | None = None) -> tuple[float, list[tuple[str, float, float]]]:
    """Device events of the Perfetto trace: (total us per call, [(line: kernel, us per call, count per call)]).

    On a GPU the device's lines (XLA Ops, the streams) are kept; on a CPU, where XLA:CPU's work runs on host
    threads, every line. ``keep``: copy the trace file there."""
    (path,) = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
    if keep:
        os.makedirs(keep, exist_ok=True)
        shutil.copy(path, keep)
    with gzip.open(path) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    processes, threads = {}, {}
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "process_name":
            processes[e["pid"]] = e["args"]["name"]
        if e.get("ph") == "M" and e.get("name") == "thread_name":
            threads[(e["pid"], e["tid"])] = e["args"]["name"]
    device_pids = {pid for pid, name in processes.items() if "/device:" in name and "CPU" not in name.upper()}
    if not device_pids:
        device_pids = set(processes)
    totals: dict[str, float] = collections.defaultdict(float)
    counts: dict[str, int] = collections.defaultdict(int)
    lines: dict[str, float] = collections.defaultdict(float)
    for e in events:
        if e.get("ph") == "X" and e.get("pid") in device_pids and "dur" in e:
            line = threads.get((e["pid"], e["tid"]), str(e["tid"]))
            totals[f"{line}: {e['name']}"] += e["dur"]
            counts[f"{line}: {e['name']}"] += 1
            lines[line] += e["dur"]
    for line, us in sorted(lines.items(), key=lambda item: -item[1]):
        print(f"  line {line!r}: {us / calls:.1f} us per call")
    rows = sorted(((k, v / calls, counts[k] / calls) for k, v in totals.items()), key=lambda r: -r[1])
    return sum(v for _, v, _ in rows), rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", default="W3")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--quick", action="store_true", help="the workload's tiny sizes (a smoke test)")
    parser.add_argument(
        "--host",
        action="store_true",
        help="also time shap_values against its compiled chunk, and profile the host side",
    )
    parser.add_argument("--dump", help="write each program's optimised HLO and its trace into this folder")
    args = parser.parse_args(argv)
    if args.device == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    import xshap

    w = workloads.build(workloads.specs(args.quick)[args.workload])
    explainer = xshap.DeepExplainer(w.model, w.background, batch_size=len(w.X))
    xs = explainer.sharding.put_rows([w.X])
    chunk_args = (explainer._params, xs, tuple(explainer.background), explainer._references)
    programs = {
        "xshap": (explainer._chunk.lower(*chunk_args).compile(), chunk_args),
        "floor": _compiled_floor(w),
    }
    print(f"{args.workload} on {jax.devices()[0]} ({jax.devices()[0].device_kind})")
    for label, (compiled, call_args) in programs.items():
        if args.dump:
            os.makedirs(args.dump, exist_ok=True)
            Path(args.dump, f"{args.workload}-{label}.hlo.txt").write_text(compiled.as_text())
        jax.block_until_ready(compiled(*call_args))
        print(f"\n{label}:")
        with tempfile.TemporaryDirectory() as trace_dir:
            with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
                for _ in range(args.calls):
                    jax.block_until_ready(compiled(*call_args))
            total, rows = _kernel_times(trace_dir, args.calls, keep=args.dump and os.path.join(args.dump, label))
        print(f"{label}: {total:.1f} us of device events per call (all lines), {len(rows)} distinct events")
        for name, us, count in rows[: args.top]:
            print(f"  {us:9.1f} us  x{count:<5.3g} {name[:110]}")
    if args.host:
        _host(explainer, w.X, programs, args.calls * 5)
    return 0


def _median_seconds(fn, calls: int) -> float:
    import statistics
    import time

    fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _host(explainer, X, programs, calls: int) -> None:
    """Median wall time of a whole ``shap_values`` call against its parts, then a cProfile of the host side."""
    import cProfile
    import pstats

    import jax
    import numpy as np

    compiled, chunk_args = programs["xshap"]
    floor, floor_args = programs["floor"]

    parts = {
        "shap_values(X)": lambda: explainer.shap_values(X),
        "compiled chunk, until its results are ready": lambda: jax.block_until_ready(compiled(*chunk_args)),
        "compiled chunk, results as numpy arrays": lambda: [
            np.asarray(a) for a in jax.tree_util.tree_leaves(compiled(*chunk_args))
        ],
        "rows to the device": lambda: jax.block_until_ready(explainer.sharding.put_rows([X])),
        "floor": lambda: jax.block_until_ready(floor(*floor_args)),
    }
    print()
    for label, fn in parts.items():
        print(f"  {_median_seconds(fn, calls) * 1e6:10.1f} us  {label}")
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(calls):
        explainer.shap_values(X)
    profile.disable()
    for order in ("tottime", "cumtime"):
        pstats.Stats(profile).sort_stats(order).print_stats(20)


if __name__ == "__main__":
    sys.exit(main())
