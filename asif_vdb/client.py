"""The Python client: open a store, add anchors, build label sets, classify. What users import."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from asif_vdb import labels as label_sets
from asif_vdb.config import AsifParams, EncoderIdentity, EncoderSpec, IndexConfig, LabelSetInfo
from asif_vdb.encoders import Encoder, build_encoder, parse_spec
from asif_vdb.encoders.images import ImageInput, image_digest, image_reference
from asif_vdb.encoders.st_text import check_captions
from asif_vdb.errors import EncoderMismatchError, InputError, NotFoundError, StoreError
from asif_vdb.index import AsifIndex
from asif_vdb.results import Classification
from asif_vdb.store import open_backend
from asif_vdb.templates import load_templates

_ENCODERS: dict[tuple[str, str, str | None, str | None, int | None], Encoder] = {}
RESERVED_PAYLOAD = {"ok", "hash", "set"}


def get_encoder(spec: EncoderSpec) -> Encoder:
    """Encoders are loaded once per process and shared by every client that names the same spec."""
    key = (spec.family, spec.name, spec.weights, spec.device, spec.batch_size)
    if key not in _ENCODERS:
        _ENCODERS[key] = build_encoder(spec)
    return _ENCODERS[key]


def pair_hash(image_digest_hex: str, caption: str) -> str:
    return hashlib.sha256(f"{image_digest_hex}\n{caption.strip()}".encode()).hexdigest()


def _as_spec(value: EncoderSpec | str | None, modality: str) -> EncoderSpec | None:
    if value is None or isinstance(value, EncoderSpec):
        return value
    return parse_spec(value, modality=modality)


class AsifClient:
    """An ASIF model served from a Qdrant store.

    Open by ``path`` (embedded Qdrant Edge, the default), ``url`` (+ ``api_key``) for a Qdrant
    server, or ``location=":memory:"`` (qdrant-client local mode, for tests). A new store takes the
    given encoders and parameters (or the defaults); an existing one restores its own and refuses
    different encoders.
    """

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        *,
        url: str | None = None,
        api_key: str | None = None,
        location: str | None = None,
        prefix: str = "asif",
        image_encoder: EncoderSpec | str | None = None,
        text_encoder: EncoderSpec | str | None = None,
        params: AsifParams | None = None,
        device: str | None = None,
    ) -> None:
        self.backend = open_backend(path, url=url, api_key=api_key, location=location, prefix=prefix)
        self.device = device
        image_spec = _as_spec(image_encoder, "image")
        text_spec = _as_spec(text_encoder, "text")
        stored = self.backend.read_config()
        self._index: AsifIndex | None = None
        if stored is None:
            self._new_specs = (image_spec or EncoderSpec.default_image(), text_spec or EncoderSpec.default_text())
            self._new_params = params or AsifParams()
        else:
            try:
                config = IndexConfig.model_validate(stored)
            except Exception as e:
                raise StoreError(f"store {self.backend.location} has an unreadable config: {e}") from e
            self._check_requested(config.image_spec, config.image_encoder, image_spec, "image")
            self._check_requested(config.text_spec, config.text_encoder, text_spec, "text")
            if params is not None and params != config.params:
                raise StoreError(
                    f"store {self.backend.location} was built with k={config.params.k}, p={config.params.p}; "
                    f"asked for k={params.k}, p={params.p}. Open it without params, or build a new store."
                )
            self._index = AsifIndex(self.backend, config)
            repaired = self._index.repair_incomplete()
            self.last_repair = repaired

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> AsifClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.backend.close()

    # -- encoders and config ---------------------------------------------------------------------
    def _check_requested(
        self, stored: EncoderSpec, identity: EncoderIdentity, requested: EncoderSpec | None, modality: str
    ) -> None:
        if requested is None:
            return
        if (requested.family, requested.name, requested.weights) != (stored.family, stored.name, stored.weights):
            raise EncoderMismatchError(
                f"store {self.backend.location} was built with {modality} encoder {identity.describe()}; "
                f"it cannot be opened with {modality} encoder {requested.family}:{requested.name}"
                f"{' (weights ' + requested.weights + ')' if requested.weights else ''}. Relative vectors "
                "from another encoder are meaningless: open it without an encoder option, or use a new store."
            )

    def _spec(self, modality: str) -> EncoderSpec:
        if self._index is not None:
            spec = self._index.config.image_spec if modality == "image" else self._index.config.text_spec
        else:
            spec = self._new_specs[0] if modality == "image" else self._new_specs[1]
        return spec.model_copy(update={"device": self.device}) if self.device else spec

    def encoder(self, modality: Literal["image", "text"]) -> Encoder:
        enc = get_encoder(self._spec(modality))
        if self._index is not None:
            stored = self._index.config.image_encoder if modality == "image" else self._index.config.text_encoder
            if enc.identity != stored:
                raise EncoderMismatchError(
                    f"store {self.backend.location} was built with {modality} encoder {stored.describe()}, "
                    f"but the encoder loaded now is {enc.identity.describe()} (weights or preprocessing changed)"
                )
        return enc

    @property
    def index(self) -> AsifIndex:
        """The engine; created with the store's config on the first write to a new store."""
        if self._index is None:
            image, text = self.encoder("image"), self.encoder("text")
            config = IndexConfig(
                image_encoder=image.identity, text_encoder=text.identity,
                image_spec=self._new_specs[0], text_spec=self._new_specs[1], params=self._new_params,
            )
            self._index = AsifIndex(self.backend, config)
            self._index.save()
        return self._index

    @property
    def params(self) -> AsifParams:
        return self._index.config.params if self._index else self._new_params

    def encode_images(self, images: Sequence[ImageInput], *, progress: bool = False) -> np.ndarray:
        return self.encoder("image").encode(_as_list(images), progress=progress)

    def encode_texts(self, texts: Sequence[str] | str, *, progress: bool = False) -> np.ndarray:
        return self.encoder("text").encode(_as_list(texts), progress=progress)

    # -- anchors ---------------------------------------------------------------------------------
    def add_anchors(
        self,
        images: Sequence[ImageInput],
        captions: Sequence[str],
        payloads: Sequence[dict[str, Any]] | None = None,
        *,
        source: str = "",
        progress: bool = False,
    ) -> list[int]:
        """Add image-caption pairs; returns the anchor id of each pair (a pair already stored keeps
        its id and is not duplicated). Any bad input rejects the whole call before anything is written."""
        images, captions = _as_list(images), _as_list(captions)
        if len(images) != len(captions):
            raise InputError(f"add_anchors: {len(images)} images but {len(captions)} captions")
        captions = check_captions(captions)
        payloads = list(payloads) if payloads is not None else [{} for _ in images]
        if len(payloads) != len(images):
            raise InputError(f"add_anchors: {len(payloads)} payloads for {len(images)} pairs")
        full = [
            self._payload(image_reference(im), cap, pair_hash(image_digest(im), cap), source, extra)
            for im, cap, extra in zip(images, captions, payloads)
        ]
        img_vecs = self.encode_images(images, progress=progress)
        txt_vecs = self.encode_texts(captions, progress=progress)
        return self.add_anchor_embeddings(img_vecs, txt_vecs, full)

    @staticmethod
    def _payload(ref: str, caption: str, digest: str, source: str, extra: dict[str, Any]) -> dict[str, Any]:
        bad = RESERVED_PAYLOAD & set(extra)
        if bad:
            raise InputError(f"payload keys {sorted(bad)} are reserved by asif-vdb")
        return {"image": ref, "source": source, **extra, "caption": caption, "hash": digest}

    def add_anchor_embeddings(
        self, image_vectors: np.ndarray, text_vectors: np.ndarray, payloads: Sequence[dict[str, Any]]
    ) -> list[int]:
        """Add pairs from precomputed embeddings. Each payload needs ``caption``; ``hash`` (the
        content key that de-duplicates) defaults to a hash of the two vectors."""
        payloads = [dict(p) for p in payloads]
        for i, p in enumerate(payloads):
            if "hash" not in p:
                h = hashlib.sha256(np.asarray(image_vectors[i], np.float32).tobytes())
                h.update(np.asarray(text_vectors[i], np.float32).tobytes())
                p["hash"] = h.hexdigest()
        ids, new = self.index.add_anchors(image_vectors, text_vectors, payloads)
        self.refresh(added=new)
        return ids

    def delete_anchors(self, ids: Sequence[int]) -> int:
        """Delete pairs by id; returns how many existed."""
        if self._index is None:
            return 0
        removed = self.index.delete_anchors(ids)
        self.refresh(deleted=removed)
        return len(removed)

    def refresh(self, added: Sequence[int] = (), deleted: Sequence[int] = ()) -> None:
        """Recompute stored candidate vectors after anchors change, so label sets stay exact."""
        if not (added or deleted) or self._index is None:
            return
        for info in list(self.index.config.label_sets.values()):
            self._store_label_set(info)

    def count(self) -> int:
        """Number of complete anchor pairs."""
        return self._index.anchor_count() if self._index else 0

    def anchors(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """Payloads of the given anchor ids (caption, image reference, source, hash)."""
        return self.index.anchor_payloads(ids) if self._index else {}

    # -- label sets and classification -----------------------------------------------------------
    def create_label_set(
        self,
        name: str,
        classes: Sequence[str],
        templates: str | Sequence[str] | None = None,
        *,
        aggregate: Literal["max", "mean"] = "max",
        replace: bool = True,
    ) -> LabelSetInfo:
        """Store class prompts' relative vectors so that classifying is one sparse query per image.

        ``templates`` is a built-in list name ("default", "cifar10", "imagenet", "imagenet7"), a
        file, or a list of strings with ``{}`` for the class name. Per class the best template
        wins (the paper's rule); ``aggregate="mean"`` averages templates instead."""
        if not name or not name.strip():
            raise InputError("a label set needs a non-empty name")
        if aggregate not in ("max", "mean"):
            raise InputError(f"aggregate must be 'max' or 'mean', got {aggregate!r}")
        classes = label_sets.check_classes(classes)
        tmpl = load_templates(templates)
        index = self.index
        if name in index.config.label_sets:
            if not replace:
                raise InputError(f"label set {name!r} exists; pass replace=True to rebuild it")
            index.drop_set(label_sets.set_key(name))
        info = LabelSetInfo(
            name=name, classes=classes, templates=tmpl, aggregate=aggregate,
            first_id=index.allocate_candidates(len(classes) * len(tmpl)),
        )
        self._store_label_set(info)
        index.config.label_sets[name] = info
        index.save()
        return info

    def _store_label_set(self, info: LabelSetInfo) -> None:
        texts = label_sets.prompts(info.classes, info.templates)
        vecs = self.encode_texts(texts)
        ids = list(range(info.first_id, info.first_id + len(texts)))
        payloads = [{"class": i // len(info.templates), "text": t} for i, t in enumerate(texts)]
        self.index.put_candidates(label_sets.set_key(info.name), ids, vecs, "text", payloads)

    def label_set(self, name: str) -> LabelSetInfo:
        sets = self._index.config.label_sets if self._index else {}
        if name not in sets:
            known = ", ".join(sorted(sets)) or "none"
            raise NotFoundError(f"no label set {name!r} in store {self.backend.location} (known: {known})")
        return sets[name]

    def label_sets(self) -> list[str]:
        return sorted(self._index.config.label_sets) if self._index else []

    def delete_label_set(self, name: str) -> None:
        self.label_set(name)
        self.index.drop_set(label_sets.set_key(name))
        del self.index.config.label_sets[name]
        self.index.save()

    def classify(
        self,
        images: Sequence[ImageInput] | ImageInput,
        label_set: str,
        top: int = 5,
        *,
        threshold: float | None | Literal["stored"] = "stored",
        progress: bool = False,
        batch_size: int = 256,
    ) -> list[Classification]:
        """Top classes for each image. ``threshold`` marks low-scoring answers unknown: "stored" uses
        the label set's calibrated threshold (if any), None turns it off."""
        self.label_set(label_set)
        items = _as_list(images)
        out: list[Classification] = []
        for start in range(0, len(items), batch_size):
            vecs = self.encode_images(items[start : start + batch_size], progress=progress)
            out.extend(self.classify_embeddings(vecs, label_set, top, threshold=threshold))
        return out

    def classify_embeddings(
        self, image_vectors: np.ndarray, label_set: str, top: int = 5,
        *, threshold: float | None | Literal["stored"] = "stored",
    ) -> list[Classification]:
        """Classify precomputed image embeddings (the same encoder's)."""
        scores = self.class_scores(image_vectors, label_set)
        info = self.label_set(label_set)
        limit = info.threshold if threshold == "stored" else threshold
        return label_sets.top_predictions(scores, info.classes, top, limit)

    def class_scores(self, image_vectors: np.ndarray, label_set: str) -> np.ndarray:
        """(n_images, n_classes) ASIF scores: sparse dot products with the stored prompts, pooled."""
        info = self.label_set(label_set)
        rel = self.index.relative(image_vectors, "image")
        hits = self.index.rank_candidates(rel, label_sets.set_key(label_set), info.n_candidates)
        return label_sets.class_scores(hits, info)

    # -- info ------------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """The store's configuration and sizes, as plain data."""
        if self._index is None:
            return {"location": self.backend.location, "anchors": 0, "new": True,
                    "image_encoder": self._new_specs[0].model_dump(), "text_encoder": self._new_specs[1].model_dump(),
                    "params": self._new_params.model_dump()}
        c = self._index.config
        return {
            "location": self.backend.location,
            "anchors": self.count(),
            "image_encoder": c.image_encoder.model_dump(),
            "text_encoder": c.text_encoder.model_dump(),
            "params": c.params.model_dump(),
            "schema_version": c.schema_version,
            "label_sets": {n: {"classes": len(i.classes), "templates": len(i.templates),
                               "aggregate": i.aggregate, "threshold": i.threshold}
                           for n, i in c.label_sets.items()},
            "galleries": {n: g.model_dump() for n, g in c.galleries.items()},
        }


def _as_list(items: Any) -> list[Any]:
    if isinstance(items, (str, bytes, os.PathLike)) or isinstance(items, np.ndarray) and items.ndim in (2, 3) \
            and items.dtype == np.uint8 or hasattr(items, "getpixel"):
        return [items]
    return list(items)
