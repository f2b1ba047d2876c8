"""xshap against shap.DeepExplainer, Captum's DeepLiftShap and the floor, side by side (issue 4).

    python -m benchmarks.run                          # W1, W2, W3, W4 at full size (slow: Captum on W2 above all)
    python -m benchmarks.run --quick                  # tiny sizes, every workload, a smoke test (~1-2 minutes)
    python -m benchmarks.run --workloads W1,W4 --reps 5 --json out.json
    python -m benchmarks.run --workloads W2 --skip captum
    python -m benchmarks.run --workloads W2 --captum-max-seconds 600

Implementations, each timed as its user would call it, for every output of the model:

xshap   ``xshap.DeepExplainer(model, background).shap_values(X)`` (defaults: complete rules, additivity checked).
shap    ``shap.DeepExplainer(model, background).shap_values(X, check_additivity=False)``.
captum  ``captum.attr.DeepLiftShap(model).attribute(X, baselines=background, target=o)``, one call per output o.
floor   one jit-compiled ``jax.vjp`` of the plain converted model (``converters.from_torch(model, background)``,
        its batched ``apply``) over the N*B paired rows, inputs of shape (N*B, *row): x_i repeated against every
        background row r_j, built once outside the timed call. In one jit: one forward pass (``jax.vjp``), then
        one pullback per output with a one-hot cotangent, written as a Python loop over the outputs inside the
        jit (``--floor-outputs unroll``, the default), then mean_j (x_i - r_j) * g, so that it returns the same
        (N, *row, n_outputs) values as the others. No DeepLIFT rules: plain gradients, every output.
        ``--floor-outputs vmap`` vmaps the pullback over the one-hot cotangents (the jacobian form, more
        memory); ``map`` runs it under ``jax.lax.map`` (sequential, least memory; on XLA:CPU a convolution
        inside that loop runs 10-25x slower, so it is no floor there).
        Compiled with xshap's own XLA options (``xshap.explain.compiling``: of XLA:CPU's YNN fusions only the dot
        fusions, since the others miscompile W3's gradients in jaxlib 0.10.2), so both are compiled alike.
torch   torch's own autograd over the same N*B paired rows (built once, outside the timed call): one forward of
        the model on them, one ``torch.autograd.grad`` per output (the graph retained), then
        mean_j (x_i - r_j) * g. The floor's computation in torch: what Captum's DeepLiftShap costs at best, and
        the honest lower bound for a DeepSHAP of a torch model on torch.

Every (workload, implementation) runs in a fresh child process (``--child``), so import caches, JAX's compiled
functions and peak memory never mix. In that process: ``setup`` (build the explainer: the torch.export conversion
and the background forward for xshap; the conversion and the paired rows for the floor; the constructor for shap
and Captum), one warm-up call (``first``: for xshap and the floor, tracing and XLA compilation plus one run), then
at least ``--reps`` timed calls (and more, up to 100, until they add up to ``--min-seconds``: 1 s by default,
0 with ``--quick``) whose median is reported. ``compile`` = first - median: the cost of the first call over a
steady one (jit tracing and compilation for xshap and the floor, about 0 for the eager torch references).
``again`` (xshap): a second ``DeepExplainer`` on the same model and background in the same process, set-up plus
first call, after the timed calls: what a user pays for another explainer once the programs are compiled. Each
child gets a fresh, empty compilation cache directory (``XSHAP_COMPILATION_CACHE``; a ``JAX_COMPILATION_CACHE_DIR``
of the parent's is dropped), so its first call compiles and its second explainer can find what the first wrote.
Peak memory is the child's peak resident set (VmHWM); ``+MB`` is that peak minus the resident set just before
setup (after imports and data), the memory the computation itself added. Ratios are median / median of the
named implementation on the same workload (below 1: faster than it); ``~`` marks a ratio where one side is
known only from its first call (killed before a timed call).

A child that runs past ``--max-seconds`` (``--captum-max-seconds``, ``--shap-max-seconds`` for those rows) or over
``--max-rss-gb`` resident memory (default 80% of RAM) is killed; its row says so and keeps what it measured before
(the first call, the timed calls done); its peak is then the largest resident set the parent saw.
Torch's threads (and JAX's) compete with anything else on the machine: timings taken under load are noisy, the
torch references' most (a small op waits on its thread pool); ``--threads 1`` compares single-threaded.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

if not __package__:  # run as a script: python benchmarks/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import workloads  # noqa: E402

IMPLEMENTATIONS = ("xshap", "floor", "torch", "shap", "captum")
RATIO_BASES = ("shap", "captum", "floor", "torch")
EVENT = "@@xshap-bench "
MAX_REPS = 100  # with --min-seconds: the most timed calls of one row


# ===================================================================================================
# child: one implementation on one workload
# ===================================================================================================
def _memory_mb(key: str) -> float:
    """VmHWM (peak) or VmRSS (current) of this process, in MB."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KB


