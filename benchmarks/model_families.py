"""Which torchvision, timm and Hugging Face families convert and explain (issue 18, "Reach").

For every model of a family, in its own subprocess under a time limit (one hang does not stop the sweep):
build it with random weights (``weights=None``, 10 classes where the constructor takes ``num_classes``), eval
mode, BatchNorm running statistics randomised (``benchmarks.architectures.randomize_batchnorm``), in-place ReLUs
left as the library writes them; N=4 rows and B=8 background rows of N(0, 1) pixels; then

- ``setup``: ``xshap.DeepExplainer(model, background)`` (torch.export, conversion, the conversion check against
  torch's forward, E f); ``convert`` is the part of it spent in ``converters.from_torch``;
- ``first``: the first ``shap_values(X)`` (tracing, compilation, the explanation, xshap's completeness check);
- ``complete``: xshap's own check passed, and the largest gap ``|sum(phi) - (f(x) - E f)|`` recomputed here from
  torch's forward, relative to ``max(|f(x)|, |E f|)`` of that output.

xshap's persistent compilation cache is off in the children (``XSHAP_COMPILATION_CACHE=off``): each first call
compiles from nothing, as it does the first time a user explains that model. The image size is 3x64x64 unless the model cannot take it: ViTs get ``image_size=64`` (56 for the 14-pixel
patches), and a model whose own torch forward fails at 64 is tried at 96, 128, 160 and 224 (the first that runs
is used, and the table says which). Hugging Face token models are explained at their embedding output
(``xshap.TokenExplainer``, 8 tokens), HF's ViT at its patch embeddings (``xshap.LayerExplainer``).

    python -m benchmarks.model_families --family torchvision --timeout 240 \\
        --out benchmarks/results/cpu-2core-2026-12-01-model-families.txt

needs torchvision (and timm / transformers for those families) importable beside xshap: see the README section
"Which architectures convert" for the separate environment this was measured in. ``--models a,b`` runs a subset,
``--list`` prints the names. Results are appended to ``--out`` as each model finishes (``--jsonl`` beside it),
so a sweep cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time

EVENT = "@@MODEL_FAMILIES "
SIZES = (64, 96, 128, 160, 224)
N_ROWS, N_BACKGROUND, N_CLASSES = 4, 8, 10
CONVERT_ONLY = os.environ.get("XSHAP_FAMILIES_CONVERT_ONLY") == "1"  # the child converts and stops

TIMM_MODELS = (
    "resnet18",
    "resnet50",
    "efficientnet_b0",
    "convnext_atto",
    "convnextv2_atto",
    "regnetx_002",
    "regnety_002",
    "vit_tiny_patch16_224",
    "deit_tiny_patch16_224",
    "swin_tiny_patch4_window7_224",
    "mobilenetv3_small_100",
    "densenet121",
    "efficientvit_b0",
    "levit_128s",
    "mixer_s16_224",
    "ghostnet_100",
    "cspresnet50",
    "dla34",
    "repvgg_a0",
    "poolformer_s12",
    "coat_lite_tiny",
    "mobilevit_xxs",
    "edgenext_xx_small",
    "fastvit_t8",
)
HF_MODELS = ("bert", "distilbert", "roberta", "gpt2", "t5", "llama", "mistral", "vit")


# -- the child: one model ---------------------------------------------------------------------------------------
def _emit(event: str, **fields) -> None:
    fields["event"] = event
    sys.stdout.write(EVENT + json.dumps(fields) + "\n")
    sys.stdout.flush()


def _first_line(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip()
    return text.splitlines()[0] if text else type(error).__name__


def _unknown_ops(error: BaseException) -> list[str]:
    return sorted({str(op) for op, _ in getattr(error, "unknown", ())})


def _torchvision_model(name: str):
    import torch
    import torchvision

    from benchmarks.architectures import randomize_batchnorm

    kwargs: dict = {"weights": None, "num_classes": N_CLASSES}
    sizes = SIZES
    if name.startswith("vit_"):
        patch = int(name.rsplit("_", 1)[1])
        size = 56 if patch == 14 else 64
        kwargs["image_size"] = size
        sizes = (size,)
    if name in ("googlenet", "inception_v3"):
        kwargs["init_weights"] = True  # torchvision warns otherwise
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, **kwargs).eval()
    return randomize_batchnorm(model), sizes


def _timm_model(name: str):
    import timm
    import torch

    from benchmarks.architectures import randomize_batchnorm

    torch.manual_seed(0)
    kwargs: dict = {"pretrained": False, "num_classes": N_CLASSES}
    sizes = SIZES
    if any(name.startswith(p) for p in ("vit_", "deit_", "swin_", "mixer_", "coat_", "levit_", "efficientvit_")):
        try:
            model = timm.create_model(name, img_size=64, **kwargs)
            sizes = (64,)
        except TypeError:
            model = timm.create_model(name, **kwargs)
    else:
        model = timm.create_model(name, **kwargs)
    return randomize_batchnorm(model.eval()), sizes


def _pick_size(model, sizes) -> int:
    import torch

    last: BaseException | None = None
    for size in sizes:
        try:
            with torch.no_grad():
                out = model(torch.zeros(2, 3, size, size))
            if getattr(out, "shape", None) is not None and tuple(out.shape) == (2, N_CLASSES):
                return size
            last = RuntimeError(f"output shape {tuple(getattr(out, 'shape', ()))} at {size}")
        except Exception as error:  # noqa: BLE001  (the next size)
            last = error
    raise RuntimeError(f"torch's own forward fails at every size tried {sizes}: {_first_line(last)}")


def _completeness_gap(values, f, expected) -> float:
    """max over rows and outputs of |sum(phi) - (f(x) - E f)| / max(|f(x)|, |E f|, tiny)."""
    import numpy as np

    values = values[0] if isinstance(values, list) else values
    totals = np.asarray(values, dtype=np.float64).reshape(values.shape[0], -1, values.shape[-1]).sum(axis=1)
    target = np.asarray(f, np.float64) - np.asarray(expected, np.float64)[None]
    scale = np.maximum(np.maximum(np.abs(f), np.abs(expected)[None]), 1e-30)
    return float(np.max(np.abs(totals - target) / scale))


def _instrument_conversion() -> None:
    """Time converters.from_torch inside the explainer's set-up (wrap_model looks it up at call time)."""
    import converters

    original = converters.from_torch

    def timed(*args, **kwargs):
        start = time.perf_counter()
        out = original(*args, **kwargs)
        _emit("converted", convert_s=time.perf_counter() - start)
        return out

    converters.from_torch = timed


