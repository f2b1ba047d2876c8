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

# -- one JAX compilation cache for the whole test run ------------------------------------------------------------
# Shared by both xdist workers (PYTEST_XDIST_TESTRUNUID is the run's id in each) and by the processes tests start
# (the CLI, notebooks, the distributed workers: they inherit the environment), in a private directory of its own:
# a program two tests compile the same way (the seed nets in-process and in `xshap check`, a model in float32 in
# two files) is compiled once. Every program is cached (no minimum compile time). XSHAP_TEST_COMPILATION_CACHE=off
# compiles everything afresh.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ and os.environ.get("XSHAP_TEST_COMPILATION_CACHE") != "off":
    import tempfile
    from pathlib import Path

    _run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"
    _cache = Path(tempfile.gettempdir()) / f"xshap-test-jax-cache-{os.getuid()}-{_run_id}"
    _cache.mkdir(mode=0o700, exist_ok=True)
    _status = _cache.stat()
    if _status.st_uid == os.getuid() and not _status.st_mode & 0o077:  # ours alone: executables are loaded from it
        os.environ["JAX_COMPILATION_CACHE_DIR"] = str(_cache)
        os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def seed(tmp_path_factory):
    """The seed nets, trained once per test run: under xdist the first worker to ask trains and saves them in the
    run's shared temporary folder, the other loads them (training is deterministic: the same weights either way)."""
    from xshap.seed import trained_seed_nets

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return trained_seed_nets()
    import torch
    from filelock import FileLock

    saved = tmp_path_factory.getbasetemp().parent / "seed-nets.pt"  # this run's folder, shared by its workers
    with FileLock(str(saved) + ".lock"):
        if saved.exists():
            return torch.load(saved, weights_only=False)  # written by this run's other worker
        trained = trained_seed_nets()
        torch.save(trained, saved)
        return trained


# -- hypothesis profiles (tests/test_random_nets.py) ------------------------------------------------------------
# "ci" (default): a fixed, reproducible set of examples sized for a ~4-5 minute run on one CPU core; "thorough":
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


@pytest.fixture(autouse=True)
def _programs_built_from_patched_code_stay_in_their_test(request):
    """xshap keeps conversions and compiled programs by model content (``xshap.explain.model.CONVERSIONS``,
    ``xshap.captum``'s shared programs), not by the code that built them. A test that monkeypatches a rule or an
    op converter must neither get programs built before its patch nor leave ones built under it: for such tests
    the caches are emptied before and after."""
    patched = "monkeypatch" in request.fixturenames
    if patched:
        _clear_program_caches()
    yield
    if patched:
        _clear_program_caches()


def _clear_program_caches() -> None:
    import sys

    model = sys.modules.get("xshap.explain.model")
    if model is not None:
        model.CONVERSIONS.clear()
    drop_in = sys.modules.get("xshap.captum")
    if drop_in is not None:
        drop_in.clear_cache()
