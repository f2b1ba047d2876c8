"""max_memory bounds what an explanation holds beyond its result, whatever N and the number of chunks (issue 14).

Measured as the benchmark does (benchmarks/memory.py: a fresh process per run, RSS sampled every 2 ms during
``explain``). Before, 12 KB per chunk and N-sized temporaries were kept until the call ended: under a 4 MiB budget
the peak rose from 143 to 373 MiB as the budget went down. The result itself (attributions, outputs, gaps,
tolerances) is what the caller asked for and is not counted.
"""

from __future__ import annotations

from benchmarks.memory import measure

BUDGET_MIB = 4
SLACK_MIB = 2  # the float32 outputs and mass per row, which the result does not count, and allocator rounding


def test_memory_beyond_the_result_stays_under_the_budget_whatever_n():
    small, large = measure(1000, BUDGET_MIB), measure(8000, BUDGET_MIB)
    assert large["chunk_rows"] == small["chunk_rows"] and large["rows"] // large["chunk_rows"] >= 4000  # many chunks
    for run in (small, large):
        assert run["beyond_result_mib"] <= BUDGET_MIB + SLACK_MIB, run
    assert large["beyond_result_mib"] - small["beyond_result_mib"] <= SLACK_MIB, (small, large)
