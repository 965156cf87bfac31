"""The methods of methods.py on a store: fitted transforms kept with the data, hub statistics.

Transforms. ``set_transforms`` fits each modality's transform on the visible anchors, stores its
arrays in the ``transform`` collection (one point per matrix row, one for the mean, in the slot the
config does not use) and its record in the config, rewrites every anchor vector and recomputes
every candidate, as a journaled update that a crash leaves to be finished on open. From then on the
transform is fixed: anchors added later are transformed with it (it is not refitted behind the
user's back); calling ``set_transforms`` again refits it explicitly. ``install`` puts the
TransformedBackend view in front of the index's backend when a store is opened.

Hub statistics. A label set (or gallery) with ``normalise="hub"`` keeps, per candidate, the mean and
spread of its scores against a reference sample of anchors of the query modality (images for a
label set), computed through the store like any query.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from asif_vdb import methods, relative
from asif_vdb.config import TransformInfo
from asif_vdb.errors import InputError, StoreError
from asif_vdb.store.base import CollectionSpec, Filter, PointData
from asif_vdb.store.transformed import TransformedBackend

if TYPE_CHECKING:
    from asif_vdb.index import AsifIndex, Modality

TRANSFORM = "transform"
#: Point id of row 0 of each modality's matrix in the transform collection; the mean follows the rows.
BASE = {"image": 0, "text": 1 << 20}
#: Offset of slot 1's rows from slot 0's (a refit writes the slot the config does not use).
SLOT = 1 << 18
BATCH = 512
MODALITIES = ("image", "text")
#: Anchor payload field: the refit (journal entry ``gen``) whose transform the point's vector is under.
MARK = "tf"


# -- transforms ---------------------------------------------------------------------------------------
def install(index: AsifIndex) -> None:
    """Load the store's transforms (if any) and put the transforming view in front of its backend."""
    from asif_vdb.index import ANCHORS

    raw = getattr(index, "raw_backend", index.backend)
    index.raw_backend = raw  # type: ignore[attr-defined]
    loaded = {m: load(index, m, info) for m, info in index.config.transforms.items()}
    index.transforms = loaded  # type: ignore[attr-defined]
    index.backend = TransformedBackend(raw, {ANCHORS[m]: t for m, t in loaded.items()}) if loaded else raw


def embed(index: AsifIndex, vectors: np.ndarray, modality: Modality) -> np.ndarray:
    """Vectors as the anchor search sees them: transformed when the store has a transform."""
    t = getattr(index, "transforms", {}).get(modality)
    return vectors if t is None else t.apply(vectors)


def _spec(index: AsifIndex) -> CollectionSpec:
    return CollectionSpec(TRANSFORM, dense={m: index.dims[m] for m in MODALITIES})


def _first_row(modality: str, slot: int) -> int:
    return BASE[modality] + slot * SLOT


def load(index: AsifIndex, modality: Modality, info: TransformInfo) -> methods.Transform:
    raw = index.raw_backend  # type: ignore[attr-defined]
    d = index.dims[modality]
    if not raw.has_collection(TRANSFORM):
        raise StoreError(f"store {raw.location} records a {modality} transform but has no transform collection")
    raw.ensure_collection(_spec(index))
    first = _first_row(modality, info.slot)
    ids = list(range(first, first + d + 1))
    got = {p.id: p.dense[modality] for p in raw.retrieve(TRANSFORM, ids, False, (modality,)) if modality in p.dense}
    if len(got) != d + 1:
        raise StoreError(f"store {raw.location}: the {modality} transform is incomplete ({len(got)} of {d + 1} rows)")
    matrix = np.stack([got[first + i] for i in range(d)]).astype(np.float64)
    t = methods.Transform(info.power, np.asarray(got[first + d], np.float64), matrix)
    if t.checksum() != info.checksum:
        raise StoreError(f"store {raw.location}: the stored {modality} transform does not match its record")
    return t


