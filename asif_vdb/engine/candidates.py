"""Candidates: label-set prompts and gallery items, each an embedding, a payload and a relative vector.

A candidate's source data (embedding, payload with its set key) lives in ``candidates``; its derived
relative vector in the live derived collection under the same id (engine/derived.py), and its anchor
list in the list cache (engine/list_cache.py), so that anchor updates keep it exact.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from asif_vdb.engine.anchors import AnchorStore
from asif_vdb.engine.derived import DerivedVectors
from asif_vdb.engine.layout import CANDIDATES
from asif_vdb.engine.list_cache import ListCache
from asif_vdb.engine.state import StoreState
from asif_vdb.maths import relative
from asif_vdb.schema.store import Modality
from asif_vdb.store.base import Filter, Hits, PointData, SparseRow

WRITE_BATCH = 512


class Candidates:
    """The candidate sets of one store (a set key per label set or gallery)."""

    def __init__(self, state: StoreState, anchors: AnchorStore, derived: DerivedVectors, lists: ListCache) -> None:
        self.state = state
        self.anchors = anchors
        self.derived = derived
        self.lists = lists
        self.backend = state.backend

    def allocate(self, n: int) -> int:
        """Reserve ``n`` consecutive candidate ids (saved by the caller before anything is written)."""
        first = self.state.config.next_candidate_id
        self.state.config.next_candidate_id += n
        return first

    def put(self, set_key: str, ids: Sequence[int], vectors: np.ndarray, modality: Modality,
            payloads: Sequence[dict[str, Any]]) -> None:
        """Store candidates with their embedding, relative vector and anchor list."""
        vecs = self.anchors.check_vectors(vectors, modality, f"{set_key} items")
        self.state.require_consistent()
        lists = self.lists.search_lists(vecs, modality)
        for start in range(0, len(ids), WRITE_BATCH):
            self.backend.upsert(CANDIDATES, [
                PointData(int(ids[i]), payload={**payloads[i], "set": set_key}, dense={modality: vecs[i]})
                for i in range(start, min(len(ids), start + WRITE_BATCH))
            ])
        self.derived.write(ids, lists, [set_key] * len(ids))
        self.lists.put(set_key, ids, vecs, modality, lists)
        self.derived.settle()

    def delete(self, ids: Sequence[int], set_key: str | None = None) -> None:
        """Delete candidates (source and derived) by id (all of set ``set_key``, when given)."""
        self.derived.delete(ids)
        self.backend.delete(CANDIDATES, ids)
        self.lists.forget(ids, set_key)

    def drop_set(self, set_key: str) -> None:
        self.derived.delete_set(set_key)
        self.backend.delete_where(CANDIDATES, Filter.where(set=set_key))
        self.lists.drop(set_key)

    def count_set(self, set_key: str) -> int:
        return self.backend.count(CANDIDATES, Filter.where(set=set_key))

    def set_counts(self) -> dict[str, int]:
        """Candidates per set key (for checks)."""
        counts: dict[str, int] = {}
        for batch in self.backend.scroll(CANDIDATES, None, with_payload=["set"]):
            for p in batch:
                key = str(p.payload.get("set", ""))
                counts[key] = counts.get(key, 0) + 1
        return counts

    def ids(self, set_key: str, **conditions: Any) -> list[int]:
        return [p.id for batch in self.backend.scroll(CANDIDATES, Filter.where(set=set_key, **conditions), False)
                for p in batch]

    def points(self, set_key: str, with_payload: bool | Sequence[str] = True, vectors: Sequence[str] = (),
               **conditions: Any) -> Iterator[list[PointData]]:
        """The set's candidates (those matching ``conditions`` too) in batches."""
        yield from self.backend.scroll(CANDIDATES, Filter.where(set=set_key, **conditions), with_payload, vectors)

    def read(self, ids: Sequence[int], modality: Modality | None = None) -> list[PointData]:
        """Candidates by id with their payloads (and embedding of ``modality``); missing ones left out."""
        return self.backend.retrieve(CANDIDATES, [int(i) for i in ids], True, (modality,) if modality else ())

    def embeddings(self, ids: Sequence[int], modality: Modality) -> dict[int, np.ndarray]:
        """Stored unit embeddings of candidates, by id."""
        points = self.backend.retrieve(CANDIDATES, [int(i) for i in ids], with_payload=False, vectors=(modality,))
        return {p.id: np.asarray(p.dense[modality], np.float32) for p in points if modality in p.dense}

    def relatives(self, ids: Sequence[int]) -> dict[int, SparseRow]:
        """Stored relative vectors of candidates, by id."""
        return self.derived.vectors(ids)

    def relative_matrix(self, ids: Sequence[int]) -> sp.csr_matrix:
        """Stored relative vectors of these candidates as CSR rows (empty rows for missing ones)."""
        rels = self.derived.vectors(ids)
        empty: SparseRow = (np.zeros(0, np.int64), np.zeros(0, np.float32))
        return relative.from_pairs([rels.get(int(i), empty) for i in ids], self.state.n_coords)

    def rank(self, queries: sp.csr_matrix, set_key: str, limit: int, with_payload: bool = False) -> list[Hits]:
        """Sparse dot-product ranking of a set's candidates for each query relative vector (with the
        candidates' payloads, read in one call, when asked)."""
        hits = self.backend.search_sparse(self.derived.live, "rel", relative.to_pairs(queries), limit,
                                          Filter.where(set=set_key))
        if with_payload:
            wanted = sorted({int(i) for h in hits for i in h.ids})
            payloads = {p.id: p.payload for p in self.backend.retrieve(CANDIDATES, wanted, True)} if wanted else {}
            for h in hits:
                h.payloads = [dict(payloads.get(int(i), {})) for i in h.ids]
        return hits

    def set_payload(self, ids: Sequence[int], payload: dict[str, Any]) -> None:
        self.backend.set_payload(CANDIDATES, ids, payload)
