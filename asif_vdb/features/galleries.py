"""Galleries and search: a text ranks images and an image ranks texts (or its own kind).

Every relative vector lives in the same anchor space, so a query of either modality is ranked
against a gallery by the sparse dot product of relative vectors. ``gallery="anchors"`` searches the
anchors themselves: anchor images for a text, anchor captions for an image. A hub-normalised gallery
scores every item by its stored statistics (exact: the items' relative vectors are read once per call
and scored against all of the call's queries).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from asif_vdb.encoders.images import image_reference
from asif_vdb.encoders.st_text import check_captions
from asif_vdb.engine.engine import Engine
from asif_vdb.engine.hub import other_modality
from asif_vdb.engine.layout import ANCHORS_GALLERY, gallery_key, is_anchors_gallery
from asif_vdb.errors import InputError
from asif_vdb.features.anchors import check_payload
from asif_vdb.features.session import Session
from asif_vdb.maths import relative
from asif_vdb.maths.hub import hub_normalise_rows
from asif_vdb.schema.results import SearchHit
from asif_vdb.schema.store import GalleryInfo, Modality


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InputError("a gallery needs a non-empty name")
    if is_anchors_gallery(name):
        raise InputError(f"gallery name {name!r} is reserved for the anchors gallery; choose another name")
    return name


def check_modality(modality: Any) -> Modality:
    if modality not in ("image", "text"):
        raise InputError(f"modality must be 'image' or 'text', got {modality!r}")
    return "image" if modality == "image" else "text"


def query_modality(query: Any, modality: str | None = None) -> Modality:
    """What a query is: ``modality`` when given; else a str is an image if it names an existing
    file and a text otherwise; paths, PIL images, arrays and bytes are images."""
    if modality is not None:
        return check_modality(modality)
    if isinstance(query, str):
        return "image" if Path(query).is_file() else "text"
    if isinstance(query, (os.PathLike, bytes, np.ndarray)) or hasattr(query, "getpixel"):
        return "image"
    raise InputError(f"a query of type {type(query).__name__} is neither a text nor an image "
                     "(give a str, a path, a PIL image, an array or encoded bytes)")


def _payloads(name: str, payloads: Sequence[dict[str, Any]] | None, n: int) -> list[dict[str, Any]]:
    extras = list(payloads) if payloads is not None else [{} for _ in range(n)]
    if len(extras) != n:
        raise InputError(f"gallery {name!r}: {len(extras)} payloads for {n} items")
    return [check_payload(p, f"gallery {name!r} item #{i}") for i, p in enumerate(extras)]


def index_items(session: Session, name: str, images: Sequence[Any] | None = None, texts: Sequence[str] | None = None,
                payloads: Sequence[dict[str, Any]] | None = None, *, progress: bool = False) -> list[int]:
    """Encode images or texts (exactly one of the two) and add them to gallery ``name``."""
    check_name(name)
    if (images is None) == (texts is None):
        raise InputError(f"gallery {name!r}: give images or texts (exactly one of the two)")
    if images is not None:
        items: list[Any] = list(images)
        modality: Modality = "image"
        refs = [image_reference(im) for im in items]
    else:
        items = check_captions(list(texts or []))
        modality, refs = "text", list(items)
    extras = _payloads(name, payloads, len(items))
    if not items:
        return []
    vecs = session.encode_images(items, progress=progress) if modality == "image" \
        else session.encode_texts(items, progress=progress)
    return session.writable().galleries.add_items(name, vecs, modality, [{"ref": r, **e} for r, e in zip(refs, extras)])


def index_embeddings(session: Session, name: str, vectors: np.ndarray, modality: str,
                     payloads: Sequence[dict[str, Any]] | None = None) -> list[int]:
    """Add precomputed embeddings to gallery ``name``; ``ref`` comes from the payload (None when absent)."""
    check_name(name)
    kind = check_modality(modality)
    arr = np.asarray(vectors)
    if arr.ndim != 2:
        raise InputError(f"gallery {name!r}: expected a 2-D array of vectors, got shape {arr.shape}")
    extras = _payloads(name, payloads, len(arr))
    return session.writable().galleries.add_items(name, arr, kind, [{"ref": None, **e} for e in extras])


def resolve(engine: Engine, gallery: str, query_kind: Modality) -> GalleryInfo:
    """The stored gallery a search runs on, up to date with the anchors. ``"anchors"`` means the other
    modality's side of the anchors; ``"anchors:image"`` / ``"anchors:text"`` name a side."""
    if not isinstance(gallery, str):
        raise InputError(f"a gallery is named by a string, got {type(gallery).__name__}")
    if gallery == ANCHORS_GALLERY:
        return engine.galleries.anchors_gallery(other_modality(query_kind))
    if is_anchors_gallery(gallery):
        return engine.galleries.anchors_gallery(check_modality(gallery.split(":", 1)[1]))
    return engine.galleries.get(gallery)