def _as32(t: methods.Transform) -> methods.Transform:
    """The transform exactly as it reads back from the store (float32 arrays)."""
    return methods.Transform(t.power, t.mean.astype(np.float32).astype(np.float64),
                             t.matrix.astype(np.float32).astype(np.float64))


def save_transform(index: AsifIndex, modality: Modality, t: methods.Transform, slot: int = 0) -> None:
    """Write a transform's rows into `slot` (its record goes in the config, by the caller)."""
    raw = index.raw_backend  # type: ignore[attr-defined]
    raw.ensure_collection(_spec(index))
    d = index.dims[modality]
    if d + 1 > SLOT:
        raise InputError(f"a {modality} transform of dimension {d} does not fit the store's transform rows")
    first = _first_row(modality, slot)
    rows = [*t.matrix, t.mean]
    points = [PointData(first + i, payload={"modality": modality, "row": i},
                        dense={modality: np.asarray(r, np.float32)}) for i, r in enumerate(rows)]
    for start in range(0, d + 1, BATCH):
        raw.upsert(TRANSFORM, points[start : start + BATCH])


def _visible_anchors(index: AsifIndex, modality: Modality) -> tuple[list[int], np.ndarray]:
    from asif_vdb.index import ANCHORS, VISIBLE

    ids: list[int] = []
    vecs: list[np.ndarray] = []
    for batch in index.backend.scroll(ANCHORS[modality], VISIBLE, with_payload=False, vectors=("v",)):
        ids.extend(p.id for p in batch)
        vecs.extend(p.dense["v"] for p in batch)
    return ids, (np.stack(vecs).astype(np.float32) if vecs else np.zeros((0, index.dims[modality]), np.float32))


def set_transforms(index: AsifIndex, options: dict[str, dict[str, Any] | None]) -> dict[str, TransformInfo]:
    """Fit (or remove, with None) the transform of each modality named in ``options`` on the
    visible anchors, rewrite the anchors and recompute every candidate. Returns the records.

    Journaled like an anchor update, and always carried forward (``finish_transforms``, also run by
    ``refresh.recover`` on open): the new arrays go to the slot the config does not use, every
    anchor is rewritten with a mark of this refit in the same point write (so a crash leaves each
    anchor under a known transform), then the config switches and the candidates are recomputed."""
    from asif_vdb import refresh

    if index.config.journal:
        raise StoreError(f"store {index.backend.location} has an unfinished anchor update: repair it first")
    unknown = set(options) - set(MODALITIES)
    if unknown:
        raise InputError(f"transforms are for 'image' and 'text', not {sorted(unknown)}")
    new: dict[str, dict[str, Any] | None] = {}
    fitted: dict[str, methods.Transform] = {}
    for m, opts in options.items():
        if opts is None:
            new[m] = None
            continue
        info = TransformInfo(**{k: v for k, v in opts.items() if k in ("power", "centre", "whiten")})
        extra = set(opts) - {"power", "centre", "whiten"}
        if extra:
            raise InputError(f"unknown transform options {sorted(extra)} (known: power, centre, whiten)")
        ids, vecs = _visible_anchors(index, m)  # raw, read through the current view
        if len(ids) < 2:
            raise InputError(f"fitting the {m} transform needs at least 2 anchors; the store has {len(ids)}")
        fitted[m] = t = _as32(methods.fit_transform(vecs, info.power, info.centre, info.whiten))
        flat = [ids[i] for i in np.flatnonzero(np.linalg.norm(t.project(vecs), axis=1) < methods.ZERO_NORM)]
        if flat:  # checked before anything is written: the journaled rewrite must be able to finish
            raise InputError(f"the fitted {m} transform maps anchor(s) {flat[:5]} to zero (they equal the "
                             "anchors' mean): delete them or fit without centring")
        current = index.config.transforms.get(m)
        slot = 1 - current.slot if current is not None else 0
        new[m] = info.model_copy(update={"anchors": len(ids), "checksum": t.checksum(), "slot": slot}).model_dump()
    for m, t in fitted.items():
        save_transform(index, m, t, int(new[m]["slot"]))  # type: ignore[index]
    entry = {"op": "transform", "gen": time.time_ns(), "phase": "anchors", "new": new}
    with refresh.updating(index):
        refresh.journal_begin(index, entry)
        try:
            finish_transforms(index, entry)
        except BaseException:
            refresh.journal_abort(index)
            raise
    return dict(index.config.transforms)


