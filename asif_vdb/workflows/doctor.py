"""``asif doctor``: check a store's invariants and repair what can be repaired, saying what was done.

Invariants: the config is present; no update is left unfinished; every anchor pair has both halves
and is visible; every label set and gallery holds the number of items its config says, and no
candidate belongs to an unknown set; every stored relative vector equals its recomputation against
the current anchors (within 1e-5) and every candidate's anchor list is valid.

Opening a store already completes or rolls back a journaled update (crash recovery); the report
starts with what that did. Everything else is only checked unless ``repair`` is set.
"""

from __future__ import annotations

import numpy as np

from asif_vdb.engine import integrity
from asif_vdb.engine.engine import Engine
from asif_vdb.engine.layout import CANDIDATES, MODALITIES, gallery_key, labels_key
from asif_vdb.features import label_sets
from asif_vdb.features.session import Session
from asif_vdb.maths.anchor_lists import AnchorList, rel_matrix
from asif_vdb.schema.results import Check
from asif_vdb.workflows import repairs


def run(session: Session, *, repair: bool = False, sample: int | None = None, tol: float = 1e-5,
        seed: int = 0, force: bool = False, drop_journal: bool = False) -> list[Check]:
    """All checks, in order; with ``repair`` each problem found is fixed where possible. A repair
    never deletes many anchor pairs or gallery items (see ``mass``) unless ``force`` is set, and drops
    journal entries that cannot be carried out only with ``drop_journal``."""
    restored = None
    if session.engine is None:
        check = repairs.config_check(session, repair)
        if session.engine is None or not check.repaired:
            return [check]
        restored = check
    engine = session.engine
    assert engine is not None
    engine.state.damage = None  # what made queries refuse is checked (and repaired) below
    c = engine.config
    checks = [restored or Check(name="config", ok=True,
                                detail=f"present (schema {c.schema_version}, {c.params.describe()})")]
    did = session.recovery
    checks.append(Check(name="recovery on open", ok=not did.anything,
                        detail="nothing to recover" if not did.anything else "an interrupted update was found",
                        repaired=did.describe() if did.anything and not did.failed else ""))
    with engine.state.updating():  # doctor reads what queries refuse to (it reports it)
        checks.append(repairs.journal_check(engine, repair, drop_journal))
        checks.append(repairs.pairs_check(session, engine, repair, force))
        checks.extend(_sets(session, engine, repair, force))
        checks.append(_derived(engine, repair))
        checks.append(_fresh(engine, repair, sample, tol, seed))
    engine.state.damage = integrity.damage(engine.state)
    return checks


def _sets(session: Session, engine: Engine, repair: bool, force: bool) -> list[Check]:
    out = []
    counts = engine.candidates.set_counts()
    known = set()
    for name, info in list(engine.config.label_sets.items()):
        key = labels_key(info)
        known.add(key)
        have = counts.get(key, 0)
        if have == info.n_candidates:
            out.append(Check(name=f"label set {name}", ok=True, detail=f"{have} prompts ({len(info.classes)} classes x "
                             f"{len(info.templates)} templates)"))
            continue
        detail = f"{have} prompts stored, the config says {info.n_candidates}"
        fixed = ""
        if repair:  # encodes the prompts again (loads the text encoder); keeps the calibrated thresholds
            classes = info.classes if info.ids is None else dict(zip(info.ids, info.classes))
            new = label_sets.create(session, name, classes, info.templates, aggregate=info.aggregate,
                                    normalise=info.normalise)
            new.threshold, new.coverage_threshold = info.threshold, info.coverage_threshold
            engine.state.save()
            fixed = f"rebuilt ({new.n_candidates} prompts)"
        out.append(Check(name=f"label set {name}", ok=False, detail=detail, repaired=fixed))
    for name, ginfo in list(engine.config.galleries.items()):
        key = gallery_key(name)
        known.add(key)
        have = counts.get(key, 0)
        if have == ginfo.size:
            out.append(Check(name=f"gallery {name}", ok=True, detail=f"{have} {ginfo.modality} items"))
            continue
        detail, fixed, lost = f"{have} items stored, the config says {ginfo.size}", "", ginfo.size - have
        if repair:  # nothing is deleted: a loss (a damaged collection) is said, not hidden
            ginfo.size = have
            engine.state.save()
            fixed = "recorded the stored size" + (f" ({lost} item(s) the config counted are not stored: "
                                                  "add them again)" if lost > 0 else "")
        out.append(Check(name=f"gallery {name}", ok=False, detail=detail, repaired=fixed))
    orphans = {k: n for k, n in counts.items() if k not in known}
    if orphans:
        out.append(repairs.orphans_check(engine, orphans, repair, force))
    else:
        out.append(Check(name="candidates of unknown sets", ok=True, detail="none"))
    return out


