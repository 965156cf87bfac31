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
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from asif_vdb import labels as label_sets
from asif_vdb import methods_index, refresh, relative
from asif_vdb.config import AsifParams, IndexConfig, LabelSetInfo
from asif_vdb.errors import InputError, StoreError
from asif_vdb.index import ANCHORS, CANDIDATES, VISIBLE, AsifIndex
from asif_vdb.store import open_backend

Method = Literal["auto", "candidates", "score_mass", "correct", "margin"]
COPY_BATCH = 2048
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def label_set_vectors(index: AsifIndex, info: LabelSetInfo) -> tuple[sp.csr_matrix, np.ndarray]:
    """(relative vectors, unit embeddings) of a label set's prompts, in prompt order."""
    ids = list(range(info.first_id, info.first_id + info.n_candidates))
    points = {p.id: p for p in index.backend.retrieve(CANDIDATES, ids, False, ("text",))}
    rels = index.candidate_relatives(ids)
    if len(points) != len(ids) or len(rels) != len(ids):
        missing = len(ids) - min(len(points), len(rels))
        raise StoreError(f"label set {info.name!r}: {missing} prompt(s) missing; run `asif doctor`")
    rel = relative.from_pairs([rels[i] for i in ids], index.n_coords)
    return rel, np.stack([points[i].dense["text"] for i in ids])


