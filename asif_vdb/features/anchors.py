"""Anchor pairs as users give them: images and captions (encoded here) or precomputed embeddings.

Every input is checked before anything is encoded or written, so a bad one rejects the whole call
and names itself. A pair's content key (``hash``) de-duplicates: a pair already stored keeps its id.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from asif_vdb.encoders.images import ImageInput, image_digest, image_reference
from asif_vdb.encoders.st_text import check_captions
from asif_vdb.engine.layout import RESERVED_PAYLOAD_KEYS
from asif_vdb.errors import InputError
from asif_vdb.features.session import Session
from asif_vdb.schema.results import RefreshReport

#: Anchor ids are point ids: unsigned 64-bit integers in the engine.
MAX_ID = 2**63 - 1


def pair_hash(image_digest_hex: str, caption: str) -> str:
    """The content key of a pair: its image's bytes (or pixels) digest and its stripped caption."""
    return hashlib.sha256(f"{image_digest_hex}\n{caption.strip()}".encode()).hexdigest()


def check_payload(payload: Any, where: str, allowed: frozenset[str] = frozenset()) -> dict[str, Any]:
    """A user payload: a dict with string keys, none reserved by the engine (but ``allowed``), whose
    values a vector database can store (JSON: no NaN, no bytes, no objects)."""
    if not isinstance(payload, dict):
        raise InputError(f"{where}: a payload is a dict, got {type(payload).__name__}")
    bad = sorted(str(k) for k in payload if not isinstance(k, str))
    if bad:
        raise InputError(f"{where}: payload keys must be strings, got {bad[:3]}")
    reserved = sorted((RESERVED_PAYLOAD_KEYS - allowed) & set(payload))
    if reserved:
        raise InputError(f"{where}: payload keys {reserved} are reserved by asif-vdb")
    for key, value in payload.items():
        _check_value(value, f"{where}: payload {key!r}")
    return dict(payload)


def _check_value(value: Any, where: str) -> None:
    if value is None or isinstance(value, (bool, int, str)):
        if isinstance(value, str):
            _check_text(value, where)
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InputError(f"{where}: {value} is not a finite number")
        return
    if isinstance(value, (list, tuple)):
        for v in value:
            _check_value(v, where)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise InputError(f"{where}: nested keys must be strings")
            _check_value(v, where)
        return
    raise InputError(f"{where}: a {type(value).__name__} cannot be stored (use strings, numbers, lists, dicts)")


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(f"{where}: not valid text ({e.reason} at position {e.start})") from e


def add_anchors(session: Session, images: Sequence[ImageInput], captions: Sequence[str],
                payloads: Sequence[dict[str, Any]] | None = None, *, source: str = "",
                progress: bool = False) -> tuple[list[int], RefreshReport]:
    """Encode image-caption pairs and add them; returns each pair's anchor id and what the refresh did."""
    if len(images) != len(captions):
        raise InputError(f"add_anchors: {len(images)} images but {len(captions)} captions")
    captions = check_captions(captions)
    for i, caption in enumerate(captions):
        _check_text(caption, f"caption #{i}")
    extras = list(payloads) if payloads is not None else [{} for _ in images]
    if len(extras) != len(images):
        raise InputError(f"add_anchors: {len(extras)} payloads for {len(images)} pairs")
    full = []
    for i, (image, caption, extra) in enumerate(zip(images, captions, extras)):
        extra = check_payload(extra, f"pair #{i}")
        full.append({"image": image_reference(image), "source": source, **extra, "caption": caption,
                     "hash": pair_hash(image_digest(image), caption)})
    if not full:
        return [], RefreshReport()
    image_vectors = session.encode_images(images, progress=progress)
    text_vectors = session.encode_texts(captions, progress=progress)
    ids, _, report = session.writable().add_pairs(image_vectors, text_vectors, full)
    return ids, report


