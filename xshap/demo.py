"""The seed reproduction: the same regression MLP written three ways, cross-checked against shap/Captum."""

from __future__ import annotations

import time

from xshap.check.crosscheck import crosscheck
from xshap.check.report import CrosscheckReport
from xshap.seed import trained_seed_nets


def run_demo(steps: int = 5000, max_rows: int = 8) -> dict[str, CrosscheckReport]:
    """Train the three seed nets, print the cross-check of each, and return the reports."""
    start = time.perf_counter()
    nets, data = trained_seed_nets(steps)
    print(f"trained the three seed nets ({steps} Adam steps each) in {time.perf_counter() - start:.1f}s\n")
    reports = {}
    for name, net in nets.items():
        report = crosscheck(net, data.X_train, data.X_test)
        print(report.to_text(max_rows=max_rows))
        print("\n" + "=" * 100 + "\n")
        reports[name] = report
    return reports
