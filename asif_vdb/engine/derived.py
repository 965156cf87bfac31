"""The candidates' derived relative vectors: the collection queries rank, and how it is rewritten.

A refresh that changes a few candidates deletes and re-inserts their points (the engine inserts a
point about twice as fast as it updates one in place); deleted points stay in its indexes until
compaction, run once the rewrites exceed ``Tuning.garbage_ratio`` times the live points. A write of
every candidate (``Tuning.swap_min`` or more) goes into a new generation of the collection instead,
and the config switches to it in one atomic write: as fast, and nothing is left to compact. Every
point carries the generation (``gen``) of the write that made it, so a saved anchor list is used only
beside the vector of its own write (engine/list_store.py).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from asif_vdb.engine.layout import CANDIDATES, RELATIVES, is_relatives, relatives_spec
from asif_vdb.engine.state import StoreState
from asif_vdb.maths.anchor_lists import AnchorList, rel_lists
from asif_vdb.store.base import Filter, SparseRow

WRITE_BATCH = 1000


class DerivedVectors:
    """The live collection of relative vectors, and what this process knows of their generations."""

    def __init__(self, state: StoreState) -> None:
        self.state = state
        #: id -> generation of the vector this process last wrote or read for it.
        self.gens: dict[int, int] = {}
        #: Points rewritten (so deleted) since the last compaction.
        self.garbage = 0
        #: Points written since the live collection was last optimised (by this process).
        self.fresh = 0
        state.backend.ensure_collection(relatives_spec(self.live, state.tuning.sparse_full_scan))
        for name in state.backend.list_collections():  # a generation a crash left half written
            if name != self.live and is_relatives(name):
                state.backend.drop_collection(name)

    @property
    def live(self) -> str:
        return self.state.config.relatives

    # -- reads -------------------------------------------------------------------------------------
    def vectors(self, ids: Sequence[int]) -> dict[int, SparseRow]:
        """Stored relative vectors (indices, values) of these candidates (missing ones left out)."""
        points = self.state.backend.retrieve(self.live, [int(i) for i in ids], False, ("rel",))
        return {p.id: p.sparse["rel"] for p in points if "rel" in p.sparse}

    def stored_gens(self) -> dict[int, int]:
        """id -> generation of every stored vector (read from the store)."""
        return {p.id: int(p.payload.get("gen", -1))
                for batch in self.state.backend.scroll(self.live, None, with_payload=["gen"]) for p in batch}

    def count(self) -> int:
        return self.state.backend.count(self.live)

    def delete(self, ids: Sequence[int]) -> None:
        self.state.backend.delete(self.live, ids)

    def delete_set(self, set_key: str) -> None:
        self.state.backend.delete_where(self.live, Filter.where(set=set_key))

    # -- writes ------------------------------------------------------------------------------------
    def write(self, ids: Sequence[int], lists: Sequence[AnchorList], sets: Sequence[str] | None = None) -> float | None:
        """Store the relative vectors of these candidates' lists (each batch of points deleted and
        written anew, or, when these are every candidate, a new generation switched to). ``sets``
        (each candidate's set key) is read from the candidates when not given. Returns the seconds
        spent compacting, None when it was not due; the caller saves the lists afterwards."""
        if not len(ids):
            return None
        self.fresh += len(ids)
        with gc_paused():
            return self._write([int(i) for i in ids], lists, sets)

    def settle(self) -> float | None:
        """Optimise the live collection once the points written since its last optimisation reach
        ``Tuning.settle_share`` of it: the engine searches a segment it has not optimised point by
        point, and ranking a freshly written 1,000-class label set ran about twice as slow until
        then (docs/benchmarks.md, scale). Returns the seconds it took (None: not due)."""
        tuning = self.state.tuning
        if self.fresh < max(tuning.settle_min, tuning.settle_share * self.count()):
            return None
        return self.optimize()

    def optimize(self) -> float:
        """Optimise the live collection now (compacting what rewrites deleted); returns the seconds."""
        t = time.perf_counter()
        self.state.backend.optimize(self.live)
        self.garbage = self.fresh = 0
        return time.perf_counter() - t

    def _write(self, ids: list[int], lists: Sequence[AnchorList], sets: Sequence[str] | None) -> float | None:
        backend, tuning, params = self.state.backend, self.state.tuning, self.state.config.params
        if sets is None:
            got = {p.id: str(p.payload.get("set", "")) for p in backend.retrieve(CANDIDATES, ids, ["set"])}
            sets = [got.get(i, "") for i in ids]
        gen = time.time_ns()
        payloads: dict[str, dict[str, Any]] = {key: {"set": key, "gen": gen} for key in set(sets)}
        swap = len(ids) >= tuning.swap_min and len(set(ids)) == backend.count(CANDIDATES)
        target = f"{RELATIVES}_g{gen}" if swap else self.live
        if swap:
            backend.ensure_collection(relatives_spec(target, tuning.sparse_full_scan))
        try:
            for start in range(0, len(ids), WRITE_BATCH):
                batch = ids[start : start + WRITE_BATCH]
                rels = rel_lists(lists[start : start + WRITE_BATCH], params.stored_k, params.p)
                batch_payloads = [payloads[key] for key in sets[start : start + WRITE_BATCH]]
                if swap:
                    backend.insert_sparse(target, "rel", batch, rels, batch_payloads)
                else:
                    backend.replace_sparse(target, "rel", batch, rels, batch_payloads)
                    self.gens.update(dict.fromkeys(batch, gen))
        except BaseException:
            if swap:  # the live collection was never touched (after a crash: dropped on the next open)
                backend.drop_collection(target)
            raise
        if not swap:
            return self._compact(len(ids))
        old, self.state.config.relatives = self.live, target
        self.state.save()  # the switch: one atomic write of the config
        self.gens.update(dict.fromkeys(ids, gen))
        self.garbage = 0
        backend.drop_collection(old)
        return None

    def _compact(self, rewritten: int) -> float | None:
        """Compact once the rewrites since the last compaction exceed the garbage ratio times the live
        points (deleted points slow queries until then). Returns the seconds it took (None: not due)."""
        self.garbage += rewritten
        if self.garbage <= self.state.tuning.garbage_ratio * max(self.count(), 1):
            return None
        return self.optimize()


@contextmanager
def gc_paused() -> Iterator[None]:
    """A refresh builds millions of short-lived Python numbers and thousands of lists for the engine;
    the cyclic collector would walk every live object of the process many times meanwhile, for
    nothing (none of these form cycles). With the encoders loaded (538k tracked objects) pausing it
    saves 0.15-0.5 s of a 1,000-anchor update; in a bare process it makes no difference."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()



