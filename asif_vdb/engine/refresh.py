"""The incremental refresh: after anchors are added or deleted, every stored candidate is brought
up to date by merging the change into its anchor list (maths/anchor_lists.py) instead of searching
again, and only the candidates whose list changed are written.

It is idempotent: applying the same change twice is harmless, which is what lets recovery re-run
an interrupted refresh. The anchors galleries are left out (they catch up at their next search,
engine/anchor_galleries.py) unless ``only`` names one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from asif_vdb.engine.anchors import AnchorStore
from asif_vdb.engine.derived import DerivedVectors, gc_paused
from asif_vdb.engine.layout import MODALITIES
from asif_vdb.engine.list_cache import Cache, Group, ListCache, lazy_keys
from asif_vdb.engine.state import StoreState
from asif_vdb.maths.anchor_lists import (
    EMPTY_IDS,
    EMPTY_SIMS,
    AnchorList,
    add_in_bulk,
    delete_in_bulk,
    depth,
    replace_sims,
    sort_entries,
    update_list,
)
from asif_vdb.schema.results import RefreshReport
from asif_vdb.schema.store import Modality

#: Added anchors' (ids, raw unit vectors) per modality, when the caller has them at hand.
AddedVectors = dict[Modality, tuple[np.ndarray, np.ndarray]]


class Refresher:
    """Keeps the stored candidates exact as anchors change."""

    def __init__(self, state: StoreState, anchors: AnchorStore, lists: ListCache, derived: DerivedVectors) -> None:
        self.state = state
        self.anchors = anchors
        self.lists = lists
        self.derived = derived

    def apply(self, added: Sequence[int] = (), deleted: Sequence[int] = (), vectors: AddedVectors | None = None,
              only: str | None = None) -> RefreshReport:
        """Bring the stored candidates up to date after anchors ``added`` (now visible) and ``deleted``
        (now gone), assuming they were exact before: every candidate but the anchors galleries', or
        (``only``, a set key) that set alone."""
        with gc_paused():
            return self._apply(added, deleted, vectors, only)

    def _apply(self, added: Sequence[int], deleted: Sequence[int], vectors: AddedVectors | None,
               only: str | None) -> RefreshReport:
        report = RefreshReport()
        deleted_arr = np.unique(np.asarray(list(deleted), np.int64))
        added = sorted({int(i) for i in added} - set(deleted_arr.tolist()))
        if not added and not len(deleted_arr):
            return report
        t = time.perf_counter()
        skip = lazy_keys(self.state.config)
        cache = self.lists.load(include={only} if only is not None else None)
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
            if not added:
                new_ids, new_vecs = EMPTY_IDS, np.zeros((0, part.dense.shape[1]), np.float32)
            elif vectors and modality in vectors:
                new_ids, new_vecs = vectors[modality]
            else:
                new_ids, new_vecs = self.anchors.vectors(added, modality)
            for row, lst in self._update_group(part, deleted_arr, np.asarray(new_ids, np.int64), new_vecs, report):
                row = row if rows is None else int(rows[row])
                group.lists[row] = lst
                changed_ids.append(int(group.ids[row]))
                changed_lists.append(lst)
                changed_sets.append(group.sets[row])
        report.rewritten = len(changed_ids)
        tuning = self.state.tuning
        if not cache.absent and tuning.swap_min <= cache.count \
                and tuning.swap_share * cache.count <= len(changed_ids) < cache.count:
            _add_unchanged(cache, changed_ids, changed_lists, changed_sets)  # then the write switches generation
        t = time.perf_counter()
        compact_s = self.derived.write(changed_ids, changed_lists, changed_sets)
        t = report.timed("write", t)
        if changed_ids:
            self.lists.save_soon()
        report.timed("save_lists", t)
        if compact_s is not None:  # inside "write"; shown apart since only one update in several pays it
            report.seconds["compact"] = round(compact_s, 4)
        return report

    def _update_group(self, group: Group, deleted: np.ndarray, new_ids: np.ndarray, new_vecs: np.ndarray,
                      report: RefreshReport) -> list[tuple[int, AnchorList]]:
        """(row, new list) for every candidate of one modality whose list changes."""
        k, eps = self.state.config.params.stored_k, self.state.tuning.eps
        K = depth(k)
        t = time.perf_counter()
        lists = group.lists
        embed = self.anchors.space.embed  # similarities as the anchor search sees them
        sims = embed(group.dense, group.modality).astype(np.float64) \
            @ embed(new_vecs, group.modality).astype(np.float64).T if len(new_ids) else None
        touched = np.zeros(len(lists), bool)
        bars = np.asarray([0.0 if lst.full or not len(lst) else lst.sims[-1] for lst in lists])
        if sims is not None:
            touched |= (sims > (bars - eps)[:, None]).any(axis=1)
        gone = None
        if len(deleted):
            lengths = np.asarray([len(lst) for lst in lists])
            flat = np.concatenate([lst.ids for lst in lists]) if lengths.sum() else EMPTY_IDS
            gone = np.zeros(max(int(flat.max(initial=-1)), int(deleted.max()), self.state.n_coords) + 1, bool)
            gone[deleted] = True
            ends = np.cumsum(lengths)  # the row of each hit, without an 8M-entry row index
            touched[np.searchsorted(ends, np.flatnonzero(gone[flat]), side="right")] = True
        out: list[tuple[int, AnchorList]] = []
        research: list[int] = []
        pending: list[tuple[int, np.ndarray]] = []
        slow = np.flatnonzero(touched)
        if gone is None and sims is not None:  # additions only: most rows merge in bulk
            merged, slow = add_in_bulk(lists, slow, new_ids, sims, bars, k, K, eps)
            out.extend(merged)
        elif gone is not None and sims is None:  # deletions only: likewise
            merged, slow = delete_in_bulk(lists, slow, gone, k, K, eps)
            out.extend(merged)
        for row in slow.tolist():
            lst = lists[row]
            new, involved = update_list(lst, gone, new_ids, sims[row] if sims is not None else EMPTY_SIMS, k, K,
                                        eps=eps)
            if involved is not None:
                pending.append((row, involved))
            elif new is None:
                research.append(row)
            elif not new.same(lst):
                out.append((row, new))
        t = report.timed("merge", t)
        if pending:  # near ties: settle them with the store's own similarities, all in one round trip
            report.resolved += len(pending)
            rows = [r for r, _ in pending]
            exact = self.anchors.exact_sims(group.dense[rows], group.modality, [inv for _, inv in pending])
            for (row, _), (ex_ids, ex_sims) in zip(pending, exact):
                lst = lists[row]
                ex = lst.exact_mask() | np.isin(lst.ids, ex_ids)
                b_ids, b_sims, b_ex = sort_entries(lst.ids, replace_sims(lst.ids, lst.sims, ex_ids, ex_sims), ex)
                base = AnchorList(b_ids, b_sims, lst.full, b_ex)
                row_sims = replace_sims(new_ids, sims[row], ex_ids, ex_sims) if sims is not None else EMPTY_SIMS
                new, _ = update_list(base, gone, new_ids, row_sims, k, K, check=False,
                                     new_exact=np.isin(new_ids, ex_ids), eps=eps)
                if new is None:
                    research.append(row)
                elif not new.same(lst) or not np.array_equal(new.sims, lst.sims):
                    out.append((row, new))
        t = report.timed("resolve", t)
        if research:
            report.searched += len(research)
            out.extend(zip(research, self.lists.search_lists(group.dense[research], group.modality)))
        report.timed("search", t)
        return out


def _add_unchanged(cache: Cache, ids: list[int], lists: list[AnchorList], sets: list[str]) -> None:
    """Append every candidate not in ``ids`` (with its list and set key), in place."""
    have = set(ids)
    for group in cache.groups.values():
        for row, cid in enumerate(group.ids.tolist()):
            if cid not in have:
                ids.append(cid)
                lists.append(group.lists[row])
                sets.append(group.sets[row])
