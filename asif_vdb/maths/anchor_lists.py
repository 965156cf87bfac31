"""Anchor lists, the maths that keeps stored relative vectors exact as anchors change (no I/O).

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

Exactness: a new anchor's similarity comes from numpy (float64), the others' from the vector store
(float32), up to ~1e-7 apart; L marks which of its similarities are the store's own. Where an order
that decides membership (the k-th entry, the end of the reserve, the bar for new anchors) rests on
values closer than ``eps`` and one of them is not the store's, the functions here say which anchors
are involved and the caller re-reads their similarities from the store: the numbers a rebuild
would compare.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from asif_vdb.maths import relative

#: Orders decided by values closer than this are re-read from the store. Its scores are float32 dot
#: products; numpy's float64 ones differ from them by at most 8.8e-8 over 600k candidate-anchor pairs
#: per modality of the Flickr8k benchmark store (text 384-d and image 1280-d alike: the float32
#: rounding of the score), so 3e-7 leaves a margin of 3.4x.
EPS = 3e-7
#: Rows of relative vectors built at once (small enough for the arrays to stay in cache).
REL_CHUNK = 128
#: Rows merged at once by the bulk paths.
BULK_ROWS = 256
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
    the store's own numbers (None: all of them); the others (numpy's, for anchors added since) may
    differ from the store's by ~1e-7, so an order that rests on them within EPS is settled by reading
    the store's values."""

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


def from_hits(ids: np.ndarray, scores: np.ndarray, K: int) -> AnchorList:
    """L from a top-K search (ids, scores best first): its positive hits; complete when the search
    ran out of positives."""
    scores = np.asarray(scores).astype(np.float64)
    full = len(scores) < K or bool(len(scores) and scores[-1] <= 0)
    keep = scores > 0
    kept_ids, kept_sims = sort_entries(np.asarray(ids)[keep].astype(np.int64), scores[keep])
    return AnchorList(kept_ids, kept_sims, full)


def update_list(
    lst: AnchorList, gone: np.ndarray | None, new_ids: np.ndarray, new_sims: np.ndarray, k: int, K: int,
    check: bool = True, new_exact: np.ndarray | None = None, eps: float = EPS,
) -> tuple[AnchorList | None, np.ndarray | None]:
    """One candidate's list after deleting the anchors marked in ``gone`` (a boolean table indexed by
    anchor id, or None) and adding anchors with these similarities.

    Returns (L', None), or (None, None) when L' cannot be known without a new search (too few
    entries left), or (None, ids) when an order at a boundary rests on values closer than EPS: the
    caller re-reads those anchors' similarities from the store and calls again with ``check=False``
    (``new_exact`` then marks the new similarities that are the store's)."""
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
        if check and not full and np.any(np.abs(new_sims - bar) < eps):
            involved.append(_near(ids, sims, new_ids, new_sims, bar, eps))
        enter = new_sims > bar
        if not full:  # equal similarity: the lower id ranks first (as in the anchor search)
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
            if len(ids) > b and sims[b - 1] - sims[b] < eps and not _settled(sims, ex, b, eps):
                involved.append(_near(ids, sims, new_ids, new_sims, 0.5 * (sims[b - 1] + sims[b]), eps))
        if involved:
            return None, np.unique(np.concatenate(involved))
    if len(ids) > K:
        ids, sims, ex, full = ids[:K], sims[:K], ex[:K], False
    return AnchorList(ids, sims, full, None if ex.all() else ex), None


def _settled(sims: np.ndarray, ex: np.ndarray, b: int, eps: float) -> bool:
    """Whether the cut after entry b-1 is decided by the store's own numbers: every entry within EPS of
    it is exact (they sort by (similarity, id) as a rebuild does, and no inexact one can cross)."""
    lo = np.searchsorted(-sims, -(sims[b - 1] + eps), side="left")
    hi = np.searchsorted(-sims, -(sims[b] - eps), side="right")
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


def _near(ids: np.ndarray, sims: np.ndarray, new_ids: np.ndarray, new_sims: np.ndarray, value: float,
          eps: float) -> np.ndarray:
    return np.concatenate([ids[np.abs(sims - value) < 2 * eps], new_ids[np.abs(new_sims - value) < 2 * eps]])


