"""The README's runnable section runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"### {title}")
    end = text.find("\n### ", start + 1)
    return text[start:end]


def test_api_section_runs():
    blocks = re.findall(r"```python\n(.*?)```", _section("shap's and Captum's other calls"), re.S)
    assert blocks
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["phi"].shape == (5, 6, 4, 3)
    assert namespace["values"].shape == (5, 6, 4, 2) and tuple(namespace["indexes"].shape) == (5, 2)
    assert tuple(namespace["attr"].shape) == (4, 6) and tuple(namespace["delta"].shape) == (4 * 16,)
    assert np.max(np.abs(namespace["delta"].numpy())) < 1e-4
    assert namespace["reveal"].shape == (4, 6, 2)


def test_ci_runs_the_readme_test_command():
    """`.ci/run` runs the README's set-up-and-test command verbatim, so a missing install step fails CI."""
    text = README.read_text(encoding="utf-8")
    start = text.index("**Set up and run the tests**")
    command = re.search(r"```bash\n(.*?)\n```", text[start:], re.S).group(1).strip()
    ci_script = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert command in ci_script.splitlines(), (command, ci_script)
