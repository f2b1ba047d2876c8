"""First-call and steady time of one explainer under each output form of its chunk, each in a fresh process.

Settings: ``auto`` (xshap's own choice: ``vmap_outputs``, by the model's work per row), ``vmap`` and ``unroll``
(the form forced). Models: the two-layer
bidirectional LSTM of tests/models/test_sequence_models.py, the tiny ConvNeXt of tests/models/zoo_families.py, and
the W5 workloads of benchmarks/workloads.py (``W5-resnet18-64`` ...). Compile time is JAX's own count
(``/jax/core/compile/backend_compile_duration``) over the explainer's set-up and first call; xshap's compilation
cache is off.

    python -m benchmarks.compile_levels --models lstm,convnext,W5-resnet18-64 --settings auto,vmap,unroll
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SETTINGS = ("auto", "vmap", "unroll")


def _build(name: str):
    import torch

    if name == "lstm":
        from tests.models import test_sequence_models as seq

        background, X = seq.sequences(seq.RNN_SEQ, seq.RNN_FEATURES)
        return seq.make_lstm(batch_first=True), background, X
    if name == "convnext":
        from tests.models import zoo_families

        gen = torch.Generator().manual_seed(0)
        background = torch.randn(4, *zoo_families.IMAGE, generator=gen)
        return zoo_families.make_convnext(), background, torch.randn(2, *zoo_families.IMAGE, generator=gen)
    from benchmarks import workloads

    w = workloads.build(workloads.specs()[name])
    return w.model, w.background, w.X


def child(name: str, setting: str) -> dict:
    import collections
    import warnings

    warnings.simplefilter("ignore")
    import jax.monitoring
    import torch

    torch.set_num_threads(1)
    compile_seconds = collections.Counter()
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, seconds, **_: compile_seconds.__setitem__(event, compile_seconds[event] + seconds)
    )
    import xshap
    from xshap.explain import explainer as explainer_module

    if setting in ("vmap", "unroll"):
        explainer_module.vmap_outputs = lambda platform, deeplift: setting == "vmap"
    model, background, X = _build(name)
    start = time.perf_counter()
    explainer = xshap.DeepExplainer(model, background)
    setup = time.perf_counter() - start
    start = time.perf_counter()
    explainer.explain(X)
    first = time.perf_counter() - start
    steady = []
    for _ in range(3):
        start = time.perf_counter()
        explainer.explain(X)
        steady.append(time.perf_counter() - start)
    return {
        "model": name,
        "setting": setting,
        "vmapped": bool(explainer._vmap_outputs),
        "setup_s": round(setup, 2),
        "first_s": round(first, 2),
        "steady_s": round(sorted(steady)[1], 4),
        "compile_s": round(compile_seconds["/jax/core/compile/backend_compile_duration"], 2),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="lstm,convnext,W5-resnet18-64")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "SETTING"), help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.child:
        print(json.dumps(child(*options.child)))
        return 0
    environment = dict(os.environ, XSHAP_COMPILATION_CACHE="off", OMP_NUM_THREADS="1")
    environment["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    environment.pop("JAX_COMPILATION_CACHE_DIR", None)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; one thread per process")
    print("model | setting | vmapped | set-up s | first s | XLA compile s | steady s")
    for name in options.models.split(","):
        for setting in options.settings.split(","):
            run = [sys.executable, "-m", "benchmarks.compile_levels", "--child", name, setting]
            done = subprocess.run(run, capture_output=True, text=True, env=environment, check=False)
            if done.returncode:
                print(f"{name} | {setting} | failed: {done.stderr.strip().splitlines()[-1:]}")
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"{name} | {setting} | {row['vmapped']} | {row['setup_s']} | {row['first_s']} | {row['compile_s']} |"
                f" {row['steady_s']}",
                flush=True,
            )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