def add_anchor_embeddings(session: Session, image_vectors: np.ndarray, text_vectors: np.ndarray,
                          payloads: Sequence[dict[str, Any]]) -> tuple[list[int], RefreshReport]:
    """Add pairs from precomputed embeddings (the store's encoders'). Each payload needs ``caption``
    (a non-empty string); ``hash`` (the content key) defaults to a hash of the two vectors."""
    img = _matrix(image_vectors, "image vectors")
    txt = _matrix(text_vectors, "caption vectors")
    if not len(img) == len(txt) == len(payloads):
        raise InputError(f"anchors: {len(img)} image vectors, {len(txt)} caption vectors and "
                         f"{len(payloads)} payloads differ")
    checked = []
    first_of: dict[str, int] = {}
    for i, payload in enumerate(payloads):
        p = check_payload(payload, f"pair #{i}", allowed=frozenset({"hash"}))
        caption = p.get("caption")
        if not isinstance(caption, str) or not caption.strip():
            raise InputError(f"pair #{i}: the payload needs a non-empty caption string, got {caption!r}")
        if "hash" not in p:
            h = hashlib.sha256(img[i].tobytes())
            h.update(txt[i].tobytes())
            p["hash"] = h.hexdigest()
        elif not isinstance(p["hash"], str) or not p["hash"]:
            raise InputError(f"pair #{i}: hash must be a non-empty string, got {p['hash']!r}")
        j = first_of.setdefault(p["hash"], i)
        if j != i and not (np.array_equal(img[i], img[j]) and np.array_equal(txt[i], txt[j])
                           and payloads[j].get("caption") == caption):
            raise InputError(f"pairs #{j} and #{i} have the same hash {p['hash'][:16]} but different contents")
        checked.append(p)
    if not checked:
        return [], RefreshReport()
    ids, _, report = session.writable().add_pairs(img, txt, checked)
    return ids, report


def _matrix(vectors: Any, what: str) -> np.ndarray:
    """A 2-D float32 matrix of real numbers (the engine checks dimensions and norms)."""
    arr = np.asarray(vectors)
    if arr.dtype.kind not in "fiu":
        raise InputError(f"{what}: expected real numbers, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise InputError(f"{what}: expected a 2-D array (one row per pair), got shape {arr.shape}")
    return arr.astype(np.float32)


def check_ids(ids: Any, what: str = "anchor ids") -> list[int]:
    """Ids as given by a user: integers in [0, 2**63), never a float, a bool or a string."""
    if isinstance(ids, (str, bytes)) or not hasattr(ids, "__iter__"):
        raise InputError(f"{what}: expected a list of integers, got {type(ids).__name__}")
    out = []
    for i in ids:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise InputError(f"{what}: {i!r} is not an integer id")
        if not 0 <= int(i) <= MAX_ID:
            raise InputError(f"{what}: {int(i)} is out of range (ids are 0 .. 2**63-1)")
        out.append(int(i))
    return out


def delete_anchors(session: Session, ids: Any) -> tuple[int, RefreshReport | None]:
    """Delete pairs by id; returns how many existed and what the refresh did."""
    wanted = check_ids(ids)
    if session.engine is None or not wanted:
        return 0, None
    removed, report = session.engine.delete_pairs(wanted)
    return len(removed), report


def ids_where(session: Session, conditions: dict[str, Any]) -> list[int]:
    """Ids of the stored pairs whose payload matches every condition (a value or a list of values)."""
    if not conditions:
        raise InputError("give at least one payload condition, e.g. source='NAME'")
    for key, value in conditions.items():
        values = value if isinstance(value, list) else [value]
        if not values or any(isinstance(v, bool) or not isinstance(v, (str, int)) for v in values):
            raise InputError(f"condition {key}={value!r}: a value is a string, an integer or a list of them")
    return session.engine.anchors.ids_where(**conditions) if session.engine else []


def visible_ids(session: Session) -> list[int]:
    return session.engine.anchors.visible_ids().tolist() if session.engine else []


def count(session: Session) -> int:
    return session.engine.anchors.count() if session.engine else 0


def payloads(session: Session, ids: Any) -> dict[int, dict[str, Any]]:
    return session.engine.anchors.payloads(check_ids(ids)) if session.engine else {}


def stored_pairs(session: Session, hashes: Sequence[str]) -> dict[str, int]:
    return session.engine.anchors.existing_hashes(list(hashes)) if session.engine else {}
