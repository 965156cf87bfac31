"""Galleries: named collections of images or texts, searchable by relative vectors.

A gallery item is a candidate (set key ``gallery:NAME``) holding its embedding, its relative vector
and a payload with its reference ``ref`` plus the user's fields. A query of either modality is
ranked against it by the sparse dot product of relative vectors: text -> image, image -> text, and
also image -> image or text -> text, since every relative vector lives in the same anchor space.

The anchors themselves form a gallery on request ("anchors"): a text query searches the anchor
images, an image query the anchor captions, each anchor ranked by the relative vector of its own
stored embedding. Computing those on the fly would cost one top-k search per anchor per query, so
they are indexed once (as galleries ``anchors:image`` / ``anchors:text``) on first use. They are as
large as the anchor set, so an anchor update leaves them out and records the change; their next
search applies it (``catch_up``: the incremental refresh on their items, one search per new
anchor). User galleries are kept exact by the incremental refresh (refresh.py) like label sets; a
gallery marked ``stale`` is recomputed from its stored embeddings before its next search. Either
way a search equals the dense computation against the current anchors.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from asif_vdb import refresh
from asif_vdb.config import GallerySetInfo
from asif_vdb.errors import InputError, NotFoundError
from asif_vdb.index import ANCHORS, CANDIDATES, VISIBLE, AsifIndex, Modality
from asif_vdb.results import SearchHit
from asif_vdb.store.base import Filter

ANCHORS_GALLERY = "anchors"
REFRESH_BATCH = 512
#: Similarities held at once while an anchors gallery catches up (items x new anchors, float64).
CATCH_UP_CELLS = 50_000_000
MODALITIES = ("image", "text")


def set_key(name: str) -> str:
    return f"gallery:{name}"


def anchors_gallery_name(modality: Modality) -> str:
    """The stored gallery that holds the anchors' ``modality`` side."""
    return f"{ANCHORS_GALLERY}:{modality}"


def is_anchors_gallery(name: str) -> bool:
    return name == ANCHORS_GALLERY or name.startswith(f"{ANCHORS_GALLERY}:")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InputError("a gallery needs a non-empty name")
    if is_anchors_gallery(name):
        raise InputError(f"gallery name {name!r} is reserved for the anchors gallery; choose another name")
    return name


def check_modality(modality: str) -> Modality:
    if modality not in MODALITIES:
        raise InputError(f"modality must be 'image' or 'text', got {modality!r}")
    return modality  # type: ignore[return-value]


def query_modality(query: Any, modality: str | None = None) -> Modality:
    """What a query is: ``modality`` when given; else a str is an image if it names an existing
    file and a text otherwise; paths, PIL images, arrays and bytes are images."""
    if modality is not None:
        return check_modality(modality)
    if isinstance(query, str):
        return "image" if Path(query).is_file() else "text"
    if isinstance(query, (os.PathLike, bytes, np.ndarray)) or hasattr(query, "getpixel"):
        return "image"
    raise InputError(
        f"a query of type {type(query).__name__} is neither a text nor an image "
        "(give a str, a path, a PIL image, an array or encoded bytes)"
    )


def get(index: AsifIndex, name: str) -> GallerySetInfo:
    galleries = index.config.galleries
    if name not in galleries:
        known = ", ".join(sorted(g for g in galleries if not is_anchors_gallery(g))) or "none"
        raise NotFoundError(f"no gallery {name!r} in store {index.backend.location} (known: {known})")
    return galleries[name]


