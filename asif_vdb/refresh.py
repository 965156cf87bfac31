"""Incremental refresh: every stored candidate (label-set prompt, gallery item) stays exact as anchors
are added and deleted, without re-encoding anything and without searching every anchor again.

A candidate's relative vector is its top-k anchor similarities (clamped at 0, ^p, L2-normalised).
Adding or deleting a thousand of 30,000 anchors changes nearly every candidate's top-k a little, so
the cost to beat is one top-k search per candidate. Instead each candidate carries a *list* L: its
best K = k + reserve anchors of positive similarity, best first, and whether L is *complete* (holds
every anchor of positive similarity). Then

- adding anchors: a new anchor enters L iff its similarity beats L's last entry (any positive one
  when L is complete): one matrix product of the candidates' embeddings with the new anchors;
- deleting anchors: they leave L and the reserve moves up; only a candidate whose L falls below k
  entries (and is not complete) is searched again.

The relative vector is always a function of L's first k entries, so it equals a rebuild.

Stored per candidate: its embedding in ``candidates`` (never rewritten here), its relative vector
``rel`` (what queries use) in the collection the config names (``candidate_rel`` or a later
generation of it) with the generation of the write that made it, and its list L in the blob
``candidate_lists``, with the generation of its ``rel``. A refresh replaces the changed ``rel``
points (delete and insert: Qdrant writes a new point about twice as fast as it updates one in
place); one that changes every candidate (1,000 new anchors among 30k do) writes them all into a new
collection and switches the config to it, which leaves no deleted points to compact. Then it saves
the lists; on open, a list whose generation differs from its stored ``rel``'s (a crash between the
two) is not used, and that candidate is searched again.

Exactness: a new anchor's similarity comes from numpy (float64), the others' from Qdrant (float32),
up to ~1e-7 apart; L marks which of its similarities are Qdrant's own. Where an order that decides
membership (the k-th entry, the end of the reserve, the bar for new anchors) rests on values closer
than ``EPS`` and one of them is not Qdrant's, the similarities of the anchors involved are read
again from Qdrant: the numbers a rebuild would compare.

Crash safety: ``rel`` points are derived data, so losing some (a crash between a delete and its
insert) loses nothing: a missing one is searched again on open. An anchor update is journaled in
the store's config before anything is written and cleared when every derived vector is fresh;
``recover`` (run on open) completes or rolls back an update left in the journal, and queries refuse
to run while one is unfinished.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from asif_vdb import relative
from asif_vdb.index import ANCHORS, CANDIDATES, RELATIVES, VISIBLE, AsifIndex, Modality, relatives_spec
from asif_vdb.methods_index import embed
from asif_vdb.store.base import Filter, Hits, Match

#: Orders decided by values closer than this are re-read from Qdrant. Its scores are float32 dot
#: products; numpy's float64 ones differ from them by at most 8.8e-8 over 600k candidate-anchor pairs
#: per modality of the Flickr8k benchmark store (text 384-d and image 1280-d alike: the float32
#: rounding of the score), so 3e-7 leaves a margin of 3.4x.
EPS = 3e-7
MODALITIES: tuple[Modality, ...] = ("image", "text")
SEARCH_BATCH = 256
WRITE_BATCH = 1000
REL_CHUNK = 128
BULK_ROWS = 256
#: The blob holding every candidate's list (see the module docstring), and its layout's version.
#: (8,000 candidates with k=800 make about 60 MB; rewritten after each refresh.)
LISTS_BLOB = "candidate_lists"
LISTS_VERSION = 2
#: Deleted ``rel`` points (rewrites) tolerated, as a multiple of the live ones, before compaction.
GARBAGE_RATIO = 4.0
#: A write of every candidate's ``rel``, at least this many, goes to a new collection that then
#: replaces the live one: as fast as rewriting in place, and it leaves no deleted points behind to
#: slow queries or to compact (0.6 s for 8,000 candidates, holding the GIL).
SWAP_MIN = 1000
#: ... and so does a refresh that changes at least this share of them (the others are written again
#: unchanged): below ~0.9 the extra writes cost more than the compaction they save (0.6 s per
#: 4x the live points deleted), measured on 8,000 candidates.
SWAP_SHARE = 0.9
EMPTY_IDS = np.zeros(0, np.int64)
EMPTY_SIMS = np.zeros(0, np.float64)


def depth(k: int) -> int:
    """K: how many anchors a candidate's list keeps (k plus a reserve that absorbs deletions)."""
    return k + max(k // 4, 16)


# -- one candidate's list ------------------------------------------------------------------------
@dataclass
class AnchorList:
    """L: anchor ids and their raw similarities, best first; ``full`` when it holds every anchor of
    positive similarity. An empty list is always complete. ``exact`` marks the similarities that are
    Qdrant's own numbers (None: all of them); the others (numpy's, for anchors added since) may
    differ from Qdrant's by ~1e-7, so an order that rests on them within EPS is settled by reading
    Qdrant's values."""

    ids: np.ndarray
    sims: np.ndarray
    full: bool
    exact: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def exact_mask(self) -> np.ndarray:
        return np.ones(len(self.ids), bool) if self.exact is None else self.exact

    def same(self, other: AnchorList) -> bool:
        return self.full == other.full and np.array_equal(self.ids, other.ids)


def sort_entries(ids: np.ndarray, sims: np.ndarray, *more: np.ndarray) -> tuple[np.ndarray, ...]:
    """Sorted by similarity, best first, equal ones by id (the rebuild's order); ``more`` arrays
    are permuted alongside."""
    order = np.lexsort((ids, -sims))
    return (ids[order], sims[order], *(m[order] for m in more))


def from_hits(hits: Hits, K: int) -> AnchorList:
    """L from a top-K search: its positive hits; complete when the search ran out of positives."""
    scores = hits.scores.astype(np.float64)
    full = len(scores) < K or bool(len(scores) and scores[-1] <= 0)
    keep = scores > 0
    ids, sims = sort_entries(hits.ids[keep].astype(np.int64), scores[keep])
    return AnchorList(ids, sims, full)


def update_list(
    lst: AnchorList, gone: np.ndarray | None, new_ids: np.ndarray, new_sims: np.ndarray, k: int, K: int,
    check: bool = True, new_exact: np.ndarray | None = None,
) -> tuple[AnchorList | None, np.ndarray | None]:
    """One candidate's list after deleting the anchors marked in ``gone`` (a boolean table indexed by
    anchor id, or None) and adding anchors with these similarities.

    Returns (L', None), or (None, None) when L' cannot be known without a new search (too few
    entries left), or (None, ids) when an order at a boundary rests on values closer than EPS: the
    caller re-reads those anchors' similarities from Qdrant and calls again with ``check=False``
    (``new_exact`` then marks the new similarities that are Qdrant's)."""
    ids, sims, full, ex = lst.ids, lst.sims, lst.full, lst.exact_mask()
    if gone is not None and len(ids):
        dropped = gone[ids]
        if dropped.any():
            ids, sims, ex = ids[~dropped], sims[~dropped], ex[~dropped]
    if not full and len(ids) < k:
        return None, None
    involved: list[np.ndarray] = []
    if len(new_ids):
        bar = 0.0 if full else float(sims[-1])
        if check and not full and np.any(np.abs(new_sims - bar) < EPS):
            involved.append(_near(ids, sims, new_ids, new_sims, bar))
        enter = new_sims > bar
        if not full:  # equal similarity: the lower id ranks first (as in index.anchor_topk)
            enter |= (new_sims == bar) & (new_ids < ids[-1])
        e_ids, e_sims = new_ids[enter], new_sims[enter]
        e_ex = new_exact[enter] if new_exact is not None else np.zeros(len(e_ids), bool)
        if len(e_ids) and len(ids) and e_ids.min() <= ids.max():  # a re-run: some are in already
            fresh = ~np.isin(e_ids, ids)
            e_ids, e_sims, e_ex = e_ids[fresh], e_sims[fresh], e_ex[fresh]
        if len(e_ids) and not check:  # settled values: sort everything by (similarity, id)
            ids, sims, ex = sort_entries(np.concatenate([ids, e_ids]), np.concatenate([sims, e_sims]),
                                         np.concatenate([ex, e_ex]))
        elif len(e_ids):  # insert into the sorted list; near ties are settled by the boundary checks
            if len(e_ids) > 1:
                e_ids, e_sims = sort_entries(e_ids, e_sims)
            ids, sims, ex = _insert_sorted(ids, sims, ex, e_ids, e_sims)
    if check:
        for b in (k, K):
            if len(ids) > b and sims[b - 1] - sims[b] < EPS and not _settled(sims, ex, b):
                involved.append(_near(ids, sims, new_ids, new_sims, 0.5 * (sims[b - 1] + sims[b])))
        if involved:
            return None, np.unique(np.concatenate(involved))
    if len(ids) > K:
        ids, sims, ex, full = ids[:K], sims[:K], ex[:K], False
    return AnchorList(ids, sims, full, None if ex.all() else ex), None


def _settled(sims: np.ndarray, ex: np.ndarray, b: int) -> bool:
    """Whether the cut after entry b-1 is decided by Qdrant's own numbers: every entry within EPS of
    it is exact (they sort by (similarity, id) as a rebuild does, and no inexact one can cross)."""
    lo = np.searchsorted(-sims, -(sims[b - 1] + EPS), side="left")
    hi = np.searchsorted(-sims, -(sims[b] - EPS), side="right")
    return bool(ex[lo:hi].all())


def _insert_sorted(ids: np.ndarray, sims: np.ndarray, ex: np.ndarray, e_ids: np.ndarray,
                   e_sims: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both lists sorted best first: the merged list (a new entry, inexact, goes after equal old ones)."""
    at = np.searchsorted(-sims, -e_sims, side="right") + np.arange(len(e_ids))
    old = np.ones(len(ids) + len(e_ids), bool)
    old[at] = False
    out_ids, out_sims = np.empty(len(old), ids.dtype), np.empty(len(old), sims.dtype)
    out_ids[at], out_sims[at] = e_ids, e_sims
    out_ids[old], out_sims[old] = ids, sims
    out_ex = np.zeros(len(old), bool)
    out_ex[old] = ex
    return out_ids, out_sims, out_ex


def _near(ids: np.ndarray, sims: np.ndarray, new_ids: np.ndarray, new_sims: np.ndarray, value: float) -> np.ndarray:
    return np.concatenate([ids[np.abs(sims - value) < 2 * EPS], new_ids[np.abs(new_sims - value) < 2 * EPS]])


def rel_lists(lists: Sequence[AnchorList], k: int, p: float) -> list[tuple[list[int], list[float]]]:
    """Relative vectors as Python lists (anchor ids, float32 values), the form the engine takes: the
    numbers of ``rel_matrix``'s rows, built a few array operations per chunk of rows (chunks small
    enough for the arrays to stay in cache)."""
    if len(lists) > REL_CHUNK:
        return [rel for a in range(0, len(lists), REL_CHUNK) for rel in rel_lists(lists[a : a + REL_CHUNK], k, p)]
    heads = [lst.ids[:k] for lst in lists]
    lengths = [len(h) for h in heads]
    if not sum(lengths):
        return [([], []) for _ in lists]
    ids = np.concatenate(heads)
    w = relative.clamp_power(np.concatenate([lst.sims[:k] for lst in lists]), p)
    rows = np.repeat(np.arange(len(lists)), lengths)
    norms = np.sqrt(np.bincount(rows, weights=w * w, minlength=len(lists)))
    live = norms >= relative.ZERO_NORM
    values = (w / np.where(live, norms, 1.0)[rows]).astype(np.float32)
    id_objects, positive = _int_objects(int(ids.max()))[ids], w > 0
    out, start = [], 0
    for row, n in enumerate(lengths):
        end = start + n
        if not live[row]:
            out.append(([], []))
        else:  # sims are sorted: zero weights form the tail
            stop = end if positive[end - 1] else start + int(positive[start:end].sum())
            out.append((id_objects[start:stop].tolist(), values[start:stop].tolist()))
        start = end
    return out


_INT_OBJECTS = np.zeros(0, object)


def _int_objects(largest: int) -> np.ndarray:
    """Python ints 0..largest (or more) in an object array: an anchor id list built by indexing it
    shares these objects instead of allocating 800 new ints per vector (a tenth of a refresh's
    list building, and as much again when the lists are freed)."""
    global _INT_OBJECTS
    if len(_INT_OBJECTS) <= largest:
        _INT_OBJECTS = np.fromiter(range(max(2 * len(_INT_OBJECTS), largest + 1)), object)
    return _INT_OBJECTS


def rel_matrix(lists: Sequence[AnchorList], k: int, p: float, n_coords: int) -> sp.csr_matrix:
    """Relative vectors: each list's first k entries, clamped, ^p, normalised (as a rebuild does)."""
    return relative.relative_vectors([lst.ids[:k] for lst in lists], [lst.sims[:k] for lst in lists], p, n_coords)


# -- the candidates of a store, held in memory between refreshes ----------------------------------
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
    def dense(self) -> np.ndarray | None:
        if len(self._dense) > 1:
            self._dense = [np.concatenate(self._dense)]
        return self._dense[0] if self._dense else None

    def put(self, ids: Sequence[int], dense: np.ndarray, set_key: str, lists: Sequence[AnchorList]) -> None:
        ids = np.asarray(ids, np.int64)
        self.remove(np.isin(self.ids, ids))
        self.ids = np.concatenate([self.ids, ids])
        self._dense.append(np.array(dense, np.float32))
        self.sets.extend([set_key] * len(ids))
        self.lists.extend(lists)

    def subset(self, rows: np.ndarray) -> Group:
        """These rows as a group of their own (copies; its lists are the same objects)."""
        dense = self.dense
        return Group(self.modality, self.ids[rows], [self.sets[i] for i in rows.tolist()],
                     [self.lists[i] for i in rows.tolist()], [dense[rows]] if dense is not None else [])

    def remove(self, mask: np.ndarray) -> None:
        if not mask.any():
            return
        keep = ~mask
        self.ids = self.ids[keep]
        dense = self.dense
        self._dense = [dense[keep]] if dense is not None else []
        self.sets = [s for s, k in zip(self.sets, keep) if k]
        self.lists = [lst for lst, k in zip(self.lists, keep) if k]


@dataclass
class Cache:
    """What ``apply`` needs of every candidate. Valid while this index made every candidate write
    (put_candidates / drop_set keep it in step) and the collection's size agrees."""

    groups: dict[str, Group]
    count: int
    #: Anchors galleries not read in (set key -> its candidates): updates leave them out, so they
    #: are read only when one catches up (``load(include=...)``).
    absent: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.count + sum(self.absent.values())

    @classmethod
    def empty(cls) -> Cache:
        return cls({m: Group(m) for m in MODALITIES}, 0)


def _cache(index: AsifIndex) -> Cache | None:
    cache = getattr(index, "_refresh_cache", None)
    if cache is not None and cache.total != index.backend.count(CANDIDATES):
        cache = index._refresh_cache = None  # someone deleted candidates behind our back
    return cache


def note_put(index: AsifIndex, set_key: str, ids: Sequence[int], vecs: np.ndarray, modality: Modality,
             lists: Sequence[AnchorList]) -> None:
    """Called by ``put_candidates`` after its write, so that the cache follows."""
    cache = getattr(index, "_refresh_cache", None)
    if cache is None:
        if index.backend.count(CANDIDATES) != len(set(int(i) for i in ids)):
            save_lists(index, np.asarray(ids, np.int64), lists, set_key)  # others exist that this process never read
            return
        cache = index._refresh_cache = Cache.empty()  # type: ignore[attr-defined]
    if set_key in cache.absent:  # (its other candidates, before these join them)
        _read_in(index, cache, {set_key})
    cache.groups[modality].put(ids, vecs, set_key, lists)
    for other in MODALITIES:  # an id rewritten with the other modality leaves that group
        if other != modality:
            cache.groups[other].remove(np.isin(cache.groups[other].ids, np.asarray(ids, np.int64)))
    cache.count = sum(len(g.ids) for g in cache.groups.values())
    _save_lists_soon(index)


def _save_lists_soon(index: AsifIndex) -> None:
    """Save the lists now, or at the end of the ``lists_saved_once`` block this runs in."""
    if getattr(index, "_lists_deferred", 0):
        index._lists_dirty = True  # type: ignore[attr-defined]
    else:
        save_lists(index)


@contextmanager
def lists_saved_once(index: AsifIndex, *, every_candidate: bool = False) -> Iterator[None]:
    """Candidates written in many batches (a gallery, a recompute) save the lists blob once, at the
    end, instead of after every batch: each save writes every candidate's list, which made indexing
    a large gallery quadratic (30,000 anchors as a gallery: about half of its two minutes). The
    cache holds the lists meanwhile (loaded first; or started empty when the caller rewrites
    ``every_candidate``); a crash before the save loses only derived state (those candidates are
    searched again on open)."""
    outer = not getattr(index, "_lists_deferred", 0)
    if outer:
        if every_candidate:
            index._refresh_cache = Cache.empty()  # type: ignore[attr-defined]
        else:
            load(index)
        index._lists_dirty = False  # type: ignore[attr-defined]
    index._lists_deferred = getattr(index, "_lists_deferred", 0) + 1  # type: ignore[attr-defined]
    try:
        yield
    finally:
        index._lists_deferred -= 1  # type: ignore[attr-defined]
    if outer and index._lists_dirty:  # type: ignore[attr-defined]
        index._lists_dirty = False  # type: ignore[attr-defined]
        save_lists(index)


def note_delete(index: AsifIndex, ids: Sequence[int], set_key: str | None = None) -> None:
    """Called after candidates are deleted by id (all of ``set_key`` when given: it may be absent)."""
    cache = getattr(index, "_refresh_cache", None)
    if cache is None:
        return
    if set_key in cache.absent:
        cache.absent[set_key] -= len(set(int(i) for i in ids))  # type: ignore[index]
        return
    for g in cache.groups.values():
        g.remove(np.isin(g.ids, np.asarray(list(ids), np.int64)))
    cache.count = sum(len(g.ids) for g in cache.groups.values())


def note_drop(index: AsifIndex, set_key: str) -> None:
    cache = getattr(index, "_refresh_cache", None)
    if cache is None:
        return
    cache.absent.pop(set_key, None)
    for g in cache.groups.values():
        g.remove(np.asarray([s == set_key for s in g.sets], bool))
    cache.count = sum(len(g.ids) for g in cache.groups.values())


def _rel_gens(index: AsifIndex) -> dict[int, int]:
    """id -> generation of every stored ``rel`` point (the write that made it)."""
    return {p.id: int(p.payload.get("gen", -1))
            for batch in index.backend.scroll(index.relatives, None, with_payload=["gen"]) for p in batch}


def _candidates(index: AsifIndex, modality: Modality) -> list[tuple[int, np.ndarray, str]]:
    return _all_candidates(index, (modality,))[modality]


def _all_candidates(index: AsifIndex, modalities: Sequence[Modality] = MODALITIES, where: Filter | None = None,
                    ) -> dict[Modality, list[tuple[int, np.ndarray, str]]]:
    """modality -> (id, embedding, set key) of its candidates (those ``where`` selects), in one pass."""
    out: dict[Modality, list[tuple[int, np.ndarray, str]]] = {m: [] for m in modalities}
    for batch in index.backend.scroll(CANDIDATES, where, with_payload=["set"], vectors=tuple(modalities)):
        for p in batch:
            for m, v in p.dense.items():
                if m in out:
                    out[m].append((p.id, v, str(p.payload.get("set", ""))))
    return out


def stored(index: AsifIndex, modality: Modality) -> list[tuple[int, np.ndarray, str, tuple | None, AnchorList | None]]:
    """Every candidate of one modality as stored, for checks: (id, embedding, set key, its ``rel``
    or None when missing, its saved list L or None when none was saved with that ``rel``)."""
    rels = {p.id: (p.sparse.get("rel", (EMPTY_IDS, EMPTY_SIMS)), int(p.payload.get("gen", -1)))
            for batch in index.backend.scroll(index.relatives, None, ["gen"], ("rel",)) for p in batch}
    saved_lists = _read_lists(index)
    out = []
    for cid, dense, key in _candidates(index, modality):
        rel, gen = rels.get(cid, (None, None))
        saved = saved_lists.get(cid)
        out.append((cid, dense, key, rel, saved[1] if saved is not None and saved[0] == gen else None))
    return out


def load(index: AsifIndex, include: set[str] | None = None) -> Cache:
    """Every candidate's embedding and list, from the store (or the cache), but the anchors
    galleries' unless ``include``d (see ``Cache.absent``). A list is used when it was saved by the
    write that made the stored ``rel`` (same generation); the others (a store written before lists
    were saved, or a crash between the two writes) are searched again and written."""
    cache = _cache(index)
    if cache is None:
        lazy = lazy_sets(index)
        cache = Cache.empty()
        index._refresh_cache = cache  # type: ignore[attr-defined]
        _saved_signatures(index).clear()
        cache.absent = {key: index.count_set(key) for key in lazy}
        _read_in(index, cache, None)
    wanted = (include or set()) & set(cache.absent)
    if wanted:
        _read_in(index, cache, wanted)
    return cache


def _read_in(index: AsifIndex, cache: Cache, keys: set[str] | None) -> None:
    """Read into the cache the candidates of these absent anchors galleries (None: every candidate
    of no anchors gallery), searching again the lists that were not saved with their ``rel``."""
    lazy = lazy_sets(index)
    if keys is None:
        where = Filter(must_not=(Match("set", sorted(lazy)),)) if lazy else None
        saved_lists = _read_blob_lists(index, LISTS_BLOB) or {}
        own = set()
    else:
        where = Filter(must=(Match("set", sorted(keys)),))
        saved_lists, own = {}, set()
        for key in sorted(keys):
            got = _read_blob_lists(index, lists_blob(key))
            if got is not None:
                own.add(key)
                saved_lists.update(got)
            cache.absent.pop(key, None)
        if own != keys:  # a store from before the anchors galleries had blobs of their own
            saved_lists = {**(_read_blob_lists(index, LISTS_BLOB) or {}), **saved_lists}
    rel_gens = _rel_gens(index)
    gens = _gens(index)
    repaired: set[str] = set()  # sets with a candidate searched again
    candidates = _all_candidates(index, where=where)
    for m in MODALITIES:
        rows = candidates[m]
        if not rows:
            continue
        ids = np.asarray([r[0] for r in rows], np.int64)
        dense = np.stack([r[1] for r in rows]).astype(np.float32)
        sets = [r[2] for r in rows]
        lists: list[AnchorList | None] = []
        for cid in ids.tolist():
            saved, gen = saved_lists.get(cid), rel_gens.get(cid)
            ok = saved is not None and gen is not None and saved[0] == gen
            lists.append(saved[1] if ok else None)  # type: ignore[index]
            if ok:
                gens[cid] = gen  # type: ignore[assignment]
        unknown = [i for i, lst in enumerate(lists) if lst is None]
        if unknown:
            for i, lst in zip(unknown, search_lists(index, dense[unknown], m)):
                lists[i] = lst
            write(index, ids[unknown], [lists[i] for i in unknown], [sets[i] for i in unknown])  # type: ignore[misc]
            repaired |= {sets[i] for i in unknown}
        group = cache.groups[m]
        group.put(ids, dense, "", lists)  # type: ignore[arg-type]
        group.sets[len(group.sets) - len(sets):] = sets
    cache.count = sum(len(g.ids) for g in cache.groups.values())
    saved_as = _saved_signatures(index)  # the anchors galleries' blobs hold what was just read
    for key in own - repaired:
        rows = [(cid, lst) for g in cache.groups.values() for cid, k, lst in zip(g.ids.tolist(), g.sets, g.lists)
                if k == key]
        saved_as[key] = _signature(index, [r[0] for r in rows], [r[1] for r in rows])
    if repaired:
        _save_lists_soon(index)


def derived_status(index: AsifIndex) -> tuple[int, int]:
    """(candidates without a ``rel`` point, candidates whose saved list is missing or of another
    write than their ``rel``), for ``asif doctor``."""
    rel_gens, saved = _rel_gens(index), _read_lists(index)
    ids = [p.id for batch in index.backend.scroll(CANDIDATES, None, False) for p in batch]
    missing = sum(1 for i in ids if i not in rel_gens)
    unsaved = sum(1 for i in ids if i in rel_gens and (i not in saved or saved[i][0] != rel_gens[i]))
    return missing, unsaved


def check_derived(index: AsifIndex) -> int:
    """On open: when the derived ``rel`` points do not match the candidates one to one (an older
    store, or a crash mid-refresh), load (which searches and writes the missing ones) and drop
    ``rel`` points of candidates that no longer exist. Returns how many candidates were searched."""
    n_cand, n_rel = index.backend.count(CANDIDATES), index.backend.count(index.relatives)
    if n_cand == n_rel:
        return 0
    cand = {p.id for batch in index.backend.scroll(CANDIDATES, None, False) for p in batch}
    extra = [p.id for batch in index.backend.scroll(index.relatives, None, False) for p in batch if p.id not in cand]
    index.backend.delete(index.relatives, extra)
    index._refresh_cache = None  # type: ignore[attr-defined]
    before = index.backend.count(index.relatives)
    load(index, include=lazy_sets(index))
    return max(0, len(cand) - before)


# -- store reads and writes -----------------------------------------------------------------------
def search_lists(index: AsifIndex, vecs: np.ndarray, modality: Modality) -> list[AnchorList]:
    """Lists by a top-K search of the visible anchors (what a rebuild does; ties in id order)."""
    K = depth(index.config.params.k)
    out: list[AnchorList] = []
    for start in range(0, len(vecs), SEARCH_BATCH):
        out.extend(from_hits(h, K) for h in index.anchor_topk(vecs[start : start + SEARCH_BATCH], modality, K))
    return out


def exact_sims(index: AsifIndex, vecs: np.ndarray, modality: Modality,
               anchor_ids: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Qdrant's own similarities of each embedding to a few visible anchors: (ids, sims) per row."""
    wheres = [Filter(must=VISIBLE.must, ids=tuple(int(i) for i in ids)) for ids in anchor_ids]
    hits = index.backend.search_dense_each(ANCHORS[modality], "v", vecs, [len(i) for i in anchor_ids], wheres)
    return [(h.ids.astype(np.int64), h.scores.astype(np.float64)) for h in hits]


def write(index: AsifIndex, ids: Sequence[int] | np.ndarray, lists: Sequence[AnchorList],
          sets: Sequence[str] | None = None) -> float | None:
    """Store the relative vectors of these candidates (their embeddings are untouched): each batch
    of ``rel`` points is deleted and written anew, or, when these are all the candidates (SWAP_MIN
    or more), all go into a new collection that the config then switches to, the old one dropped.
    ``sets`` (each candidate's set key) is read from
    the candidates when not given. Returns the seconds spent compacting (see GARBAGE_RATIO), None
    when it was not due; the caller saves the lists afterwards (``save_lists``)."""
    if not len(ids):
        return None
    ids = [int(i) for i in ids]
    with _gc_paused():
        return _write(index, ids, lists, sets)


@contextmanager
def _gc_paused() -> Iterator[None]:
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


def _write(index: AsifIndex, ids: list[int], lists: Sequence[AnchorList],
           sets: Sequence[str] | None) -> float | None:
    if sets is None:
        got = {p.id: str(p.payload.get("set", "")) for p in index.backend.retrieve(CANDIDATES, ids, ["set"])}
        sets = [got.get(i, "") for i in ids]
    k, p = index.config.params.k, index.config.params.p
    gens, gen = _gens(index), time.time_ns()
    payloads = {key: {"set": key, "gen": gen} for key in set(sets)}
    swap = len(ids) >= SWAP_MIN and len(set(ids)) == index.backend.count(CANDIDATES)
    target = f"{RELATIVES}_g{gen}" if swap else index.relatives
    if swap:
        index.backend.ensure_collection(relatives_spec(target))
    try:
        for start in range(0, len(ids), WRITE_BATCH):
            batch = ids[start : start + WRITE_BATCH]
            rels = rel_lists(lists[start : start + WRITE_BATCH], k, p)
            batch_payloads = [payloads[key] for key in sets[start : start + WRITE_BATCH]]
            if swap:
                index.backend.insert_sparse(target, "rel", batch, rels, batch_payloads)
            else:
                index.backend.replace_sparse(target, "rel", batch, rels, batch_payloads)
                gens.update(dict.fromkeys(batch, gen))
    except BaseException:
        if swap:  # the live collection was never touched (a crash instead: dropped on the next open)
            index.backend.drop_collection(target)
        raise
    if not swap:
        return _compact(index, len(ids))
    old, index.config.relatives = index.relatives, target
    index.save()  # the switch: one atomic write of the config
    gens.update(dict.fromkeys(ids, gen))
    index._rel_garbage = 0  # type: ignore[attr-defined]
    index.backend.drop_collection(old)
    return None


def _gens(index: AsifIndex) -> dict[int, int]:
    """id -> generation of the ``rel`` this process last wrote or read for it (a saved list is only
    used beside the ``rel`` of its own generation)."""
    gens = getattr(index, "_rel_gens", None)
    if gens is None:
        gens = index._rel_gens = {}  # type: ignore[attr-defined]
    return gens


def _compact(index: AsifIndex, rewritten: int) -> float | None:
    """Deleted points stay in the engine's indexes until compaction; compact once the rewrites since
    the last one exceed GARBAGE_RATIO times the live points (so queries stay fast). Returns the
    seconds it took (None when not due)."""
    garbage = getattr(index, "_rel_garbage", 0) + rewritten
    live = index.backend.count(index.relatives)
    if garbage <= GARBAGE_RATIO * max(live, 1):
        index._rel_garbage = garbage  # type: ignore[attr-defined]
        return None
    t = time.perf_counter()
    index.backend.optimize(index.relatives)
    index._rel_garbage = 0  # type: ignore[attr-defined]
    return time.perf_counter() - t


def lists_blob(set_key: str | None) -> str:
    """The blob holding the lists of an anchors gallery (its own, rewritten only when they change:
    they are as many as the anchors), or (None) of every other candidate."""
    return LISTS_BLOB if set_key is None else f"{LISTS_BLOB}.{set_key.replace(':', '.')}"


def _read_lists(index: AsifIndex) -> dict[int, tuple[int, AnchorList]]:
    """id -> (generation of the rel it was saved with, its list), from the blobs (empty when none)."""
    out = _read_blob_lists(index, LISTS_BLOB) or {}
    for key in sorted(lazy_sets(index)):
        out.update(_read_blob_lists(index, lists_blob(key)) or {})
    return out


def _read_blob_lists(index: AsifIndex, name: str) -> dict[int, tuple[int, AnchorList]] | None:
    """The lists of one blob; None when there is no such blob (or an unreadable one)."""
    blob = index.backend.read_blob(name)
    if blob is None or int(blob.get("version", np.zeros(1))[0]) != LISTS_VERSION:
        return None
    ids, gens, full, ptr = blob["ids"].tolist(), blob["gens"].tolist(), blob["full"].tolist(), blob["indptr"].tolist()
    l_ids = blob["list_ids"].astype(np.int64)
    l_sims = blob["list_sims"].astype(np.float64)
    l_exact = np.unpackbits(blob["list_exact"], count=len(l_ids)).astype(bool)
    out = {}
    for cid, gen, f, a, b in zip(ids, gens, full, ptr[:-1], ptr[1:]):
        ex = l_exact[a:b]
        out[cid] = (gen, AnchorList(l_ids[a:b], l_sims[a:b], bool(f), None if ex.all() else ex))
    return out


def _list_arrays(index: AsifIndex, ids: np.ndarray, lists: Sequence[AnchorList]) -> dict[str, np.ndarray]:
    gens = _gens(index)
    ptr = np.zeros(len(lists) + 1, np.int64)
    np.cumsum([len(lst) for lst in lists], out=ptr[1:])
    return {
        "version": np.asarray([LISTS_VERSION]), "ids": np.asarray(ids, np.int64),
        "gens": np.asarray([gens.get(i, -1) for i in np.asarray(ids).tolist()], np.int64),
        "full": np.asarray([lst.full for lst in lists], bool), "indptr": ptr,
        "list_ids": np.concatenate([lst.ids for lst in lists]).astype(np.int32) if lists else np.zeros(0, np.int32),
        # Qdrant's scores are float32: an exact similarity survives the cast; an inexact one stays inexact
        "list_sims": np.concatenate([lst.sims for lst in lists]).astype(np.float32) if lists else np.zeros(0, np.float32),
        "list_exact": np.packbits(np.concatenate([lst.exact_mask() for lst in lists])) if lists else np.zeros(0, np.uint8),
    }


def save_lists(index: AsifIndex, ids: np.ndarray | None = None, lists: Sequence[AnchorList] | None = None,
               set_key: str | None = None) -> None:
    """Save every candidate's list from the cache (an anchors gallery's blob only when its lists
    changed since they were saved or read); or, without a cache, merge these candidates' lists (of
    ``set_key``'s blob) into the saved ones."""
    cache = getattr(index, "_refresh_cache", None)
    if cache is not None:
        lazy = lazy_sets(index)
        parts: dict[str | None, tuple[list[int], list[AnchorList]]] = {None: ([], [])}
        for g in cache.groups.values():
            for cid, key, lst in zip(g.ids.tolist(), g.sets, g.lists):
                part = parts.setdefault(key if key in lazy else None, ([], []))
                part[0].append(cid)
                part[1].append(lst)
        saved_as = _saved_signatures(index)
        for key in lazy - set(parts) - set(cache.absent):  # an anchors gallery with no items left
            parts[key] = ([], [])
        for key, (part_ids, part_lists) in parts.items():
            if key is not None:
                signature = _signature(index, part_ids, part_lists)
                if saved_as.get(key) == signature:
                    continue
                saved_as[key] = signature
            index.backend.write_blob(lists_blob(key), _list_arrays(index, np.asarray(part_ids, np.int64), part_lists))
        return
    if ids is None or lists is None:
        return
    name = lists_blob(set_key if set_key in lazy_sets(index) else None)
    saved = _read_blob_lists(index, name) or {}
    gens = _gens(index)
    for cid, (gen, _) in saved.items():
        gens.setdefault(cid, gen)
    for cid, lst in zip(np.asarray(ids).tolist(), lists):
        saved[int(cid)] = (gens.get(int(cid), -1), lst)
    all_ids = np.asarray(sorted(saved), np.int64)
    index.backend.write_blob(name, _list_arrays(index, all_ids, [saved[i][1] for i in all_ids.tolist()]))


def _signature(index: AsifIndex, ids: list[int], lists: list[AnchorList]) -> tuple[Any, ...]:
    """What an anchors gallery's saved blob holds: its ids, their lists (the objects: a changed list
    is a new one, made while the old one is still held) and the generations of their ``rel``."""
    gens = _gens(index)
    return tuple(ids), tuple(map(id, lists)), tuple(gens.get(i, -1) for i in ids)


def _saved_signatures(index: AsifIndex) -> dict[str, tuple[Any, ...]]:
    saved = getattr(index, "_lists_saved_as", None)
    if saved is None:
        saved = index._lists_saved_as = {}  # type: ignore[attr-defined]
    return saved


def anchor_vectors(index: AsifIndex, ids: Sequence[int], modality: Modality) -> tuple[np.ndarray, np.ndarray]:
    """(ids, unit vectors) of the visible anchors among ``ids``."""
    got = [p for p in index.backend.retrieve(ANCHORS[modality], list(ids), True, ("v",)) if p.payload.get("ok") == 1]
    if not got:
        return EMPTY_IDS, np.zeros((0, index.dims[modality]), np.float32)
    return np.asarray([p.id for p in got], np.int64), np.stack([p.dense["v"] for p in got]).astype(np.float32)


# -- the refresh ----------------------------------------------------------------------------------
@dataclass
class RefreshReport:
    candidates: int = 0
    rewritten: int = 0
    searched: int = 0
    resolved: int = 0
    galleries_recomputed: list[str] = field(default_factory=list)
    galleries_behind: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def timed(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] = round(self.seconds.get(stage, 0.0) + now - since, 4)
        return now

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def apply(
    index: AsifIndex, added: Sequence[int] = (), deleted: Sequence[int] = (),
    vectors: dict[str, tuple[np.ndarray, np.ndarray]] | None = None, only: str | None = None,
) -> RefreshReport:
    """Bring every stored candidate up to date after anchors ``added`` (now visible) and ``deleted``
    (now gone), assuming they were exact before. Idempotent: applying the same change twice is
    harmless, which is what lets ``recover`` re-run an interrupted refresh. The anchors galleries
    are left out and marked behind (``_galleries_before``); ``only`` (a set key) refreshes that set
    alone, as an anchors gallery catching up does.

    ``vectors`` optionally gives the added anchors' (ids, unit vectors) per modality, saving a read."""
    with _gc_paused():
        return _apply(index, added, deleted, vectors, only)


def _apply(index: AsifIndex, added: Sequence[int], deleted: Sequence[int],
           vectors: dict[str, tuple[np.ndarray, np.ndarray]] | None, only: str | None) -> RefreshReport:
    report = RefreshReport()
    deleted_arr = np.unique(np.asarray(list(deleted), np.int64))
    added = sorted(set(int(i) for i in added) - set(deleted_arr.tolist()))
    if not added and not len(deleted_arr):
        return report
    t = time.perf_counter()
    if only is None:
        _galleries_before(index, report, added, deleted_arr.tolist())
    skip = lazy_sets(index)
    cache = load(index, include={only} if only is not None else None)
    t = report.timed("load", t)
    changed_ids: list[int] = []
    changed_lists: list[AnchorList] = []
    changed_sets: list[str] = []
    for modality in MODALITIES:
        group = cache.groups[modality]
        keep = np.asarray([s == only if only is not None else s not in skip for s in group.sets], bool)
        rows = None if keep.all() else np.flatnonzero(keep)
        part = group if rows is None else group.subset(rows)
        if not len(part.ids):
            continue
        report.candidates += len(part.ids)
        if added:
            new_ids, new_vecs = vectors[modality] if vectors and modality in vectors \
                else anchor_vectors(index, added, modality)
        else:
            new_ids, new_vecs = EMPTY_IDS, np.zeros((0, part.dense.shape[1]), np.float32)
        for row, lst in _update_group(index, part, deleted_arr, np.asarray(new_ids, np.int64), new_vecs, report):
            row = row if rows is None else int(rows[row])
            group.lists[row] = lst
            changed_ids.append(int(group.ids[row]))
            changed_lists.append(lst)
            changed_sets.append(group.sets[row])
    report.rewritten = len(changed_ids)
    if not cache.absent and SWAP_MIN <= cache.count and SWAP_SHARE * cache.count <= len(changed_ids) < cache.count:
        _add_unchanged(cache, changed_ids, changed_lists, changed_sets)  # then ``write`` switches
    t = time.perf_counter()
    compact_s = write(index, changed_ids, changed_lists, changed_sets)
    t = report.timed("write", t)
    if changed_ids:
        _save_lists_soon(index)
    report.timed("save_lists", t)
    if compact_s is not None:  # inside "write"; shown apart since only one update in several pays it
        report.seconds["compact"] = round(compact_s, 4)
    return report


def _add_unchanged(cache: Cache, ids: list[int], lists: list[AnchorList], sets: list[str]) -> None:
    """Append every candidate not in ``ids`` (with its list and set key), in place."""
    have = set(ids)
    for group in cache.groups.values():
        for row, cid in enumerate(group.ids.tolist()):
            if cid not in have:
                ids.append(cid)
                lists.append(group.lists[row])
                sets.append(group.sets[row])


def _update_group(
    index: AsifIndex, group: Group, deleted: np.ndarray, new_ids: np.ndarray, new_vecs: np.ndarray,
    report: RefreshReport,
) -> list[tuple[int, AnchorList]]:
    """(row, new list) for every candidate of one modality whose list changes."""
    k, K = index.config.params.k, depth(index.config.params.k)
    t = time.perf_counter()
    lists = group.lists
    # Similarities as the anchor search sees them (transformed when the store has a transform, issue 4B).
    sims = embed(index, group.dense, group.modality).astype(np.float64) \
        @ embed(index, new_vecs, group.modality).astype(np.float64).T if len(new_ids) else None
    touched = np.zeros(len(lists), bool)
    if sims is not None:
        bars = np.asarray([0.0 if lst.full or not len(lst) else lst.sims[-1] for lst in lists])
        touched |= (sims > (bars - EPS)[:, None]).any(axis=1)
    gone = None
    if len(deleted):
        lengths = np.asarray([len(lst) for lst in lists])
        flat = np.concatenate([lst.ids for lst in lists]) if lengths.sum() else EMPTY_IDS
        gone = np.zeros(max(int(flat.max(initial=-1)), int(deleted.max()), index.n_coords) + 1, bool)
        gone[deleted] = True
        ends = np.cumsum(lengths)  # the row of each hit, without an 8M-entry row index
        touched[np.searchsorted(ends, np.flatnonzero(gone[flat]), side="right")] = True
    out: list[tuple[int, AnchorList]] = []
    research: list[int] = []
    pending: list[tuple[int, np.ndarray]] = []
    no_sims = EMPTY_SIMS
    slow = np.flatnonzero(touched)
    if gone is None and sims is not None:  # additions only: most rows merge in bulk
        merged, slow = _add_in_bulk(lists, slow, new_ids, sims, bars, k, K)
        out.extend(merged)
    elif gone is not None and sims is None:  # deletions only: likewise
        merged, slow = _delete_in_bulk(lists, slow, gone, k, K)
        out.extend(merged)
    for row in slow:
        lst = lists[row]
        new, involved = update_list(lst, gone, new_ids, sims[row] if sims is not None else no_sims, k, K)
        if involved is not None:
            pending.append((int(row), involved))
        elif new is None:
            research.append(int(row))
        elif not new.same(lst):
            out.append((int(row), new))
    t = report.timed("merge", t)
    if pending:  # near ties: settle them with the store's own similarities, all in one round trip
        report.resolved += len(pending)
        rows = [r for r, _ in pending]
        exact = exact_sims(index, group.dense[rows], group.modality, [inv for _, inv in pending])
        for (row, _), (ex_ids, ex_sims) in zip(pending, exact):
            lst = lists[row]
            ex = lst.exact_mask() | np.isin(lst.ids, ex_ids)
            b_ids, b_sims, b_ex = sort_entries(lst.ids, _replace(lst.ids, lst.sims, ex_ids, ex_sims), ex)
            base = AnchorList(b_ids, b_sims, lst.full, b_ex)
            row_sims = _replace(new_ids, sims[row], ex_ids, ex_sims) if sims is not None else no_sims
            new, _ = update_list(base, gone, new_ids, row_sims, k, K, check=False,
                                 new_exact=np.isin(new_ids, ex_ids))
            if new is None:
                research.append(row)
            elif not new.same(lst) or not np.array_equal(new.sims, lst.sims):
                out.append((row, new))
    t = report.timed("resolve", t)
    if research:
        report.searched += len(research)
        out.extend(zip(research, search_lists(index, group.dense[research], group.modality)))
    report.timed("search", t)
    return out


def _add_in_bulk(
    lists: Sequence[AnchorList], rows: np.ndarray, new_ids: np.ndarray, sims: np.ndarray, bars: np.ndarray,
    k: int, K: int,
) -> tuple[list[tuple[int, AnchorList]], np.ndarray]:
    """``update_list`` for added anchors, many rows at a time: (row, new list) for the rows it settles,
    and the rows left to the one-row path (a complete list, a new similarity within EPS of the bar,
    a cut at k or K within EPS, or new anchors already in a list: a re-run)."""
    out: list[tuple[int, AnchorList]] = []
    left: list[np.ndarray] = []
    for start in range(0, len(rows), BULK_ROWS):
        chunk = rows[start : start + BULK_ROWS]
        done, rest = _add_chunk(lists, chunk, new_ids, sims[chunk], bars[chunk], k, K)
        out.extend(done)
        left.append(rest)
    return out, np.concatenate(left) if left else rows


def _add_chunk(
    lists: Sequence[AnchorList], rows: np.ndarray, new_ids: np.ndarray, sims: np.ndarray, bars: np.ndarray,
    k: int, K: int,
) -> tuple[list[tuple[int, AnchorList]], np.ndarray]:
    chunk = [lists[r] for r in rows]
    full = np.fromiter((lst.full for lst in chunk), bool, len(chunk))
    near = (np.abs(sims - bars[:, None]) < EPS).any(axis=1)
    lengths = np.fromiter((len(lst) for lst in chunk), np.int64, len(chunk))
    easy = ~full & ~near & (lengths > 0)
    if not easy.any():
        return [], rows
    idx = np.flatnonzero(easy)
    old_ids = np.concatenate([chunk[i].ids for i in idx])
    if len(new_ids) and new_ids.min() <= old_ids.max():  # a re-run may find anchors already in: one by one
        return [], rows
    ids_ascending = bool(np.all(new_ids[1:] > new_ids[:-1]))
    old_sims = np.concatenate([chunk[i].sims for i in idx])
    n_old = lengths[idx]
    old_ex = np.ones(len(old_ids), bool)
    starts = np.concatenate([[0], np.cumsum(n_old)[:-1]])
    for j, i in enumerate(idx):
        if chunk[i].exact is not None:
            old_ex[starts[j] : starts[j] + n_old[j]] = chunk[i].exact
    old_row = np.repeat(np.arange(len(idx)), n_old)
    e_row, e_col = np.nonzero(sims[idx] > bars[idx, None])
    e_sims, e_ids = sims[idx][e_row, e_col], new_ids[e_col]
    # One sorted key across the chunk (row, then similarity descending): a new entry goes after equal
    # old ones, as in _insert_sorted. Similarities are in (0, 1], so rows do not overlap.
    e_key = e_row * 4.0 + (2.0 - e_sims)
    if ids_ascending:  # within a row the entries come in column (id) order: a stable sort keeps it
        order = np.argsort(e_key, kind="stable")
    else:
        order = np.lexsort((e_ids, e_key))  # per row: best first, equal ones by id
    e_row, e_sims, e_ids, e_key = e_row[order], e_sims[order], e_ids[order], e_key[order]
    at = np.searchsorted(old_row * 4.0 + (2.0 - old_sims), e_key, side="right")
    at += np.arange(len(at))
    total = len(old_ids) + len(e_ids)
    is_old = np.ones(total, bool)
    is_old[at] = False
    m_ids, m_sims, m_ex = np.empty(total, np.int64), np.empty(total, np.float64), np.zeros(total, bool)
    m_ids[at], m_sims[at] = e_ids, e_sims
    m_ids[is_old], m_sims[is_old], m_ex[is_old] = old_ids, old_sims, old_ex
    m_len = n_old + np.bincount(e_row, minlength=len(idx))
    m_start = np.concatenate([[0], np.cumsum(m_len)[:-1]])
    cut = np.zeros(len(idx), bool)  # a cut at k or K within EPS and not settled: the one-row path
    for b in (k, K):
        over = np.flatnonzero(m_len > b)
        tied = over[m_sims[m_start[over] + b - 1] - m_sims[m_start[over] + b] < EPS]
        for j in tied.tolist():  # ties among Qdrant's own numbers (an image shared by 5 anchors) are settled
            a = int(m_start[j])
            cut[j] |= not _settled(m_sims[a : a + m_len[j]], m_ex[a : a + m_len[j]], b)
    keep = np.minimum(m_len, K)
    hard = ~easy
    hard[idx[cut]] = True
    out: list[tuple[int, AnchorList]] = []
    for j in np.flatnonzero(~cut & (m_len > n_old)).tolist():  # rows where something entered
        a, end = int(m_start[j]), int(m_start[j] + keep[j])
        ex = m_ex[a:end]  # new entries are inexact, so "all exact" is rare: only when all were cut
        out.append((int(rows[idx[j]]), AnchorList(m_ids[a:end], m_sims[a:end], False, None if ex.all() else ex)))
    return out, rows[hard]


def _delete_in_bulk(
    lists: Sequence[AnchorList], rows: np.ndarray, gone: np.ndarray, k: int, K: int,
) -> tuple[list[tuple[int, AnchorList]], np.ndarray]:
    """``update_list`` for deleted anchors, many rows at a time: (row, new list) for the rows it
    settles, and the rows left to the one-row path (too few entries left: a search; a cut at k or K
    within EPS that Qdrant's own numbers do not settle)."""
    out: list[tuple[int, AnchorList]] = []
    left: list[np.ndarray] = []
    for start in range(0, len(rows), BULK_ROWS):
        chunk = rows[start : start + BULK_ROWS]
        part = [lists[r] for r in chunk.tolist()]
        lengths = np.fromiter((len(lst) for lst in part), np.int64, len(part))
        if not lengths.sum():
            left.append(chunk)
            continue
        ids = np.concatenate([lst.ids for lst in part])
        sims = np.concatenate([lst.sims for lst in part])
        inexact = any(lst.exact is not None for lst in part)
        ex = np.concatenate([lst.exact_mask() for lst in part]) if inexact else None
        dropped = np.flatnonzero(gone[ids])
        kept = lengths - np.bincount(np.searchsorted(np.cumsum(lengths), dropped, side="right"),
                                     minlength=len(part))
        keep = np.ones(len(ids), bool)
        keep[dropped] = False
        ids, sims = ids[keep], sims[keep]
        ex = ex[keep] if ex is not None else np.ones(len(ids), bool)
        starts = np.concatenate([[0], np.cumsum(kept)[:-1]])
        hard = np.zeros(len(part), bool)
        for j, lst in enumerate(part):
            n = int(kept[j])
            if n == lengths[j]:  # nothing of it was deleted
                continue
            if not lst.full and n < k:
                hard[j] = True
                continue
            a = int(starts[j])
            r_sims, r_ex = sims[a : a + n], ex[a : a + n]
            if any(n > b and r_sims[b - 1] - r_sims[b] < EPS and not _settled(r_sims, r_ex, b) for b in (k, K)):
                hard[j] = True
                continue
            out.append((int(chunk[j]), AnchorList(ids[a : a + n], r_sims, lst.full, None if r_ex.all() else r_ex)))
        left.append(chunk[hard])
    return out, np.concatenate(left) if left else rows


def _replace(ids: np.ndarray, sims: np.ndarray, ex_ids: np.ndarray, ex_sims: np.ndarray) -> np.ndarray:
    """``sims`` with the entries whose id is in ``ex_ids`` replaced by the exact values."""
    if not len(ex_ids) or not len(ids):
        return sims
    order = np.argsort(ex_ids)
    sorted_ids = ex_ids[order]
    pos = np.clip(np.searchsorted(sorted_ids, ids), 0, len(sorted_ids) - 1)
    hit = sorted_ids[pos] == ids
    out = np.array(sims, dtype=np.float64, copy=True)
    out[hit] = ex_sims[order][pos[hit]]
    return out


def lazy_sets(index: AsifIndex) -> set[str]:
    """Set keys of the anchors galleries: anchor updates leave them to catch up at their next search."""
    from asif_vdb import gallery

    return {gallery.set_key(name) for name in index.config.galleries if gallery.is_anchors_gallery(name)}


def _galleries_before(index: AsifIndex, report: RefreshReport, added: Sequence[int],
                      deleted: Sequence[int]) -> None:
    """Galleries the incremental path does not serve now: the anchors' own galleries (their items
    *are* the anchors, as many as there are) record the change and apply it at their next search
    (gallery.catch_up); a gallery already marked stale is recomputed in full first."""
    from asif_vdb import gallery

    changed = False
    for name, info in index.config.galleries.items():
        if gallery.is_anchors_gallery(name):
            info.behind_added = sorted(set(info.behind_added) | {int(i) for i in added})
            info.behind_deleted = sorted(set(info.behind_deleted) | {int(i) for i in deleted})
            if len(deleted):  # a deleted anchor's own item (its payload) goes now, not at the next search
                gallery.delete_anchor_items(index, info, deleted)
            report.galleries_behind.append(name)
            changed = True
    for name, info in list(index.config.galleries.items()):
        if getattr(info, "stale", False):
            gallery.recompute(index, info)
            report.galleries_recomputed.append(name)
            changed = True
    if changed:
        index.save()


# -- journaled anchor updates ----------------------------------------------------------------------
@contextmanager
def updating(index: AsifIndex) -> Iterator[None]:
    index.updating += 1
    try:
        yield
    finally:
        index.updating -= 1


def journal_begin(index: AsifIndex, entry: dict[str, Any]) -> None:
    index.config.journal.append(entry)
    index.save()


def journal_end(index: AsifIndex, entry: dict[str, Any]) -> None:
    if entry in index.config.journal:
        index.config.journal.remove(entry)
    index.save()


def journal_abort(index: AsifIndex) -> None:
    """After a failed update: finish or roll it back now, so that nothing half-done stays visible;
    if even that fails, the journal keeps it for the next open and queries refuse to run."""
    try:
        recover(index)
    except Exception:  # the original error is the one to report; the journal still holds the work
        pass


def add_pairs(
    index: AsifIndex, image_vectors: np.ndarray, text_vectors: np.ndarray, payloads: Sequence[dict[str, Any]]
) -> tuple[list[int], list[int], RefreshReport]:
    """Add anchor pairs and refresh every candidate; returns (ids of the rows, new ids, report)."""
    img = index.check_vectors(image_vectors, "image", "anchor images")
    txt = index.check_vectors(text_vectors, "text", "anchor captions")
    entry = {"op": "add", "from": index.config.next_anchor_id}
    with updating(index):
        journal_begin(index, entry)
        try:
            ids, new = index.add_anchors(img, txt, payloads)
            first_row = {}
            for row, i in enumerate(ids):
                first_row.setdefault(i, row)
            rows = [first_row[i] for i in new]
            vecs = {"image": (np.asarray(new, np.int64), img[rows]), "text": (np.asarray(new, np.int64), txt[rows])}
            report = apply(index, added=new, vectors=vecs)
        except BaseException:
            journal_abort(index)
            raise
        journal_end(index, entry)
    return ids, new, report


def delete_pairs(index: AsifIndex, ids: Sequence[int]) -> tuple[list[int], RefreshReport]:
    """Delete anchor pairs and refresh every candidate; returns (ids that existed, report)."""
    ids = sorted({int(i) for i in ids})
    if not ids:
        return [], RefreshReport()
    entry = {"op": "delete", "ids": ids}
    with updating(index):
        journal_begin(index, entry)
        try:
            removed = index.delete_anchors(ids)
            report = apply(index, deleted=removed)
        except BaseException:
            journal_abort(index)
            raise
        journal_end(index, entry)
    return removed, report


def recover(index: AsifIndex) -> dict[str, Any]:
    """Complete or roll back whatever a crash left: journaled updates first (a pair whose two halves
    were written is completed, a lone half rolled back, then the candidates are refreshed), then any
    other pair not marked complete. Returns what was done."""
    done: dict[str, Any] = {"completed": [], "rolled_back": [], "deleted": [], "refreshed": 0}
    with updating(index):
        done["searched"] = check_derived(index)
        for entry in list(index.config.journal):
            if entry.get("op") == "add":
                suspects = list(range(int(entry["from"]), index.config.next_anchor_id))
                complete, lone = _pairs_state(index, suspects)
                index._commit(complete)
                for name in ANCHORS.values():
                    index.backend.delete(name, lone)
                done["completed"] += complete
                done["rolled_back"] += lone
                done["refreshed"] += apply(index, added=complete, deleted=lone).rewritten
            elif entry.get("op") == "delete":
                removed = [int(i) for i in entry.get("ids", [])]
                index.delete_anchors(removed)
                done["deleted"] += removed
                done["refreshed"] += apply(index, deleted=removed).rewritten
            elif entry.get("op") == "transform":  # a refit is always carried forward
                from asif_vdb import methods_index

                methods_index.finish_transforms(index, entry)
                done["transform_finished"] = sorted(entry["new"])
                continue  # it cleared its own entry
            journal_end(index, entry)
        stray = index.repair_incomplete()
        if stray["completed"] or stray["rolled_back"]:
            done["completed"] += stray["completed"]
            done["rolled_back"] += stray["rolled_back"]
            done["refreshed"] += apply(index, added=stray["completed"], deleted=stray["rolled_back"]).rewritten
    return {key: value for key, value in done.items() if value or key in ("completed", "rolled_back")}


def _pairs_state(index: AsifIndex, ids: Sequence[int]) -> tuple[list[int], list[int]]:
    """(ids whose two halves exist, ids with only one half) among ``ids``."""
    if not ids:
        return [], []
    present = {m: {p.id for p in index.backend.retrieve(n, list(ids), with_payload=False)} for m, n in ANCHORS.items()}
    both = present["image"] & present["text"]
    either = present["image"] | present["text"]
    return sorted(both), sorted(either - both)
