"""Label sets and zero-shot classification: class prompts ranked for an image, pooled per class.

Classifying an image is one top-k anchor search (its relative vector) and one sparse query against
the stored prompts; a class's score is its best template's (the paper's rule), their mean, or the
score of its one pooled prompt (``schema.params.Aggregate``), hub normalised when the label set is.
``maths.calibration.is_unknown`` decides "unknown".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from asif_vdb.engine.engine import Engine
from asif_vdb.engine.label_sets import check_normalise
from asif_vdb.engine.layout import labels_key
from asif_vdb.errors import InputError, StoreError
from asif_vdb.features.session import Session
from asif_vdb.features.templates import fill, load_templates
from asif_vdb.maths.calibration import coverage, is_unknown
from asif_vdb.maths.hub import hub_normalise_rows
from asif_vdb.schema.params import Aggregate
from asif_vdb.schema.results import Classification, Prediction
from asif_vdb.schema.store import LabelSetInfo, Normalise
from asif_vdb.store.base import Hits

#: "stored": the label set's calibrated thresholds; None: never unknown but for a zero score.
Threshold = float | None | Literal["stored"]


Classes = Sequence[str] | Mapping[str, str]


def check_classes(classes: Classes | str) -> tuple[list[str], list[str] | None]:
    """(display names, class ids or None): a list of non-empty, distinct names (they are the ids), or
    a mapping of distinct non-empty ids to non-empty names, which may repeat (ImageNet has two
    "crane" classes: a bird and a machine)."""
    if isinstance(classes, str):
        raise InputError(f"classes must be a list of names, got the string {classes[:40]!r}")
    ids = [str(i) for i in classes] if isinstance(classes, Mapping) else None
    names = list(classes.values()) if isinstance(classes, Mapping) else list(classes)
    for i, c in enumerate(names):
        if not isinstance(c, str) or not c.strip():
            raise InputError(f"class #{i} must be a non-empty name, got {c!r}")
    if not names:
        raise InputError("a label set needs at least one class name")
    if ids is not None:
        blank = [i for i in ids if not i.strip()]
        if blank:
            raise InputError("a class id must be a non-empty string")
        return names, ids
    dupes = sorted({c for c in names if names.count(c) > 1})
    if dupes:
        raise InputError(f"class names are repeated: {', '.join(dupes)}; give each class an id (a mapping of id "
                         "to name, or ID<TAB>NAME lines in a class file) to keep classes that share a name")
    return names, None


def prompts(classes: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Prompt i*T + t is template t filled with class i (the candidate order of a set that is not pooled)."""
    return [fill(t, c) for c in classes for t in templates]


def candidate_prompts(info: LabelSetInfo) -> list[list[str]]:
    """The prompts behind each stored candidate, in candidate order: one each, or a pooled class's all."""
    texts = prompts(info.classes, info.templates)
    step = len(info.templates) // info.prompts_per_class
    return [texts[i : i + step] for i in range(0, len(texts), step)]


def candidate_texts(info: LabelSetInfo) -> list[str]:
    """The text stored with each candidate: its prompt, or a pooled class's first prompt and how many it pools."""
    return [t[0] if len(t) == 1 else f"{t[0]} (mean of {len(t)} templates)" for t in candidate_prompts(info)]


def pool_prompts(vectors: np.ndarray, n_classes: int) -> np.ndarray:
    """One unit embedding per class: the normalised mean of its templates' (rows class-major)."""
    mean = np.asarray(vectors, np.float32).reshape(n_classes, -1, vectors.shape[1]).mean(axis=1)
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)


def create(session: Session, name: str, classes: Classes | str, templates: str | Sequence[str] | None = None,
           *, aggregate: Aggregate | None = None, replace: bool = True,
           normalise: Normalise = "auto") -> LabelSetInfo:
    """Encode the class prompts and store the label set (see ``AsifClient.create_label_set``)."""
    if not isinstance(name, str) or not name.strip():
        raise InputError("a label set needs a non-empty name")
    if aggregate not in (None, "max", "mean", "pool"):
        raise InputError(f"aggregate must be 'max', 'mean' or 'pool', got {aggregate!r}")
    check_normalise(normalise)
    names, ids = check_classes(classes)
    tmpl = load_templates(templates)
    engine = session.writable()
    if name in engine.config.label_sets and not replace:
        raise InputError(f"label set {name!r} exists; pass replace=True to rebuild it")
    info = LabelSetInfo(name=name, classes=names, ids=ids, templates=tmpl, normalise=normalise,
                        aggregate=engine.config.params.aggregate if aggregate is None else aggregate)
    vectors = session.encode_texts(prompts(names, tmpl))
    if info.prompts_per_class != len(tmpl):
        vectors = pool_prompts(vectors, len(names))
    return engine.label_sets.store(info, candidate_texts(info), vectors)