def rel_lists(lists: Sequence[AnchorList], k: int, p: float) -> list[tuple[list[int], list[float]]]:
    """Relative vectors as Python lists (anchor ids, float32 values), the form the engine takes:
    ``relative.relative_flat`` of each list's first k entries, in chunks of rows."""
    out: list[tuple[list[int], list[float]]] = []
    for a in range(0, len(lists), REL_CHUNK):
        chunk = lists[a : a + REL_CHUNK]
        counts, ids, values = relative.relative_flat([lst.ids[:k] for lst in chunk], [lst.sims[:k] for lst in chunk], p)
        if not len(ids):
            out.extend(([], []) for _ in chunk)
            continue
        id_objects, vals = _int_objects(int(ids.max()))[ids], values.tolist()
        start = 0
        for n in counts.tolist():
            out.append((id_objects[start : start + n].tolist(), vals[start : start + n]))
            start += n
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


# -- many lists at once --------------------------------------------------------------------------
def add_in_bulk(
    lists: Sequence[AnchorList], rows: np.ndarray, new_ids: np.ndarray, sims: np.ndarray, bars: np.ndarray,
    k: int, K: int, eps: float = EPS,
) -> tuple[list[tuple[int, AnchorList]], np.ndarray]:
    """``update_list`` for added anchors, many rows at a time: (row, new list) for the rows it settles,
    and the rows left to the one-row path (a complete list, a new similarity within EPS of the bar,
    a cut at k or K within EPS, or new anchors already in a list: a re-run)."""
    out: list[tuple[int, AnchorList]] = []
    left: list[np.ndarray] = []
    for start in range(0, len(rows), BULK_ROWS):
        chunk = rows[start : start + BULK_ROWS]
        done, rest = _add_chunk(lists, chunk, new_ids, sims[chunk], bars[chunk], k, K, eps)
        out.extend(done)
        left.append(rest)
    return out, np.concatenate(left) if left else rows


def _add_chunk(
    lists: Sequence[AnchorList], rows: np.ndarray, new_ids: np.ndarray, sims: np.ndarray, bars: np.ndarray,
    k: int, K: int, eps: float,
) -> tuple[list[tuple[int, AnchorList]], np.ndarray]:
    chunk = [lists[r] for r in rows]
    full = np.fromiter((lst.full for lst in chunk), bool, len(chunk))
    near = (np.abs(sims - bars[:, None]) < eps).any(axis=1)
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
        tied = over[m_sims[m_start[over] + b - 1] - m_sims[m_start[over] + b] < eps]
        for j in tied.tolist():  # ties among the store's own numbers (an image shared by 5 anchors) are settled
            a = int(m_start[j])
            cut[j] |= not _settled(m_sims[a : a + m_len[j]], m_ex[a : a + m_len[j]], b, eps)
    keep = np.minimum(m_len, K)
    hard = ~easy
    hard[idx[cut]] = True
    out: list[tuple[int, AnchorList]] = []
    for j in np.flatnonzero(~cut & (m_len > n_old)).tolist():  # rows where something entered
        a, end = int(m_start[j]), int(m_start[j] + keep[j])
        ex = m_ex[a:end]  # new entries are inexact, so "all exact" is rare: only when all were cut
        out.append((int(rows[idx[j]]), AnchorList(m_ids[a:end], m_sims[a:end], False, None if ex.all() else ex)))
    return out, rows[hard]


def delete_in_bulk(
    lists: Sequence[AnchorList], rows: np.ndarray, gone: np.ndarray, k: int, K: int, eps: float = EPS,
) -> tuple[list[tuple[int, AnchorList]], np.ndarray]:
    """``update_list`` for deleted anchors, many rows at a time: (row, new list) for the rows it
    settles, and the rows left to the one-row path (too few entries left: a search; a cut at k or K
    within EPS that the store's own numbers do not settle)."""
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
            if any(n > b and r_sims[b - 1] - r_sims[b] < eps and not _settled(r_sims, r_ex, b, eps) for b in (k, K)):
                hard[j] = True
                continue
            out.append((int(chunk[j]), AnchorList(ids[a : a + n], r_sims, lst.full, None if r_ex.all() else r_ex)))
        left.append(chunk[hard])
    return out, np.concatenate(left) if left else rows


def replace_sims(ids: np.ndarray, sims: np.ndarray, ex_ids: np.ndarray, ex_sims: np.ndarray) -> np.ndarray:
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