def class_vectors(rel: sp.csr_matrix, info: LabelSetInfo) -> sp.csr_matrix:
    """One row per class: the sum of its templates' relative vectors (their score mass together)."""
    n_t = len(info.templates)
    pool = sp.csr_matrix((np.ones(rel.shape[0]), (np.arange(rel.shape[0]) // n_t, np.arange(rel.shape[0]))),
                         shape=(len(info.classes), rel.shape[0]))
    return (pool @ rel).tocsr()


def anchor_importance(
    index: AsifIndex, info: LabelSetInfo, query_vectors: np.ndarray | None = None,
    query_labels: Sequence[int] | None = None, method: Method = "auto",
) -> np.ndarray:
    """Importance of every anchor id (0 for ids that are not anchors) to this label set.

    ``candidates``: mass over the classes' vectors; ``score_mass``: mass each anchor adds to every
    query x class score; ``correct``: mass it adds to the right class's score; ``margin``: that
    mass less its mean over all classes. ``auto`` picks the most informed one the inputs allow
    (candidates, score_mass, margin)."""
    rel, _ = label_set_vectors(index, info)
    per_class = class_vectors(rel, info)
    if method == "auto":
        method = "candidates" if query_vectors is None else ("margin" if query_labels is not None else "score_mass")
    if method == "candidates":
        return np.asarray(per_class.sum(axis=0)).ravel()
    if query_vectors is None:
        raise InputError(f"pruning method {method!r} needs sample queries")
    queries = index.relative(query_vectors, "image")
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


def visible_anchor_ids(index: AsifIndex) -> np.ndarray:
    return np.asarray(sorted(p.id for b in index.backend.scroll(ANCHORS["text"], VISIBLE, with_payload=False)
                             for p in b), np.int64)


def prune_store(
    client: Any, label_set: str, keep: int, out: str | os.PathLike, *, query_vectors: np.ndarray | None = None,
    query_labels: Sequence[int] | None = None, k: int | None = None, method: Method = "auto",
    importance: np.ndarray | None = None,
) -> dict[str, Any]:
    """Write a new embedded store at ``out`` with the ``keep`` anchors that matter most to
    ``label_set`` and that label set rebuilt; returns a report (with accuracies on the sample when
    labelled queries are given). ``importance`` (one score per anchor id) replaces the computed one."""
    index: AsifIndex = client.index
    info = client.label_set(label_set)
    visible = visible_anchor_ids(index)
    if not 1 <= keep <= len(visible):
        raise InputError(f"--keep must be between 1 and the store's {len(visible)} anchors, got {keep}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not empty: give a new directory for the pruned store")
    if importance is None:
        importance = anchor_importance(index, info, query_vectors, query_labels, method)
    kept = choose(importance, visible, keep)
    k_new = k or min(index.config.params.k, max(1, keep // 10))
    pruned = _write_store(index, info, kept, out, AsifParams(k=k_new, p=index.config.params.p))
    report: dict[str, Any] = {
        "store": str(out), "label_set": label_set, "kept": int(keep), "of": int(len(visible)),
        "fraction": round(keep / len(visible), 4), "k": k_new,
    }
    if query_vectors is not None and query_labels is not None:
        y = np.asarray(query_labels)
        from asif_vdb.client import AsifClient

        full = float((client.class_scores(query_vectors, label_set).argmax(axis=1) == y).mean())
        with AsifClient(out) as small:
            small_acc = float((small.class_scores(query_vectors, label_set).argmax(axis=1) == y).mean())
        report.update({"sample": int(len(y)), "accuracy_full": round(full, 4), "accuracy_pruned": round(small_acc, 4),
                       "accuracy_ratio": round(small_acc / full, 4) if full else None})
    report["anchors_written"] = pruned
    return report


def _write_store(index: AsifIndex, info: LabelSetInfo, kept: np.ndarray, out: Path, params: AsifParams) -> int:
    c = index.config
    config = IndexConfig(image_encoder=c.image_encoder, text_encoder=c.text_encoder, image_spec=c.image_spec,
                         text_spec=c.text_spec, params=params)
    backend = open_backend(out)
    try:
        new = AsifIndex(backend, config)
        for m, record in c.transforms.items():  # the store's method carries over: its fitted transforms
            methods_index.save_transform(new, m, index.transforms[m], record.slot)  # type: ignore[attr-defined]
            new.config.transforms[m] = record
        new.save()
        methods_index.install(new)  # anchors below are written through it
        written = 0
        for start in range(0, len(kept), COPY_BATCH):
            ids = [int(i) for i in kept[start : start + COPY_BATCH]]
            sides = {m: {p.id: p for p in index.backend.retrieve(n, ids, True, ("v",))} for m, n in ANCHORS.items()}
            ids = [i for i in ids if i in sides["image"] and i in sides["text"]]
            payloads = [{**{k: v for k, v in sides["text"][i].payload.items() if k not in ("ok", "tf")},
                         "pruned_from": i}
                        for i in ids]
            _, new_ids, _ = refresh.add_pairs(
                new, np.stack([sides["image"][i].dense["v"] for i in ids]),
                np.stack([sides["text"][i].dense["v"] for i in ids]), payloads,
            )
            written += len(new_ids)
        _, prompts = label_set_vectors(index, info)
        copy = LabelSetInfo(name=info.name, classes=info.classes, templates=info.templates, aggregate=info.aggregate,
                            normalise=info.normalise, first_id=new.allocate_candidates(info.n_candidates))
        texts = label_sets.prompts(info.classes, info.templates)
        new.put_candidates(label_sets.set_key(info.name), list(range(copy.first_id, copy.first_id + len(texts))),
                           prompts, "text", [{"class": i // len(info.templates), "text": t} for i, t in enumerate(texts)])
        if copy.normalise == "hub":  # its statistics come from the pruned store's own anchors
            methods_index.label_set_statistics(new, copy)
        new.config.label_sets[info.name] = copy  # the full store's threshold does not carry over
        new.save()
        return written
    finally:
        backend.close()


def encode_sample(client: Any, folder: Path, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Images of ``folder/CLASS/*`` (folders named as the label set's classes), encoded, with labels."""
    paths, labels = [], []
    for i, name in enumerate(classes):
        sub = Path(folder) / name
        if sub.is_dir():
            files = sorted(f for f in sub.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            paths.extend(files)
            labels.extend([i] * len(files))
    if not paths:
        raise InputError(f"{folder}: no images in sub-folders named as the classes ({', '.join(classes[:5])}, ...)")
    return client.encode_images(paths, progress=True), np.asarray(labels)