def run_image(family: str, name: str) -> None:
    import torch

    import xshap

    model, sizes = (_torchvision_model if family == "torchvision" else _timm_model)(name)
    params = sum(p.numel() for p in model.parameters())
    size = _pick_size(model, sizes)
    _emit("built", size=f"3x{size}x{size}", params=params)
    g = torch.Generator().manual_seed(1)
    background = torch.randn(N_BACKGROUND, 3, size, size, generator=g)
    X = torch.randn(N_ROWS, 3, size, size, generator=g)
    with torch.no_grad():
        f = model(X).numpy()
        expected = model(background).numpy().mean(axis=0)
    _instrument_conversion()
    if CONVERT_ONLY:
        import converters

        converters.from_torch(model, (background,))
        return
    start = time.perf_counter()
    explainer = xshap.DeepExplainer(model, background)
    _emit("setup", setup_s=time.perf_counter() - start)
    start = time.perf_counter()
    values = explainer.shap_values(X)
    first = time.perf_counter() - start
    gap = _completeness_gap(values, f, expected)
    _emit("first", first_s=first, gap=gap, complete=bool(gap <= 1e-4))


def _hf_image(name: str):
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=64, patch_size=16, num_channels=3, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=128, num_labels=N_CLASSES,
    )  # fmt: skip
    return transformers.ViTForImageClassification(config).eval()


def run_hf(name: str) -> None:
    import numpy as np
    import torch

    import xshap

    if name == "vit":
        model = _hf_image(name)
        g = torch.Generator().manual_seed(1)
        background, X = torch.randn(N_BACKGROUND, 3, 64, 64, generator=g), torch.randn(N_ROWS, 3, 64, 64, generator=g)
        _emit("built", size="3x64x64 (at the patch embeddings)", params=sum(p.numel() for p in model.parameters()))
        with torch.no_grad():
            f = model(pixel_values=X).logits.numpy()
            expected = model(pixel_values=background).logits.numpy().mean(axis=0)
        _instrument_conversion()
        start = time.perf_counter()
        explainer = xshap.LayerExplainer(model, model.vit.embeddings.patch_embeddings, background)
        _emit("setup", setup_s=time.perf_counter() - start)
        start = time.perf_counter()
        result = explainer.explain(X)
    else:
        sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
        import test_hf_tokens as hf  # the tiny configs of the tests (nothing downloaded)

        model = hf.build(name).eval()
        g = torch.Generator().manual_seed(1)
        length = 8
        background = torch.randint(2, hf.VOCAB, (N_BACKGROUND, length), generator=g)
        ids = torch.randint(2, hf.VOCAB, (N_ROWS, length), generator=g)
        mask = torch.ones_like(ids)
        _emit("built", size=f"{length} tokens (at the embeddings)", params=sum(p.numel() for p in model.parameters()))
        f = hf.logits(model, input_ids=ids, attention_mask=mask)
        expected = hf.logits(model, input_ids=background, attention_mask=torch.ones_like(background)).mean(axis=0)
        _instrument_conversion()
        start = time.perf_counter()
        explainer = xshap.TokenExplainer(model, background)
        _emit("setup", setup_s=time.perf_counter() - start)
        start = time.perf_counter()
        result = explainer.explain(ids, mask)
    first = time.perf_counter() - start
    values = np.moveaxis(result.values[0], 1, -1)  # (N, ..., outputs)
    gap = _completeness_gap(values, f, expected)
    _emit("first", first_s=first, gap=gap, complete=bool(gap <= 1e-4))


