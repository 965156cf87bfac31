"""Anchor pairs in their two collections: writing and deleting pairs, and the query recipe.

A pair is written half by half (caption side, then image side) with ``ok=0`` and made visible by
setting ``ok=1`` on both; queries only see visible pairs, so a crash never shows half a pair.
``pair_states`` is the one check of which pairs are complete, half written or hidden. Every vector
that goes in or comes out passes through the anchor space (stored transformed, shown raw).

The query recipe (``query``): unit vectors -> the top-k visible anchors of their modality (equal
similarities in id order) -> relative vectors. Label sets, galleries, calibration and explanations
all rank with it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from asif_vdb.engine.anchor_space import AnchorSpace
from asif_vdb.engine.layout import ANCHORS, HIDDEN, MODALITIES, VECTOR, VISIBLE, search_mode
from asif_vdb.engine.state import StoreState
from asif_vdb.errors import InputError
from asif_vdb.maths import relative
from asif_vdb.schema.store import Modality
from asif_vdb.store.base import EXACT, Filter, Hits, PointData, SearchMode

WRITE_BATCH = 512
#: Extra hits fetched beyond a top-k so that ties at the k-th score can be broken by id.
TIE_MARGIN = 8
EMPTY_IDS = np.zeros(0, np.int64)


@dataclass
class AnchorQuery:
    """Queries' top-k anchors (ids, raw similarities; best first) and their relative vectors."""

    hits: list[Hits]
    rel: sp.csr_matrix


@dataclass
class PairStates:
    """Which pairs are complete (both halves, possibly not yet visible) and which are lone halves."""

    complete: list[int]
    lone: list[int]


