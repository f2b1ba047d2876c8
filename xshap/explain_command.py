"""``xshap explain MODEL --background BG --inputs X --out STORE [--resume]``: DeepSHAP values of a dataset that
need not fit in memory, written block by block to an on-disk store (``xshap.explain.streaming``), with a
progress bar and a completeness summary. An interrupted run is finished with ``--resume``.

Exit codes: 0 when every row is complete, 2 for bad input (as ``xshap check``), 3 for an error inside xshap.
"""

from __future__ import annotations

import argparse
import os
import sys


def add_explain_parser(commands) -> None:
    explain = commands.add_parser(
        "explain",
        help="explain a dataset into an on-disk store, block by block (resumable with --resume)",
        description="DeepSHAP values of the rows of X against the background BG, written to the folder STORE "
        "(values_<i>.npy in shap's layout, outputs, gaps, tolerances, a manifest), a block of rows at a time. "
        "Memory stays one block's whatever the number of rows; a run that was stopped resumes with --resume.",
    )
    explain.add_argument("model", metavar="MODEL", help="a .pt2 file or package.module:factory (as for check)")
    explain.add_argument("--background", "-b", required=True, metavar="BG", help="background rows (.npy or .pt)")
    explain.add_argument(
        "--inputs",
        "-x",
        required=True,
        metavar="X",
        help="rows to explain: a .npy file (memory-mapped), a folder "
        "of .npy shards (their rows one after the other, in name order), or a .pt file",
    )
    explain.add_argument("--out", "-o", required=True, metavar="STORE", help="the folder to write the store to")
    explain.add_argument("--resume", action="store_true", help="finish the store already in STORE")
    explain.add_argument("--rules", choices=("complete", "shap"), default="complete", help="xshap's rule set")
    explain.add_argument("--batch-size", type=int, default=None, help="rows per compiled chunk (default: by memory)")
    explain.add_argument(
        "--max-memory", metavar="SIZE", default=None, help="bytes of intermediates per chunk: 256MiB, 1GiB ..."
    )
    explain.add_argument(
        "--max-bytes",
        metavar="SIZE",
        default="1GiB",
        help="the most memory one model or background file may make "
        "xshap allocate (as for check; memory-mapped inputs are read a block at a time)",
    )


def run_explain(args: argparse.Namespace) -> int:
    from xshap.cli import EXIT_AGREE, EXIT_BAD_INPUT, _describe_failure, failure_code

    try:
        stored = _explain(args)
    except BaseException as error:  # noqa: BLE001 - every way the run can end must give a documented code
        code = failure_code(error)
        label = "bad input" if code == EXIT_BAD_INPUT else "internal error"
        print(f"xshap explain: {label}: {_describe_failure(error)}", file=sys.stderr)
        return code
    print(f"xshap explain: {stored.summary()}")
    return EXIT_AGREE if stored.incomplete_rows == 0 else 3


def _explain(args: argparse.Namespace):
    from xshap.cli import load_model
    from xshap.explain.explainer import DeepExplainer
    from xshap.files import parse_size
    from xshap.loading import Limits, load_array

    # as for check: nothing compiled from someone else's files is kept on disk, unless the user asked for a cache
    os.environ.setdefault("XSHAP_COMPILATION_CACHE", "off")
    limits = Limits(parse_size(args.max_bytes))
    background = load_array(args.background, limits)
    rows = _rows(args.inputs, limits)
    model = load_model(args.model, limits)
    max_memory = parse_size(args.max_memory) if args.max_memory else None
    explainer = DeepExplainer(
        model, background, rules=args.rules, batch_size=args.batch_size, max_memory=max_memory, progress=False
    )
    return explainer.explain_to(args.out, rows, resume=args.resume, progress=True)


def _rows(path: str, limits):
    """A .npy file or folder of them is memory-mapped (never unpickled); a .pt file is loaded as for check."""
    if os.path.isdir(path) or path.endswith(".npy"):
        return path
    from xshap.loading import load_array

    return load_array(path, limits)