def _derived(engine: Engine, repair: bool) -> Check:
    """Every candidate has its relative vector, and its saved anchor list belongs to that vector
    (same write generation); otherwise the next update searches it again (slow, still exact)."""
    n_cand = engine.state.backend.count(CANDIDATES)
    missing, unsaved = engine.lists.status()
    if not missing and not unsaved:
        return Check(name="derived vectors", ok=True,
                     detail=f"{n_cand} candidate(s), each with its relative vector and saved list")
    detail = f"{missing} candidate(s) without a relative vector, {unsaved} without a saved list of the same write"
    if not repair:
        return Check(name="derived vectors", ok=False, detail=detail)
    engine.lists.reset()
    with engine.state.updating():
        engine.lists.check_derived()
        engine.lists.load()
        engine.lists.save()
    return Check(name="derived vectors", ok=False, detail=detail, repaired="searched those candidates again and saved their lists")


def _fresh(engine: Engine, repair: bool, sample: int | None, tol: float, seed: int) -> Check:
    """Recompute relative vectors (one top-K search each) and compare with what is stored."""
    k, p = engine.config.params.stored_k, engine.config.params.p
    stale: list[int] = []
    lists_of: dict[int, AnchorList] = {}
    checked = 0
    worst = 0.0
    behind = {gallery_key(name) for name, info in engine.config.galleries.items()
              if info.behind_added or info.behind_deleted}  # brought up to date at their next search
    for m in MODALITIES:
        points = [pt for pt in engine.lists.stored(m) if pt[2] not in behind]
        if sample is not None and len(points) > sample:
            rng = np.random.default_rng(seed)
            points = [points[i] for i in sorted(rng.choice(len(points), sample, replace=False))]
        if not points:
            continue
        truth = engine.lists.search_lists(np.stack([pt[1] for pt in points]), m)
        want = rel_matrix(truth, k, p, engine.state.n_coords).tocsr()
        for row, (pt, true) in enumerate(zip(points, truth)):
            pid, _, _, rel, lst = pt
            idx, vals = rel if rel is not None else (np.zeros(0, np.int64), np.zeros(0, np.float32))
            diff = np.zeros(want.shape[1], np.float64)
            lo, hi = want.indptr[row], want.indptr[row + 1]
            diff[want.indices[lo:hi]] = want.data[lo:hi]
            diff[np.asarray(idx, np.int64)] -= np.asarray(vals, np.float64)
            err = float(np.abs(diff).max(initial=0.0))
            worst = max(worst, err)
            if rel is None or err > tol or not _list_ok(lst, true, k, engine.state.tuning.eps):
                stale.append(pid)
                lists_of[pid] = true
        checked += len(points)
    scope = f"{checked} candidate(s) checked" + (f" (a sample of {sample} per modality)" if sample else "")
    if behind:
        scope += f"; {', '.join(sorted(k.removeprefix('gallery:') for k in behind))} catch up at the next search"
    if not stale:
        return Check(name="fresh", ok=True, detail=f"{scope}; largest difference from a recomputation {worst:.1e}")
    detail = f"{scope}; {len(stale)} stale (largest difference {worst:.2g})"
    if not repair:
        return Check(name="fresh", ok=False, detail=detail)
    engine.lists.reset()
    engine.derived.write(stale, [lists_of[i] for i in stale])
    engine.lists.store.merge(None, stale, [lists_of[i] for i in stale])
    return Check(name="fresh", ok=False, detail=detail, repaired=f"rewrote {len(stale)} candidate(s) from a recomputation")


def _list_ok(lst: AnchorList | None, true: AnchorList, k: int, eps: float) -> bool:
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
        return n < len(true) and float(true.sims[n - 1] - true.sims[n]) < eps
    return True
