"""What is built from a torch model's content, kept across the objects that explain it: bounded, process-wide.

A test suite, a notebook or a benchmark builds a second explainer of the same model (or of an equal one) again
and again; converting it (torch.export) and compiling its programs is most of an explainer's set-up. The cache
is keyed by the model's *content* (``content``: the content fingerprint of ``xshap.explain.fingerprint`` with each
module named by its class and first path, no object identities) and by whatever else the entry was built from
(input shapes, dtypes and example rows, the output, the rule set), so an edited model (weights, submodules,
attributes) has another key and is converted again, never served the old conversion.

What an entry holds must not change with the model it came from: a converted program's JAX weights are copies,
but its ``torch.export`` program refers to the model's own parameter tensors, which the user may edit in place
later. ``ContentCache.get`` takes a ``still_valid`` check that a hit must pass (the entry's torch tensors still
have the digests they had when it was built); a failing entry is dropped and built again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable


def content(state: dict, model) -> tuple:
    """The model's content without object identities: the fingerprint ``state`` with each module named by its class
    (the class object, not only its name: two local classes ``Net`` differ) and the first path of its object (so
    that a module registered twice differs from two equal modules). Two objects with one content convert to one
    program."""
    first: dict[int, str] = {}
    named = dict(state)
    for path, module in model.named_modules(remove_duplicate=False):
        where = path or "<root>"
        kind = type(module)
        # the class object itself, not its id: the key keeps it alive, so a class redefined later (a notebook cell
        # run again) cannot be given the same id and be taken for it
        named[f"module {where}"] = (kind, first.setdefault(id(module), where))
    return tuple(sorted(named.items(), key=lambda item: item[0]))


class ContentCache:
    """A least-recently-used map from content keys to built entries, at most ``max_entries`` of them and (where
    ``size`` gives each entry's bytes) at most ``max_bytes`` in all."""

    def __init__(self, max_entries: int, max_bytes: int | None = None):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict = OrderedDict()  # key -> (entry, bytes); most recent last
        self._lock = threading.Lock()

    def get(
        self,
        key,
        build: Callable[[], object],
        *,
        still_valid: Callable[[object], bool] | None = None,
        size: Callable[[object], int] | None = None,
    ):
        """The entry for ``key``, built (by ``build``) where there is none or where ``still_valid`` refuses it."""
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
        if found is not None and (still_valid is None or still_valid(found[0])):
            return found[0]
        entry = build()
        nbytes = int(size(entry)) if size is not None else 0
        with self._lock:
            self._entries.pop(key, None)
            if self.max_bytes is None or nbytes <= self.max_bytes:
                self._entries[key] = (entry, nbytes)
            self._evict()
        return entry

    def _evict(self) -> None:
        total = sum(nbytes for _, nbytes in self._entries.values())
        while self._entries and (
            len(self._entries) > self.max_entries or (self.max_bytes is not None and total > self.max_bytes)
        ):
            _, (_, nbytes) = self._entries.popitem(last=False)
            total -= nbytes

    def discard(self, key) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
