"""Captum's own DeepLIFT tests (unmodified copies in ``../shared/peer-tests/captum``) run against ``xshap.captum``.

The copies are run in a pytest of their own, with ``tests/peer/captum_peer_plugin.py`` swapping Captum's six
DeepLIFT classes for xshap's before anything is collected (the files stay as they are). Every selected test must
pass, except those listed in the plugin's ``CAPTUM_LIMITATIONS`` (they assert a limitation of Captum's hooks), which
must fail (strict xfail). The folder is found at ``$XSHAP_CAPTUM_PEER_TESTS``, else ``shared/peer-tests/captum``
beside the repository (or beside the main checkout of a git worktree); a missing folder is an error, not a skip.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.peer.captum_peer_plugin import CAPTUM_LIMITATIONS

ROOT = Path(__file__).resolve().parents[1]


def peer_folder() -> Path:
    given = os.environ.get("XSHAP_CAPTUM_PEER_TESTS")
    candidates = [Path(given)] if given else []
    candidates.append(ROOT.parent / "shared" / "peer-tests" / "captum")
    common = subprocess.run(
        ["git", "rev-parse", "--path-format=absolute", "--git-common-dir"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    if common:  # a worktree: beside the main checkout
        candidates.append(Path(common).parent.parent / "shared" / "peer-tests" / "captum")
    for folder in candidates:
        if (folder / "tests" / "attr" / "test_deeplift_basic.py").is_file():
            return folder
    raise AssertionError(
        "Captum's peer tests are not at " + ", ".join(map(str, candidates)) + ": set XSHAP_CAPTUM_PEER_TESTS to the "
        "folder holding tests/attr/test_deeplift_basic.py (see shared/peer-tests/README.md)"
    )


def test_captums_deeplift_tests_pass_against_xshap():
    folder = peer_folder()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("PYTEST_XDIST_WORKER", None)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",  # not -q: the header says whether the classes were swapped
            "-rfEX",
            "-p",
            "tests.peer.captum_peer_plugin",
            "-p",
            "no:cacheprovider",
            "--import-mode=importlib",
            "-W",
            "ignore",
            "--rootdir",
            str(folder),
            "-c",
            os.devnull,
            str(folder / "tests"),
        ],
        cwd=ROOT,  # where `tests.peer` is ours (from the folder, `tests` is Captum's package)
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    tail = run.stdout[-6000:] + run.stderr[-2000:]
    assert "captum's DeepLIFT classes are xshap.captum's: True" in run.stdout, run.stdout[:3000] + tail
    assert run.returncode == 0, tail
    counts = dict((kind, int(n)) for n, kind in re.findall(r"(\d+) (passed|failed|xfailed|xpassed|error)", tail))
    assert counts.get("xfailed", 0) == len(CAPTUM_LIMITATIONS), (counts, tail)
    assert counts.get("passed", 0) >= 90, (counts, tail)  # the DeepLIFT selection: 103 tests less the limitations
