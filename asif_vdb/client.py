"""The Python client: open a store, add anchors, build label sets, classify, search, explain.

Each method is a docstring and a line or two that delegates to the feature or workflow that owns it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np

from asif_vdb.encoders import Encoder, parse_spec
from asif_vdb.encoders.images import ImageInput, as_inputs, image_reference
from asif_vdb.engine.engine import Engine
from asif_vdb.engine.method import params_after
from asif_vdb.features import anchors, coverage, explain, galleries, label_sets, store_info
from asif_vdb.features.session import Session
from asif_vdb.maths.calibration import Criterion
from asif_vdb.schema.encoders import EncoderIdentity, EncoderSpec
from asif_vdb.schema.params import Aggregate, AsifParams, IndexSettings, Tuning, index_settings
from asif_vdb.schema.results import (
    CalibrationReport,
    Check,
    Classification,
    CoverageReport,
    Explanation,
    RecoveryReport,
    RefreshReport,
    SearchHit,
    TuneReport,
)
from asif_vdb.schema.store import GalleryInfo, LabelSetInfo, Modality, Normalise
from asif_vdb.store import open_backend
from asif_vdb.workflows import backup, calibrate, doctor, evaluate, prune
from asif_vdb.workflows import tune as tuning

Threshold = float | None | Literal["stored"]


class AsifClient:
    """An ASIF model served from a Qdrant store.

    Open by ``path`` (embedded Qdrant Edge, the default), ``url`` (+ ``api_key``) for a Qdrant
    server, or ``location=":memory:"`` (qdrant-client local mode, for tests). A new store takes the
    given encoders and parameters (or the defaults) and is created by its first write; an existing
    one restores its own and refuses different encoders or parameters.

    ``image_identity`` / ``text_identity`` declare the encoders of embeddings made elsewhere (a new
    store then records them without loading any model; an existing one must match them). ``tuning``
    trades speed for memory; it never changes a result. ``index`` (settings or a preset name: "exact",
    "int8", "hnsw", "auto": the default) is how a new store searches its anchors; ``exact_search`` makes every anchor
    search of this client exact whatever the store's settings (a baseline to compare with).
    ``for_repair`` opens a store whose config is missing or unreadable, for ``doctor`` only.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, url: str | None = None,
                 api_key: str | None = None, location: str | None = None, prefix: str = "asif",
                 image_encoder: EncoderSpec | str | None = None, text_encoder: EncoderSpec | str | None = None,
                 params: AsifParams | None = None, device: str | None = None, precision: str | None = None,
                 tuning: Tuning | None = None, image_identity: EncoderIdentity | None = None,
                 text_identity: EncoderIdentity | None = None, index: IndexSettings | str | None = None,
                 exact_search: bool = False, for_repair: bool = False) -> None:
        backend = open_backend(path, url=url, api_key=api_key, location=location, prefix=prefix)
        try:
            self._session = Session(backend, image_encoder=_spec(image_encoder, "image"),
                                    text_encoder=_spec(text_encoder, "text"), params=params, device=device,
                                    precision=precision, tuning=tuning,
                                    identities=_declared(image_identity, text_identity),
                                    index=index_settings(index), exact_search=exact_search,
                                    for_repair=for_repair)
        except BaseException:
            backend.close()
            raise
        self.last_refresh: RefreshReport | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> AsifClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    @property
    def location(self) -> str:
        """Where the store lives (a path or a URL)."""
        return self._session.location

    @property
    def engine(self) -> Engine | None:
        """The store's engine (None for a new store before its first write): for diagnostics, tools
        and tests that check the stored state itself."""
        return self._session.engine

    @property
    def last_repair(self) -> RecoveryReport:
        """What opening the store carried forward or rolled back after a crash."""
        return self._session.recovery

    @property
    def params(self) -> AsifParams:
        return self._session.params

    def create_store(self) -> None:
        """Create a new store's collections and config now (otherwise its first write does)."""
        self._session.writable()

    # -- encoders --------------------------------------------------------------------------------
    def encoder(self, modality: Modality) -> Encoder:
        """The store's image or text encoder (loaded once per process, checked against the store)."""
        return self._session.encoder(modality)

    def encode_images(self, images: Sequence[ImageInput] | ImageInput, *, progress: bool = False) -> np.ndarray:
        """Unit embeddings of images (paths, PIL images, arrays or encoded bytes)."""
        return self._session.encode_images(as_inputs(images), progress=progress)

    def encode_images_skipping(self, images: Sequence[ImageInput], *,
                               progress: bool = False) -> tuple[np.ndarray, list[int], dict[int, str]]:
        """Encode the images that can be decoded: (their vectors, their positions, position -> why each
        other image was skipped)."""
        return self._session.encode_images_skipping(as_inputs(images), progress=progress)

    def encode_texts(self, texts: Sequence[str] | str, *, progress: bool = False) -> np.ndarray:
        """Unit embeddings of texts."""
        return self._session.encode_texts(as_inputs(texts), progress=progress)

    # -- anchors ---------------------------------------------------------------------------------
    def add_anchors(self, images: Sequence[ImageInput], captions: Sequence[str],
                    payloads: Sequence[dict[str, Any]] | None = None, *, source: str = "",
                    progress: bool = False) -> list[int]:
        """Add image-caption pairs; returns the anchor id of each pair (a pair already stored keeps its
        id and is not duplicated). Every label set and gallery is exact when this returns. Any bad
        input rejects the whole call before anything is written."""
        ids, self.last_refresh = anchors.add_anchors(self._session, as_inputs(images), as_inputs(captions), payloads,
                                                     source=source, progress=progress)
        return ids

    def add_anchor_embeddings(self, image_vectors: np.ndarray, text_vectors: np.ndarray,
                              payloads: Sequence[dict[str, Any]]) -> list[int]:
        """Add pairs from precomputed embeddings (the store's encoders'). Each payload needs a
        ``caption``; ``hash`` (the content key that de-duplicates) defaults to a hash of the vectors."""
        ids, self.last_refresh = anchors.add_anchor_embeddings(self._session, image_vectors, text_vectors, payloads)
        return ids

    def delete_anchors(self, ids: Sequence[int]) -> int:
        """Delete pairs by id; returns how many existed. Every label set and gallery is exact when
        this returns."""
        removed, self.last_refresh = anchors.delete_anchors(self._session, ids)
        return removed

    def prepare_for_embeddings(self, image_dim: int, text_dim: int) -> None:
        """Check that the store takes embeddings of these dimensions (a new store is created for them,
        recording its encoders' identities, declared when the models cannot be loaded here)."""
        self._session.prepare_for_embeddings({"image": image_dim, "text": text_dim})

    def anchor_ids_where(self, **conditions: Any) -> list[int]:
        """Ids of the stored pairs whose payload matches every condition (a value, or a list of
        accepted values), e.g. ``source="flickr"``."""
        return anchors.ids_where(self._session, conditions)

    def delete_anchors_where(self, **conditions: Any) -> int:
        """Delete every pair whose payload matches (e.g. one source's data, for a removal request)."""
        return self.delete_anchors(self.anchor_ids_where(**conditions))

    def anchor_ids(self) -> list[int]:
        """Ids of every complete pair."""
        return anchors.visible_ids(self._session)

    def count(self) -> int:
        """Number of complete anchor pairs."""
        return anchors.count(self._session)

    def anchors(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """Payloads (caption, image reference, source, hash) of the given anchor ids."""
        return anchors.payloads(self._session, ids)

    def stored_pairs(self, hashes: Sequence[str]) -> dict[str, int]:
        """Content hash -> anchor id of the stored pairs among ``hashes`` (what ingestion skips)."""
        return anchors.stored_pairs(self._session, hashes)

    # -- label sets and classification -----------------------------------------------------------
    def create_label_set(self, name: str, classes: Sequence[str] | Mapping[str, str], templates: str | Sequence[str] | None = None, *,
                         aggregate: Aggregate | None = None, replace: bool = True,
                         normalise: Normalise = "auto") -> LabelSetInfo:
        """Store class prompts' relative vectors so that classifying is one sparse query per image.

        ``classes`` is a list of names, or a mapping of class ids to display names (names may then
        repeat, as ImageNet's two "crane" classes do); predictions report both.

        ``templates`` is a built-in list name ("default", "cifar10", "imagenet", "imagenet7"), a file,
        or a list of strings with ``{}`` for the class name. ``aggregate`` pools a class's templates:
        ``"pool"`` stores one prompt per class, the mean of its templates' embeddings (the tuned
        method's default: more accurate there than the best template, and as cheap as one template);
        ``"max"``, the best template's score (the paper's rule, plain ASIF's default); ``"mean"``, the
        mean of the templates' scores (the most accurate, at T times the cost). ``normalise="hub"`` scores each
        prompt as (score - mean) / std over a reference sample of anchor images; ``"auto"`` (the default)
        does so while the store's tuned method has its transforms in force; ``"none"`` never."""
        return label_sets.create(self._session, name, classes, templates, aggregate=aggregate, replace=replace,
                                 normalise=normalise)

    def label_set(self, name: str) -> LabelSetInfo:
        return self._session.require().label_sets.get(name)

    def label_sets(self) -> list[str]:
        return self._session.engine.label_sets.names() if self._session.engine else []

    def delete_label_set(self, name: str) -> None:
        self._session.require().label_sets.drop(name)

    def classify(self, images: Sequence[ImageInput] | ImageInput, label_set: str, top: int = 5, *,
                 threshold: Threshold = "stored", progress: bool = False, batch_size: int = 256) -> list[Classification]:
        """Top classes for each image. ``threshold`` marks low-scoring answers unknown: "stored" uses
        the label set's calibrated thresholds (if any), None turns them off."""
        return label_sets.classify(self._session, as_inputs(images), label_set, top, threshold, progress, batch_size)

    def classify_embeddings(self, image_vectors: np.ndarray, label_set: str, top: int = 5, *,
                            threshold: Threshold = "stored") -> list[Classification]:
        """Classify precomputed image embeddings (the store's image encoder's)."""
        return label_sets.classify_embeddings(self._session, image_vectors, label_set, top, threshold)

    def class_scores(self, image_vectors: np.ndarray, label_set: str) -> np.ndarray:
        """(n_images, n_classes) ASIF scores: sparse dot products with the stored prompts, pooled."""
        return label_sets.image_scores(self._session, image_vectors, label_set)

    def label_coverage(self, label_set: str, *, few: int = 10, nearest: int = 3) -> CoverageReport:
        """Per class of ``label_set``: how many anchors stand out for its prompts, the share of their
        relative vectors they carry, and the nearest anchor captions; classes with fewer than ``few``
        such anchors are flagged (ASIF can only name what its anchors cover)."""
        return coverage.label_set_coverage(self._session, label_set, few=few, nearest=nearest)

    # -- explanations ----------------------------------------------------------------------------
    def explain(self, image: ImageInput, label_set: str, top: int = 3, *, anchors: int = 5, neighbours: int = 5,
                threshold: Threshold = "stored") -> Explanation:
        """The top classes of one image, each with the anchor pairs that contributed most to its
        score, and the image's nearest anchors. ``threshold`` decides ``unknown`` as in ``classify``."""
        return self.explain_embedding(self.encode_images([image]), label_set, top, anchors=anchors,
                                      neighbours=neighbours, threshold=threshold, reference=image_reference(image))

    def explain_embedding(self, image_vector: np.ndarray, label_set: str, top: int = 3, *, anchors: int = 5,
                          neighbours: int = 5, threshold: Threshold = "stored", reference: str = "") -> Explanation:
        """``explain`` for a precomputed image embedding (the store's image encoder's)."""
        engine = self._session.require()
        info = engine.label_sets.get(label_set)
        stored = threshold == "stored"
        return explain.explain_classes(engine, image_vector, info, top=top, anchors=anchors, neighbours=neighbours,
                                       threshold=info.threshold if stored else threshold,  # type: ignore[arg-type]
                                       coverage_threshold=info.coverage_threshold if stored else None,
                                       reference=reference)

    def explain_search(self, query: Any, gallery: str, top: int = 3, *, anchors: int = 5, neighbours: int = 5,
                       modality: Modality | None = None) -> Explanation:
        """The top items of a gallery search for one text or image query (as ``search`` ranks them),
        each with the anchor pairs that contributed most to its score."""
        engine = self._session.require()
        kind = galleries.query_modality(query, modality)
        vec = self.encode_texts([query]) if kind == "text" else self.encode_images([query])
        info = galleries.resolve(engine, gallery, kind)
        ref = str(query) if kind == "text" else image_reference(query)
        return explain.explain_gallery(engine, vec, kind, info, top=top, anchors=anchors, neighbours=neighbours,
                                       reference=ref)

    # -- galleries and search --------------------------------------------------------------------
    def index_gallery(self, name: str, images: Sequence[ImageInput] | None = None, texts: Sequence[str] | None = None,
                      payloads: Sequence[dict[str, Any]] | None = None, *, progress: bool = False) -> list[int]:
        """Add images or texts (exactly one of the two) to gallery NAME, created if new; returns the
        items' ids. A payload records ``ref`` (the image path, or the text) and the user's fields (a
        user ``ref`` replaces the default). Everything is encoded before anything is written."""
        return galleries.index_items(self._session, name, images, texts, payloads, progress=progress)

    def index_gallery_embeddings(self, name: str, vectors: np.ndarray, modality: Modality,
                                 payloads: Sequence[dict[str, Any]] | None = None) -> list[int]:
        """Add precomputed embeddings (the store's encoder's) to gallery NAME."""
        return galleries.index_embeddings(self._session, name, vectors, modality, payloads)

    def delete_from_gallery(self, name: str, ids: Sequence[int]) -> int:
        """Delete items of gallery NAME by id; returns how many it held."""
        return self._session.require().galleries.delete_items(name, anchors.check_ids(ids, "gallery item ids"))

    def gallery(self, name: str) -> GalleryInfo:
        return self._session.require().galleries.get(name)

    def galleries(self) -> list[str]:
        """Stored galleries, including the anchors' sides once they were indexed."""
        return sorted(self._session.engine.config.galleries) if self._session.engine else []

    def delete_gallery(self, name: str) -> None:
        self._session.require().galleries.drop(name)

    def index_anchors_gallery(self, modality: Modality | None = None) -> list[GalleryInfo]:
        """Index the anchors as galleries now (both sides by default) instead of at the first search."""
        engine = self._session.require()
        sides: list[Modality] = [galleries.check_modality(modality)] if modality else ["image", "text"]
        return [engine.galleries.build_anchors_gallery(m) for m in sides]

    def search(self, query: Any, gallery: str, top: int = 10, *, modality: Modality | None = None) -> list[SearchHit]:
        """The ``top`` items of ``gallery`` for one text or image query, best first.

        A str is a text unless it names an existing file (then an image); ``modality`` overrides.
        ``gallery="anchors"`` searches the anchor images for a text, the anchor captions for an image
        (hits carry the anchor id and payload)."""
        return self.search_many([query], gallery, top, modality=modality)[0]

    def search_many(self, queries: Sequence[Any], gallery: str, top: int = 10, *, modality: Modality | None = None,
                    progress: bool = False) -> list[list[SearchHit]]:
        """``search`` for many queries (texts and images may be mixed); one result list per query."""
        return galleries.search_many(self._session, queries, gallery, top, modality=modality, progress=progress)

    def search_embeddings(self, vectors: np.ndarray, modality: Modality, gallery: str,
                          top: int = 10) -> list[list[SearchHit]]:
        """``search`` for precomputed query embeddings of ``modality`` (the store's encoder's)."""
        return galleries.search_embeddings(self._session, vectors, modality, gallery, top)

    # -- methods beyond plain ASIF ---------------------------------------------------------------
    def set_transform(self, image: dict[str, Any] | None = None, text: dict[str, Any] | None = None, *,
                      modalities: Sequence[str] | None = None) -> dict[str, Any]:
        """Fit an embedding transform per modality on the current anchors and apply it from now on:
        e.g. ``set_transform(image={"power": 0.5, "whiten": 10}, text={"whiten": 3})``. Options:
        ``power`` (signed power of each component, 1 = off), ``centre`` (subtract the anchors' mean,
        default True), ``whiten`` (covariance whitening with this shrinkage; None = off). Anchors are
        rewritten and every label set and gallery recomputed; anchors added later use the same fitted
        transform until this is called again. A modality given as None (or listed in ``modalities``
        without options) goes back to raw cosines."""
        options: dict[str, dict[str, Any] | None] = {"image": image, "text": text}
        if modalities is not None:
            options = {m: options.get(m) for m in modalities}
        engine = self._session.require()
        records = engine.refit(options, params_after(engine.config.params, options))
        return {m: r.model_dump() for m, r in records.items()}

    def transforms(self) -> dict[str, Any]:
        """The store's fitted embedding transforms by modality (empty: plain ASIF)."""
        engine = self._session.engine
        return {m: r.model_dump() for m, r in engine.config.transforms.items()} if engine else {}

    def normalise_label_set(self, name: str, normalise: Normalise = "hub") -> LabelSetInfo:
        """Turn hub normalisation of a stored label set on (computing its statistics) or off."""
        return self._session.require().label_sets.set_normalise(name, normalise)

    def normalise_gallery(self, name: str, normalise: Normalise = "hub") -> GalleryInfo:
        """Hub-normalise a gallery's scores (each item's score as (score - mean) / std over reference
        anchors of the other modality) or stop (``"none"``)."""
        return self._session.require().set_gallery_normalise(name, normalise)

    # -- the anchor index ------------------------------------------------------------------------
    def search_index(self) -> IndexSettings:
        """How the store searches its anchors (a new store: how it will)."""
        return self._session.engine.config.index if self._session.engine else self._session.index

    def set_search_index(self, index: IndexSettings | str) -> dict[str, float]:
        """Search the anchors with new settings (or a preset: "exact", "int8", "hnsw", "auto"); the index is built
        now. Returns the seconds each collection took."""
        settings = index_settings(index)
        assert settings is not None
        return self._session.require().set_index(settings)

    @contextmanager
    def bulk_load(self) -> Iterator[None]:
        """Add many batches of pairs inside this block: index builds and the tuned method's refits,
        which would run after each batch, run once when it ends (ingestion uses it)."""
        with self._session.writable().bulk_load():
            yield

    def warm_up(self, background: bool = False) -> float:
        """Read the anchor collections into memory ahead of the first queries (their index first, then
        the original vectors; then a few searches per modality); ``asif serve`` runs it before it
        listens. Returns the seconds it took. ``background=True`` reads in a thread and returns at
        once: queries run meanwhile, faster as it goes."""
        return self._session.require().anchors.warm_up(background=background)

    def optimize(self) -> dict[str, float]:
        """Build the anchor index over what was written since and compact the derived vectors (ingestion
        runs it at the end); returns the seconds each collection took."""
        return self._session.require().optimize()

    # -- workflows -------------------------------------------------------------------------------
    def calibrate(self, label_set: str, images: Sequence[ImageInput] | None = None,
                  truth: Sequence[int] | np.ndarray | None = None, *, embeddings: np.ndarray | None = None,
                  criterion: Criterion = "score", max_wrong: float | None = None,
                  target_accuracy: float | None = None, max_unknown: float | None = None, save: bool = True,
                  progress: bool = False) -> CalibrationReport:
        """Pick label set ``label_set``'s "unknown" threshold for ``criterion`` on labelled images (or
        their embeddings) for one target, and with ``save`` store it so that ``classify`` applies it."""
        return calibrate.calibrate(self._session, label_set, images, truth, embeddings=embeddings, criterion=criterion,
                                   max_wrong=max_wrong, target_accuracy=target_accuracy, max_unknown=max_unknown,
                                   save=save, progress=progress)

    def doctor(self, *, repair: bool = False, sample: int | None = None, force: bool = False,
               drop_journal: bool = False) -> list[Check]:
        """Check the store's invariants (and with ``repair`` fix what can be fixed). A repair refuses a
        mass deletion unless ``force``, and drops unfinished updates that cannot be carried out only
        with ``drop_journal``. A store whose config is missing or damaged opens only with
        ``AsifClient(path, for_repair=True)``; ``repair`` then restores the config's previous version."""
        return doctor.run(self._session, repair=repair, sample=sample, force=force, drop_journal=drop_journal)

    def prune(self, label_set: str, keep: int, out: str | os.PathLike[str], *, query_vectors: np.ndarray | None = None,
              query_labels: Sequence[int] | np.ndarray | None = None, k: int | None = None,
              method: prune.Method = "auto", importance: np.ndarray | None = None) -> dict[str, Any]:
        """Write a new embedded store at ``out`` with the ``keep`` anchors that matter most to one label
        set, and that label set rebuilt; with labelled sample queries, report both stores' accuracy.
        ``importance`` (one score per anchor id) replaces the ranking ``method`` computes."""
        return prune.prune_store(self._session, label_set, keep, out, query_vectors=query_vectors,
                                 query_labels=query_labels, k=k, method=method, importance=importance)

    def evaluate_classification(self, paths: Sequence[Any], labels: np.ndarray, classes: Sequence[str],
                                templates: Any = "default", *, label_set: str = "eval", keep: bool = False,
                                batch: int = 256, progress: bool = True) -> dict[str, Any]:
        """Zero-shot top-1/top-5, per-class accuracy and confusion matrix of labelled images through the store."""
        return evaluate.eval_classify(self._session, paths, labels, classes, templates, label_set=label_set,
                                      keep=keep, batch=batch, progress=progress)

    def evaluate_retrieval(self, images: Sequence[Any], captions: Sequence[Sequence[str]], *, name: str = "eval",
                           keep: bool = False, progress: bool = True) -> dict[str, Any]:
        """Text->image and image->text R@1/5/10 of images with their captions through galleries."""
        return evaluate.eval_retrieval(self._session, images, captions, name=name, keep=keep, progress=progress)

    def evaluate_retrieval_embeddings(self, image_vectors: np.ndarray, caption_vectors: np.ndarray,
                                      caption_owner: Sequence[int], query_vectors: np.ndarray,
                                      query_owner: Sequence[int], *, ks: Sequence[int] = (1, 5, 10), name: str = "eval",
                                      keep: bool = False) -> dict[str, Any]:
        """``evaluate_retrieval`` on precomputed embeddings: images as a gallery for the query texts,
        captions (``caption_owner``: each one's image row) as a gallery for the images."""
        return evaluate.store_retrieval(self._session, image_vectors, caption_vectors, caption_owner, query_vectors,
                                        query_owner, ks=ks, name=name, keep=keep)

    def backup(self, out: str | os.PathLike[str]) -> dict[str, Any]:
        """Write a consistent copy of the store (config and journal, every collection and blob, a
        manifest with checksums) into the new folder ``out``; returns what was written."""
        return backup.backup(self._session, out)

    @staticmethod
    def restore(source: str | os.PathLike[str], path: str | os.PathLike[str], *, force: bool = False) -> dict[str, Any]:
        """Bring the backup in ``source`` back as the embedded store ``path`` (checked against its
        manifest first); an existing store there is replaced only with ``force``."""
        return backup.restore(source, path, force=force)

    # -- info ------------------------------------------------------------------------------------
    def tune(self, *, holdout: int = 1000, seed: int = 0, apply: bool = True) -> TuneReport:
        """Choose k, p and the transforms' strengths from the store's own anchors: ``holdout`` groups
        of pairs (an image's captions together) are retrieved both ways against the rest for each
        setting; with ``apply`` the best is stored (method "tuned") with one journaled refit."""
        return tuning.tune_store(self._session, holdout=holdout, seed=seed, apply=apply)

    def info(self) -> dict[str, Any]:
        """The store's configuration and sizes, as plain data."""
        return store_info.describe(self._session)


def _spec(value: EncoderSpec | str | None, modality: str) -> EncoderSpec | None:
    if value is None or isinstance(value, EncoderSpec):
        return value
    return parse_spec(value, modality=modality)


def _declared(image: EncoderIdentity | None, text: EncoderIdentity | None) -> dict[Modality, EncoderIdentity]:
    out: dict[Modality, EncoderIdentity] = {}
    if image is not None:
        out["image"] = image
    if text is not None:
        out["text"] = text
    return out