def child(spec: str) -> int:
    """Run ``family:name[,name...]`` one after the other (several only for --convert-only: imports paid once)."""
    import gc

    import torch

    from converters import UnsupportedOperatorError

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    family, names = spec.split(":", 1)
    failed = 0
    for name in names.split(","):
        _emit("start", model=name)
        try:
            if family == "transformers":
                run_hf(name)
            else:
                run_image(family, name)
        except BaseException as error:  # noqa: BLE001  (recorded, the sweep goes on)
            fields = {"error": _first_line(error), "kind": type(error).__name__}
            if isinstance(error, UnsupportedOperatorError):
                fields["unknown_ops"] = _unknown_ops(error)
            _emit("error", **fields)
            failed += 1
        _emit("done")
        gc.collect()
    return 1 if failed else 0


# -- the parent: the sweep ------------------------------------------------------------------------------------
def _torchvision_params(name: str) -> int:
    """The parameter count torchvision's weights record (ImageNet heads), without building the model."""
    import torchvision

    try:
        return int(next(iter(torchvision.models.get_model_weights(name))).meta["num_params"])
    except Exception:  # noqa: BLE001
        return 1 << 40


def model_names(family: str) -> list[str]:
    if family == "torchvision":
        import torchvision

        names = torchvision.models.list_models(module=torchvision.models)
        return sorted(names, key=lambda n: (_torchvision_params(n), n))  # small ones first
    if family == "timm":
        return list(TIMM_MODELS)
    if family == "transformers":
        return list(HF_MODELS)
    raise SystemExit(f"unknown family {family!r}")


def _child_env(threads: int, convert_only: bool = False) -> dict:
    env = dict(os.environ)
    if convert_only:
        env["XSHAP_FAMILIES_CONVERT_ONLY"] = "1"
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env["XLA_FLAGS"] = (
        f"--xla_cpu_multi_thread_eigen={'false' if threads == 1 else 'true'} intra_op_parallelism_threads={threads}"
    )
    env.setdefault("JAX_PLATFORMS", "cpu")
    env["XSHAP_COMPILATION_CACHE"] = "off"  # every first call compiles from scratch, as in a new environment
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_batch(family: str, names: list[str], timeout: float, threads: int, convert_only: bool = False):
    """Rows for ``names``, run in one child (a fresh one after a model overruns ``timeout`` and is killed)."""
    import tempfile

    pending = list(names)
    while pending:
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.model_families", "--child", f"{family}:{','.join(pending)}"],
                stdout=out,
                stderr=err,
                text=True,
                env=_child_env(threads, convert_only),
                start_new_session=True,
            )
            row, started, position, before = None, time.perf_counter(), 0, len(pending)
            while True:
                exited = process.poll() is not None
                out.seek(position)
                chunk = out.read()
                complete = chunk[: chunk.rfind("\n") + 1] if not exited else chunk
                position += len(complete)
                for line in complete.splitlines():
                    if not line.startswith(EVENT):
                        continue
                    event = json.loads(line[len(EVENT) :])
                    kind = event.pop("event")
                    if kind == "start":
                        row, started = {"family": family, "model": event["model"]}, time.perf_counter()
                    elif kind == "done" and row is not None:
                        row["wall_s"] = time.perf_counter() - started
                        pending.remove(row["model"])
                        yield _finish(row, convert_only)
                        row, started = None, time.perf_counter()
                    elif row is not None:
                        row.setdefault("events", []).append(kind)
                        row.update(event)
                if exited:
                    break
                if time.perf_counter() - started > timeout:
                    os.killpg(process.pid, signal.SIGKILL)  # the child's own session: it and what it started
                    process.wait()
                    if not pending:  # every model done, the child slow to exit
                        break
                    row = row or {"family": family, "model": pending[0]}
                    stage = (row.get("events") or ["start"])[-1]
                    row.update(error=f"over the {timeout:.0f} s limit (last stage reached: {stage})", timeout=True)
                    row["wall_s"] = time.perf_counter() - started
                    pending.remove(row["model"])
                    yield row
                    row = None
                    break
                time.sleep(0.5)
            stuck = process.returncode != -signal.SIGKILL and len(pending) == before  # e.g. it failed to start
            if pending and (row is not None or stuck):
                err.seek(0)
                tail = [line for line in err.read().splitlines() if line.strip()]
                row = row or {"family": family, "model": pending[0]}
                row["error"] = f"child exited {process.returncode}: " + (tail[-1] if tail else "no output")
                pending.remove(row["model"])
                yield row