def add_items(
    index: AsifIndex, name: str, vectors: np.ndarray, modality: Modality, payloads: Sequence[dict[str, Any]],
) -> list[int]:
    """Append items to gallery ``name`` (created if new); returns their ids. Each payload must hold
    ``ref``. The ids are saved as allocated before anything is written, so they are never reused."""
    info = index.config.galleries.get(name)
    if info is not None and info.modality != modality:
        raise InputError(f"gallery {name!r} holds {info.modality}s; cannot add {modality}s to it")
    vecs = index.check_vectors(vectors, modality, f"gallery {name!r} items")
    if len(vecs) != len(payloads):
        raise InputError(f"gallery {name!r}: {len(vecs)} vectors but {len(payloads)} payloads")
    if info is None:
        info = GallerySetInfo(name=name, modality=modality)
        index.config.galleries[name] = info
    first = index.allocate_candidates(len(vecs))
    index.save()
    ids = list(range(first, first + len(vecs)))
    with refresh.lists_saved_once(index):
        for start in range(0, len(ids), REFRESH_BATCH):
            stop = start + REFRESH_BATCH
            index.put_candidates(set_key(name), ids[start:stop], vecs[start:stop], modality, payloads[start:stop])
    info.size = index.count_set(set_key(name))
    index.save()
    return ids


def delete_items(index: AsifIndex, name: str, ids: Sequence[int]) -> int:
    """Delete items of gallery ``name`` by id; ids of other sets or unknown ids are ignored."""
    info = get(index, name)
    if is_anchors_gallery(name):
        raise InputError("the anchors gallery follows the anchors: delete anchors instead")
    wanted = sorted({int(i) for i in ids})
    found = [p.id for p in index.backend.retrieve(CANDIDATES, wanted, with_payload=True)
             if p.payload.get("set") == set_key(name)]
    index.delete_candidates(found)
    info.size = index.count_set(set_key(name))
    index.save()
    return len(found)


def drop(index: AsifIndex, name: str) -> None:
    get(index, name)
    index.drop_set(set_key(name))
    del index.config.galleries[name]
    index.save()


def recompute(index: AsifIndex, info: GallerySetInfo) -> None:
    """Recompute every item's relative vector from its stored embedding (current anchors)."""
    key = set_key(info.name)
    ids = [p.id for batch in index.backend.scroll(CANDIDATES, Filter.where(set=key), with_payload=False)
           for p in batch]
    with refresh.lists_saved_once(index):
        for start in range(0, len(ids), REFRESH_BATCH):
            points = index.backend.retrieve(CANDIDATES, ids[start : start + REFRESH_BATCH], True, (info.modality,))
            vecs = np.stack([p.dense[info.modality] for p in points])
            payloads = [{k: v for k, v in p.payload.items() if k != "set"} for p in points]
            index.put_candidates(key, [p.id for p in points], vecs, info.modality, payloads)
    info.stale = False
    info.size = len(ids)
    index.save()


def build_anchors_gallery(index: AsifIndex, modality: Modality) -> GallerySetInfo:
    """Index the visible anchors' ``modality`` side as a gallery (one item per anchor pair)."""
    name = anchors_gallery_name(modality)
    if name in index.config.galleries:
        index.drop_set(set_key(name))
        del index.config.galleries[name]
    with refresh.lists_saved_once(index):
        for batch in index.backend.scroll(ANCHORS[modality], VISIBLE, with_payload=True, vectors=("v",)):
            vecs = np.stack([p.dense["v"] for p in batch])
            payloads = [anchor_item_payload(p.id, p.payload, modality) for p in batch]
            add_items(index, name, vecs, modality, payloads)
    if name not in index.config.galleries:  # no anchors: an empty gallery, still recorded
        index.config.galleries[name] = GallerySetInfo(name=name, modality=modality)
        index.save()
    return index.config.galleries[name]