def rank(engine: Engine, info: GalleryInfo, queries: sp.csr_matrix, top: int) -> list[list[SearchHit]]:
    """The ``top`` items of a gallery for each query relative vector, best first (zero scores left out)."""
    if not isinstance(top, (int, np.integer)) or isinstance(top, bool) or top < 1:
        raise InputError(f"top must be a positive integer, got {top!r}")
    if engine.config.hub_on(info.normalise):
        return _rank_hub(engine, info, queries, int(top))
    hits = engine.candidates.rank(queries, gallery_key(info.name), int(top), with_payload=True)
    anchors = is_anchors_gallery(info.name)
    out = []
    for h in hits:
        row = []
        for item_id, score, payload in zip(h.ids, h.scores, h.payloads or []):
            payload = {k: v for k, v in payload.items() if k != "set"}
            if anchors:  # report the anchor pair's id, not the internal item id
                item_id = payload.pop("anchor")
            row.append(SearchHit(id=int(item_id), score=float(score), payload=payload))
        out.append(row)
    return out


def _rank_hub(engine: Engine, info: GalleryInfo, queries: sp.csr_matrix, top: int) -> list[list[SearchHit]]:
    """Every item's score (zero where a query shares no anchor with it), normalised by its stored
    statistics, best first."""
    items = [p for batch in engine.candidates.points(gallery_key(info.name)) for p in batch]
    if not items:
        return [[] for _ in range(queries.shape[0])]
    if any("hub" not in p.payload for p in items):
        engine.hub.gallery(info)
        items = [p for batch in engine.candidates.points(gallery_key(info.name)) for p in batch]
    stats = np.asarray([p.payload["hub"] for p in items], np.float64)
    raw = relative.scores(queries, engine.candidates.relative_matrix([p.id for p in items]))
    z = hub_normalise_rows(raw, stats[:, 0], stats[:, 1])
    out: list[list[SearchHit]] = []
    for r in range(queries.shape[0]):
        if not raw[r].any():  # no anchor in common with any item: nothing to rank
            out.append([])
            continue
        order = np.argsort(-z[r], kind="stable")[:top]
        out.append([SearchHit(id=int(items[j].id), score=float(z[r, j]),
                              payload={k: v for k, v in items[j].payload.items() if k not in ("set", "hub")})
                    for j in order])
    return out


def search_embeddings(session: Session, vectors: np.ndarray, modality: str, gallery: str,
                      top: int = 10) -> list[list[SearchHit]]:
    """Rank a gallery for precomputed query embeddings of ``modality`` (the store's encoder's)."""
    engine = session.require()
    kind = check_modality(modality)
    info = resolve(engine, gallery, kind)
    return rank(engine, info, engine.anchors.relative(vectors, kind), top)


def search_many(session: Session, queries: Sequence[Any], gallery: str, top: int = 10, *,
                modality: str | None = None, progress: bool = False) -> list[list[SearchHit]]:
    """Rank a gallery for many queries (texts and images may be mixed); one result list per query."""
    items = list(queries)
    kinds = [query_modality(q, modality) for q in items]
    out: list[list[SearchHit]] = [[] for _ in items]
    for kind in ("text", "image"):
        rows = [i for i, k in enumerate(kinds) if k == kind]
        if not rows:
            continue
        chosen = [items[i] for i in rows]
        vecs = session.encode_texts(chosen, progress=progress) if kind == "text" \
            else session.encode_images(chosen, progress=progress)
        for i, hits in zip(rows, search_embeddings(session, vecs, kind, gallery, top)):
            out[i] = hits
    return out
