"""The command line: ``xshap demo`` (the seed reproduction), ``xshap check`` (a cross-check gate) and
``xshap explain`` (attributions of a dataset streamed to disk, resumable; see ``xshap.explain_command``).

``xshap check`` exits with one of the codes in ``EXIT_CODES`` (printed by ``xshap check --help``, and the table
in the README), so it can gate a research pipeline in CI. Model and data files are read as untrusted data
(``xshap.files``); a ``package.module:factory`` MODEL is the user's own code (``xshap.factory``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from xshap.explain_command import add_explain_parser, run_explain

EXIT_AGREE, EXIT_REFERENCE, EXIT_BAD_INPUT, EXIT_XSHAP_BUG = 0, 1, 2, 3
FAILING_VERDICTS = ("REFERENCE_INCOMPLETE", "DISAGREE", "REFERENCE_ERROR")


@dataclass(frozen=True)
class ExitCode:
    code: int
    meaning: str


EXIT_CODES = (
    ExitCode(
        EXIT_AGREE,
        "the report was printed and says every reference agrees with xshap (AGREE, or RULE_DIFFERENCE: complete, "
        "with a known rule of its own); for a .pt2: no culprit in its graph",
    ),
    ExitCode(
        EXIT_REFERENCE,
        "a reference is incomplete, disagrees or raised (for a .pt2: its graph shows a culprit that would make "
        "one incomplete)",
    ),
    ExitCode(
        EXIT_BAD_INPUT,
        "bad input, with a message saying what: a model or data file that cannot be read or is refused (unsafe, "
        "ambiguous, larger than --max-bytes); a MODEL spec that is malformed, or whose import or factory fails in "
        "any way; SystemExit, KeyboardInterrupt or another BaseException from the model's code; a model that "
        "cannot be converted, overflows (NaN/Inf) on the data, or whose ill-conditioned rows cannot be recomputed "
        "in float64; bad options, or a report file that cannot be written",
    ),
    ExitCode(
        EXIT_XSHAP_BUG,
        "an error inside xshap, its own attributions failing to add up included (a bug: please report it)",
    ),
)


def exit_code_table(markdown: bool = False) -> str:
    """The exit codes as a table: plain text for ``--help``, markdown for the README (a test compares them)."""
    if markdown:
        return "\n".join(["| exit code | meaning |", "|---|---|"] + [f"| {e.code} | {e.meaning} |" for e in EXIT_CODES])
    import textwrap

    return "\n".join(
        textwrap.fill(e.meaning, width=110, initial_indent=f"  {e.code}  ", subsequent_indent="     ")
        for e in EXIT_CODES
    )


CHECK_EPILOG = f"""\
MODEL is either
  a .pt2 file written by torch.export.save, exported for one row, for a dynamic batch or for a static batch
      of k rows:  torch.export.save(torch.export.export(model, (x[:1],)), "m.pt2")
      (a dynamic batch is specialised to one row; a batch of k rows runs k rows at a time, its rows checked
      to be independent). shap and Captum hook nn.Module objects, which a saved program no longer has: they
      are not run; the culprits read from the graph say whether they would break on the original module;
  or package.module:factory, a callable that returns the torch.nn.Module (imported from the current
      directory and sys.path); shap and Captum are run on it. A factory is code: it runs as you.
BG and X are .npy files (plain numeric arrays, no pickles) or .pt files (a tensor or a list of tensors,
loaded with weights_only=True; bfloat16 becomes float32); rows on the leading axis.

Files are read as untrusted data: a .pt2 or .pt must have exactly the layout torch writes (no pickled
objects, compiled code, extra programs, ambiguous ZIP structure), and no file may make xshap allocate more
than --max-bytes; torch only ever reads an archive rebuilt from the checked entries.