def class_scores(hits: Sequence[Hits], info: LabelSetInfo, hub: bool) -> np.ndarray:
    """(n_queries, n_classes) scores from prompt hits: max (the paper) or mean over templates, or the
    pooled prompt's, hub-normalised when ``hub`` (the store's ``hub_on``). Prompts a query shares no anchor with score 0."""
    n_c, n_t = len(info.classes), info.prompts_per_class
    per_prompt = np.zeros((len(hits), n_c * n_t), dtype=np.float32)
    for row, h in enumerate(hits):
        per_prompt[row, h.ids - info.first_id] = h.scores
    if hub:
        if info.hub_mean is None or info.hub_std is None or len(info.hub_mean) != per_prompt.shape[1]:
            raise StoreError(f"label set {info.name!r} is hub-normalised but has no statistics: rebuild it")
        per_prompt = hub_normalise_rows(per_prompt, np.asarray(info.hub_mean), np.asarray(info.hub_std))
    grid = per_prompt.reshape(len(hits), n_c, n_t)
    return grid.max(axis=2) if info.aggregate == "max" else grid.mean(axis=2)


def scores_and_coverage(engine: Engine, info: LabelSetInfo, image_vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class scores of a label set and each image's anchor coverage, from one query per image."""
    q = engine.anchors.query(image_vectors, "image", "image queries")
    ranked = engine.candidates.rank(q.rel, labels_key(info), info.n_candidates)
    params = engine.config.params
    return class_scores(ranked, info, engine.config.hub_on(info.normalise)), coverage([h.scores for h in q.hits], params.k, params.p)


def top_predictions(scores: np.ndarray, classes: Sequence[str], top: int, threshold: float | None = None,
                    cover: np.ndarray | None = None, coverage_threshold: float | None = None,
                    ids: Sequence[str] | None = None) -> list[Classification]:
    """The ``top`` classes of each row, best first (by id and name), with the "unknown" decision."""
    if not isinstance(top, (int, np.integer)) or isinstance(top, bool) or top < 1:
        raise InputError(f"top must be a positive integer, got {top!r}")
    top = min(int(top), len(classes))
    order = np.argsort(-scores, axis=1, kind="stable")[:, :top]
    out = []
    for row, idx in enumerate(order):
        preds = [Prediction(label=classes[i], id=(ids or classes)[i], score=float(scores[row, i])) for i in idx]
        unknown = is_unknown(preds[0].score, threshold, None if cover is None else float(cover[row]), coverage_threshold)
        out.append(Classification(predictions=preds, unknown=unknown, threshold=threshold))
    return out


def classify_embeddings(session: Session, image_vectors: np.ndarray, label_set: str, top: int = 5,
                        threshold: Threshold = "stored") -> list[Classification]:
    """Classify image embeddings (the store's image encoder's); "stored" applies the label set's
    calibrated thresholds (best score, and anchor coverage)."""
    engine = session.require()
    info = engine.label_sets.get(label_set)
    limit = info.threshold if threshold == "stored" else threshold
    cover_limit = info.coverage_threshold if threshold == "stored" else None
    scores, cover = scores_and_coverage(engine, info, image_vectors)
    return top_predictions(scores, info.classes, top, limit, cover, cover_limit, info.ids)


def classify(session: Session, images: Sequence[object], label_set: str, top: int = 5,
             threshold: Threshold = "stored", progress: bool = False, batch_size: int = 256) -> list[Classification]:
    """Encode and classify images in batches."""
    session.require().label_sets.get(label_set)
    out: list[Classification] = []
    for start in range(0, len(images), batch_size):
        vecs = session.encode_images(images[start : start + batch_size], progress=progress)
        out.extend(classify_embeddings(session, vecs, label_set, top, threshold))
    return out


def image_scores(session: Session, image_vectors: np.ndarray, label_set: str) -> np.ndarray:
    """(n_images, n_classes) ASIF scores of image embeddings against a label set."""
    engine = session.require()
    return scores_and_coverage(engine, engine.label_sets.get(label_set), image_vectors)[0]