def _emit(kind: str, **fields) -> None:
    fields.update(event=kind, peak_mb=_memory_mb("VmHWM"), rss_mb=_memory_mb("VmRSS"))
    sys.stdout.write(EVENT + json.dumps(fields) + "\n")
    sys.stdout.flush()


def _prepare_xshap(w: workloads.Workload, options: argparse.Namespace):
    import xshap

    explainer = xshap.DeepExplainer(w.model, w.background)
    return lambda: explainer.shap_values(w.X)


def _prepare_shap(w: workloads.Workload, options: argparse.Namespace):
    import shap
    import torch

    device = _torch_device(options)
    background, X = torch.from_numpy(w.background).to(device), torch.from_numpy(w.X).to(device)
    explainer = shap.DeepExplainer(w.model.to(device), background)
    return lambda: explainer.shap_values(X, check_additivity=False)  # numpy on the host: synchronised


def _prepare_captum(w: workloads.Workload, options: argparse.Namespace):
    import numpy as np
    import torch
    from captum.attr import DeepLiftShap

    device = _torch_device(options)
    background, X = torch.from_numpy(w.background).to(device), torch.from_numpy(w.X).to(device)
    explainer = DeepLiftShap(w.model.to(device))

    def call():
        per_output = [
            explainer.attribute(X, baselines=background, target=o).detach().cpu().numpy() for o in range(w.n_outputs)
        ]
        return np.stack(per_output, axis=-1)

    return call


def _torch_device(options: argparse.Namespace) -> str:
    """Where the torch references run: "cuda" with ``--device gpu`` (refused if torch sees no GPU)."""
    if options.device == "cpu":
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("--device gpu: torch sees no CUDA device")
    return "cuda"


def _check_jax_device(options: argparse.Namespace) -> None:
    """JAX runs on its default backend: with ``--device gpu`` that must be a GPU (the child env pins the CPU
    otherwise)."""
    import jax

    if options.device == "gpu" and jax.default_backend() != "gpu":
        raise SystemExit(f"--device gpu: JAX's backend is {jax.default_backend()}")


