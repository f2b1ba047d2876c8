"""Shared fixtures: the three trained seed nets (trained once per test session)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def seed():
    from xshap.seed import trained_seed_nets

    nets, data = trained_seed_nets()
    return nets, data


# -- hypothesis profiles (tests/test_random_nets.py) ------------------------------------------------------------
# "ci" (default): a fixed, reproducible set of examples sized for a ~2-3 minute run on two CPU cores; "thorough":
# >= 1,000 random examples per property, run with `pytest tests/test_random_nets.py --hypothesis-profile=thorough`
# (hypothesis's pytest plugin loads the named profile after this file has registered it) or HYPOTHESIS_PROFILE.
import os  # noqa: E402

from hypothesis import HealthCheck, settings  # noqa: E402

_SLOW_EXAMPLES = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile(
    "ci", max_examples=40, deadline=None, derandomize=True, database=None, suppress_health_check=_SLOW_EXAMPLES
)
settings.register_profile(
    "thorough", max_examples=1000, deadline=None, print_blob=True, suppress_health_check=_SLOW_EXAMPLES
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