def catch_up(index: AsifIndex, info: GallerySetInfo) -> None:
    """Apply to an anchors gallery the anchor changes it is behind: the items of deleted anchors
    go, the other items' lists take the changes in (the incremental refresh, on this gallery
    alone), and each new anchor becomes an item (one search each). Every step can run again after a
    crash: the changes stay recorded until the end."""
    key, modality = set_key(info.name), info.modality
    added, deleted = set(info.behind_added), set(info.behind_deleted)
    if len(added) > info.size // 4:  # one search per new anchor, and a merge for every item:
        build_anchors_gallery(index, modality)  # building anew costs less
        return
    with refresh.lists_saved_once(index):
        delete_anchor_items(index, info, sorted(deleted))
        # Merging holds an items x new anchors matrix of similarities: a bounded one at a time (a
        # list that already holds an anchor takes it again unchanged, so the chunks compose).
        chunk = max(1, CATCH_UP_CELLS // max(info.size, 1))
        ordered = sorted(added)
        refresh.apply(index, added=ordered[:chunk], deleted=sorted(deleted), only=key)
        for start in range(chunk, len(ordered), chunk):
            refresh.apply(index, added=ordered[start : start + chunk], only=key)
        present = {int(p.payload["anchor"]) for batch in index.backend.scroll(
            CANDIDATES, Filter.where(set=key, anchor=sorted(added)), with_payload=["anchor"]) for p in batch} \
            if added else set()
        new = sorted(added - deleted - present)
        for start in range(0, len(new), REFRESH_BATCH):
            points = [p for p in index.backend.retrieve(ANCHORS[modality], new[start : start + REFRESH_BATCH],
                                                        True, ("v",)) if p.payload.get("ok") == 1]
            if points:
                add_items(index, info.name, np.stack([p.dense["v"] for p in points]), modality,
                          [anchor_item_payload(p.id, p.payload, modality) for p in points])
    info.behind_added, info.behind_deleted = [], []
    info.size = index.count_set(key)
    index.save()


def delete_anchor_items(index: AsifIndex, info: GallerySetInfo, anchors: Sequence[int]) -> None:
    """Delete the items of these anchors from an anchors gallery."""
    if not len(anchors):
        return
    where = Filter.where(set=set_key(info.name), anchor=[int(a) for a in anchors])
    ids = [p.id for batch in index.backend.scroll(CANDIDATES, where, with_payload=False) for p in batch]
    if ids:
        index.delete_candidates(ids, set_key(info.name))
        info.size = index.count_set(set_key(info.name))


def anchor_item_payload(anchor_id: int, payload: dict[str, Any], modality: Modality) -> dict[str, Any]:
    keep = {k: v for k, v in payload.items() if k not in ("ok", "hash", "set", "tf")}
    ref = keep.get("image", "") if modality == "image" else keep.get("caption", "")
    return {**keep, "ref": ref, "anchor": int(anchor_id)}


def resolve(index: AsifIndex, gallery: str, query_modality: Modality) -> GallerySetInfo:
    """The stored gallery a search runs on, brought up to date with the anchors first.

    ``"anchors"`` means the other modality's side of the anchors (anchor images for a text query,
    anchor captions for an image query); ``"anchors:image"`` / ``"anchors:text"`` name a side."""
    if gallery == ANCHORS_GALLERY:
        gallery = anchors_gallery_name("image" if query_modality == "text" else "text")
    if is_anchors_gallery(gallery):
        side = gallery.split(":", 1)[1]
        name = anchors_gallery_name(check_modality(side))
        if name not in index.config.galleries:
            return build_anchors_gallery(index, side)  # type: ignore[arg-type]
        info = index.config.galleries[name]
        if info.behind_added or info.behind_deleted:
            catch_up(index, info)
        return index.config.galleries[name]
    info = get(index, gallery)
    if info.stale:
        recompute(index, info)
    return info


def rank(index: AsifIndex, info: GallerySetInfo, queries: sp.csr_matrix, top: int) -> list[list[SearchHit]]:
    """The ``top`` items of a gallery for each query relative vector, best first (zero scores left out)."""
    if not isinstance(top, (int, np.integer)) or top < 1:
        raise InputError(f"top must be a positive integer, got {top!r}")
    if info.normalise == "hub":  # issue 4B: hub-normalised scores (methods_index.py)
        from asif_vdb.methods_index import rank_gallery

        return rank_gallery(index, info, queries, top)
    hits = index.rank_candidates(queries, set_key(info.name), int(top), with_payload=True)
    anchors = is_anchors_gallery(info.name)
    out = []
    for h in hits:
        row = []
        for item_id, score, payload in zip(h.ids, h.scores, h.payloads or []):
            payload = {k: v for k, v in payload.items() if k != "set"}
            if anchors:  # report the anchor pair's id, not the internal item id
                item_id = payload.pop("anchor")
            row.append(SearchHit(int(item_id), float(score), payload))
        out.append(row)
    return out
