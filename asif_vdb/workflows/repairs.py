"""The repairs of ``asif doctor`` that could lose data, and the rules that keep them from doing so.

A lost config is restored from its previous version, kept beside it. A journal entry that cannot be
carried out is reported and dropped only on request (the checks that follow repair what it left). A
lone anchor half is rebuilt from its surviving twin's payload (the caption encoded again, the image
file read again) where it can be; deleting what cannot be rebuilt, or recording that gallery items
are lost, is refused when it is a mass deletion (``mass``) unless the caller forces it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from asif_vdb.engine.engine import Engine
from asif_vdb.engine.layout import ANCHORS, CANDIDATES, MODALITIES, VECTOR
from asif_vdb.errors import AsifError
from asif_vdb.features.session import Session
from asif_vdb.schema.results import Check
from asif_vdb.schema.store import GalleryInfo, Modality
from asif_vdb.store.base import Filter, PointData

#: A repair deletes at most this many anchor pairs (or gallery items) without ``force``...
MASS_COUNT = 100
#: ...and at most this share of them (a single one always may go).
MASS_SHARE = 0.1


def mass(n: int, total: int) -> bool:
    """Whether deleting ``n`` of ``total`` things is a mass deletion (refused without --force)."""
    return n > 1 and (n > MASS_COUNT or n > MASS_SHARE * max(total, 1))


# -- the config ----------------------------------------------------------------------------------
def config_check(session: Session, repair: bool) -> Check:
    """A store without a readable config: restored from the previous version kept beside it."""
    if session.config_problem is None:
        return Check(name="config", ok=True, detail="empty store (no config yet)")
    backup = session.backend.read_config_backup()
    if backup is None:
        return Check(name="config", ok=False, detail=f"{session.config_problem}, and no previous version is kept: "
                     "the store cannot be read (its encoders are unknown)")
    detail = f"{session.config_problem}; its previous version is kept beside it"
    if not repair:
        return Check(name="config", ok=False, detail=detail + ": --repair restores it")
    session.restore_config(backup)
    return Check(name="config", ok=False, detail=detail,
                 repaired="restored the previous version (the checks below repair what it did not record)")


# -- the journal ---------------------------------------------------------------------------------
def journal_check(engine: Engine, repair: bool, drop_journal: bool) -> Check:
    """Unfinished updates: carried out again; those that cannot be are dropped on request only."""
    config = engine.config
    if not config.journal and not config.blocked:
        return Check(name="journal", ok=True, detail="no unfinished update")
    failed: list[str] = [f"a {b.get('entry', {}).get('op', '?')} update that cannot be read ({b.get('error', '')})"
                         for b in config.blocked]
    if repair and config.journal:
        failed += engine.recover().failed
    if not config.journal and not config.blocked:
        return Check(name="journal", ok=False, detail="unfinished update(s)", repaired="carried out")
    if not failed:
        failed = [f"the {e.op} update" for e in config.journal]
    detail = f"{len(failed)} unfinished update(s) that cannot be carried out: {'; '.join(failed)}"
    if not (repair and drop_journal):
        return Check(name="journal", ok=False,
                     detail=detail + "; `asif doctor --repair --drop-journal` drops them (the checks that follow then "
                     "repair what they left)")
    config.journal.clear()
    config.blocked.clear()
    engine.state.save()
    return Check(name="journal", ok=False, detail=detail, repaired="dropped")


# -- anchor pairs --------------------------------------------------------------------------------
def _ids(engine: Engine, collection: str, where: Filter | None = None) -> set[int]:
    return {p.id for b in engine.state.backend.scroll(collection, where, with_payload=False) for p in b}


def pairs_check(session: Session, engine: Engine, repair: bool, force: bool) -> Check:
    """Every pair has both halves, is visible, and has an id below the config's counter."""
    sides = {m: _ids(engine, ANCHORS[m]) for m in MODALITIES}
    hidden = set().union(*(_ids(engine, n, Filter.where(ok=0)) for n in ANCHORS.values()))
    lone = sorted(sides["image"] ^ sides["text"])
    complete = len(sides["image"] & sides["text"])
    too_high = [i for i in sides["image"] | sides["text"] if i >= engine.config.next_anchor_id]
    if not lone and not hidden and not too_high:
        return Check(name="anchor pairs", ok=True, detail=f"{complete} complete pairs, all visible")
    detail = f"{complete} pairs; {len(lone)} lone half(s), {len(hidden)} hidden (ok=0), " \
             f"{len(too_high)} id(s) beyond the config's counter"
    if not repair:
        return Check(name="anchor pairs", ok=False, detail=detail)
    done = []
    if too_high:  # ids are allocated before they are written: a counter behind them would reuse them
        engine.config.next_anchor_id = max(too_high) + 1
        engine.state.save()
        done.append("advanced the id counter")
    recovered = engine.recover()  # hidden pairs: completed when whole, rolled back when not
    done.append(recovered.describe() or "no hidden pair left")
    sides = {m: _ids(engine, ANCHORS[m]) for m in MODALITIES}
    lone = sorted(sides["image"] ^ sides["text"])
    rebuilt, why = rebuild_halves(session, engine, sides, lone)
    if rebuilt:
        done.append(f"rebuilt {len(rebuilt)} lone half(s) from the other half's payload")
    left = sorted(set(lone) - set(rebuilt))
    if left and mass(len(left), len(sides["image"] | sides["text"])) and not force:
        return Check(name="anchor pairs", ok=False, detail=detail + f"; {len(left)} lone half(s) cannot be rebuilt "
                     f"({why}): deleting them is refused without --force",
                     repaired="")
    if left:
        engine.delete_pairs(left)
        done.append(f"deleted {len(left)} lone half(s)" + (f" that could not be rebuilt ({why})" if rebuilt or why else ""))
    return Check(name="anchor pairs", ok=False, detail=detail, repaired="; ".join(done))


