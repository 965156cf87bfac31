"""The Python client: open a store, add anchors, build label sets, classify. What users import."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from asif_vdb import calibrate as calibration
from asif_vdb import gallery as gallery_sets
from asif_vdb import labels as label_sets
from asif_vdb import methods_index
from asif_vdb import refresh as refresh_mod
from asif_vdb.config import AsifParams, EncoderIdentity, EncoderSpec, GallerySetInfo, IndexConfig, LabelSetInfo
from asif_vdb.encoders import Encoder, build_encoder, parse_spec
from asif_vdb.encoders.images import ImageInput, image_digest, image_reference
from asif_vdb.encoders.precision import requested as requested_precision
from asif_vdb.encoders.st_text import check_captions
from asif_vdb.errors import EncoderMismatchError, InputError, NotFoundError, StoreError
from asif_vdb.explain import Explanation, explain_classes, explain_gallery
from asif_vdb.index import AsifIndex
from asif_vdb.results import Classification, SearchHit
from asif_vdb.store import open_backend
from asif_vdb.templates import load_templates

_ENCODERS: dict[tuple[Any, ...], Encoder] = {}
RESERVED_PAYLOAD = {"ok", "hash", "set", "tf"}


def get_encoder(spec: EncoderSpec) -> Encoder:
    """Encoders are loaded once per process and shared by every client that names the same spec."""
    key = (spec.family, spec.name, spec.weights, spec.crop_pct, spec.device, spec.batch_size,
           requested_precision(spec.precision))
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
        precision: str | None = None,
    ) -> None:
        self.backend = open_backend(path, url=url, api_key=api_key, location=location, prefix=prefix)
        self.device = device
        # Execution only, like the device (encoders/precision.py); None: $ASIF_PRECISION or auto.
        self.precision = requested_precision(precision) if precision is not None else None
        image_spec = _as_spec(image_encoder, "image")
        text_spec = _as_spec(text_encoder, "text")
        stored = self.backend.read_config()
        self._index: AsifIndex | None = None
        self.last_refresh: refresh_mod.RefreshReport | None = None  # what the last anchor update did
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
            # Complete or roll back an anchor update a crash left half done (issue 5: refresh.py).
            self.last_repair = refresh_mod.recover(self._index)

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
        if (requested.family, requested.name, requested.weights, requested.crop_pct) != (
            stored.family, stored.name, stored.weights, stored.crop_pct
        ):
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
        update = {"device": self.device, "precision": self.precision}
        return spec.model_copy(update={k: v for k, v in update.items() if v is not None})

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
            bad = (RESERVED_PAYLOAD - {"hash"}) & set(p)
            if bad:
                raise InputError(f"payload #{i}: keys {sorted(bad)} are reserved by asif-vdb")
            if "hash" not in p:
                h = hashlib.sha256(np.asarray(image_vectors[i], np.float32).tobytes())
                h.update(np.asarray(text_vectors[i], np.float32).tobytes())
                p["hash"] = h.hexdigest()
        ids, _, self.last_refresh = refresh_mod.add_pairs(self.index, image_vectors, text_vectors, payloads)
        methods_index.after_anchor_change(self.index, self.last_refresh)  # issue 4B: hub statistics
        return ids

    def delete_anchors(self, ids: Sequence[int]) -> int:
        """Delete pairs by id; returns how many existed. Returns once every label set and gallery
        no longer uses them."""
        if self._index is None:
            return 0
        removed, self.last_refresh = refresh_mod.delete_pairs(self.index, ids)
        methods_index.after_anchor_change(self.index, self.last_refresh)  # issue 4B: hub statistics
        return len(removed)

    def refresh(self, added: Sequence[int] = (), deleted: Sequence[int] = ()) -> None:
        """Bring stored label sets and galleries up to date after anchors ``added`` (visible now)
        and ``deleted`` (gone now), incrementally (refresh.py). add_anchors and delete_anchors do
        this themselves; call it only after changing anchors through the index directly."""
        if not (added or deleted) or self._index is None:
            return
        self.last_refresh = refresh_mod.apply(self._index, added=added, deleted=deleted)
        methods_index.after_anchor_change(self._index, self.last_refresh)  # issue 4B: hub statistics

    # -- anchor removal by payload (issue 5; logic in asif_vdb/refresh.py) -----------------------
    def anchor_ids_where(self, **conditions: Any) -> list[int]:
        """Ids of the stored pairs whose payload matches every condition (a value, or a list of
        accepted values), e.g. ``source="flickr"``."""
        if not conditions:
            raise InputError("give at least one payload condition, e.g. source='NAME'")
        return self._index.anchor_ids_where(**conditions) if self._index else []

    def delete_anchors_where(self, **conditions: Any) -> int:
        """Delete every pair whose payload matches (e.g. one source's data, for a removal request);
        returns how many were deleted, once everything derived is fresh."""
        return self.delete_anchors(self.anchor_ids_where(**conditions))

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
        normalise: Literal["none", "hub"] = "none",
    ) -> LabelSetInfo:
        """Store class prompts' relative vectors so that classifying is one sparse query per image.

        ``templates`` is a built-in list name ("default", "cifar10", "imagenet", "imagenet7"), a
        file, or a list of strings with ``{}`` for the class name. Per class the best template
        wins (the paper's rule); ``aggregate="mean"`` averages templates instead.
        ``normalise="hub"`` scores each prompt as (score - mean) / std over a reference sample of
        anchor images (methods.py), so a class that many anchors mention no longer wins by default."""
        if normalise not in ("none", "hub"):
            raise InputError(f"normalise must be 'none' or 'hub', got {normalise!r}")
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
            name=name, classes=classes, templates=tmpl, aggregate=aggregate, normalise=normalise,
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
        if info.normalise == "hub":  # issue 4B: per-prompt statistics over reference anchor images
            methods_index.label_set_statistics(self.index, info)

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
        """Classify precomputed image embeddings (the same encoder's). With "stored", a calibrated
        anchor-coverage threshold (asif_vdb/calibrate.py) also marks poorly covered images unknown."""
        info = self.label_set(label_set)
        limit = info.threshold if threshold == "stored" else threshold
        if threshold == "stored" and info.coverage_threshold is not None:
            scores, cover = calibration.scores_and_coverage(self.index, info, image_vectors)
            results = label_sets.top_predictions(scores, info.classes, top, limit)
            calibration.mark_uncovered(results, cover, info.coverage_threshold)
            return results
        scores = self.class_scores(image_vectors, label_set)
        return label_sets.top_predictions(scores, info.classes, top, limit)

    def class_scores(self, image_vectors: np.ndarray, label_set: str) -> np.ndarray:
        """(n_images, n_classes) ASIF scores: sparse dot products with the stored prompts, pooled."""
        info = self.label_set(label_set)
        rel = self.index.relative(image_vectors, "image")
        hits = self.index.rank_candidates(rel, label_sets.set_key(label_set), info.n_candidates)
        return label_sets.class_scores(hits, info)

    # -- explanations (issue 6; logic in asif_vdb/explain.py) ------------------------------------
    def explain(
        self, image: ImageInput, label_set: str, top: int = 3, *, anchors: int = 5, neighbours: int = 5,
        threshold: float | None | Literal["stored"] = "stored",
    ) -> Explanation:
        """The top classes of one image, each with the anchor pairs that contributed most to its score,
        and the image's nearest anchors. ``threshold`` decides ``unknown`` as in ``classify``."""
        return self.explain_embedding(self.encode_images([image]), label_set, top, anchors=anchors,
                                      neighbours=neighbours, threshold=threshold, reference=image_reference(image))

    def explain_embedding(
        self, image_vector: np.ndarray, label_set: str, top: int = 3, *, anchors: int = 5, neighbours: int = 5,
        threshold: float | None | Literal["stored"] = "stored", reference: str = "",
    ) -> Explanation:
        """``explain`` for a precomputed image embedding (the store's image encoder's)."""
        info = self.label_set(label_set)
        stored = threshold == "stored"
        return explain_classes(
            self.index, image_vector, info, top=top, anchors=anchors, neighbours=neighbours,
            threshold=info.threshold if stored else threshold, reference=reference,
            coverage_threshold=info.coverage_threshold if stored else None,
        )

    def explain_search(
        self, query: Any, gallery: str, top: int = 3, *, anchors: int = 5, neighbours: int = 5,
        modality: Literal["image", "text"] | None = None,
    ) -> Explanation:
        """The top items of a gallery search for one text or image query (as ``search`` ranks them),
        each with the anchor pairs that contributed most to its score."""
        index = self._require_index()
        kind = gallery_sets.query_modality(query, modality)
        vec = self.encode_texts(check_captions([query])) if kind == "text" else self.encode_images([query])
        info = gallery_sets.resolve(index, gallery, kind)
        ref = str(query) if kind == "text" else image_reference(query)
        return explain_gallery(index, vec, kind, info, top=top, anchors=anchors, neighbours=neighbours, reference=ref)

    # -- galleries and search (issue 4; logic in asif_vdb/gallery.py) ----------------------------
    def index_gallery(
        self,
        name: str,
        images: Sequence[ImageInput] | None = None,
        texts: Sequence[str] | None = None,
        payloads: Sequence[dict[str, Any]] | None = None,
        *,
        progress: bool = False,
    ) -> list[int]:
        """Add images or texts (exactly one of the two) to gallery NAME, created if new; returns the
        items' ids. A payload records ``ref`` (the image path, or the text) and the user's fields
        (a user ``ref`` replaces the default). Everything is encoded before anything is written."""
        gallery_sets.check_name(name)
        if (images is None) == (texts is None):
            raise InputError(f"gallery {name!r}: give images or texts (exactly one of the two)")
        if images is not None:
            items, modality = _as_list(images), "image"
            refs = [image_reference(im) for im in items]
        else:
            items, modality = check_captions(_as_list(texts)), "text"
            refs = list(items)
        extras = self._gallery_payloads(name, payloads, len(items))
        if not items:
            return []
        vecs = self.encode_images(items, progress=progress) if modality == "image" \
            else self.encode_texts(items, progress=progress)
        return gallery_sets.add_items(
            self.index, name, vecs, modality, [{"ref": r, **e} for r, e in zip(refs, extras)]
        )

    def index_gallery_embeddings(
        self, name: str, vectors: np.ndarray, modality: Literal["image", "text"],
        payloads: Sequence[dict[str, Any]] | None = None,
    ) -> list[int]:
        """Add precomputed embeddings (the store's encoder's) to gallery NAME; ``ref`` comes from the
        payload (None when absent)."""
        gallery_sets.check_name(name)
        modality = gallery_sets.check_modality(modality)
        vecs = np.asarray(vectors, dtype=np.float32)
        n = 1 if vecs.ndim == 1 else len(vecs)
        extras = self._gallery_payloads(name, payloads, n)
        return gallery_sets.add_items(self.index, name, vecs, modality, [{"ref": None, **e} for e in extras])

    @staticmethod
    def _gallery_payloads(name: str, payloads: Sequence[dict[str, Any]] | None, n: int) -> list[dict[str, Any]]:
        extras = [dict(p) for p in payloads] if payloads is not None else [{} for _ in range(n)]
        if len(extras) != n:
            raise InputError(f"gallery {name!r}: {len(extras)} payloads for {n} items")
        for p in extras:
            bad = RESERVED_PAYLOAD & set(p)
            if bad:
                raise InputError(f"payload keys {sorted(bad)} are reserved by asif-vdb")
        return extras

    def delete_from_gallery(self, name: str, ids: Sequence[int]) -> int:
        """Delete items of gallery NAME by id; returns how many it held."""
        return gallery_sets.delete_items(self._require_index(), name, ids)

    def gallery(self, name: str) -> GallerySetInfo:
        return gallery_sets.get(self._require_index(), name)

    def galleries(self) -> list[str]:
        """Stored galleries, including the anchors' sides once they were indexed."""
        return sorted(self._index.config.galleries) if self._index else []

    def delete_gallery(self, name: str) -> None:
        gallery_sets.drop(self._require_index(), name)

    def index_anchors_gallery(self, modality: Literal["image", "text"] | None = None) -> list[GallerySetInfo]:
        """Index the anchors as galleries now (both sides by default) instead of at the first search."""
        sides = [gallery_sets.check_modality(modality)] if modality else ["image", "text"]
        return [gallery_sets.build_anchors_gallery(self._require_index(), m) for m in sides]

    def search(
        self, query: Any, gallery: str, top: int = 10, *, modality: Literal["image", "text"] | None = None,
    ) -> list[SearchHit]:
        """The ``top`` items of ``gallery`` for one text or image query, best first.

        A str is a text unless it names an existing file (then an image); ``modality`` overrides.
        ``gallery="anchors"`` searches the anchor images for a text, the anchor captions for an image
        (hits carry the anchor id and payload)."""
        return self.search_many([query], gallery, top, modality=modality)[0]

    def search_many(
        self, queries: Sequence[Any], gallery: str, top: int = 10, *,
        modality: Literal["image", "text"] | None = None, progress: bool = False,
    ) -> list[list[SearchHit]]:
        """``search`` for many queries (texts and images may be mixed); one result list per query."""
        queries = list(queries)
        kinds = [gallery_sets.query_modality(q, modality) for q in queries]
        out: list[list[SearchHit]] = [[] for _ in queries]
        for kind in ("text", "image"):
            rows = [i for i, k in enumerate(kinds) if k == kind]
            if not rows:
                continue
            items = [queries[i] for i in rows]
            vecs = self.encode_texts(check_captions(items), progress=progress) if kind == "text" \
                else self.encode_images(items, progress=progress)
            for i, hits in zip(rows, self.search_embeddings(vecs, kind, gallery, top)):
                out[i] = hits
        return out

    def search_embeddings(
        self, vectors: np.ndarray, modality: Literal["image", "text"], gallery: str, top: int = 10,
    ) -> list[list[SearchHit]]:
        """``search`` for precomputed query embeddings of ``modality`` (the store's encoder's)."""
        index = self._require_index()
        modality = gallery_sets.check_modality(modality)
        info = gallery_sets.resolve(index, gallery, modality)
        return gallery_sets.rank(index, info, index.relative(vectors, modality), top)

    def _require_index(self) -> AsifIndex:
        if self._index is None:
            raise NotFoundError(f"store {self.backend.location} is empty: add anchors first")
        return self._index

    # -- methods beyond plain ASIF (issue 4B; logic in asif_vdb/methods.py, methods_index.py) -----
    def set_transform(
        self, image: dict[str, Any] | None = None, text: dict[str, Any] | None = None, *,
        modalities: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Fit an embedding transform per modality on the current anchors and apply it from now on:
        e.g. ``set_transform(image={"power": 0.5, "whiten": 10}, text={"whiten": 3})``. Options:
        ``power`` (signed power of each component, 1 = off), ``centre`` (subtract the anchors' mean,
        default True), ``whiten`` (covariance whitening with this shrinkage; None = off). Anchors
        are rewritten and every label set and gallery recomputed; anchors added later use the same
        fitted transform until this is called again. A modality given as None (or listed in
        ``modalities`` without options) goes back to raw cosines."""
        options: dict[str, dict[str, Any] | None] = {"image": image, "text": text}
        if modalities is not None:
            options = {m: options.get(m) for m in modalities}
        records = methods_index.set_transforms(self._require_index(), options)
        return {m: r.model_dump() for m, r in records.items()}

    def transforms(self) -> dict[str, Any]:
        """The store's fitted embedding transforms by modality (empty: plain ASIF)."""
        return {m: r.model_dump() for m, r in self._index.config.transforms.items()} if self._index else {}

    def normalise_label_set(self, name: str, normalise: Literal["none", "hub"] = "hub") -> LabelSetInfo:
        """Turn hub normalisation of a stored label set on (computing its statistics) or off."""
        if normalise not in ("none", "hub"):
            raise InputError(f"normalise must be 'none' or 'hub', got {normalise!r}")
        info = self.label_set(name)
        info.normalise = normalise
        if normalise == "hub":
            methods_index.label_set_statistics(self.index, info)
        else:
            info.hub_mean = info.hub_std = None
        self.index.save()
        return info

    def normalise_gallery(self, name: str, normalise: Literal["none", "hub"] = "hub") -> GallerySetInfo:
        """Hub-normalise a gallery's scores (``"hub"``: each item's score as (score - mean) / std over
        reference anchors of the other modality) or stop (``"none"``)."""
        return methods_index.set_gallery_normalise(self._require_index(), name, normalise)

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
                               "aggregate": i.aggregate, "threshold": i.threshold,
                               "coverage_threshold": i.coverage_threshold}
                           for n, i in c.label_sets.items()},
            "galleries": {n: {**g.model_dump(exclude={"behind_added", "behind_deleted"}),
                              # anchors galleries: anchor changes their next search applies
                              **({"behind": len(g.behind_added) + len(g.behind_deleted)}
                                 if g.behind_added or g.behind_deleted else {})}
                          for n, g in c.galleries.items()},
        }


def _as_list(items: Any) -> list[Any]:
    if isinstance(items, (str, bytes, os.PathLike)) or isinstance(items, np.ndarray) and items.ndim in (2, 3) \
            and items.dtype == np.uint8 or hasattr(items, "getpixel"):
        return [items]
    return list(items)