def _finish(row: dict, convert_only: bool) -> dict:
    if "first_s" not in row and "error" not in row and not (convert_only and "convert_s" in row):
        row["error"] = "no result (the child stopped without an error)"
    return row


def _fmt(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table_row(row: dict) -> str:
    converts = "yes" if "convert_s" in row else ("no" if row.get("unknown_ops") or "error" in row else "?")
    if "convert_s" not in row and row.get("timeout"):
        converts = "?"
    complete = "-"
    if "gap" in row:
        complete = f"yes ({row['gap']:.1e})" if row.get("complete") else f"NO ({row['gap']:.1e})"
    error = row.get("error", "")
    if row.get("unknown_ops"):
        error = "unknown ops: " + ", ".join(row["unknown_ops"])
    return (
        f"{row['model']:<34} {row.get('size', '-'):<34} {converts:<8} {complete:<16} "
        f"{_fmt(row.get('convert_s')):>8} {_fmt(row.get('setup_s')):>8} {_fmt(row.get('first_s')):>8}  {error}"
    )


HEADER = (
    f"{'model':<34} {'input':<34} {'converts':<8} {'complete (gap)':<16} "
    f"{'convert':>8} {'setup':>8} {'first':>8}  error"
)


def _load() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def _versions() -> str:
    parts = []
    for module in ("torch", "torchvision", "timm", "transformers", "jax", "numpy"):
        try:
            parts.append(f"{module} {__import__(module).__version__}")
        except Exception:  # noqa: BLE001
            parts.append(f"{module} -")
    return ", ".join(parts)


def sweep(args: argparse.Namespace) -> None:
    names = args.models.split(",") if args.models else model_names(args.family)
    skip = set(args.skip.split(",")) if args.skip else set()
    names = [n for n in names if n not in skip]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "a") as out:
        out.write(
            f"\n# {args.family}: {len(names)} models, N={N_ROWS} rows, B={N_BACKGROUND} background, {N_CLASSES} outputs, "
            f"limit {args.timeout:.0f} s per model (set-up + first call, each in a new subprocess), {args.threads} thread(s)"
            f"{'; CONVERT ONLY (converters.from_torch, no explanation; several models to a process)' if args.convert_only else ''}\n"
            f"# command: python -m benchmarks.model_families {' '.join(sys.argv[1:])}\n"
            f"# {_versions()}; python {platform.python_version()}; {os.cpu_count()} CPUs; "
            f"started {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, load {_load()}\n"
            f"# seconds: convert = converters.from_torch (inside set-up), setup = DeepExplainer(...), "
            f"first = first shap_values; gap = max |sum phi - (f(x) - E f)| / max(|f(x)|, |E f|)\n"
            f"{HEADER}\n"
        )
    # explanations each in a fresh process (a first call is a new process's); conversions several to a process
    batches = [names] if args.convert_only else [[name] for name in names]
    rows = (
        row for batch in batches for row in run_batch(args.family, batch, args.timeout, args.threads, args.convert_only)
    )
    for row in rows:
        row["load"] = _load()
        line = table_row(row)
        print(line, flush=True)
        with open(args.out, "a") as out:
            out.write(line + "\n")
        with open(os.path.splitext(args.out)[0] + ".jsonl", "a") as out:
            out.write(json.dumps(row) + "\n")
    with open(args.out, "a") as out:
        out.write(f"# {args.family} finished {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, load {_load()}\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="torchvision", choices=("torchvision", "timm", "transformers"))
    parser.add_argument("--models", default="", help="comma-separated subset (default: the whole family)")
    parser.add_argument("--skip", default="", help="comma-separated models to leave out")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds per model, set-up + first call")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/model-families.txt")
    parser.add_argument("--convert-only", action="store_true", help="convert (and check) only: no explanation")
    parser.add_argument("--list", action="store_true", help="print the family's model names and stop")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        sys.exit(child(args.child))
    if args.list:
        print("\n".join(model_names(args.family)))
        return
    sweep(args)


if __name__ == "__main__":
    main()
