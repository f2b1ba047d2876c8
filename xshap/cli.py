"""The command line: ``xshap demo`` (the seed reproduction) and ``xshap check`` (a cross-check gate).

``xshap check`` exit codes, so it can gate a research pipeline in CI:
  0  every reference agrees with xshap (AGREE, or RULE_DIFFERENCE: complete, with a known rule of its own)
  1  a reference is incomplete, disagrees, or raised (for a saved .pt2: the graph shows a culprit that
     would make one incomplete)
  2  bad input: a file that cannot be read or is unsafe to load, a model that cannot be converted
  3  an error inside xshap, its own attributions failing to add up included (a bug: please report it)
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

EXIT_AGREE, EXIT_REFERENCE, EXIT_BAD_INPUT, EXIT_XSHAP_BUG = 0, 1, 2, 3
FAILING_VERDICTS = ("REFERENCE_INCOMPLETE", "DISAGREE", "REFERENCE_ERROR")

CHECK_EPILOG = """\
MODEL is either
  a .pt2 file written by torch.export.save for ONE row:  torch.export.save(torch.export.export(model, (x[:1],)), "m.pt2")
      shap and Captum hook nn.Module objects, which a saved program no longer has: they are not run; the
      culprits read from the graph say whether they would break on the original module;
  or package.module:factory, a callable that returns the torch.nn.Module (imported from the current
      directory and sys.path); shap and Captum are run on it.
BG and X are .npy files (plain arrays, no pickles) or .pt files (a tensor or a list of tensors, loaded
with weights_only=True); rows on the leading axis.

exit codes: 0 references agree with xshap; 1 a reference is incomplete, disagrees or raised (or, for a
.pt2, would be); 2 bad input; 3 an error inside xshap (a bug; its own sum failing included).
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from xshap.demo import run_demo

        run_demo(steps=args.steps, max_rows=args.rows)
        return 0
    return run_check(args)


def load_model(spec: str):
    """A saved program (.pt2) or the module a ``package.module:factory`` callable returns."""
    from xshap.errors import InputError

    if spec.endswith(".pt2") or Path(spec).is_file():
        from xshap.loading import load_program

        return load_program(spec)
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise InputError(f"MODEL {spec!r} is neither a .pt2 file nor package.module:factory")
    if "" not in sys.path:
        sys.path.insert(0, "")  # the current directory, as `python -m` would have it
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise InputError(f"cannot import {spec!r}: {type(error).__name__}: {error}") from error
    import torch

    try:
        model = factory() if not isinstance(factory, torch.nn.Module) else factory
    except Exception as error:  # whatever the user's factory raises is a problem of the input
        raise InputError(f"{spec!r} raised {type(error).__name__}: {error}") from error
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"{spec!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def run_check(args: argparse.Namespace) -> int:
    from converters import ConversionError
    from xshap.errors import InputError, NoRuleError, XShapIncompleteError
    from xshap.loading import load_array

    try:
        model = load_model(args.model)
        background, X = load_array(args.background), load_array(args.inputs)
        references = None
        if args.references is not None:
            references = [] if args.references.strip() == "none" else [r.strip() for r in args.references.split(",")]
        names = [n.strip() for n in args.feature_names.split(",")] if args.feature_names else None
        from xshap.check.crosscheck import crosscheck

        report = crosscheck(model, background, X, references=references, rules=args.rules, feature_names=names)
    except XShapIncompleteError as error:
        print(f"xshap check: internal error: {error}", file=sys.stderr)
        return EXIT_XSHAP_BUG
    except (InputError, ConversionError, NoRuleError, ValueError, OSError) as error:
        print(f"xshap check: bad input: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as error:  # never exit 1 (the verdict code) on an unexpected error
        print(f"xshap check: internal error: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_XSHAP_BUG

    code = exit_code(report)
    if not args.quiet:
        print(report.to_text(max_rows=args.rows))
        print()
    print(f"xshap check: {verdict_line(report)} -> exit {code}")
    if args.html:
        report.save_html(args.html)
    if args.json:
        Path(args.json).write_text(json.dumps(report_json(report, code), indent=2), encoding="utf-8")
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
            }
            for c in report.culprits
        ],
        "failing": failing(report),
        "notes": report.notes,
    }