def floor_program(w: workloads.Workload, outputs: str = "unroll") -> tuple:
    """The floor as (jitted function, its arguments), the paired rows built and placed once."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    import converters
    from xshap.explain.compiling import jit

    converted = converters.from_torch(w.model, torch.from_numpy(w.background))
    n, b, n_out = len(w.X), len(w.background), w.n_outputs
    row_shape = w.X.shape[1:]
    x_rows = jnp.asarray(np.repeat(w.X, b, axis=0))  # (N*B, *row): x_i against every background row
    r_rows = jnp.asarray(np.tile(w.background, (n,) + (1,) * len(row_shape)))

    def floor(params, x_rows, r_rows):
        out, pullback = jax.vjp(lambda rows: converted.apply(params, rows).reshape(n * b, n_out), x_rows)
        eye = jnp.eye(n_out, dtype=out.dtype)

        def one_output(o_hot):  # the cotangent selecting output o for every row
            (gradient,) = pullback(jnp.broadcast_to(o_hot, out.shape))
            return ((x_rows - r_rows) * gradient).reshape(n, b, *row_shape).mean(axis=1)

        if outputs == "vmap":
            phi = jax.vmap(one_output)(eye)
        elif outputs == "map":
            phi = jax.lax.map(one_output, eye)
        else:
            phi = jnp.stack([one_output(eye[o]) for o in range(n_out)])
        return jnp.moveaxis(phi, 0, -1)  # (N, *row, n_outputs)

    compiled = jit(floor)  # compiled with xshap's own XLA options
    return compiled, (converted.params, x_rows, r_rows)


def _prepare_floor(w: workloads.Workload, options: argparse.Namespace):
    compiled, args = floor_program(w, options.floor_outputs)
    return lambda: compiled(*args).block_until_ready()


def _prepare_torch(w: workloads.Workload, options: argparse.Namespace):
    import numpy as np
    import torch

    device = _torch_device(options)
    n, b, row_shape = len(w.X), len(w.background), w.X.shape[1:]
    model = w.model.to(device)
    x_rows = torch.from_numpy(np.repeat(w.X, b, axis=0)).to(device)  # (N*B, *row): x_i against every r_j
    r_rows = torch.from_numpy(np.tile(w.background, (n,) + (1,) * len(row_shape))).to(device)
    delta = x_rows - r_rows

    def call():
        rows = x_rows.detach().requires_grad_(True)
        out = model(rows).reshape(n * b, -1)
        phi = []
        for o in range(w.n_outputs):
            (gradient,) = torch.autograd.grad(out[:, o].sum(), rows, retain_graph=o < w.n_outputs - 1)
            phi.append((delta * gradient).reshape(n, b, *row_shape).mean(dim=1))
        return torch.stack(phi, dim=-1).detach().cpu().numpy()

    return call


PREPARE = {
    "xshap": _prepare_xshap,
    "shap": _prepare_shap,
    "captum": _prepare_captum,
    "floor": _prepare_floor,
    "torch": _prepare_torch,
}


IMPORTS = {
    "xshap": ("torch", "jax", "xshap", "converters"),
    "floor": ("torch", "jax", "converters", "xshap.explain.compiling"),
    "torch": ("torch",),
    "shap": ("torch", "shap"),
    "captum": ("torch", "captum.attr"),
}


def child_main(args: argparse.Namespace) -> int:
    """Build the workload, set up the implementation, warm up, time ``reps`` calls; report events on stdout.

    The implementation's modules are imported and the data built before the ``ready`` event: setup times and
    the added memory exclude them.
    """
    import importlib
    import warnings

    warnings.simplefilter("ignore")
    for module in IMPORTS[args.child]:
        importlib.import_module(module)
    spec = workloads.specs(args.quick)[args.child_workload]
    w = workloads.build(spec)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    info = {"torch_threads": torch.get_num_threads()}
    if args.child in ("xshap", "floor"):
        import jax

        _check_jax_device(args)
        info["jax_devices"] = [f"{d} ({d.device_kind})" for d in jax.devices()]
    elif args.device == "gpu":
        info["torch_device"] = torch.cuda.get_device_name(_torch_device(args))
    _emit("ready", n_outputs=w.n_outputs, **info)
    start = time.perf_counter()
    call = PREPARE[args.child](w, args)
    _emit("setup", seconds=time.perf_counter() - start)
    start = time.perf_counter()
    values = call()
    _emit("first", seconds=time.perf_counter() - start, shape=list(getattr(values, "shape", ())))
    del values
    timed, reps = 0.0, 0
    while reps < args.reps or (timed < args.min_seconds and reps < MAX_REPS):
        start = time.perf_counter()
        call()
        seconds = time.perf_counter() - start
        timed, reps = timed + seconds, reps + 1
        _emit("rep", seconds=seconds)
    if args.child == "xshap":  # a second explainer on the same model and shapes: what its compiled programs cost now
        start = time.perf_counter()
        again = PREPARE[args.child](w, args)
        setup = time.perf_counter() - start
        again()
        _emit("again", setup=setup, seconds=time.perf_counter() - start)
    _emit("done", **_device_peak(args))
    return 0


def _device_peak(args: argparse.Namespace) -> dict:
    """With ``--device gpu``: the GPU memory peak in MB (JAX's allocator or torch's caching allocator)."""
    if args.device != "gpu":
        return {}
    if args.child in ("xshap", "floor"):
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        peak = stats.get("peak_bytes_in_use")
    else:
        import torch

        peak = torch.cuda.max_memory_allocated()
    return {"device_peak_mb": peak / 2**20} if peak is not None else {}


# ===================================================================================================
# parent: one child per (workload, implementation), the table
# ===================================================================================================
@dataclass
class Row:
    workload: str
    description: str
    n: int
    b: int
    n_outputs: int | None
    implementation: str
    status: str = "ok"  # ok, skipped, error, timeout, memory
    detail: str = ""
    setup_s: float | None = None
    first_s: float | None = None
    again_s: float | None = None  # xshap: set-up + first call of a second explainer on the same model, same process
    compile_s: float | None = None
    median_s: float | None = None
    reps_s: list[float] = field(default_factory=list)
    peak_mb: float | None = None
    base_mb: float | None = None
    added_mb: float | None = None
    wall_s: float | None = None
    output_shape: list[int] | None = None
    info: dict = field(default_factory=dict)
    ratios: dict[str, float | None] = field(default_factory=dict)


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def run_child(spec: workloads.Spec, implementation: str, args: argparse.Namespace, limit_s: float) -> Row:
    """One implementation on one workload in a fresh process, killed past ``limit_s`` or ``--max-rss-gb``."""
    row = Row(spec.name, spec.description, spec.n, spec.b, None, implementation)
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        implementation,
        "--child-workload",
        spec.name,
        "--reps",
        str(args.reps),
        "--floor-outputs",
        args.floor_outputs,
        "--min-seconds",
        str(args.min_seconds),
        "--threads",
        str(args.threads),
        "--device",
        args.device,
    ] + (["--quick"] if args.quick else [])
    events: list[dict] = []
    with tempfile.TemporaryFile(mode="w+") as stderr, tempfile.TemporaryDirectory(prefix="xshap-jax-cache-") as cache:
        env = _child_env(args.threads, args.device)
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
        env["XSHAP_COMPILATION_CACHE"] = cache  # empty: the first call compiles, a second explainer may reuse
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)

        def read():
            for line in process.stdout:
                if line.startswith(EVENT):
                    events.append(json.loads(line[len(EVENT) :]))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        limit_mb = args.max_rss_gb * 1024.0
        killed, observed_mb = None, 0.0
        while process.poll() is None:
            elapsed = time.perf_counter() - start
            rss = _rss_mb(process.pid)
            observed_mb = max(observed_mb, rss)
            if elapsed > limit_s:
                killed = ("timeout", f"killed after {elapsed:.0f} s (limit {limit_s:.0f} s)")
            elif rss > limit_mb:
                killed = ("memory", f"killed at {rss / 1024:.1f} GB resident (limit {args.max_rss_gb:.1f} GB)")
            if killed:
                process.kill()
                process.wait()
                break
            time.sleep(0.05)
        reader.join(timeout=10)
        row.wall_s = time.perf_counter() - start
        _fill(row, events, observed_mb if killed else 0.0)
        if killed:
            row.status, row.detail = killed
        elif process.returncode != 0 or not any(e["event"] == "done" for e in events):
            stderr.seek(0)
            lines = [line for line in stderr.read().strip().splitlines() if line.strip()]
            row.status, row.detail = "error", (lines[-1] if lines else f"exit status {process.returncode}")[:300]
    return row


def _child_env(threads: int, device: str = "cpu") -> dict:
    env = dict(os.environ)
    if device == "cpu":
        env["JAX_PLATFORMS"] = "cpu"  # on a machine with a GPU, --device cpu still means the CPU
        env["CUDA_VISIBLE_DEVICES"] = ""
    env.setdefault("PYTHONWARNINGS", "ignore")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
        flags = (
            f"--xla_cpu_multi_thread_eigen={'false' if threads == 1 else 'true'} intra_op_parallelism_threads={threads}"
        )
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flags).strip()
    return env


def _fill(row: Row, events: list[dict], observed_mb: float = 0.0) -> None:
    """The row from the child's events; ``observed_mb``: the largest resident set the parent saw (a killed
    child reports no peak after its last event)."""
    for event in events:
        kind = event["event"]
        if kind == "ready":
            row.n_outputs = event["n_outputs"]
            row.base_mb = event["rss_mb"]
            row.info = {k: event[k] for k in ("torch_threads", "jax_devices", "torch_device") if k in event}
        elif kind == "done" and "device_peak_mb" in event:
            row.info["device_peak_mb"] = event["device_peak_mb"]
        elif kind == "setup":
            row.setup_s = event["seconds"]
        elif kind == "again":
            row.again_s = event["seconds"]
        elif kind == "first":
            row.first_s = event["seconds"]
            row.output_shape = event.get("shape")
        elif kind == "rep":
            row.reps_s.append(event["seconds"])
        row.peak_mb = event["peak_mb"]
    if observed_mb and observed_mb > (row.peak_mb or 0.0):
        row.peak_mb = observed_mb
    if row.reps_s:
        row.median_s = statistics.median(row.reps_s)
        if row.first_s is not None:
            row.compile_s = max(0.0, row.first_s - row.median_s)
    if row.peak_mb is not None and row.base_mb is not None:
        row.added_mb = row.peak_mb - row.base_mb


def steady_seconds(row: Row) -> tuple[float | None, bool]:
    """The row's steady time per call and whether it is an estimate: the median of its timed calls, or, for a
    row killed before any timed call, its first call (an upper bound: it includes any compilation)."""
    if row.median_s:
        return row.median_s, False
    if row.first_s:
        return row.first_s, True
    return None, False


def add_ratios(rows: list[Row]) -> None:
    """median / median of shap, captum and the floor on the same workload (None where either is missing).

    A side known only from its first call counts with that time; ``ratio_estimates`` names those bases."""
    for row in rows:
        mine, mine_estimated = steady_seconds(row)
        row.info["ratio_estimates"] = []
        for base in RATIO_BASES:
            other = next((r for r in rows if r.workload == row.workload and r.implementation == base), None)
            theirs, theirs_estimated = steady_seconds(other) if other is not None else (None, False)
            if mine and theirs:
                row.ratios[base] = mine / theirs
                if mine_estimated or theirs_estimated:
                    row.info["ratio_estimates"].append(base)
            else:
                row.ratios[base] = None


def _num(value, digits: int = 3) -> str:
    """``digits`` significant digits, never in exponent form."""
    if value is None:
        return "-"
    if value == 0 or abs(value) >= 10 ** (digits - 1):
        return f"{value:.0f}"
    decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(value)))))
    return f"{value:.{decimals}f}"


def _ratio(value, estimated: bool = False) -> str:
    if value is None:
        return "-"
    text = _num(value, 3)
    return "~" + text if estimated else text


def format_table(rows: list[Row]) -> str:
    header = [
        "workload",
        "N",
        "B",
        "outs",
        "impl",
        "setup s",
        "first s",
        "again s",
        "compile s",
        "median s",
        "reps",
        "peak MB",
        "+MB",
        "t/shap",
        "t/captum",
        "t/floor",
        "t/torch",
        "status",
    ]
    body = []
    for r in rows:
        status = r.status if not r.detail else f"{r.status}: {r.detail}"
        if r.status in ("timeout", "memory"):
            status += f" ({len(r.reps_s)} timed calls done)" if r.reps_s else " (first call only)" if r.first_s else ""
        body.append(
            [
                r.workload,
                str(r.n),
                str(r.b),
                "-" if r.n_outputs is None else str(r.n_outputs),
                r.implementation,
                _num(r.setup_s),
                _num(r.first_s),
                _num(r.again_s),
                _num(r.compile_s),
                _num(r.median_s, 4),
                str(len(r.reps_s)),
                _num(r.peak_mb, 0),
                _num(r.added_mb, 0),
                *(_ratio(r.ratios.get(b), b in r.info.get("ratio_estimates", ())) for b in RATIO_BASES),
                status,
            ]
        )
    widths = [max(len(h), *(len(line[i]) for line in body)) if body else len(h) for i, h in enumerate(header)]
    left = {0, 4, len(header) - 1}

    def line(cells):
        return " | ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "-+-".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(cells) for cells in body)])


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("xshap", "torch", "jax", "jaxlib", "shap", "captum", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--workloads", default="W1,W2,W3,W4", help="comma-separated: W1,W2,W3,W4,W5 (or W4-N1000, W5-resnet18-64 ...)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes of every workload (a smoke test)")
    parser.add_argument("--reps", type=int, default=3, help="timed calls after the warm-up (median reported)")
    parser.add_argument("--json", dest="json_path", help="write every measurement and the table here")
    parser.add_argument(
        "--skip", default="", help=f"comma-separated implementations to leave out: {', '.join(IMPLEMENTATIONS)}"
    )
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=None,
        help=f"keep timing calls (up to {MAX_REPS}) until they add up to this; default 1 (0 with --quick)",
    )
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="kill a child past this (per row)")
    parser.add_argument("--captum-max-seconds", type=float, default=None, help="the same for Captum's rows")
    parser.add_argument("--shap-max-seconds", type=float, default=None, help="the same for shap's rows")
    parser.add_argument(
        "--max-rss-gb", type=float, default=_default_rss_gb(), help="kill a child above this resident memory"
    )
    parser.add_argument(
        "--floor-outputs",
        choices=("unroll", "vmap", "map"),
        default="unroll",
        help="floor: one pullback per output unrolled in the jit (default), vmapped, or under lax.map",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="threads for torch (set_num_threads), OpenMP/MKL and XLA:CPU; 0: each library's default",
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "gpu"),
        default="cpu",
        help="cpu (default; JAX and torch pinned to the CPU) or gpu (JAX's GPU backend, torch's cuda:0)",
    )
    parser.add_argument("--child", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--child-workload", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - set(IMPLEMENTATIONS)
    if unknown:
        parser.error(f"--skip: unknown implementation(s) {', '.join(sorted(unknown))}")
    args.skip_set = skip
    if args.min_seconds is None:
        args.min_seconds = 0.0 if args.quick else 1.0
    return args


def _default_rss_gb() -> float:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return round(0.8 * int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return 16.0


def main(argv: list[str] | None = None) -> list[Row]:
    """Run the chosen workloads, print the table, return the rows (and write --json)."""
    args = parse_args(argv)
    if args.child:
        raise SystemExit(child_main(args))
    specs = workloads.expand(args.workloads.split(","), args.quick)
    load_before = _load()
    print(
        f"xshap benchmark: {platform.machine()} {os.cpu_count()} CPUs, load {load_before}; "
        f"{'quick sizes' if args.quick else 'full sizes'}, warm-up + {args.reps} reps per row; "
        f"floor outputs: {args.floor_outputs}; device: {args.device}",
        flush=True,
    )
    rows: list[Row] = []
    for spec in specs:
        for implementation in IMPLEMENTATIONS:
            if implementation in args.skip_set:
                rows.append(Row(spec.name, spec.description, spec.n, spec.b, None, implementation, status="skipped"))
                continue
            limit = {"captum": args.captum_max_seconds, "shap": args.shap_max_seconds}.get(implementation)
            limit = args.max_seconds if limit is None else limit
            row = run_child(spec, implementation, args, limit)
            rows.append(row)
            print(
                f"  {spec.name:<10} {implementation:<7} {row.status:<8} median {_num(row.median_s, 4)} s, "
                f"first {_num(row.first_s)} s, peak {_num(row.peak_mb, 0)} MB, wall {row.wall_s:.1f} s"
                + (f", device peak {row.info['device_peak_mb']:.0f} MB" if "device_peak_mb" in row.info else "")
                + (f" on {row.info.get('torch_device') or row.info.get('jax_devices')}" if args.device == "gpu" else "")
                + (f"  [{row.detail}]" if row.detail else ""),
                flush=True,
            )
    for row in rows:  # every implementation of a workload reports the same output count
        if row.n_outputs is None:
            row.n_outputs = next((r.n_outputs for r in rows if r.workload == row.workload and r.n_outputs), None)
    add_ratios(rows)
    table = format_table(rows)
    load_after = _load()
    print()
    print(table)
    print(
        f"\nload average before {load_before}, after {load_after}. compile = first - median; "
        "t/X = median / X's median on the same workload\n(~: one side known only from its first call); +MB = peak RSS - RSS before setup."
    )
    if args.json_path:
        record = {
            "argv": sys.argv[1:] if argv is None else list(argv),
            "quick": args.quick,
            "reps": args.reps,
            "floor_outputs": args.floor_outputs,
            "device": args.device,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "load_before": load_before,
            "load_after": load_after,
            "versions": _versions(),
            "rows": [asdict(r) for r in rows],
            "table": table,
        }
        Path(args.json_path).write_text(json.dumps(record, indent=2))
    return rows


if __name__ == "__main__":
    main()