exit codes:
{exit_code_table()}
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xshap", description="DeepSHAP on whole graphs, to check shap and Captum.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="train the three seed nets of the bug report and cross-check each")
    demo.add_argument("--steps", type=int, default=5000, help="Adam steps per net (default 5000)")
    demo.add_argument("--rows", type=int, default=8, help="per-sample rows to print per report (default 8)")

    check = commands.add_parser(
        "check",
        help="cross-check shap and Captum against xshap on a model and data; the exit code says the verdict",
        description="Explain X against the background BG with xshap and with shap.DeepExplainer and Captum's "
        "DeepLiftShap; print the report and exit with a code that says whether the references can be trusted.",
        epilog=CHECK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("model", metavar="MODEL", help="a .pt2 file or package.module:factory")
    check.add_argument("--background", "-b", required=True, metavar="BG", help="background rows (.npy or .pt)")
    check.add_argument("--inputs", "-x", required=True, metavar="X", help="rows to explain (.npy or .pt)")
    check.add_argument("--html", metavar="PATH", help="also write the report as a standalone HTML page")
    check.add_argument("--json", metavar="PATH", help="also write verdicts, gaps and culprits as JSON")
    check.add_argument(
        "--references",
        default=None,
        help="comma-separated references to run: shap,captum (default: every one installed); 'none' for xshap only",
    )
    check.add_argument("--rules", choices=("complete", "shap"), default="complete", help="xshap's rule set")
    check.add_argument("--feature-names", metavar="NAMES", help="comma-separated feature names (for the HTML plots)")
    check.add_argument("--rows", type=int, default=12, help="per-sample rows to print (default 12)")
    check.add_argument("--quiet", "-q", action="store_true", help="print only the verdict line")
    check.add_argument(
        "--max-bytes",
        metavar="SIZE",
        default="1GiB",
        help="the most memory one file may make xshap allocate (an archive's entries inflated, an array, the "
        "tensors built): bytes or 512MiB, 2GiB ... (default 1GiB)",
    )
    add_explain_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; its exit code (for ``check``: one of ``EXIT_CODES``)."""
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from xshap.demo import run_demo

        run_demo(steps=args.steps, max_rows=args.rows)
        return 0
    if args.command == "explain":
        return run_explain(args)
    return run_check(args)


def load_model(spec: str, limits=None):
    """A saved program (.pt2) or the module a ``package.module:factory`` callable returns."""
    if spec.endswith(".pt2") or Path(spec).is_file():
        from xshap.loading import load_program

        return load_program(spec, limits)
    from xshap.factory import model_from_factory

    return model_from_factory(spec)  # refuses a malformed spec with the reason


def failure_code(error: BaseException) -> int:
    """The exit code for an error that ended the check: 2 for anything the user can fix, 3 for xshap's own."""
    from xshap.errors import InputError, NoRuleError, PrecisionError, XShapIncompleteError

    if isinstance(error, XShapIncompleteError):
        return EXIT_XSHAP_BUG
    if not isinstance(error, Exception):  # SystemExit, KeyboardInterrupt ... from the model's code, or a Ctrl-C
        return EXIT_BAD_INPUT
    converters = sys.modules.get("converters")  # imported by then if the error can be one of its
    if converters is not None and isinstance(error, converters.ConversionError):
        return EXIT_BAD_INPUT
    if isinstance(error, (InputError, NoRuleError, PrecisionError, ValueError, OSError, MemoryError)):
        return EXIT_BAD_INPUT
    return EXIT_XSHAP_BUG


def _describe_failure(error: BaseException) -> str:
    from xshap.factory import describe

    if isinstance(error, MemoryError):
        return f"out of memory ({error}): the model or the data are too large for this machine"
    if not isinstance(error, Exception):
        return f"the check was stopped by {describe(error)} (raised by the model's code, or an interrupt)"
    return f"{type(error).__name__}: {error}"


def _load_inputs(args: argparse.Namespace):
    """The model and the data, with the notes loading them gave (bfloat16 converted ...)."""
    from xshap.files import parse_size
    from xshap.loading import Limits, load_array

    limits = Limits(parse_size(args.max_bytes))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        background, X = load_array(args.background, limits), load_array(args.inputs, limits)  # cheap ones first
        model = load_model(args.model, limits)
    for warning in caught:
        print(f"xshap check: note: {warning.message}", file=sys.stderr)
    return model, background, X


def run_check(args: argparse.Namespace) -> int:
    """Load, cross-check, report. Exit 0 only once the report saying every reference agrees was printed."""
    try:
        return _check(args)
    except BaseException as error:  # noqa: BLE001 - every way the check can end must give a documented code
        code = failure_code(error)
        label = "bad input" if code == EXIT_BAD_INPUT else "internal error"
        print(f"xshap check: {label}: {_describe_failure(error)}", file=sys.stderr)
        return code


def _check(args: argparse.Namespace) -> int:
    # files someone else made: nothing compiled from them is kept on disk (xshap.explain.compiling's cache),
    # unless the user asked for a cache themselves
    os.environ.setdefault("XSHAP_COMPILATION_CACHE", "off")
    model, background, X = _load_inputs(args)
    references = None
    if args.references is not None:
        references = [] if args.references.strip() == "none" else [r.strip() for r in args.references.split(",")]
    names = [n.strip() for n in args.feature_names.split(",")] if args.feature_names else None
    from xshap.check.crosscheck import crosscheck

    report = crosscheck(model, background, X, references=references, rules=args.rules, feature_names=names)
    code = exit_code(report)
    record = json.dumps(report_json(report, code), indent=2) if args.json else None
    if not args.quiet:
        print(report.to_text(max_rows=args.rows))
        print()
    if args.html:  # a path that cannot be written raises OSError: a bad option, exit 2, no verdict claimed
        report.save_html(args.html)
    if record is not None:
        Path(args.json).write_text(record, encoding="utf-8")
    print(f"xshap check: {verdict_line(report)} -> exit {code}")
    return code


def failing(report) -> dict[str, str]:
    """Reference -> why it cannot be trusted here (empty: every reference agrees)."""
    out = {ref.key: ref.verdict for ref in report.references if ref.verdict in FAILING_VERDICTS}
    if not report.references:  # nothing run (a saved program): the culprits read from the graph decide
        for culprit in report.culprits:
            if culprit.kind != "rule difference":
                for name in culprit.references:
                    out.setdefault(name, f"culprit: {culprit.kind}")
    return out


def exit_code(report) -> int:
    return EXIT_REFERENCE if failing(report) else EXIT_AGREE


def verdict_line(report) -> str:
    bad = failing(report)
    if not report.references and not report.culprits:
        return "xshap complete; no culprit in the graph"
    if not bad:
        return "every reference agrees with xshap: " + ", ".join(f"{r.key} {r.verdict}" for r in report.references)
    return "cannot trust " + ", ".join(f"{name} ({why})" for name, why in bad.items())


def report_json(report, code: int) -> dict:
    return {
        "model": report.model_name,
        "exit_code": code,
        "rules": report.rules,
        "samples": int(report.outputs.shape[0]),
        "outputs": int(report.outputs.shape[1]),
        "xshap_max_abs_gap": float(abs(report.xshap_gaps).max()),
        "references": {
            ref.key: {
                "name": ref.name,
                "verdict": ref.verdict,
                "error": ref.error,
                "max_abs_gap": None if ref.gaps is None else float(abs(ref.gaps).max()),
                "max_abs_diff": None if ref.max_abs_diff is None else float(ref.max_abs_diff.max()),
                "incomplete": ref.count("REFERENCE_INCOMPLETE"),
                "error_cause": None if ref.error_explanation is None else ref.error_explanation.cause,
                "error_fix": None if ref.error_explanation is None else ref.error_explanation.fix,
                "ablation": None if ref.ablation is None else ref.ablation.describe(ref.key),
                "explained_by_culprits": None if ref.ablation is None else ref.ablation.explained,
                "unexplained": ref.unexplained,
                "first_broken_layer": None if ref.layer_trace is None else ref.layer_trace.first_broken,
            }
            for ref in report.references
        },
        "culprits": [
            {
                "kind": c.kind,
                "op": c.op,
                "module_path": c.module_path,
                "module_type": c.module_type,
                "callee": c.callee,
                "references": list(c.references),
                "sites": [{"source": s, "code": code_} for s, code_ in c.sites],
                "calls": list(c.calls),
                "target": c.target,
                "fix": c.fix,
            }
            for c in report.culprits
        ],
        "failing": failing(report),
        "notes": report.notes,
    }
