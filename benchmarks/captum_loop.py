"""100 ``attribute()`` calls on one model: ``xshap.captum`` against Captum, side by side (issue 17).

A loop of Captum-style calls, as Captum's own tests and a researcher's notebook make them: the same model and
input shapes, a new batch of rows each call. xshap converts and compiles on the first call and reuses that for the
others (cached per model content and shapes); Captum hooks the modules on every call. Printed per class: the first
call, the total of the 100 calls (the first included), and the mean of the last 99; then the largest difference
between the two libraries' attributions over all calls (the model has only module nonlinearities used once, where
Captum's hooks are exact, so the two must agree).

    python -m benchmarks.captum_loop [--calls 100] [--rows 8] [--baselines 16]
"""

from __future__ import annotations

import argparse
import copy
import time


def model():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(32, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 64),
        torch.nn.Tanh(),
        torch.nn.Linear(64, 10),
    ).eval()


def run(calls: int, rows: int, baselines: int) -> list[dict]:
    import torch
    from captum import attr as captum_attr

    import xshap.captum as xc

    g = torch.Generator().manual_seed(1)
    inputs = [torch.randn(rows, 32, generator=g) for _ in range(calls)]
    background = torch.randn(baselines, 32, generator=g)
    net = model()
    cases = [
        ("DeepLift", lambda m: (m,), {"baselines": background[:1]}),
        ("DeepLiftShap", lambda m: (m,), {"baselines": background}),
        ("LayerDeepLiftShap", lambda m: (m, m[1]), {"baselines": background}),
    ]
    records = []
    for name, arguments, kwargs in cases:
        record = {"class": name, "calls": calls, "rows": rows, "baselines": len(kwargs["baselines"])}
        results = {}
        for library, module in (("xshap", xc), ("captum", captum_attr)):
            copy_of = copy.deepcopy(net)
            method = getattr(module, name)(*arguments(copy_of))
            times, out = [], []
            for i, x in enumerate(inputs):
                start = time.perf_counter()
                a = method.attribute(x, target=i % 10, **kwargs)
                times.append(time.perf_counter() - start)
                out.append(a.detach())
            results[library] = out
            record[f"{library}_first_s"] = times[0]
            record[f"{library}_total_s"] = sum(times)
            record[f"{library}_rest_mean_ms"] = 1e3 * sum(times[1:]) / max(1, len(times) - 1)
        record["max_abs_difference"] = max(
            float((a - b).abs().max()) for a, b in zip(results["xshap"], results["captum"])
        )
        records.append(record)
    return records


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--baselines", type=int, default=16)
    args = parser.parse_args(argv)
    records = run(args.calls, args.rows, args.baselines)
    print(f"{args.calls} attribute() calls, {args.rows} rows each, MLP 32-64-64-10 (ReLU, Tanh)")
    print(f"{'class':<18} {'baselines':>9} {'library':<7} {'first s':>8} {'total s':>8} {'rest ms/call':>12}")
    for r in records:
        for library in ("xshap", "captum"):
            print(
                f"{r['class']:<18} {r['baselines']:>9} {library:<7} {r[library + '_first_s']:>8.2f} "
                f"{r[library + '_total_s']:>8.2f} {r[library + '_rest_mean_ms']:>12.2f}"
            )
        print(f"{'':<18} max |xshap - captum| = {r['max_abs_difference']:.2e}")


if __name__ == "__main__":
    main()
