"""``asif doctor``: check a store's invariants and repair what can be repaired, saying what was done.

Invariants: the config is present; no anchor update is left unfinished; every anchor pair has both
halves and is visible; every label set and gallery holds the number of items its config says, and
no candidate belongs to an unknown set; every stored relative vector equals its recomputation
against the current anchors (within 1e-5) and every candidate's anchor list (refresh.py) is valid.

Opening a store already completes or rolls back a journaled update (crash recovery); the report
starts with what that did. Everything else is only checked unless ``repair`` is set.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from asif_vdb import labels as label_sets
from asif_vdb import refresh
from asif_vdb.index import ANCHORS, CANDIDATES, AsifIndex
from asif_vdb.store.base import Filter


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    repaired: str = ""

    @property
    def healthy(self) -> bool:
        return self.ok or bool(self.repaired)

    def line(self) -> str:
        state = "ok" if self.ok else ("REPAIRED" if self.repaired else "PROBLEM")
        return f"[{state}] {self.name}: {self.detail}" + (f" -> {self.repaired}" if self.repaired else "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run(client: Any, *, repair: bool = False, sample: int | None = None, tol: float = 1e-5,
        seed: int = 0) -> list[Check]:
    """All checks, in order; with ``repair`` each problem found is fixed where possible."""
    index: AsifIndex | None = client._index
    backend = client.backend
    if index is None:
        exists = any(backend.has_collection(n) for n in (*ANCHORS.values(), CANDIDATES))
        return [Check("config", not exists, "collections exist but the config document is missing: the store "
                      "cannot be read (its encoders are unknown)" if exists else "empty store (no config yet)")]
    checks = [Check("config", True, f"present (schema {index.config.schema_version}, k={index.config.params.k}, "
                    f"p={index.config.params.p})")]
    opened = getattr(client, "last_repair", None) or {}
    did = {k: v for k, v in opened.items() if v}
    checks.append(Check("recovery on open", not did, "nothing to recover" if not did else
                        "an interrupted update was found", _describe(did) if did else ""))
    checks.append(_journal(index, repair))
    checks.append(_pairs(index, repair))
    checks.extend(_sets(client, index, repair))
    checks.append(_derived(index, repair))
    checks.append(_fresh(index, repair, sample, tol, seed))
    return checks


def _describe(did: dict[str, Any]) -> str:
    parts = []
    for key, what in (("completed", "completed {} pair(s)"), ("rolled_back", "rolled back {} half-written pair(s)"),
                      ("deleted", "finished deleting {} pair(s)"), ("refreshed", "refreshed {} candidate(s)"),
                      ("searched", "searched {} candidate(s) missing their relative vector or state again"),
                      ("transform_finished", "finished refitting the transform of {} modality(ies)")):
        value = did.get(key)
        if value:
            parts.append(what.format(len(value) if isinstance(value, list) else value))
    return "; ".join(parts)


def _journal(index: AsifIndex, repair: bool) -> Check:
    if not index.config.journal:
        return Check("journal", True, "no unfinished anchor update")
    detail = f"{len(index.config.journal)} unfinished anchor update(s)"
    return Check("journal", False, detail, _describe(refresh.recover(index)) or "cleared" if repair else "")


def _ids(index: AsifIndex, collection: str, where: Filter | None = None) -> set[int]:
    return {p.id for b in index.backend.scroll(collection, where, with_payload=False) for p in b}


def _pairs(index: AsifIndex, repair: bool) -> Check:
    sides = {m: _ids(index, n) for m, n in ANCHORS.items()}
    hidden = set().union(*(_ids(index, n, Filter.where(ok=0)) for n in ANCHORS.values()))
    lone = sorted(sides["image"] ^ sides["text"])
    complete = len(sides["image"] & sides["text"])
    too_high = [i for i in sides["image"] | sides["text"] if i >= index.config.next_anchor_id]
    if not lone and not hidden and not too_high:
        return Check("anchor pairs", True, f"{complete} complete pairs, all visible")
    detail = f"{complete} pairs; {len(lone)} lone half(s), {len(hidden)} hidden (ok=0), " \
             f"{len(too_high)} id(s) beyond the config's counter"
    if not repair:
        return Check("anchor pairs", False, detail)
    done = refresh.recover(index)  # hidden pairs: completed when whole, rolled back when not
    with refresh.updating(index):
        for name in ANCHORS.values():
            index.backend.delete(name, lone)
        refresh.apply(index, deleted=lone)
    if too_high:
        index.config.next_anchor_id = max(too_high) + 1
        index.save()
    return Check("anchor pairs", False, detail, f"{_describe(done) or 'no hidden pair left'}; deleted "
                 f"{len(lone)} lone half(s)" + ("; advanced the id counter" if too_high else ""))


def _sets(client: Any, index: AsifIndex, repair: bool) -> list[Check]:
    out = []
    counts: dict[str, int] = {}
    for batch in index.backend.scroll(CANDIDATES, None, with_payload=["set"]):
        for p in batch:
            key = str(p.payload.get("set", ""))
            counts[key] = counts.get(key, 0) + 1
    known = set()
    for name, info in list(index.config.label_sets.items()):
        key = label_sets.set_key(name)
        known.add(key)
        have = counts.get(key, 0)
        if have == info.n_candidates:
            out.append(Check(f"label set {name}", True, f"{have} prompts ({len(info.classes)} classes x "
                             f"{len(info.templates)} templates)"))
            continue
        detail = f"{have} prompts stored, the config says {info.n_candidates}"
        fixed = ""
        if repair:  # encodes the prompts again (loads the text encoder); keeps a calibrated threshold
            threshold = info.threshold
            new = client.create_label_set(name, info.classes, info.templates, aggregate=info.aggregate)
            new.threshold = threshold
            index.save()
            fixed = f"rebuilt ({new.n_candidates} prompts)"
        out.append(Check(f"label set {name}", False, detail, fixed))
    for name, info in list(index.config.galleries.items()):
        key = f"gallery:{name}"
        known.add(key)
        have = counts.get(key, 0)
        problems, fixes = [], []
        if have != info.size:
            problems.append(f"{have} items stored, the config says {info.size}")
            if repair:
                info.size = have
                fixes.append("recorded the stored size")
        if getattr(info, "stale", False):
            problems.append("marked stale")
            if repair:
                from asif_vdb import gallery

                gallery.recompute(index, info)
                fixes.append("recomputed")
        if fixes:
            index.save()
        out.append(Check(f"gallery {name}", not problems, "; ".join(problems) or f"{have} {info.modality} items",
                         ", ".join(fixes)))
    orphans = {k: n for k, n in counts.items() if k not in known}
    if orphans:
        detail = ", ".join(f"{k or '(no set)'}: {n}" for k, n in sorted(orphans.items()))
        fixed = ""
        if repair:
            for key in orphans:
                index.drop_set(key) if key else None
            fixed = "deleted"
        out.append(Check("candidates of unknown sets", False, detail, fixed))
    else:
        out.append(Check("candidates of unknown sets", True, "none"))
    return out


def _derived(index: AsifIndex, repair: bool) -> Check:
    """Every candidate has its relative vector, and its saved anchor list belongs to that vector
    (same write generation); otherwise the next update searches it again (slow, still exact)."""
    n_cand = index.backend.count(CANDIDATES)
    missing, unsaved = refresh.derived_status(index)
    if not missing and not unsaved:
        return Check("derived vectors", True, f"{n_cand} candidate(s), each with its relative vector and saved list")
    detail = f"{missing} candidate(s) without a relative vector, {unsaved} without a saved list of the same write"
    if not repair:
        return Check("derived vectors", False, detail)
    index._refresh_cache = None  # type: ignore[attr-defined]
    with refresh.updating(index):
        refresh.check_derived(index)
        refresh.load(index)
        refresh.save_lists(index)
    return Check("derived vectors", False, detail, "searched those candidates again and saved their lists")


def _fresh(index: AsifIndex, repair: bool, sample: int | None, tol: float, seed: int) -> Check:
    """Recompute relative vectors (one top-K search each) and compare with what is stored."""
    k, p = index.config.params.k, index.config.params.p
    stale: dict[str, list[int]] = {"image": [], "text": []}
    vecs_of: dict[int, np.ndarray] = {}
    lists_of: dict[int, refresh.AnchorList] = {}
    checked = 0
    worst = 0.0
    behind = {f"gallery:{name}" for name, info in index.config.galleries.items()
              if info.behind_added or info.behind_deleted}  # brought up to date at their next search
    for m in refresh.MODALITIES:
        points = [pt for pt in refresh.stored(index, m) if pt[2] not in behind]
        if sample is not None and len(points) > sample:
            rng = np.random.default_rng(seed)
            points = [points[i] for i in sorted(rng.choice(len(points), sample, replace=False))]
        if not points:
            continue
        vecs = np.stack([pt[1] for pt in points])
        truth = refresh.search_lists(index, vecs, m)
        want = refresh.rel_matrix(truth, k, p, index.n_coords).tocsr()
        for row, (pt, true) in enumerate(zip(points, truth)):
            pid, _, _, rel, lst = pt
            idx, vals = rel if rel is not None else (np.zeros(0, np.int64), np.zeros(0, np.float32))
            diff = np.zeros(want.shape[1], np.float64)
            lo, hi = want.indptr[row], want.indptr[row + 1]
            diff[want.indices[lo:hi]] = want.data[lo:hi]
            diff[np.asarray(idx, np.int64)] -= np.asarray(vals, np.float64)
            err = float(np.abs(diff).max(initial=0.0))
            worst = max(worst, err)
            if rel is None or err > tol or not _list_ok(lst, true, k):
                stale[m].append(pid)
                vecs_of[pid] = vecs[row]
                lists_of[pid] = true
        checked += len(points)
    bad = stale["image"] + stale["text"]
    scope = f"{checked} candidate(s) checked" + (f" (a sample of {sample} per modality)" if sample else "")
    if behind:
        scope += f"; {', '.join(sorted(k.removeprefix('gallery:') for k in behind))} catch up at the next search"
    if not bad:
        return Check("fresh", True, f"{scope}; largest difference from a recomputation {worst:.1e}")
    detail = f"{scope}; {len(bad)} stale (largest difference {worst:.2g})"
    if not repair:
        return Check("fresh", False, detail)
    index._refresh_cache = None  # type: ignore[attr-defined]
    refresh.write(index, bad, [lists_of[i] for i in bad])
    refresh.save_lists(index, np.asarray(bad, np.int64), [lists_of[i] for i in bad])
    return Check("fresh", False, detail, f"rewrote {len(bad)} candidate(s) from a recomputation")


def _list_ok(lst: refresh.AnchorList | None, true: refresh.AnchorList, k: int) -> bool:
    """A stored list is valid when it is a prefix of the true ranking (up to near ties), long enough,
    and complete only if nothing is missing."""
    if lst is None:
        return False
    if len(lst) < min(k, len(true)) and not lst.full:
        return False
    n = min(len(lst), len(true))
    if len(lst) > len(true) or (lst.full and len(lst) != len(true)):
        return False
    if np.array_equal(lst.ids[:n], true.ids[:n]):
        return True
    if set(lst.ids[:n].tolist()) != set(true.ids[:n].tolist()):  # a different set: not a mere reordering
        return n < len(true) and float(true.sims[n - 1] - true.sims[n]) < refresh.EPS
    return True
