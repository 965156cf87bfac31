"""Why ASIF gave an answer: the anchor pairs behind each score.

A score is the dot product of two sparse relative vectors, so it splits exactly into one term per
anchor pair that both sides share (query entry x candidate entry). The largest terms are the few
pairs an answer rests on. The core (``explain_answers``) takes the query's anchors and the answers'
relative vectors, so it serves label sets and galleries alike; the store look-ups (payloads, cosines)
are done once for every anchor shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from asif_vdb.engine.anchors import AnchorQuery
from asif_vdb.engine.engine import Engine
from asif_vdb.engine.hub import other_modality
from asif_vdb.engine.layout import gallery_key, labels_key
from asif_vdb.errors import InputError, StoreError
from asif_vdb.features.label_sets import candidate_prompts, class_scores
from asif_vdb.maths import relative
from asif_vdb.maths.calibration import coverage, is_unknown
from asif_vdb.schema.results import AnchorShare, AnswerExplanation, Explanation, Neighbour
from asif_vdb.schema.store import GalleryInfo, LabelSetInfo, Modality


@dataclass
class Candidate:
    """What the core needs of one answer: its pooled relative vector (1 x n_coords) and the dense
    vectors behind it (several rows when templates are averaged: their cosines are averaged too)."""

    label: str
    score: float
    texts: list[str]
    rel: sp.csr_matrix
    vectors: np.ndarray
    item_id: int | None = None
    image: str | None = None


def explain_answers(engine: Engine, query: AnchorQuery, query_modality: Modality, candidates: Sequence[Candidate], *,
                    anchors: int = 5, neighbours: int = 5, reference: str = "", unknown: bool = False,
                    threshold: float | None = None) -> Explanation:
    """The explanation of ``candidates`` for one query (its top-k anchors and relative vector: every
    anchor with a non-zero share is among them)."""
    hits, q_rel = query.hits[0], query.rel[0]
    query_sims = dict(zip(hits.ids.tolist(), hits.scores.tolist()))
    picked = [(cand, *relative.contributions(q_rel, cand.rel)) for cand in candidates]
    shown = sorted({int(i) for _, ids, _ in picked for i in ids[:anchors]} | {int(i) for i in hits.ids[:neighbours]})
    payloads = engine.anchors.payloads(shown)
    found, vecs = engine.anchors.vectors([i for _, ids, _ in picked for i in ids[:anchors]], other_modality(query_modality))
    other_vecs = dict(zip(found.tolist(), vecs))
    answers = []
    for cand, ids, shares in picked:
        top_ids, top_shares = ids[:anchors], shares[:anchors]
        rows = []
        for aid, share in zip(top_ids.tolist(), top_shares.tolist()):
            payload = payloads.get(aid, {})
            cand_sim = float(np.mean(cand.vectors @ other_vecs[aid])) if aid in other_vecs else float("nan")
            qsim = float(query_sims[aid])
            image_sim, text_sim = (qsim, cand_sim) if query_modality == "image" else (cand_sim, qsim)
            rows.append(AnchorShare(anchor_id=aid, caption=str(payload.get("caption", "")), image=_image_ref(payload),
                                    image_similarity=image_sim, text_similarity=text_sim, share=float(share),
                                    fraction=float(share / cand.score) if cand.score > 0 else 0.0))
        answers.append(AnswerExplanation(label=cand.label, score=float(cand.score), texts=list(cand.texts),
                                         anchors=rows, shared=int(len(ids)), rest=_rest(cand.score, top_shares),
                                         item_id=cand.item_id, image=cand.image))
    near = [Neighbour(anchor_id=aid, caption=str(payloads.get(aid, {}).get("caption", "")),
                      image=_image_ref(payloads.get(aid, {})), similarity=float(sim))
            for aid, sim in zip(hits.ids[:neighbours].tolist(), hits.scores[:neighbours].tolist())]
    return Explanation(query=reference, modality=query_modality, answers=answers, neighbours=near,
                       unknown=unknown, threshold=threshold)


def _rest(score: float, shown: np.ndarray) -> float:
    """The part of the score the anchors not shown add (float noise below 1e-6 is reported as 0)."""
    rest = float(score) - float(np.sum(shown, dtype=np.float64))
    return 0.0 if abs(rest) < 1e-6 else rest


def _image_ref(payload: dict[str, Any]) -> str | None:
    ref = payload.get("image")
    return str(ref) if ref else None


def _check_counts(top: int, anchors: int, neighbours: int) -> None:
    for name, value, least in (("top", top, 1), ("anchors", anchors, 1), ("neighbours", neighbours, 0)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < least:
            raise InputError(f"{name} must be an integer >= {least}, got {value!r}")


def explain_classes(engine: Engine, image_vector: np.ndarray, info: LabelSetInfo, *, top: int = 3, anchors: int = 5,
                    neighbours: int = 5, threshold: float | None = None, coverage_threshold: float | None = None,
                    reference: str = "") -> Explanation:
    """Explain the top classes of a label set for one image embedding, ranked exactly as ``classify``
    ranks them. A max-pooled class is explained by its winning prompt; a mean-pooled one by the mean
    of its prompts' relative vectors, whose shares still sum to the class score; a pooled one by its
    one stored prompt (``texts``: the templates it pools)."""
    _check_counts(top, anchors, neighbours)
    query = engine.anchors.query(image_vector, "image", "query image")
    if query.rel.shape[0] != 1:
        raise InputError(f"explain takes one image, got {query.rel.shape[0]}")
    scores = class_scores(engine.candidates.rank(query.rel, labels_key(info), info.n_candidates), info,
                          engine.config.hub_on(info.normalise))[0]
    order = np.argsort(-scores, kind="stable")[: min(top, len(info.classes))]
    n_t, n_coords = info.prompts_per_class, engine.state.n_coords
    texts_all = candidate_prompts(info)
    ids = [info.first_id + int(c) * n_t + t for c in order for t in range(n_t)]
    rels = engine.candidates.relatives(ids)
    dense = engine.candidates.embeddings(ids, "text")
    if len(rels) != len(ids) or len(dense) != len(ids):
        raise StoreError(f"label set {info.name!r} is incomplete in the store: rebuild it with labels create")
    candidates = []
    for c in order:
        cids = [info.first_id + int(c) * n_t + t for t in range(n_t)]
        rows = [rels[i] for i in cids]
        texts = [t for i in cids for t in texts_all[i - info.first_id]]
        if info.aggregate == "max":
            best = int(np.argmax(relative.scores(query.rel, relative.from_pairs(rows, n_coords))[0]))
            cids, rows, texts = [cids[best]], [rows[best]], [texts[best]]
        mat = relative.from_pairs(rows, n_coords)
        pooled = sp.csr_matrix(mat.mean(axis=0)) if mat.shape[0] > 1 else mat
        candidates.append(Candidate(label=info.classes[int(c)], score=float(scores[c]), texts=texts, rel=pooled,
                                    vectors=np.stack([dense[i] for i in cids])))
    params = engine.config.params
    cover = float(coverage([query.hits[0].scores], params.k, params.p)[0])
    unknown = is_unknown(float(scores[order[0]]), threshold, cover, coverage_threshold)
    out = explain_answers(engine, query, "image", candidates, anchors=anchors, neighbours=neighbours,
                          reference=reference, unknown=unknown, threshold=threshold)
    out.coverage, out.coverage_threshold = cover, coverage_threshold
    return out


def explain_gallery(engine: Engine, query_vector: np.ndarray, query_modality: Modality, info: GalleryInfo, *,
                    top: int = 3, anchors: int = 5, neighbours: int = 5, reference: str = "") -> Explanation:
    """Explain the top items of a gallery search (as ``search`` ranks them) for one query; ``info`` is
    the gallery up to date with the anchors. An empty result is ``unknown``."""
    _check_counts(top, anchors, neighbours)
    query = engine.anchors.query(query_vector, query_modality, f"{query_modality} query")
    if query.rel.shape[0] != 1:
        raise InputError(f"explain takes one query, got {query.rel.shape[0]}")
    found = engine.candidates.rank(query.rel, gallery_key(info.name), int(top), with_payload=True)[0]
    ids = [int(i) for i in found.ids]
    rels = engine.candidates.relatives(ids)
    dense = engine.candidates.embeddings(ids, info.modality)
    candidates = []
    for item, score, payload in zip(ids, found.scores.tolist(), found.payloads or [{} for _ in ids]):
        ref = payload.get("ref")
        label = str(ref) if ref else f"item {payload.get('anchor', item)}"
        candidates.append(Candidate(
            label=label, score=float(score), texts=[str(ref)] if info.modality == "text" and ref else [],
            rel=relative.from_pairs([rels[item]], engine.state.n_coords), vectors=dense[item][None],
            item_id=int(payload.get("anchor", item)), image=str(ref) if info.modality == "image" and ref else None))
    return explain_answers(engine, query, query_modality, candidates, anchors=anchors, neighbours=neighbours,
                           reference=reference, unknown=not candidates)