class AnchorStore:
    """The anchor pairs of one store."""

    def __init__(self, state: StoreState, space: AnchorSpace) -> None:
        self.state = state
        self.space = space
        self.backend = state.backend

    # -- checks ------------------------------------------------------------------------------------
    def check_vectors(self, vectors: np.ndarray, modality: Modality, what: str) -> np.ndarray:
        """Unit float32 rows of the store's dimension for ``modality``, or InputError naming ``what``."""
        try:
            kind = np.asarray(vectors).dtype.kind
            if kind in "cSUVMm":  # complex numbers, strings, bytes, dates: not vectors
                raise InputError(f"{what}: expected real numbers, got dtype {np.asarray(vectors).dtype}")
            arr = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise InputError(f"{what}: not an array of numbers ({e})") from e
        if arr.ndim == 1:
            arr = arr[None, :]
        dim = self.state.dims[modality]
        if arr.ndim != 2 or arr.shape[1] != dim:
            raise InputError(f"{what}: expected {modality} vectors of dimension {dim}, got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise InputError(f"{what}: vectors hold NaN or infinite values")
        norms = np.linalg.norm(arr, axis=1, keepdims=True)
        if (norms < 1e-12).any():
            raise InputError(f"{what}: a vector is all zeros")
        return arr / norms

    # -- reads -------------------------------------------------------------------------------------
    def count(self) -> int:
        """Visible (complete) pairs."""
        return self.backend.count(ANCHORS["text"], VISIBLE)

    def ids_where(self, **conditions: Any) -> list[int]:
        """Ids of the pairs whose payload matches every condition (all pairs when none is given)."""
        where = Filter.where(**conditions) if conditions else None
        return [p.id for batch in self.backend.scroll(ANCHORS["text"], where, with_payload=False) for p in batch]

    def visible_ids(self) -> np.ndarray:
        return np.asarray(sorted(self.ids_where(ok=1)), np.int64)

    def payloads(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """Caption-side payloads (caption, image reference, source, hash) of these ids."""
        return {p.id: p.payload for p in self.backend.retrieve(ANCHORS["text"], [int(i) for i in ids])}

    def existing_hashes(self, hashes: Sequence[str]) -> dict[str, int]:
        """Hash -> id of the complete pairs that already hold these contents."""
        found: dict[str, int] = {}
        unique = sorted(set(hashes))
        for start in range(0, len(unique), 1024):
            where = Filter(must=(*VISIBLE.must, *Filter.where(hash=unique[start : start + 1024]).must))
            for batch in self.backend.scroll(ANCHORS["text"], where, with_payload=["hash"]):
                for p in batch:
                    found[p.payload["hash"]] = p.id
        return found

    def points(self, ids: Sequence[int], modality: Modality) -> tuple[list[PointData], np.ndarray]:
        """The visible anchors among ``ids`` (points with their payloads) and their raw unit vectors."""
        got = [p for p in self.backend.retrieve(ANCHORS[modality], [int(i) for i in ids], True, (VECTOR,))
               if p.payload.get("ok") == 1]
        if not got:
            return [], np.zeros((0, self.state.dims[modality]), np.float32)
        stored = np.stack([p.dense[VECTOR] for p in got]).astype(np.float32)
        return got, self.space.unembed(stored, modality)

    def vectors(self, ids: Sequence[int], modality: Modality) -> tuple[np.ndarray, np.ndarray]:
        """(ids, raw unit vectors) of the visible anchors among ``ids``, in the order found."""
        points, vecs = self.points(ids, modality)
        return np.asarray([p.id for p in points], np.int64), vecs

    def scroll(self, modality: Modality, visible_only: bool = True,
               batch: int = 1024) -> Iterator[tuple[list[PointData], np.ndarray]]:
        """Batches of (points with payloads, their raw unit vectors)."""
        for points in self.backend.scroll(ANCHORS[modality], VISIBLE if visible_only else None, True, (VECTOR,), batch):
            stored = np.stack([p.dense[VECTOR] for p in points]).astype(np.float32)
            yield points, self.space.unembed(stored, modality)

    def all_vectors(self, modality: Modality) -> tuple[np.ndarray, np.ndarray]:
        """(ids, raw unit vectors) of every visible anchor of ``modality``."""
        ids: list[int] = []
        vecs: list[np.ndarray] = []
        for points, raw in self.scroll(modality):
            ids.extend(p.id for p in points)
            vecs.append(raw)
        empty = np.zeros((0, self.state.dims[modality]), np.float32)
        return np.asarray(ids, np.int64), (np.concatenate(vecs) if vecs else empty)

    # -- the query recipe ---------------------------------------------------------------------------
    def mode(self, limit: int, k: int | None = None) -> SearchMode:
        """How an anchor search of ``limit`` results for relative vectors of ``k`` anchors (default:
        ``limit``) runs: exact, or through the store's index once the store has passed ``exact_below``
        anchors."""
        settings = self.state.config.index
        if self.state.exact_search or not settings.approximate or self.state.config.next_anchor_id < settings.exact_below:
            return EXACT
        return search_mode(settings, limit, limit if k is None else k)

    def keep_indexed(self) -> dict[str, float]:
        """Build the index over anchors written since (where the settings ask for one and the store has
        passed ``exact_below``): the engine indexes new segments once they outgrow a scan, so this costs
        nothing until then. Returns the seconds per collection that had work to do."""
        settings = self.state.config.index
        if not settings.approximate or self.state.config.next_anchor_id < settings.exact_below or self.state.bulk:
            return {}
        out = {}
        for name in ANCHORS.values():
            t = time.perf_counter()
            if self.backend.optimize(name):
                out[name] = round(time.perf_counter() - t, 3)
        return out

    def topk(self, vectors: np.ndarray, modality: Modality, limit: int | None = None,
             k: int | None = None) -> list[Hits]:
        """Each unit vector's ``limit`` (default k) most similar visible anchors, best first, equal
        similarities in id order. The engine's own order among equal scores is arbitrary, and equal
        scores are common (an image with five captions is five anchors with one image vector): this
        rule makes a relative vector one well-defined thing, the same in every rebuild. ``k`` (default
        ``limit``) is the part of the list relative vectors are made of: an index walks for those."""
        self.state.require_consistent()
        limit = self.state.config.params.k if limit is None else int(limit)
        k = limit if k is None else min(limit, int(k))
        queries = self.space.embed(np.asarray(vectors, np.float32), modality)
        # Hidden pairs exist only while an update writes or deletes them (or after a crash): without
        # any, the search needs no filter, which costs a fifth of a graph search at 1M anchors.
        where = VISIBLE if self.backend.count(ANCHORS[modality], HIDDEN) else None
        out: list[Hits | None] = [None] * len(queries)
        todo, extra = list(range(len(queries))), TIE_MARGIN
        while todo:
            again = []
            found = self.backend.search_dense(ANCHORS[modality], VECTOR, queries[todo], limit + extra, where,
                                              mode=self.mode(limit + extra, k))
            for i, h in zip(todo, found):
                if len(h.ids) == limit + extra and h.scores[-1] == h.scores[limit - 1]:
                    again.append(i)  # the tie at the cut may go on past what was fetched
                    continue
                order = np.lexsort((h.ids, -h.scores))[:limit]
                out[i] = Hits(h.ids[order], h.scores[order])
            todo, extra = again, extra * 8
        return [h for h in out if h is not None]

    def warm_up(self, queries: int = 32, background: bool = False) -> float:
        """Read the anchor collections into the page cache (their index first, then the original
        vectors), then run a batch of searches per modality on random unit vectors, so that the first
        real queries do not pay for reading a store just opened (at 1M anchors a cold search reads
        thousands of scattered pages). Returns the seconds taken. With ``background`` only the reading
        runs, in a thread that touches files and nothing else and stops when the store closes; it
        returns at once."""
        if background:
            threading.Thread(target=self.read_ahead, name="asif-read-ahead", daemon=True).start()
            return 0.0
        start = time.perf_counter()
        self.read_ahead()
        rng = np.random.default_rng(0)
        if self.count() > 0:
            for modality in MODALITIES:
                vecs = rng.standard_normal((queries, self.state.dims[modality])).astype(np.float32)
                self.topk(vecs / np.linalg.norm(vecs, axis=1, keepdims=True), modality)
        return time.perf_counter() - start

    def read_ahead(self) -> int:
        """Bytes of the anchor collections read into the page cache (none on a server)."""
        return sum(self.backend.read_ahead(ANCHORS[m]) for m in MODALITIES)

    def query(self, vectors: np.ndarray, modality: Modality, what: str | None = None) -> AnchorQuery:
        """Top-k anchors and relative vectors of query embeddings (checked, then unit-normalised)."""
        vecs = self.check_vectors(vectors, modality, what or f"{modality} queries")
        hits = self.topk(vecs, modality)
        rel = relative.relative_vectors([h.ids for h in hits], [h.scores for h in hits], self.state.config.params.p,
                                        self.state.n_coords)
        return AnchorQuery(hits, rel)

    def relative(self, vectors: np.ndarray, modality: Modality) -> sp.csr_matrix:
        """Relative vectors of embeddings against the visible anchors of their own modality."""
        return self.query(vectors, modality).rel

    def exact_sims(self, vecs: np.ndarray, modality: Modality,
                   anchor_ids: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """The store's own similarities of each embedding to a few visible anchors: (ids, sims) per row."""
        wheres: list[Filter | None] = [Filter(must=VISIBLE.must, ids=tuple(int(i) for i in ids)) for ids in anchor_ids]
        hits = self.backend.search_dense_each(ANCHORS[modality], VECTOR, self.space.embed(vecs, modality),
                                              [len(i) for i in anchor_ids], wheres)
        return [(h.ids.astype(np.int64), h.scores.astype(np.float64)) for h in hits]

    # -- writes ------------------------------------------------------------------------------------
    def write(self, image: np.ndarray, text: np.ndarray,
              payloads: Sequence[dict[str, Any]]) -> tuple[list[int], list[int]]:
        """Write new pairs (unit vectors, payloads with ``hash``) and make them visible; returns (id of
        every row, ids that are new). A row whose ``hash`` is stored already maps to that pair's id."""
        hashes = [str(p["hash"]) for p in payloads]
        known = self.existing_hashes(hashes)
        config = self.state.config
        ids: list[int] = []
        new_rows: list[int] = []
        for row, h in enumerate(hashes):
            if h not in known:
                known[h] = config.next_anchor_id
                config.next_anchor_id += 1
                new_rows.append(row)
            ids.append(known[h])
        if not new_rows:
            return ids, []
        self.state.save()  # ids are allocated durably before any point is written, so never reused
        for start in range(0, len(new_rows), WRITE_BATCH):
            rows = new_rows[start : start + WRITE_BATCH]
            sides: tuple[tuple[Modality, np.ndarray], ...] = (("text", text), ("image", image))
            for modality, vecs in sides:
                stored = self.space.embed(vecs[rows], modality)
                self.backend.upsert(ANCHORS[modality], [
                    PointData(ids[r], payload={**payloads[r], "ok": 0}, dense={VECTOR: v}) for r, v in zip(rows, stored)
                ])
        new_ids = [ids[r] for r in new_rows]
        self.commit(new_ids)
        return ids, new_ids

    def commit(self, ids: Sequence[int]) -> None:
        """Make pairs visible (both halves must exist)."""
        for modality in MODALITIES:
            self.backend.set_payload(ANCHORS[modality], ids, {"ok": 1})

    def delete(self, ids: Sequence[int]) -> list[int]:
        """Delete pairs by id; returns the ids that existed. Both halves are hidden first, then the
        caption side goes, then the image side: a pair without its caption is invisible either way."""
        wanted = sorted({int(i) for i in ids})
        present = {m: [p.id for p in self.backend.retrieve(ANCHORS[m], wanted, with_payload=False)] for m in MODALITIES}
        for modality in MODALITIES:
            self.backend.set_payload(ANCHORS[modality], present[modality], {"ok": 0})
        self.backend.delete(ANCHORS["text"], present["text"])
        self.backend.delete(ANCHORS["image"], present["image"])
        return sorted(set(present["image"]) | set(present["text"]))

    def pair_states(self, ids: Sequence[int] | None = None) -> PairStates:
        """Among ``ids`` (None: the pairs not marked visible, a crash's leftovers), which have both
        halves and which only one."""
        if ids is None:
            hidden: set[int] = set()
            for name in ANCHORS.values():
                hidden |= {p.id for batch in self.backend.scroll(name, Filter.where(ok=0), with_payload=False)
                           for p in batch}
            ids = sorted(hidden)
        if not ids:
            return PairStates([], [])
        present = {m: {p.id for p in self.backend.retrieve(ANCHORS[m], list(ids), with_payload=False)}
                   for m in MODALITIES}
        both = present["image"] & present["text"]
        return PairStates(sorted(both), sorted((present["image"] | present["text"]) - both))

    def finish_pairs(self, states: PairStates) -> None:
        """Complete the pairs whose two halves exist; delete lone halves."""
        self.commit(states.complete)
        for name in ANCHORS.values():
            self.backend.delete(name, states.lone)
