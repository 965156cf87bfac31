"""One store, many threads: readers share it, an update has it alone, and nobody sees half an update.

An update (adding or deleting anchors, a label set, a gallery, a refit) changes several collections
one after another; a query that ran in between could see new anchors with old candidate vectors. So
every engine operation runs under ``StoreGuard``: queries share it, an update takes it alone and
waits for the queries before it, and updates go in the order they came (a query that arrives while
an update waits queues behind it, so a steady stream of queries never starves an update). Each
completed update advances ``updates``; a query reports the value it ran at, so an answer can be
checked against the store after exactly that many updates.

Qdrant Edge holds the GIL in every call, so readers do not run engine calls in parallel anyway;
what sharing buys is that encoding (torch releases the GIL) and answering overlap, and that a
backup (a long read) does not stop queries.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class StoreGuard:
    """A fair readers-writer lock with an update counter."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._next_ticket = 0
        self._serving = 0
        #: Updates completed under this guard.
        self.updates = 0

    @contextmanager
    def reading(self) -> Iterator[int]:
        """Share the store (with other readers); yields the number of updates completed so far."""
        with self._cond:
            while self._writing or self._serving != self._next_ticket:  # an update runs or waits
                self._cond.wait()
            self._readers += 1
            version = self.updates
        try:
            yield version
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def writing(self, change: bool = True) -> Iterator[int]:
        """Have the store alone, after every reader and update that came first. ``change`` False: a
        read that may write derived data (an anchors gallery catching up), not counted as an update.
        Yields the number of updates completed before this one."""
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            while self._writing or self._readers or self._serving != ticket:
                self._cond.wait()
            self._writing = True
            version = self.updates
        try:
            yield version
        finally:
            with self._cond:
                self._writing = False
                self._serving += 1
                if change:
                    self.updates += 1
                self._cond.notify_all()


#: AsifClient methods that change the store (run alone, counted as updates).
WRITES = frozenset({
    "create_store", "add_anchors", "add_anchor_embeddings", "delete_anchors", "delete_anchors_where",
    "create_label_set", "delete_label_set", "index_gallery", "index_gallery_embeddings", "delete_from_gallery",
    "delete_gallery", "index_anchors_gallery", "set_transform", "normalise_label_set", "normalise_gallery",
    "calibrate", "doctor", "set_search_index", "optimize", "evaluate_classification", "evaluate_retrieval",
    "evaluate_retrieval_embeddings",
})
#: Methods that may write derived data while reading (an anchors gallery catches up at its search;
#: a hub gallery computes missing statistics): run alone, not counted.
ALONE = frozenset({"search", "search_many", "search_embeddings", "explain_search"})
#: Methods that return a context manager whose entry and exit change the store (a bulk load
#: builds the index and refits once, when it ends).
CONTEXTS = frozenset({"bulk_load"})
#: Methods that never touch the store's collections (the encoders, the location).
FREE = frozenset({"encoder", "encode_images", "encode_images_skipping", "encode_texts", "close"})


class GuardedClient:
    """An AsifClient whose every store operation goes through a guard: handed to code that drives
    the client itself (the ingestion pipeline) while the same process serves the store."""

    def __init__(self, client: Any, guard: StoreGuard) -> None:
        self._client = client
        self._guard = guard

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr) or name in FREE:
            return attr
        if name in CONTEXTS:
            return lambda *args, **kwargs: _GuardedContext(attr(*args, **kwargs), self._guard)
        return _guarded(attr, self._guard, name)

    def __enter__(self) -> GuardedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()


def _guarded(method: Callable[..., Any], guard: StoreGuard, name: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        if name in WRITES:
            with guard.writing():
                return method(*args, **kwargs)
        if name in ALONE:
            with guard.writing(change=False):
                return method(*args, **kwargs)
        with guard.reading():
            return method(*args, **kwargs)

    call.__name__ = name
    call.__doc__ = method.__doc__
    return call


class _GuardedContext:
    """A context manager of the client (a bulk load) run under the guard: its entry alone, changing
    nothing a query sees (not counted); its exit, which builds the index and refits, as an update."""

    def __init__(self, inner: Any, guard: StoreGuard) -> None:
        self._inner = inner
        self._guard = guard

    def __enter__(self) -> Any:
        with self._guard.writing(change=False):
            return self._inner.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        with self._guard.writing():
            return self._inner.__exit__(*exc)
