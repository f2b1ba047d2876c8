"""Shared fixtures: the three trained seed nets (trained once per test session)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def seed():
    from xshap.seed import trained_seed_nets

    nets, data = trained_seed_nets()
    return nets, data
