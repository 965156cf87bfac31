"""Every candidate's embedding, set key and anchor list, held in memory between anchor updates.

The cache is valid while this process made every candidate write (``put``/``forget``/``drop`` keep it
in step) and the candidates collection's size agrees; otherwise it is read again from the store,
where a list is used only when it was saved by the write that made the stored relative vector
(same generation), and the others are searched again. The anchors galleries are left out until
one catches up (``absent``): updates never read them.

Candidates written in many batches (a gallery, a recompute) save the lists once, at the end
(``saved_once``): each save writes every candidate's list, which made indexing a large gallery
quadratic. A crash before the save loses only derived state (searched again on open).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from asif_vdb.engine.anchors import AnchorStore
from asif_vdb.engine.derived import DerivedVectors
from asif_vdb.engine.layout import CANDIDATES, MODALITIES, gallery_key, is_anchors_gallery
from asif_vdb.engine.list_store import ListStore, SavedLists
from asif_vdb.engine.state import StoreState
from asif_vdb.maths.anchor_lists import EMPTY_IDS, AnchorList, depth, from_hits
from asif_vdb.schema.store import Modality, StoreConfig
from asif_vdb.store.base import Filter, Match

SEARCH_BATCH = 256


def lazy_keys(config: StoreConfig) -> set[str]:
    """Set keys of the anchors galleries: anchor updates leave them to catch up at their next search."""
    return {gallery_key(name) for name in config.galleries if is_anchors_gallery(name)}


@dataclass
class Group:
    """The candidates of one modality: ids, unit embeddings, set keys and lists, row-aligned.
    Embeddings put in batches are joined when next read (one copy, not one per batch)."""

    modality: Modality
    ids: np.ndarray = field(default_factory=lambda: EMPTY_IDS)
    sets: list[str] = field(default_factory=list)
    lists: list[AnchorList] = field(default_factory=list)
    _dense: list[np.ndarray] = field(default_factory=list)

    @property
    def dense(self) -> np.ndarray:
        if len(self._dense) > 1:
            self._dense = [np.concatenate(self._dense)]
        return self._dense[0] if self._dense else np.zeros((0, 0), np.float32)

    def put(self, ids: Sequence[int] | np.ndarray, dense: np.ndarray, sets: Sequence[str],
            lists: Sequence[AnchorList]) -> None:
        arr = np.asarray(ids, np.int64)
        self.remove(np.isin(self.ids, arr))
        self.ids = np.concatenate([self.ids, arr])
        self._dense.append(np.array(dense, np.float32))
        self.sets.extend(sets)
        self.lists.extend(lists)

    def subset(self, rows: np.ndarray) -> Group:
        """These rows as a group of their own (copies; its lists are the same objects)."""
        dense = self.dense
        return Group(self.modality, self.ids[rows], [self.sets[i] for i in rows.tolist()],
                     [self.lists[i] for i in rows.tolist()], [dense[rows]] if len(dense) else [])

    def remove(self, mask: np.ndarray) -> None:
        if not mask.any():
            return
        keep = ~mask
        self.ids = self.ids[keep]
        dense = self.dense
        self._dense = [dense[keep]] if len(dense) else []
        self.sets = [s for s, k in zip(self.sets, keep) if k]
        self.lists = [lst for lst, k in zip(self.lists, keep) if k]


@dataclass
class Cache:
    groups: dict[Modality, Group]
    count: int = 0
    #: Anchors galleries not read in (set key -> its number of candidates).
    absent: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.count + sum(self.absent.values())

    @classmethod
    def empty(cls) -> Cache:
        return cls({m: Group(m) for m in MODALITIES})

    def recount(self) -> None:
        self.count = sum(len(g.ids) for g in self.groups.values())


class ListCache:
    """The candidates' lists in memory, read and saved through the list store."""

    def __init__(self, state: StoreState, anchors: AnchorStore, derived: DerivedVectors, store: ListStore) -> None:
        self.state = state
        self.anchors = anchors
        self.derived = derived
        self.store = store
        self._cache: Cache | None = None
        self._deferred = 0
        self._dirty = False

    # -- searching lists ---------------------------------------------------------------------------
    def search_lists(self, vecs: np.ndarray, modality: Modality) -> list[AnchorList]:
        """Lists by a top-K search of the visible anchors (what a rebuild does; ties in id order)."""
        k = self.state.config.params.stored_k
        K = depth(k)
        out: list[AnchorList] = []
        for start in range(0, len(vecs), SEARCH_BATCH):
            found = self.anchors.topk(vecs[start : start + SEARCH_BATCH], modality, K, k)
            out.extend(from_hits(h.ids, h.scores, K) for h in found)
        return out

    # -- the cache ---------------------------------------------------------------------------------
    @property
    def absent(self) -> dict[str, int]:
        """The anchors galleries not read into memory (set key -> number of candidates)."""
        return dict(self._cache.absent) if self._cache is not None else {}

    def reset(self) -> None:
        """Forget what is in memory: the next use reads everything back from the store."""
        self._cache = None

    def _current(self) -> Cache | None:
        if self._cache is not None and self._cache.total != self.state.backend.count(CANDIDATES):
            self._cache = None  # someone deleted candidates behind our back
        return self._cache

    def load(self, include: set[str] | None = None) -> Cache:
        """Every candidate's embedding and list, from memory or the store, but the anchors galleries'
        unless ``include``d."""
        cache = self._current()
        if cache is None:
            cache = self._cache = Cache.empty()
            self.store.saved_as.clear()
            cache.absent = {key: self.state.backend.count(CANDIDATES, Filter.where(set=key))
                            for key in lazy_keys(self.state.config)}
            self._read_in(cache, None)
        wanted = (include or set()) & set(cache.absent)
        if wanted:
            self._read_in(cache, wanted)
        return cache

    def _read_in(self, cache: Cache, keys: set[str] | None) -> None:
        """Read into the cache the candidates of these absent anchors galleries (None: every candidate
        of no anchors gallery), searching again the lists not saved with their vectors."""
        lazy = lazy_keys(self.state.config)
        own: set[str] = set()
        if keys is None:
            where = Filter(must_not=(Match("set", sorted(lazy)),)) if lazy else None
            saved: SavedLists = self.store.read(None) or {}
        else:
            where = Filter(must=(Match("set", sorted(keys)),))
            saved = {}
            for key in sorted(keys):
                got = self.store.read(key)
                if got is not None:
                    own.add(key)
                    saved.update(got)
                cache.absent.pop(key, None)
        stored_gens, gens = self.derived.stored_gens(), self.derived.gens
        repaired: set[str] = set()  # sets with a candidate searched again
        for m, (ids, dense, sets) in self.read_candidates(where).items():
            lists: list[AnchorList | None] = []
            for cid in ids.tolist():
                entry, gen = saved.get(cid), stored_gens.get(cid)
                ok = entry is not None and gen is not None and entry[0] == gen
                lists.append(entry[1] if ok and entry is not None else None)
                if ok and gen is not None:
                    gens[cid] = gen
            unknown = [i for i, lst in enumerate(lists) if lst is None]
            if unknown:
                for i, lst in zip(unknown, self.search_lists(dense[unknown], m)):
                    lists[i] = lst
                searched = [lst for lst in (lists[i] for i in unknown) if lst is not None]
                self.derived.write(ids[unknown].tolist(), searched, [sets[i] for i in unknown])
                repaired |= {sets[i] for i in unknown}
            cache.groups[m].put(ids, dense, sets, [lst for lst in lists if lst is not None])
        cache.recount()
        for key in own - repaired:  # the anchors galleries' blobs hold what was just read
            rows = [(cid, lst) for g in cache.groups.values() for cid, k, lst in zip(g.ids.tolist(), g.sets, g.lists)
                    if k == key]
            self.store.saved_as[key] = self.store.signature([r[0] for r in rows], [r[1] for r in rows])
        if repaired:
            self.save_soon()

    def read_candidates(self, where: Filter | None = None) -> dict[Modality, tuple[np.ndarray, np.ndarray, list[str]]]:
        """modality -> (ids, embeddings, set keys) of the stored candidates ``where`` selects, one pass."""
        rows: dict[Modality, list[tuple[int, np.ndarray, str]]] = {m: [] for m in MODALITIES}
        for batch in self.state.backend.scroll(CANDIDATES, where, with_payload=["set"], vectors=MODALITIES):
            for p in batch:
                for m in MODALITIES:
                    if m in p.dense:
                        rows[m].append((p.id, p.dense[m], str(p.payload.get("set", ""))))
        return {m: (np.asarray([r[0] for r in got], np.int64), np.stack([r[1] for r in got]).astype(np.float32),
                    [r[2] for r in got]) for m, got in rows.items() if got}

    # -- keeping in step with candidate writes --------------------------------------------------------
    def put(self, set_key: str, ids: Sequence[int], vecs: np.ndarray, modality: Modality,
            lists: Sequence[AnchorList]) -> None:
        """After candidates were written (with these lists): the cache follows, the lists are saved."""
        cache = self._cache
        if cache is None:
            if self.state.backend.count(CANDIDATES) != len({int(i) for i in ids}):
                # others exist that this process never read: merge into the saved ones
                lazy = lazy_keys(self.state.config)
                self.store.merge(set_key if set_key in lazy else None, ids, lists)
                return
            cache = self._cache = Cache.empty()
        if set_key in cache.absent:  # (its other candidates, before these join them)
            self._read_in(cache, {set_key})
        cache.groups[modality].put(ids, vecs, [set_key] * len(ids), lists)
        arr = np.asarray(ids, np.int64)
        for other in MODALITIES:  # an id rewritten with the other modality leaves that group
            if other != modality:
                cache.groups[other].remove(np.isin(cache.groups[other].ids, arr))
        cache.recount()
        self.save_soon()

    def forget(self, ids: Sequence[int], set_key: str | None = None) -> None:
        """After candidates were deleted by id (all of ``set_key`` when given: it may be absent)."""
        cache = self._cache
        if cache is None:
            return
        if set_key is not None and set_key in cache.absent:
            cache.absent[set_key] -= len({int(i) for i in ids})
            return
        arr = np.asarray(list(ids), np.int64)
        for g in cache.groups.values():
            g.remove(np.isin(g.ids, arr))
        cache.recount()

    def drop(self, set_key: str) -> None:
        """After a whole set was deleted."""
        cache = self._cache
        if cache is None:
            return
        cache.absent.pop(set_key, None)
        for g in cache.groups.values():
            g.remove(np.asarray([s == set_key for s in g.sets], bool))
        cache.recount()

    # -- saving ------------------------------------------------------------------------------------
    def save_soon(self) -> None:
        """Save the lists now, or at the end of the ``saved_once`` block this runs in."""
        if self._deferred:
            self._dirty = True
        else:
            self.save()

    @contextmanager
    def saved_once(self, *, every_candidate: bool = False) -> Iterator[None]:
        """Candidates written in many batches inside this block save the lists once, at its end. The
        cache holds them meanwhile (loaded first; or started empty when the caller rewrites
        ``every_candidate``)."""
        outer = not self._deferred
        if outer:
            if every_candidate:
                self._cache = Cache.empty()
            else:
                self.load()
            self._dirty = False
        self._deferred += 1
        try:
            yield
        finally:
            self._deferred -= 1
        if outer and self._dirty:
            self._dirty = False
            self.save()

    def save(self) -> None:
        """Save every candidate's list from the cache (an anchors gallery's blob only when its lists
        changed since they were saved or read)."""
        cache = self._cache
        if cache is None:
            return
        lazy = lazy_keys(self.state.config)
        parts: dict[str | None, tuple[list[int], list[AnchorList]]] = {None: ([], [])}
        for g in cache.groups.values():
            for cid, key, lst in zip(g.ids.tolist(), g.sets, g.lists):
                part = parts.setdefault(key if key in lazy else None, ([], []))
                part[0].append(cid)
                part[1].append(lst)
        for key in lazy - set(parts) - set(cache.absent):  # an anchors gallery with no items left
            parts[key] = ([], [])
        for set_key, (part_ids, part_lists) in parts.items():
            if set_key is not None:
                signature = self.store.signature(part_ids, part_lists)
                if self.store.saved_as.get(set_key) == signature:
                    continue
                self.store.saved_as[set_key] = signature
            self.store.write(set_key, part_ids, part_lists)

    # -- checks (doctor, recovery) -------------------------------------------------------------------
    def stored(self, modality: Modality) -> list[tuple[int, np.ndarray, str, tuple[np.ndarray, np.ndarray] | None,
                                                       AnchorList | None]]:
        """Every candidate of one modality as stored: (id, embedding, set key, its relative vector or
        None when missing, its saved list or None when none was saved with that vector)."""
        backend = self.state.backend
        rels = {p.id: (p.sparse.get("rel", (EMPTY_IDS, np.zeros(0, np.float32))), int(p.payload.get("gen", -1)))
                for batch in backend.scroll(self.derived.live, None, ["gen"], ("rel",)) for p in batch}
        saved = self.store.read_all(lazy_keys(self.state.config))
        found = self.read_candidates().get(modality)
        if found is None:
            return []
        out = []
        for cid, dense, key in zip(found[0].tolist(), found[1], found[2]):
            rel, gen = rels.get(cid, (None, None))
            entry = saved.get(cid)
            out.append((cid, dense, key, rel, entry[1] if entry is not None and entry[0] == gen else None))
        return out

    def status(self) -> tuple[int, int]:
        """(candidates without a relative vector, candidates whose saved list is missing or of another
        write than their vector)."""
        gens, saved = self.derived.stored_gens(), self.store.read_all(lazy_keys(self.state.config))
        ids = [p.id for batch in self.state.backend.scroll(CANDIDATES, None, False) for p in batch]
        missing = sum(1 for i in ids if i not in gens)
        unsaved = sum(1 for i in ids if i in gens and (i not in saved or saved[i][0] != gens[i]))
        return missing, unsaved

    def check_derived(self) -> int:
        """When the derived vectors do not match the candidates one to one (a crash mid-refresh), search
        and write the missing ones and drop those of candidates that no longer exist. Returns how many
        candidates were searched."""
        backend = self.state.backend
        if backend.count(CANDIDATES) == self.derived.count():
            return 0
        cand = {p.id for batch in backend.scroll(CANDIDATES, None, False) for p in batch}
        extra = [p.id for batch in backend.scroll(self.derived.live, None, False) for p in batch if p.id not in cand]
        self.derived.delete(extra)
        self.reset()
        before = self.derived.count()
        self.load(include=lazy_keys(self.state.config))
        return max(0, len(cand) - before)
