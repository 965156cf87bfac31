"""What the service does, apart from HTTP: every operation on the one open store, under the guard.

Routes run in worker threads (FastAPI runs plain ``def`` routes in a thread pool), so the event loop
never waits for an encoder or the engine. Encoding runs outside the store guard, one forward pass at
a time per encoder; the engine part of a request runs under the guard (serve/guard.py).
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import asif_vdb.serve.models as models
from asif_vdb import AsifClient, InputError, NotFoundError, load_image
from asif_vdb.engine.layout import gallery_key, is_anchors_gallery
from asif_vdb.errors import StoreError
from asif_vdb.features import explain, galleries
from asif_vdb.features.report import group_by_image
from asif_vdb.schema.results import Classification, Explanation, SearchHit
from asif_vdb.schema.store import GalleryInfo, LabelSetInfo, Modality
from asif_vdb.serve.guard import GuardedClient, StoreGuard
from asif_vdb.store.readonly import ReadOnlyEdgeBackend

#: Thumbnails kept in memory (about 10 KB each).
THUMBNAILS = 512
#: File name suffix of a kept upload, by the format its bytes are in.
SUFFIXES = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}


@dataclass
class Settings:
    """How the service runs. ``api_key``: needed by every request that changes the store (None: no
    key); ``uploads``: where uploaded anchor images are kept (an embedded store: its ``uploads``
    folder); ``cors``: origins allowed to call the API from another site's page (none by default)."""

    api_key: str | None = None
    max_upload_bytes: int = 32 << 20
    max_files: int = 512
    max_body_bytes: int = 512 << 20
    uploads: Path | None = None
    cors: tuple[str, ...] = ()
    thumbnail_sizes: tuple[int, ...] = (96, 160, 320)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Upload:
    """An uploaded file: its name as sent and its bytes."""

    name: str
    data: bytes


