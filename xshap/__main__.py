"""Command line: `python -m xshap demo` runs the seed reproduction."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xshap", description="DeepSHAP on whole graphs, to check shap and Captum.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="train the three seed nets of the bug report and cross-check each")
    demo.add_argument("--steps", type=int, default=5000, help="Adam steps per net (default 5000)")
    demo.add_argument("--rows", type=int, default=8, help="per-sample rows to print per report (default 8)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from xshap.demo import run_demo

        run_demo(steps=args.steps, max_rows=args.rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
