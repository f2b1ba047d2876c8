"""Shared fixtures: the three trained seed nets (trained once per test session); the hypothesis profiles; one
share of the CPU cores per pytest-xdist worker."""

from __future__ import annotations

import os

# -- threads under pytest-xdist (`pytest -n 2`, as CI runs) -----------------------------------------------------
# Each worker gets cores // workers threads for torch, OpenMP and XLA:CPU. Left at their defaults, two workers
# each start one thread per core, and torch's intra-op threads then spin against each other (a 3 s training
# took 79 s that way on a 2-core machine). XLA reads its flags when jax is first imported, so they are set here,
# before any test module imports jax.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if os.environ.get("PYTEST_XDIST_WORKER") and _WORKERS > 1:
    _THREADS = max(1, (os.cpu_count() or 1) // _WORKERS)
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[_name] = str(_THREADS)
    if _THREADS == 1:
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        ).strip()
    import torch

    torch.set_num_threads(_THREADS)

# -- no persistent compilation cache unless a test asks for one (xshap.explain.compiling) ---------------------
# Tests compile afresh and write nothing to the user's cache directory; tests/test_compiling.py checks the cache
# in a child process.
os.environ.setdefault("XSHAP_COMPILATION_CACHE", "off")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def seed():
    from xshap.seed import trained_seed_nets

    nets, data = trained_seed_nets()
    return nets, data


# -- hypothesis profiles (tests/test_random_nets.py) ------------------------------------------------------------
# "ci" (default): a fixed, reproducible set of examples sized for a ~2-3 minute run on two CPU cores; "thorough":
# >= 1,000 random examples per property, run with `pytest tests/test_random_nets.py --hypothesis-profile=thorough`
# (hypothesis's pytest plugin loads the named profile after this file has registered it) or HYPOTHESIS_PROFILE.
from hypothesis import HealthCheck, settings  # noqa: E402

_SLOW_EXAMPLES = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile(
    "ci", max_examples=40, deadline=None, derandomize=True, database=None, suppress_health_check=_SLOW_EXAMPLES
)
settings.register_profile(
    "thorough", max_examples=1000, deadline=None, print_blob=True, suppress_health_check=_SLOW_EXAMPLES
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
