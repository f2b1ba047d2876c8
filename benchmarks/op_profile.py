"""Where the time of a converted model goes, op by op, beside torch's profiler on the same model (issue 19).

    python -m benchmarks.op_profile --model resnet18 --size 64 [--rows 32] [--top 20] [--backward]
    python -m benchmarks.op_profile --workload W5-resnet18-64 [--top 20]

In one process, on the same rows: the median time of torch's forward and of the converted model's jitted
forward (``jax.jit(converted.apply)`` with xshap's XLA options), and with ``--backward`` of torch's autograd of
one output and of ``jax.jit(jax.grad(...))`` of it; their ratios. Then each program's most expensive XLA
operations under ``jax.profiler`` (an HLO instruction's time, named by the torch module and the JAX primitive
its metadata records), and torch's profiler's most expensive ATen ops. A developer's tool: ``benchmarks.run``
says how fast, this says where the time goes.

With ``--workload``: the compiled chunk of ``DeepExplainer`` over all of the workload's rows (one chunk) and the
floor (``benchmarks.run.floor_program``), each's median time and its most expensive XLA operations, by module.
"""

from __future__ import annotations

import argparse
import collections
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

if not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import workloads  # noqa: E402

_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*?metadata=\{[^}]*op_name=\"([^\"]*)\"")


def median_seconds(fn, calls: int = 5) -> float:
    fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def instruction_origins(hlo_text: str) -> dict[str, str]:
    """HLO instruction (and fusion) name -> the op_name of its metadata: jit/vmap frames, the module's name
    scope and the primitive (a fusion takes the metadata of its root)."""
    origins = {}
    for line in hlo_text.splitlines():
        match = _INSTRUCTION.match(line)
        if match:
            origins.setdefault(match.group(1), match.group(2))
    return origins


def _readable(op_name: str) -> str:
    """'jit(apply)/vmap(layer4.0.conv2)/conv_general_dilated' -> 'layer4.0.conv2: conv_general_dilated'."""
    parts = [re.sub(r"^(?:jit|vmap|jvp|transpose|pjit)\((.*)\)$", r"\1", p) for p in op_name.split("/")]
    parts = [p for p in parts if p and p not in ("main", "apply", "apply_row", "<lambda>")]
    return ": ".join(["/".join(parts[:-1]) or "<top>", parts[-1]]) if parts else op_name


def xla_profile(compiled, args, calls: int = 3) -> list[tuple[str, float]]:
    """(module: primitive [instruction], ms per call) of the compiled program's XLA operations, largest first."""
    import jax

    from benchmarks.kernels import _kernel_times

    origins = instruction_origins(compiled.as_text())
    jax.block_until_ready(compiled(*args))
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            for _ in range(calls):
                jax.block_until_ready(compiled(*args))
        _, rows = _kernel_times(trace_dir, calls)
    totals: dict[str, float] = collections.defaultdict(float)
    for name, us, _count in rows:
        instruction = name.split(": ", 1)[-1]
        if instruction not in origins:
            continue  # the executor's own events (waits, thunk bookkeeping) are not operations
        totals[f"{_readable(origins[instruction])} [{instruction}]"] += us / 1e3
    return sorted(totals.items(), key=lambda item: -item[1])


def torch_profile(fn, top: int) -> str:
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)


def explainer_profile(workload: str, top: int) -> int:
    """xshap's compiled chunk over the workload's rows beside the floor: median seconds and the largest ops."""
    import os

    import jax

    import xshap
    from benchmarks.run import floor_program

    w = workloads.build(workloads.specs()[workload])
    explainer = xshap.DeepExplainer(w.model, w.background, batch_size=len(w.X))
    xs = explainer.sharding.put_rows([w.X])
    chunk_args = (explainer._params, xs, tuple(explainer.background), explainer._references)
    floor, floor_args = floor_program(w)
    programs = {"xshap": (explainer._chunk.lower(*chunk_args).compile(), chunk_args)}
    programs["floor"] = (floor.lower(*floor_args).compile(), floor_args)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{workload}: N={len(w.X)}, B={len(w.background)}, {w.n_outputs} outputs; load {load}")
    for label, (compiled, call_args) in programs.items():
        seconds = median_seconds(lambda c=compiled, a=call_args: jax.block_until_ready(c(*a)), calls=3)
        print(f"{label}: {seconds:.4f} s per call")
    for label, (compiled, call_args) in programs.items():
        rows = xla_profile(compiled, call_args, calls=2)
        print(f"\n{label}, {sum(ms for _, ms in rows):.1f} ms of XLA operations per call; the largest:")
        for name, ms in rows[:top]:
            print(f"  {ms:9.2f} ms  {name[:140]}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18", help=", ".join(workloads.W5_MODELS))
    parser.add_argument("--size", type=int, default=64, help="image side (sequence length for bert)")
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--backward", action="store_true", help="also the gradient of one output")
    parser.add_argument("--workload", help="a benchmark workload (W5-resnet18-64 ...): xshap's chunk and the floor")
    args = parser.parse_args(argv)
    import os

    if args.workload:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        return explainer_profile(args.workload, args.top)

    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import jax.numpy as jnp
    import torch

    import converters
    from xshap.explain.compiling import jit

    model, X = workloads.w5_model(args.model, args.size, args.rows)
    converted = converters.from_torch(model, torch.from_numpy(X[:4]))
    xt, xj = torch.from_numpy(X), jnp.asarray(X)
    programs = {"forward": jit(converted.apply)}
    if args.backward:
        programs["backward"] = jit(jax.grad(lambda p, x: converted.apply(p, x)[:, 0].sum(), argnums=1))
    compiled = {k: f.lower(converted.params, xj).compile() for k, f in programs.items()}

    def torch_forward():
        with torch.no_grad():
            model(xt)

    def torch_backward():
        x = xt.clone().requires_grad_(True)
        model(x)[:, 0].sum().backward()

    torch_fns = {"forward": torch_forward, "backward": torch_backward}
    print(f"{args.model} at {args.size}, {args.rows} rows; load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for label, program in compiled.items():
        mine = median_seconds(lambda program=program: jax.block_until_ready(program(converted.params, xj)))
        theirs = median_seconds(torch_fns[label])
        print(f"{label}: torch {theirs:.4f} s, converted {mine:.4f} s, converted / torch {mine / theirs:.2f}")
    for label, program in compiled.items():
        rows = xla_profile(program, (converted.params, xj))
        print(f"\nconverted {label}, {sum(ms for _, ms in rows):.1f} ms of XLA operations per call; the largest:")
        for name, ms in rows[: args.top]:
            print(f"  {ms:9.2f} ms  {name[:140]}")
        print(f"\ntorch {label}:")
        print(torch_profile(torch_fns[label], args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
