"""jax.jit with the XLA options that xshap's results depend on.

jaxlib 0.10.2 turned on XLA:CPU's YNNPACK fusions ("ynn fusion") by default, and two kinds of them miscompile:
with reduce fusions on, a LayerNorm's variance that feeds a mean and a 2-output head, differentiated once per
output, gets one output's gradient for both (found on the issue-4 transformer with 16 or more rows per chunk;
jaxlib 0.10.1 is correct); with elementwise fusions on (and dot fusions), the same program is wrong again.
jax-ml/jax#39257 reports crashes of these fusions in 0.10.2 and 0.11.0. Every program xshap compiles keeps only
the dot fusions (a YNNPACK matrix product per dot, the fast part on a CPU and correct in every test): an option
of that compilation only, so nothing else in the process changes. Off the CPU the option is ignored; before
0.10.2 the fusions were off by default and nothing is passed.

Persistent compilation cache. Compiling a real model's programs takes most of an explainer's first call (tens of
seconds for a ResNet on a CPU), and every new explainer, in this process or the next, compiles them again. JAX's
own persistent cache (``jax_compilation_cache_dir``) keeps compiled programs on disk, keyed by the program, the
XLA options above, the device and the jax version; ``use_compilation_cache`` points it at xshap's directory the
first time xshap compiles, **only where the user has not configured one** (``JAX_COMPILATION_CACHE_DIR`` or
``jax.config.update("jax_compilation_cache_dir", ...)``: then theirs is used as it is). JAX's cache is one per
process: once set, other JAX code in the process uses it too (JAX caches only programs that took at least
``jax_persistent_cache_min_compile_time_secs``, 1 s by default, to compile). ``XSHAP_COMPILATION_CACHE``: the
directory (default ``$XDG_CACHE_HOME/xshap/jax``, else ``~/.cache/xshap/jax``), or ``off`` for none. The
directory is made private to the user (mode 0700): JAX loads what it finds there as executable code, so it must
not be writable by anyone else.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import jax

YNN_DOT_FUSIONS_ONLY = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}
FIRST_JAX_WITH_YNN_FUSIONS = (0, 10, 2)


def compiler_options() -> dict[str, str]:
    """The XLA options of every xshap compilation."""
    if tuple(jax.__version_info__[:3]) >= FIRST_JAX_WITH_YNN_FUSIONS:
        return dict(YNN_DOT_FUSIONS_ONLY)
    return {}


CACHE_ENVIRONMENT = "XSHAP_COMPILATION_CACHE"
_OFF = ("off", "0", "false", "no", "none", "")
_cache_lock = threading.Lock()
_cache_decided = False


def default_cache_directory() -> Path | None:
    """xshap's compilation cache directory, or None where ``XSHAP_COMPILATION_CACHE`` turns it off."""
    chosen = os.environ.get(CACHE_ENVIRONMENT)
    if chosen is not None:
        return None if chosen.strip().lower() in _OFF else Path(chosen).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "xshap" / "jax"


def use_compilation_cache() -> str | None:
    """Point JAX's persistent compilation cache at xshap's directory unless the user configured one (or turned it
    off); once per process. Returns the cache directory in use (the user's or xshap's), or None."""
    global _cache_decided
    with _cache_lock:
        current = jax.config.jax_compilation_cache_dir
        if _cache_decided or current:
            return current or None
        _cache_decided = True
        directory = default_cache_directory()
        if directory is None:
            return None
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            status, uid = directory.stat(), getattr(os, "getuid", lambda: None)()
            if (uid is not None and status.st_uid != uid) or status.st_mode & 0o022:
                return None  # someone else's, or writable by others: never load executables from it
        except OSError:
            return None  # a read-only home: no cache, compile as before
        jax.config.update("jax_compilation_cache_dir", str(directory))
        return str(directory)


def jit(fn: Callable, **jit_options) -> Callable:
    """``jax.jit(fn, **jit_options)`` compiled with ``compiler_options()`` (none passed where there are none: an
    older jax.jit does not take the argument), with the persistent compilation cache (``use_compilation_cache``)."""
    use_compilation_cache()
    options = compiler_options()
    return jax.jit(fn, compiler_options=options, **jit_options) if options else jax.jit(fn, **jit_options)
