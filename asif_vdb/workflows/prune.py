"""Fine pruning: a smaller store specialised to one label set ("if we specialise the model, we can
keep few couples", Norelli et al. 2023).

An ASIF score is a sum over anchors (query entry x candidate entry), so an anchor matters to a label
set as much as the score mass it carries. Without queries that is its mass over the set's candidate
vectors (``candidates``); with a sample of queries, the mass it adds to every query x class score
(``score_mass``); with labelled queries, the mass it adds to the right class's score beyond the
classes' mean (``margin``: anchors that tell the classes apart, the default then) or to the right
class's score alone (``correct``). The kept pairs are copied with their vectors and payloads (no
re-encoding) into a new store, where the label set is rebuilt from its stored prompt embeddings.
With few anchors a smaller k suits better: by default k = kept / 10 (capped at the store's k),
which was best on the CIFAR-10 calibration slice (benchmarks/prune.py).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp

from asif_vdb.engine.engine import Engine
from asif_vdb.errors import InputError
from asif_vdb.features import label_sets
from asif_vdb.features.session import Session
from asif_vdb.schema.params import AsifParams
from asif_vdb.schema.store import LabelSetInfo, StoreConfig
from asif_vdb.store import open_backend

Method = Literal["auto", "candidates", "score_mass", "correct", "margin"]
COPY_BATCH = 2048


def label_set_vectors(engine: Engine, info: LabelSetInfo) -> sp.csr_matrix:
    """The relative vectors of a label set's prompts, in prompt order."""
    return engine.candidates.relative_matrix(list(range(info.first_id, info.first_id + info.n_candidates)))