def finish_transforms(index: AsifIndex, entry: dict[str, Any]) -> None:
    """Carry a journaled refit to its end: anchors not yet marked with its ``gen`` are rewritten
    under the new transform, the config switches to it, every candidate is recomputed."""
    from asif_vdb import refresh

    new = {m: TransformInfo(**r) if r is not None else None for m, r in entry["new"].items()}
    if entry["phase"] == "anchors":
        for m, info in new.items():
            after = load(index, m, info) if info is not None else None  # type: ignore[arg-type]
            _rewrite_anchors(index, m, index.transforms.get(m), after, int(entry["gen"]))  # type: ignore[attr-defined, arg-type]
        for m, info in new.items():
            if info is not None:
                index.config.transforms[m] = info
            else:
                index.config.transforms.pop(m, None)
        entry["phase"] = "candidates"
        index.save()
        install(index)
    recompute_candidates(index)
    refresh.journal_end(index, entry)


def _rewrite_anchors(index: AsifIndex, modality: Modality, before: methods.Transform | None,
                     after: methods.Transform | None, gen: int) -> None:
    """Every anchor of `modality` (visible or not) not marked `gen`: its stored vector taken back to
    the raw embedding and written under `after`, with the mark, in one point write."""
    from asif_vdb.index import ANCHORS

    raw = index.raw_backend  # type: ignore[attr-defined]
    name = ANCHORS[modality]
    for batch in raw.scroll(name, None, with_payload=True, vectors=("v",), batch=BATCH):
        todo = [p for p in batch if p.payload.get(MARK) != gen]
        if not todo:
            continue
        vecs = np.stack([p.dense["v"] for p in todo])
        vecs = before.invert(vecs) if before is not None else vecs
        vecs = after.apply(vecs) if after is not None else vecs
        raw.upsert(name, [PointData(p.id, payload={**p.payload, MARK: gen}, dense={"v": v})
                          for p, v in zip(todo, vecs)])


def recompute_candidates(index: AsifIndex) -> None:
    """Every stored candidate's relative vector again from its stored embedding (after the anchor
    space changed as a whole); the anchors' own galleries are dropped and rebuild on next use."""
    from asif_vdb import refresh
    from asif_vdb.index import CANDIDATES

    groups: dict[tuple[str, str], tuple[list[int], list[np.ndarray], list[dict[str, Any]]]] = {}
    for batch in index.backend.scroll(CANDIDATES, None, with_payload=True, vectors=MODALITIES):
        for p in batch:
            m = next((v for v in MODALITIES if v in p.dense), None)
            if m is None:
                continue
            ids, vecs, payloads = groups.setdefault((str(p.payload.get("set", "")), m), ([], [], []))
            ids.append(p.id)
            vecs.append(p.dense[m])
            payloads.append({k: v for k, v in p.payload.items() if k != "set"})
    for key, _ in groups:
        if key.startswith("gallery:anchors:"):
            index.drop_set(key)
            index.config.galleries.pop(key.split(":", 1)[1], None)
    with refresh.lists_saved_once(index, every_candidate=True):
        for (key, m), (ids, vecs, payloads) in groups.items():
            if key.startswith("gallery:anchors:"):
                continue
            for start in range(0, len(ids), BATCH):
                sl = slice(start, start + BATCH)
                index.put_candidates(key, ids[sl], np.stack(vecs[sl]), m, payloads[sl])  # type: ignore[arg-type]
    refresh_hub_statistics(index)
    index.save()


