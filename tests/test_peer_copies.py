"""The peer suites under tests/ are verbatim copies of ../shared/peer-tests (never edited: adapters live beside
them), checked by content hash; and, where the shared folder exists, byte-identical to it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared" / "peer-tests"
COPIES = {  # our copy -> (the shared original, its sha256 at shap v0.51.0)
    "peer_shap/test_deep.py": ("shap/test_deep.py", "748bf00be005df8374ca3dc7350da889f275a2f10f64c19b2f5157d85d6ed3b3"),
    "peer_shap/shap_conftest.py": (
        "shap/conftest.py",
        "2c8750f31aa51a5128fa3e0e4ba5835d04d654ce0537191e7c6f8bfd223200ee",
    ),
    "peer_shap/LICENSE": ("shap/LICENSE", "cf5c26305c632e5451b6eed7e0964a36c4cec1102f0c6467db063b3483a19127"),
}


@pytest.mark.parametrize("copy", sorted(COPIES))
def test_peer_copy_is_unmodified(copy):
    original, digest = COPIES[copy]
    data = (HERE / copy).read_bytes()
    assert hashlib.sha256(data).hexdigest() == digest, f"{copy} was edited: adapt the run in its conftest instead"
    shared = SHARED / original
    if shared.exists():  # the shared folder is there on the project's machines, not necessarily in CI
        assert data == shared.read_bytes()