class Service:
    """The open store (an AsifClient the caller owns), its guard and the service's settings."""

    def __init__(self, client: AsifClient, settings: Settings | None = None, guard: StoreGuard | None = None) -> None:
        self.client = client
        self.settings = settings or Settings()
        self.guard = guard or StoreGuard()
        self.guarded = GuardedClient(client, self.guard)
        self._encode_locks = {"image": threading.Lock(), "text": threading.Lock()}
        self._thumbs: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
        self._thumbs_lock = threading.Lock()

    @property
    def read_only(self) -> bool:
        engine = self.client.engine
        return engine is not None and isinstance(engine.state.backend, ReadOnlyEdgeBackend)

    # -- encoding (outside the guard) ------------------------------------------------------------------
    def encode_images(self, uploads: Sequence[Upload]) -> np.ndarray:
        """Decode (with the decompression-bomb guard) and encode uploaded images; a bad one is an
        InputError naming it."""
        images = []
        for up in uploads:
            try:
                images.append(load_image(up.data))
            except InputError as e:
                raise InputError(f"{up.name}: {str(e).split(': ', 1)[-1]}") from None
        with self._encode_locks["image"]:
            return self.client.encode_images(images)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        with self._encode_locks["text"]:
            return self.client.encode_texts(list(texts))

    # -- reads --------------------------------------------------------------------------------------------
    def health(self) -> models.Health:
        with self.guard.reading() as version:
            return models.Health(status="ok", anchors=self.client.count(), updates=version, read_only=self.read_only)

    def info(self) -> dict[str, Any]:
        with self.guard.reading() as version:
            return {**self.client.info(), "updates": version}

    def encoders(self) -> models.Encoders:
        engine = self._engine()
        out = {m: models.EncoderOut(spec=engine.config.spec(m).model_dump(), identity=engine.config.encoder(m).model_dump())
               for m in ("image", "text")}
        return models.Encoders(image=out["image"], text=out["text"])

    def label_sets(self) -> list[LabelSetInfo]:
        with self.guard.reading():
            return [self.client.label_set(n) for n in self.client.label_sets()]

    def label_set(self, name: str) -> LabelSetInfo:
        with self.guard.reading():
            return self.client.label_set(name)

    def galleries(self) -> list[GalleryInfo]:
        with self.guard.reading():
            return [self.client.gallery(n) for n in self.client.galleries()]

    def classify(self, vectors: np.ndarray, labels: str, top: int, threshold: Any) -> tuple[int, list[Classification]]:
        with self.guard.reading() as version:
            return version, self.client.classify_embeddings(vectors, labels, top, threshold=_threshold(threshold))

    def search(self, vectors: np.ndarray, modality: Modality, gallery: str, top: int,
               where: dict[str, Any] | None = None) -> tuple[int, list[list[SearchHit]]]:
        """Rank a gallery for each query vector. A payload filter ranks every item of the gallery and
        keeps the first ``top`` that match (exact, at the cost of a full ranking)."""
        _check_where(where)
        with self._searching(gallery) as version:
            if not where:
                return version, self.client.search_embeddings(vectors, modality, gallery, top)
            size = self._size(gallery, modality)
            rows = self.client.search_embeddings(vectors, modality, gallery, max(size, top))
            return version, [[h for h in row if _matches(h.payload, where)][:top] for row in rows]

    def explain(self, vector: np.ndarray, modality: Modality, labels: str | None, gallery: str | None, *, top: int,
                anchors: int, neighbours: int, threshold: Any, reference: str) -> tuple[int, Explanation]:
        if (labels is None) == (gallery is None):
            raise InputError("give labels (explain classes) or gallery (explain search hits), not both")
        if labels is not None:
            if modality != "image":
                raise InputError("a label set explains images; give an image")
            with self.guard.reading() as version:
                return version, self.client.explain_embedding(vector, labels, top, anchors=anchors, neighbours=neighbours,
                                                              threshold=_threshold(threshold), reference=reference)
        assert gallery is not None
        with self._searching(gallery) as version:
            engine = self._engine()
            info = galleries.resolve(engine, gallery, modality)
            return version, explain.explain_gallery(engine, np.asarray(vector, np.float32).reshape(1, -1), modality, info,
                                                    top=top, anchors=anchors, neighbours=neighbours, reference=reference)

    def list_anchors(self, where: dict[str, Any] | None, offset: int, limit: int) -> models.AnchorList:
        _check_where(where)
        with self.guard.reading():
            ids = self.client.anchor_ids_where(**where) if where else self.client.anchor_ids()
            page = ids[offset : offset + limit]
            payloads = self.client.anchors(page) if page else {}
        pairs = [models.AnchorPair(id=i, caption=payloads.get(i, {}).get("caption"), source=payloads.get(i, {}).get("source"),
                                   payload=payloads.get(i, {})) for i in page]
        return models.AnchorList(count=len(ids), pairs=pairs)

    def anchor_ids(self, where: dict[str, Any] | None) -> list[int]:
        _check_where(where)
        with self.guard.reading():
            return self.client.anchor_ids_where(**where) if where else self.client.anchor_ids()

    def payloads(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        with self.guard.reading():
            return self.client.anchors(list(ids))

    def stored_pairs(self, hashes: Sequence[str]) -> dict[str, int]:
        with self.guard.reading():
            return self.client.stored_pairs(list(hashes))

    def thumbnail(self, gallery: str, item: int, size: int) -> bytes:
        """A JPEG thumbnail of an image the store references: an anchor's image (gallery ``anchors``)
        or an item of an image gallery. Nothing from the request but these two names and the id
        reaches the file system: the path comes from the store."""
        if size not in self.settings.thumbnail_sizes:
            raise InputError(f"size must be one of {list(self.settings.thumbnail_sizes)}, got {size}")
        path = self._image_path(gallery, item)
        st = path.stat()
        key = (str(path), st.st_mtime_ns, size)
        with self._thumbs_lock:
            if key in self._thumbs:
                self._thumbs.move_to_end(key)
                return self._thumbs[key]
        img = load_image(path).copy()
        img.thumbnail((size, size))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
        data = buf.getvalue()
        with self._thumbs_lock:
            self._thumbs[key] = data
            while len(self._thumbs) > THUMBNAILS:
                self._thumbs.popitem(last=False)
        return data

    def _image_path(self, gallery: str, item: int) -> Path:
        with self.guard.reading():
            if is_anchors_gallery(gallery):
                ref = self.client.anchors([item]).get(item, {}).get("image")
                what = f"anchor {item}"
            else:
                info = self.client.gallery(gallery)
                if info.modality != "image":
                    raise NotFoundError(f"gallery {gallery!r} holds texts: it has no thumbnails")
                points = [p for p in self._engine().candidates.read([item]) if p.payload.get("set") == gallery_key(gallery)]
                if not points:
                    raise NotFoundError(f"gallery {gallery!r} has no item {item}")
                ref = points[0].payload.get("ref")
                what = f"item {item} of gallery {gallery!r}"
        if not isinstance(ref, str) or not os.path.isabs(ref) or not os.path.isfile(ref):
            raise NotFoundError(f"{what} has no image file to show" + (f" ({ref} is not there)" if ref else ""))
        return Path(ref)

    # -- writes ---------------------------------------------------------------------------------------------
    def add_embeddings(self, image_vectors: np.ndarray, text_vectors: np.ndarray,
                       payloads: list[dict[str, Any]]) -> models.AnchorChange:
        start = time.perf_counter()
        with self.guard.writing():
            before = self.client.count()
            ids = self.client.add_anchor_embeddings(image_vectors, text_vectors, payloads)
            after = self.client.count()
        return models.AnchorChange(anchors_before=before, anchors_after=after, added=after - before,
                                   already_stored=len(ids) - (after - before), ids=ids,
                                   seconds=round(time.perf_counter() - start, 3))

    def delete(self, ids: list[int] | None, where: dict[str, Any] | None) -> models.AnchorChange:
        if (ids is None) == (not where):
            raise InputError("give ids or where (payload conditions such as {\"source\": \"NAME\"}), one of the two")
        _check_where(where)
        start = time.perf_counter()
        with self.guard.writing():
            before = self.client.count()
            targets = sorted(set(ids)) if ids is not None else self.client.anchor_ids_where(**(where or {}))
            removed = self.client.delete_anchors(targets) if targets else 0
            after = self.client.count()
        return models.AnchorChange(anchors_before=before, anchors_after=after, deleted=removed, matched=len(targets),
                                   ids=targets[:1000], seconds=round(time.perf_counter() - start, 3))

    def backup(self, out: str) -> dict[str, Any]:
        """A backup while queries go on: a backup reads the store, and updates wait for it. ``out``
        must be absolute: a relative path would depend on where the service was started."""
        if not os.path.isabs(out):
            raise InputError(f"backup folder {out!r}: give an absolute path on the service's machine")
        with self.guard.reading():
            return self.client.backup(out)

    def save_upload(self, up: Upload) -> Path:
        """Keep an uploaded anchor image (checked first) under the uploads folder, named by its
        content, and return its path: anchors refer to their image files by path."""
        folder = self.uploads_folder()
        try:
            load_image(up.data)
        except InputError as e:
            raise InputError(f"{up.name}: {str(e).split(': ', 1)[-1]}") from None
        with Image.open(io.BytesIO(up.data)) as img:
            suffix = SUFFIXES.get(str(img.format), ".img")
        path = folder / f"{hashlib.sha256(up.data).hexdigest()[:32]}{suffix}"
        if not path.exists():
            fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(up.data)
            os.replace(tmp, path)
        return path

    def uploads_folder(self) -> Path:
        folder = self.settings.uploads
        if folder is None:
            raise InputError("this service keeps no uploaded images: start it with --uploads DIR (a store on a "
                             "Qdrant server has no folder of its own)")
        if self.read_only:
            raise StoreError(f"store {self.client.location} is read-only: it cannot take new anchors")
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    # -- helpers ----------------------------------------------------------------------------------------------
    def _engine(self) -> Any:
        engine = self.client.engine
        if engine is None:
            raise NotFoundError(f"store {self.client.location} is empty: add anchors first")
        return engine

    def _searching(self, gallery: str) -> Any:
        """A search shares the store, except one that may write derived data first: the anchors
        galleries catch up with anchor changes at their search, and a hub-normalised gallery computes
        statistics it lacks."""
        if is_anchors_gallery(gallery):
            return self.guard.writing(change=False)
        engine = self.client.engine
        info = engine.config.galleries.get(gallery) if engine is not None else None
        if info is not None and info.normalise == "hub":
            return self.guard.writing(change=False)
        return self.guard.reading()

    def _size(self, gallery: str, modality: Modality) -> int:
        engine = self._engine()
        if is_anchors_gallery(gallery):
            return max(int(engine.anchors.count()), 1)
        return max(int(self.client.gallery(gallery).size), 1)


def _threshold(value: Any) -> Any:
    """The client's threshold argument from the API's: "stored", None ("none") or a number."""
    if value == "none" or value is None:
        return None
    if value == "stored":
        return "stored"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise InputError(f"threshold must be 'stored', 'none' or a number, got {value!r}")
    return float(value)


def _check_where(where: dict[str, Any] | None) -> None:
    for key, value in (where or {}).items():
        values = value if isinstance(value, list) else [value]
        if not key or not values or any(isinstance(v, bool) or not isinstance(v, (str, int)) for v in values):
            raise InputError(f"condition {key}={value!r}: a value is a string, an integer or a list of them")


def _matches(payload: dict[str, Any], where: dict[str, Any]) -> bool:
    for key, value in where.items():
        have = payload.get(key)
        if isinstance(value, list):
            if have not in value:
                return False
        elif have != value:
            return False
    return True


def groups(explanation: Explanation) -> tuple[list[list[models.ImageGroupOut]], list[models.NeighbourGroupOut]]:
    """The explanation's anchor pairs grouped by image, per answer, and its neighbours likewise."""
    answers = [[models.ImageGroupOut(image=g.image, share=g.share, fraction=g.fraction, anchors=g.anchors)
                for g in group_by_image(a.anchors)] for a in explanation.answers]
    near = [models.NeighbourGroupOut(image=g.image, anchors=g.anchors) for g in group_by_image(explanation.neighbours)]
    return answers, near