# -- hub statistics -------------------------------------------------------------------------------------
def reference_relatives(index: AsifIndex, modality: Modality) -> sp.csr_matrix:
    """Relative vectors of the reference sample: up to HUB_REFERENCE visible anchors of ``modality``,
    evenly spaced by id, each queried through the store like any embedding."""
    from asif_vdb.index import ANCHORS

    ids = methods.reference_sample(np.asarray(index.anchor_ids_where(ok=1), np.int64))
    if not len(ids):
        raise InputError("hub normalisation needs anchors: the store has none")
    points = {p.id: p.dense["v"] for p in index.backend.retrieve(ANCHORS[modality], [int(i) for i in ids], False, ("v",))}
    vecs = np.stack([points[int(i)] for i in ids if int(i) in points])
    return index.relative(vecs, modality)


def candidate_statistics(index: AsifIndex, rel: sp.csr_matrix, query_modality: Modality,
                         reference: sp.csr_matrix | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of each candidate's score (rows of ``rel``) over the reference queries."""
    ref = reference_relatives(index, query_modality) if reference is None else reference
    return methods.hub_statistics(relative.scores(ref, rel))


def label_set_statistics(index: AsifIndex, info: Any, reference: sp.csr_matrix | None = None) -> None:
    """Fill ``info.hub_mean`` / ``info.hub_std`` from the set's stored prompt relative vectors."""
    ids = list(range(info.first_id, info.first_id + info.n_candidates))
    rels = index.candidate_relatives(ids)
    missing = [i for i in ids if i not in rels]
    if missing:
        raise StoreError(f"label set {info.name!r}: {len(missing)} prompts are missing from the store")
    rel = relative.from_pairs([rels[i] for i in ids], index.n_coords)
    mean, std = candidate_statistics(index, rel, "image", reference)
    info.hub_mean, info.hub_std = [float(x) for x in mean], [float(x) for x in std]


def refresh_hub_statistics(index: AsifIndex) -> None:
    """Recompute the statistics of every hub-normalised label set and gallery (after the anchors
    changed, since both the reference queries and the candidates' relative vectors moved)."""
    sets = [i for i in index.config.label_sets.values() if i.normalise == "hub"]
    galleries = [g for g in index.config.galleries.values() if g.normalise == "hub"]
    if not (sets or galleries) or index.anchor_count() == 0:
        return
    references: dict[str, sp.csr_matrix] = {}

    def ref(modality: Modality) -> sp.csr_matrix:
        if modality not in references:
            references[modality] = reference_relatives(index, modality)
        return references[modality]

    for info in sets:
        label_set_statistics(index, info, ref("image"))
    for g in galleries:
        if g.stale:  # its relative vectors are recomputed first, or the statistics would be stale
            from asif_vdb import gallery

            gallery.recompute(index, g)
        other: Modality = "text" if g.modality == "image" else "image"
        gallery_statistics(index, g.name, other, ref(other))
    index.save()


def after_anchor_change(index: AsifIndex, report: Any) -> None:
    """Hook run by the client after anchors were added or deleted and candidates refreshed."""
    if report is not None and getattr(report, "candidates", 0) > 0:
        refresh_hub_statistics(index)


def normalise_prompt_scores(per_prompt: np.ndarray, info: Any) -> np.ndarray:
    """Hub-normalised (n_queries, n_candidates) prompt scores of a label set (unchanged if "none").
    A query that shares no anchor with any prompt keeps all-zero scores, so it is still "unknown"."""
    if getattr(info, "normalise", "none") != "hub":
        return per_prompt
    if info.hub_mean is None or info.hub_std is None or len(info.hub_mean) != per_prompt.shape[1]:
        raise StoreError(f"label set {info.name!r} is hub-normalised but has no statistics: rebuild it")
    return methods.hub_normalise_rows(per_prompt, np.asarray(info.hub_mean), np.asarray(info.hub_std))


def gallery_statistics(index: AsifIndex, name: str, query_modality: Modality,
                       reference: sp.csr_matrix | None = None) -> int:
    """Store each item's (mean, std) in its payload (``hub``); returns how many items."""
    from asif_vdb.index import CANDIDATES

    key = f"gallery:{name}"
    ids = [p.id for batch in index.backend.scroll(CANDIDATES, Filter.where(set=key), with_payload=False) for p in batch]
    if not ids:
        return 0
    ref = reference_relatives(index, query_modality) if reference is None else reference
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        rels = index.candidate_relatives(chunk)
        rel = relative.from_pairs([rels[i] for i in chunk], index.n_coords)
        mean, std = candidate_statistics(index, rel, query_modality, ref)
        for i, mu, sd in zip(chunk, mean, std):
            index.backend.set_payload(CANDIDATES, [int(i)], {"hub": [float(mu), float(sd)]})
    return len(ids)


def hub_rerank(scores: Sequence[float], payloads: Sequence[dict[str, Any]]) -> np.ndarray:
    """Hub-normalised scores of gallery hits from their payload statistics."""
    stats = np.asarray([p.get("hub", [0.0, 1.0]) for p in payloads], np.float64).reshape(-1, 2)
    return methods.hub_normalise(np.asarray(scores, np.float64)[None, :], stats[:, 0], stats[:, 1])[0]


def rank_gallery(index: AsifIndex, info: Any, queries: sp.csr_matrix, top: int) -> list[list[Any]]:
    """``gallery.rank`` for a hub-normalised gallery: every item's score (zero where a query shares
    no anchor with it) normalised by its stored statistics, best first. Exact: the items' stored
    relative vectors are read once per call and scored against all the call's queries together."""
    from asif_vdb.index import CANDIDATES
    from asif_vdb.results import SearchHit

    key = f"gallery:{info.name}"

    def read() -> list[PointData]:
        points = [p for batch in index.backend.scroll(CANDIDATES, Filter.where(set=key), with_payload=True)
                  for p in batch]
        rels = index.candidate_relatives([p.id for p in points])
        for p in points:
            if p.id in rels:
                p.sparse["rel"] = rels[p.id]
        return points

    items = read()
    if not items:
        return [[] for _ in range(queries.shape[0])]
    if any("hub" not in p.payload for p in items):
        other: Modality = "text" if info.modality == "image" else "image"
        gallery_statistics(index, info.name, other)
        items = read()
    stats = np.asarray([p.payload["hub"] for p in items], np.float64)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.float32))
    rel = relative.from_pairs([p.sparse.get("rel", empty) for p in items], queries.shape[1])
    raw = relative.scores(queries, rel)
    z = methods.hub_normalise_rows(raw, stats[:, 0], stats[:, 1])
    out = []
    for r in range(queries.shape[0]):
        if not raw[r].any():  # no anchor in common with any item: nothing to rank
            out.append([])
            continue
        order = np.argsort(-z[r], kind="stable")[: int(top)]
        out.append([SearchHit(int(items[j].id), float(z[r, j]),
                              {k: v for k, v in items[j].payload.items() if k not in ("set", "hub")})
                    for j in order])
    return out


def set_gallery_normalise(index: AsifIndex, name: str, normalise: str) -> Any:
    """Turn hub normalisation of a user gallery on (computing its statistics) or off."""
    from asif_vdb import gallery

    if normalise not in ("none", "hub"):
        raise InputError(f"normalise must be 'none' or 'hub', got {normalise!r}")
    if gallery.is_anchors_gallery(name):
        raise InputError("the anchors gallery cannot be hub-normalised; index the items as a gallery of your own")
    info = gallery.get(index, name)
    if info.stale:
        gallery.recompute(index, info)
    info.normalise = normalise  # type: ignore[assignment]
    if normalise == "hub":
        other: Modality = "text" if info.modality == "image" else "image"
        gallery_statistics(index, name, other)
    index.save()
    return info