def rebuild_halves(session: Session, engine: Engine, sides: dict[Modality, set[int]],
                   lone: list[int]) -> tuple[list[int], str]:
    """Write the missing half of each lone pair again from the surviving half's payload: its caption
    encoded, or its image file read and encoded (with the store's encoders). Returns (the ids
    rebuilt, why the others could not be)."""
    rebuilt: list[int] = []
    reasons: list[str] = []
    for missing in MODALITIES:
        other: Modality = "text" if missing == "image" else "image"
        ids = [i for i in lone if i in sides[other]]
        if not ids:
            continue
        points = engine.state.backend.retrieve(ANCHORS[other], ids, True)
        usable = [p for p in points if _source(p.payload, missing) is not None]
        if len(usable) < len(points):
            reasons.append(f"{len(points) - len(usable)} without a {'caption' if missing == 'text' else 'readable image file'}")
        if not usable:
            continue
        try:
            if missing == "text":
                vectors = session.encode_texts([str(_source(p.payload, missing)) for p in usable])
                kept = list(range(len(usable)))
            else:
                vectors, kept, errors = session.encode_images_skipping([_source(p.payload, missing) for p in usable])
                if errors:
                    reasons.append(f"{len(errors)} image(s) that cannot be decoded")
        except AsifError as e:  # the store's encoder is not available here
            reasons.append(f"the {missing} encoder: {' '.join(str(e).split())[:200]}")
            continue
        chosen = [usable[k] for k in kept]
        _write_half(engine, missing, chosen, np.asarray(vectors, np.float32))
        rebuilt += [p.id for p in chosen]
    if rebuilt:
        engine.anchors.commit(rebuilt)
    return sorted(rebuilt), "; ".join(reasons)


def _source(payload: dict[str, Any], missing: Modality) -> str | None:
    """What the missing half is encoded from: the caption, or the image file (when it exists)."""
    if missing == "text":
        caption = payload.get("caption")
        return caption if isinstance(caption, str) and caption.strip() else None
    image = payload.get("image")
    return image if isinstance(image, str) and image and Path(image).is_file() else None


def _write_half(engine: Engine, modality: Modality, points: list[PointData], vectors: np.ndarray) -> None:
    """One side of existing pairs written again, hidden until committed (as ``AnchorStore.write`` does),
    through the store's transform."""
    stored = engine.space.embed(vectors, modality)
    engine.state.backend.upsert(ANCHORS[modality], [
        PointData(p.id, {**p.payload, "ok": 0}, {VECTOR: v}) for p, v in zip(points, stored)])


# -- candidates of sets the config does not name ---------------------------------------------------
def orphans_check(engine: Engine, orphans: dict[str, int], repair: bool, force: bool) -> Check:
    """A gallery's items the config lost are registered as that gallery again; other candidates of an
    unknown set (a label set's prompts, which only its classes and templates explain) are deleted."""
    detail = ", ".join(f"{k or '(no set)'}: {n}" for k, n in sorted(orphans.items()))
    if not repair:
        return Check(name="candidates of unknown sets", ok=False, detail=detail)
    done = []
    for key, n in sorted(orphans.items()):
        name = key.removeprefix("gallery:")
        modality = _items_modality(engine, key) if key.startswith("gallery:") else None
        if modality is not None:
            engine.config.galleries[name] = GalleryInfo(name=name, modality=modality, size=n)
            engine.state.save()
            done.append(f"registered gallery {name} again ({n} items)")
        elif mass(n, n) and key.startswith("gallery:") and not force:
            done.append(f"kept {key} (deleting {n} items needs --force)")
        else:
            engine.candidates.drop_set(key)
            done.append(f"deleted {key}")
    return Check(name="candidates of unknown sets", ok=False, detail=detail, repaired="; ".join(done))


def _items_modality(engine: Engine, key: str) -> Modality | None:
    """The modality of a set's items (the embedding they hold), None when they hold none."""
    for batch in engine.state.backend.scroll(CANDIDATES, Filter.where(set=key), False, MODALITIES, batch=1):
        for m in MODALITIES:
            if m in batch[0].dense:
                return m
        return None
    return None