def class_vectors(rel: sp.csr_matrix, info: LabelSetInfo) -> sp.csr_matrix:
    """One row per class: the sum of its templates' relative vectors (their score mass together)."""
    n_t = info.prompts_per_class
    pool = sp.csr_matrix((np.ones(rel.shape[0]), (np.arange(rel.shape[0]) // n_t, np.arange(rel.shape[0]))),
                         shape=(len(info.classes), rel.shape[0]))
    return (pool @ rel).tocsr()


def anchor_importance(
    engine: Engine, info: LabelSetInfo, query_vectors: np.ndarray | None = None,
    query_labels: Sequence[int] | np.ndarray | None = None, method: Method = "auto",
) -> np.ndarray:
    """Importance of every anchor id (0 for ids that are not anchors) to this label set.

    ``candidates``: mass over the classes' vectors; ``score_mass``: mass each anchor adds to every
    query x class score; ``correct``: mass it adds to the right class's score; ``margin``: that
    mass less its mean over all classes. ``auto`` picks the most informed one the inputs allow
    (candidates, score_mass, margin)."""
    per_class = class_vectors(label_set_vectors(engine, info), info)
    if method == "auto":
        method = "candidates" if query_vectors is None else ("margin" if query_labels is not None else "score_mass")
    if method == "candidates":
        return np.asarray(per_class.sum(axis=0)).ravel()
    if query_vectors is None:
        raise InputError(f"pruning method {method!r} needs sample queries")
    queries = engine.anchors.relative(query_vectors, "image")
    if method == "score_mass":
        return np.asarray(queries.sum(axis=0)).ravel() * np.asarray(per_class.sum(axis=0)).ravel()
    if method not in ("correct", "margin"):
        raise InputError(f"unknown pruning method {method!r} (candidates, score_mass, correct, margin)")
    if query_labels is None:
        raise InputError(f"pruning method {method!r} needs the sample queries' labels")
    y = np.asarray(query_labels, np.int64)
    if len(y) != queries.shape[0] or (len(y) and (y.min() < 0 or y.max() >= len(info.classes))):
        raise InputError(f"query labels: need {queries.shape[0]} class indices in 0..{len(info.classes) - 1}")
    right = np.asarray(queries.multiply(per_class[y]).sum(axis=0)).ravel()
    if method == "correct":
        return right
    mean = np.asarray(per_class.mean(axis=0)).ravel()
    return right - np.asarray(queries.sum(axis=0)).ravel() * mean


def choose(importance: np.ndarray, visible: np.ndarray, keep: int) -> np.ndarray:
    """The ``keep`` visible anchor ids of highest importance (ties: lower id first), sorted."""
    order = np.lexsort((visible, -importance[visible]))
    return np.sort(visible[order[:keep]])


def prune_store(
    session: Session, label_set: str, keep: int, out: str | os.PathLike[str], *, query_vectors: np.ndarray | None = None,
    query_labels: Sequence[int] | np.ndarray | None = None, k: int | None = None, method: Method = "auto",
    importance: np.ndarray | None = None,
) -> dict[str, object]:
    """Write a new embedded store at ``out`` with the ``keep`` anchors that matter most to
    ``label_set`` and that label set rebuilt; returns a report (with accuracies on the sample when
    labelled queries are given). ``importance`` (one score per anchor id) replaces the computed one."""
    engine = session.require()
    info = engine.label_sets.get(label_set)
    visible = engine.anchors.visible_ids()
    if not isinstance(keep, (int, np.integer)) or not 1 <= keep <= len(visible):
        raise InputError(f"keep must be between 1 and the store's {len(visible)} anchors, got {keep!r}")
    target = Path(out)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InputError(f"{target} exists and is not an empty folder: give a new directory for the pruned store")
    if importance is None:
        importance = anchor_importance(engine, info, query_vectors, query_labels, method)
    kept = choose(importance, visible, keep)
    k_new = k or min(engine.config.params.k, max(1, keep // 10))
    written = _write_store(engine, info, kept, target, engine.config.params.model_copy(update={"k": k_new,
                                                                                             "candidate_k": None}))
    report: dict[str, object] = {
        "store": str(target), "label_set": label_set, "kept": int(keep), "of": int(len(visible)),
        "fraction": round(keep / len(visible), 4), "k": k_new,
    }
    if query_vectors is not None and query_labels is not None:
        y = np.asarray(query_labels)
        full = float((label_sets.image_scores(session, query_vectors, label_set).argmax(axis=1) == y).mean())
        small = Session(open_backend(target), tuning=session.tuning)
        try:
            small_acc = float((label_sets.image_scores(small, query_vectors, label_set).argmax(axis=1) == y).mean())
        finally:
            small.close()
        report.update({"sample": int(len(y)), "accuracy_full": round(full, 4), "accuracy_pruned": round(small_acc, 4),
                       "accuracy_ratio": round(small_acc / full, 4) if full else None})
    report["anchors_written"] = written
    return report


def _write_store(engine: Engine, info: LabelSetInfo, kept: np.ndarray, out: Path, params: AsifParams) -> int:
    """The new store: the kept pairs (their raw vectors and payloads), the store's transforms (the
    anchors are written through them) and the label set from its stored prompt embeddings, with
    hub statistics from the pruned anchors. The full store's thresholds do not carry over."""
    c = engine.config
    config = StoreConfig(image_encoder=c.image_encoder, text_encoder=c.text_encoder, image_spec=c.image_spec,
                         text_spec=c.text_spec, params=params)
    backend = open_backend(out)
    try:
        new = Engine.create(backend, config, engine.state.tuning)
        for m, record in c.transforms.items():
            new.space.save(m, engine.space.transforms[m], record.slot)
            new.config.transforms[m] = record
        new.state.save()
        new.space.reload()
        written = 0
        for start in range(0, len(kept), COPY_BATCH):
            ids = [int(i) for i in kept[start : start + COPY_BATCH]]
            sides = {m: engine.anchors.points(ids, m) for m in ("image", "text")}
            rows = {m: {p.id: (p, v) for p, v in zip(points, vecs)} for m, (points, vecs) in sides.items()}
            ids = [i for i in ids if i in rows["image"] and i in rows["text"]]
            payloads = [{**{k: v for k, v in rows["text"][i][0].payload.items() if k not in ("ok", "tf")},
                         "pruned_from": i} for i in ids]
            _, new_ids, _ = new.add_pairs(np.stack([rows["image"][i][1] for i in ids]),
                                          np.stack([rows["text"][i][1] for i in ids]), payloads)
            written += len(new_ids)
        copy = LabelSetInfo(name=info.name, classes=info.classes, ids=info.ids, templates=info.templates, aggregate=info.aggregate,
                            normalise=info.normalise)
        new.label_sets.store(copy, label_sets.candidate_texts(info),
                             engine.label_sets.prompt_vectors(info))
        return written
    finally:
        backend.close()
