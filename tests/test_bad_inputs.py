"""Every bad input gives a clear error naming the problem; docs/bad-inputs.md lists what each one gives."""

from __future__ import annotations

import pytest

from tests.bad_inputs import CASES, DOC, check


@pytest.mark.parametrize("case", CASES, ids=[c.title for c in CASES])
def test_bad_input_gives_a_clear_error(case):
    ok, name, message = check(case)
    assert ok, f"expected {case.error} matching {case.match!r}, got {name}: {message}"


def test_the_table_lists_every_case():
    text = DOC.read_text(encoding="utf-8")
    for case in CASES:
        assert f"| {case.title} | `{case.error}` |" in text, f"docs/bad-inputs.md is stale for: {case.title}"
