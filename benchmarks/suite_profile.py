"""A pytest plugin: where the test suite's time goes, by JAX's own compile-phase counts, per test file.

    PYTHONPATH=benchmarks python -m pytest -q -n 2 --dist loadfile -p suite_profile

Each pytest process (each xdist worker) writes ``$SUITE_PROFILE_OUT.<pid>`` (default
``/tmp/xshap-suite-profile.<pid>``): the totals of JAX's duration events (``/jax/core/compile/
backend_compile_duration``: XLA's compile; ``jaxpr_trace_duration``; ``jaxpr_to_mlir_module_duration``; the
persistent cache's saved time), then one line per test file, the longest first: the time its tests took in that
process (set-up, call and teardown) and its largest event totals. Processes the tests start (the CLI, notebooks)
are not counted.
"""

from __future__ import annotations

import atexit
import collections
import os
import time

import jax.monitoring

_totals: collections.Counter = collections.Counter()
_per_file: collections.defaultdict = collections.defaultdict(collections.Counter)
_wall: collections.Counter = collections.Counter()
_current = {"file": None, "start": 0.0}


def _listen(event: str, seconds: float, **_) -> None:
    _totals[event] += seconds
    if _current["file"]:
        _per_file[_current["file"]][event] += seconds


jax.monitoring.register_event_duration_secs_listener(_listen)


def pytest_runtest_protocol(item, nextitem):
    _current["file"] = item.nodeid.split("::")[0]
    _current["start"] = time.perf_counter()


def pytest_runtest_logfinish(nodeid, location):
    _wall[nodeid.split("::")[0]] += time.perf_counter() - _current["start"]


def _write() -> None:
    path = os.environ.get("SUITE_PROFILE_OUT", "/tmp/xshap-suite-profile") + f".{os.getpid()}"
    with open(path, "w") as out:
        for event, seconds in _totals.most_common():
            out.write(f"TOTAL {event} {seconds:.1f}\n")
        for name in sorted(_wall, key=lambda n: -_wall[n]):
            events = " ".join(f"{e.split('/')[-1]}={s:.1f}" for e, s in _per_file[name].most_common(4))
            out.write(f"{name} wall={_wall[name]:.1f} {events}\n")


atexit.register(_write)
