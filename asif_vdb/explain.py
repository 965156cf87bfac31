"""Why ASIF gave an answer: the anchor pairs behind each score, and an HTML report of them.

A score is the dot product of two sparse relative vectors, so it splits exactly into one term per
anchor pair that both sides share (query entry x candidate entry). The largest terms are the few
training pairs an answer rests on. The core (``explain_answers``) takes query and candidate
relative vectors, so it serves label sets and galleries alike; the store look-ups (payloads,
cosines) are done once for every anchor shown.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from asif_vdb import calibrate, labels, relative
from asif_vdb.config import GallerySetInfo, LabelSetInfo
from asif_vdb.errors import InputError, StoreError
from asif_vdb.index import ANCHORS, CANDIDATES, AsifIndex, Modality
from asif_vdb.store.base import Hits

THUMBNAIL = 160


@dataclass(frozen=True)
class AnchorShare:
    """One anchor pair's part of a score. ``share`` is query entry x candidate entry; the shares of
    every shared anchor sum to the score. Cosines are with the pair's image and caption."""

    anchor_id: int
    caption: str
    image: str | None
    image_similarity: float
    text_similarity: float
    share: float
    fraction: float


@dataclass(frozen=True)
class Neighbour:
    """An anchor pair close to the query in the query's own modality."""

    anchor_id: int
    caption: str
    image: str | None
    similarity: float


@dataclass
class AnswerExplanation:
    """One answer (a class, or a gallery item) and the anchors that contributed most to its score."""

    label: str
    score: float
    texts: list[str]
    anchors: list[AnchorShare]
    shared: int
    rest: float
    item_id: int | None = None
    image: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Explanation:
    """A query's top answers with their anchors, and the query's own nearest anchors."""

    query: str
    modality: str
    answers: list[AnswerExplanation]
    neighbours: list[Neighbour]
    unknown: bool = False
    threshold: float | None = None
    coverage: float | None = None
    coverage_threshold: float | None = None
    missing_images: list[str] = field(default_factory=list)

    @property
    def label(self) -> str | None:
        return None if self.unknown or not self.answers else self.answers[0].label

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "modality": self.modality, "label": self.label, "unknown": self.unknown,
                "threshold": self.threshold, "coverage": self.coverage,
                "coverage_threshold": self.coverage_threshold, "answers": [a.to_dict() for a in self.answers],
                "neighbours": [asdict(n) for n in self.neighbours]}


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


def split_score(query_rel: sp.spmatrix, candidate_rel: sp.spmatrix) -> tuple[np.ndarray, np.ndarray]:
    """(anchor ids, shares) of one score, largest share first; shares sum to the dot product."""
    if query_rel.shape[0] != 1 or candidate_rel.shape[0] != 1:
        raise ValueError("split_score takes one query row and one candidate row")
    return relative.contributions(query_rel, candidate_rel)


def explain_answers(
    index: AsifIndex,
    query_vector: np.ndarray,
    query_modality: Modality,
    query_hits: Hits,
    candidates: Sequence[Candidate],
    *,
    anchors: int = 5,
    neighbours: int = 5,
    reference: str = "",
    unknown: bool = False,
    threshold: float | None = None,
) -> Explanation:
    """Build the explanation of ``candidates`` for one query.

    ``query_hits`` are the query's top-k anchors (ids, cosines) in its own modality, from which its
    relative vector is made exactly as for ranking; every anchor with a non-zero share is among them.
    """
    params = index.config.params
    q_rel = relative.relative_vectors([query_hits.ids], [query_hits.scores], params.p, index.n_coords)
    query_sims = dict(zip(query_hits.ids.tolist(), query_hits.scores.tolist()))
    other: Modality = "text" if query_modality == "image" else "image"
    picked: list[tuple[Candidate, np.ndarray, np.ndarray]] = []
    for cand in candidates:
        ids, shares = split_score(q_rel, cand.rel)
        picked.append((cand, ids, shares))
    shown = sorted({int(i) for _, ids, _ in picked for i in ids[:anchors]}
                   | {int(i) for i in query_hits.ids[:neighbours]})
    payloads = index.anchor_payloads(shown)
    other_vecs = _anchor_vectors(index, [i for _, ids, _ in picked for i in ids[:anchors]], other)
    answers = []
    for cand, ids, shares in picked:
        top_ids, top_shares = ids[:anchors], shares[:anchors]
        rows = []
        for aid, share in zip(top_ids.tolist(), top_shares.tolist()):
            payload = payloads.get(aid, {})
            cand_sim = float(np.mean(cand.vectors @ other_vecs[aid])) if aid in other_vecs else float("nan")
            qsim = float(query_sims[aid])
            image_sim, text_sim = (qsim, cand_sim) if query_modality == "image" else (cand_sim, qsim)
            rows.append(AnchorShare(
                anchor_id=aid, caption=str(payload.get("caption", "")), image=_image_ref(payload),
                image_similarity=image_sim, text_similarity=text_sim, share=float(share),
                fraction=float(share / cand.score) if cand.score > 0 else 0.0,
            ))
        answers.append(AnswerExplanation(
            label=cand.label, score=float(cand.score), texts=list(cand.texts), anchors=rows,
            shared=int(len(ids)), rest=_rest(cand.score, top_shares), item_id=cand.item_id, image=cand.image,
        ))
    near = [
        Neighbour(anchor_id=aid, caption=str(payloads.get(aid, {}).get("caption", "")),
                  image=_image_ref(payloads.get(aid, {})), similarity=float(sim))
        for aid, sim in zip(query_hits.ids[:neighbours].tolist(), query_hits.scores[:neighbours].tolist())
    ]
    return Explanation(query=reference, modality=query_modality, answers=answers, neighbours=near,
                       unknown=unknown, threshold=threshold)


def _rest(score: float, shown: np.ndarray) -> float:
    """The part of the score the anchors not shown add (float noise below 1e-6 is reported as 0)."""
    rest = float(score) - float(np.sum(shown, dtype=np.float64))
    return 0.0 if abs(rest) < 1e-6 else rest


def _image_ref(payload: dict[str, Any]) -> str | None:
    ref = payload.get("image")
    return str(ref) if ref else None


def _anchor_vectors(index: AsifIndex, ids: Sequence[int], modality: Modality) -> dict[int, np.ndarray]:
    ids = sorted({int(i) for i in ids})
    points = index.backend.retrieve(ANCHORS[modality], ids, with_payload=False, vectors=("v",))
    return {p.id: np.asarray(p.dense["v"], np.float32) for p in points if "v" in p.dense}


def candidate_vectors(index: AsifIndex, ids: Sequence[int], modality: Modality) -> dict[int, np.ndarray]:
    """Stored dense embeddings of candidates (label-set prompts or gallery items), by id."""
    points = index.backend.retrieve(CANDIDATES, [int(i) for i in ids], with_payload=False, vectors=(modality,))
    return {p.id: np.asarray(p.dense[modality], np.float32) for p in points if modality in p.dense}


def pooled_relative(rows: Sequence[tuple[np.ndarray, np.ndarray]], n_coords: int) -> sp.csr_matrix:
    """Mean of several stored relative vectors (one row when there is one): the candidate a mean-pooled
    label-set class is scored against."""
    mat = relative.from_pairs(list(rows), n_coords)
    return sp.csr_matrix(mat.mean(axis=0)) if mat.shape[0] > 1 else mat


def explain_classes(
    index: AsifIndex,
    image_vector: np.ndarray,
    info: LabelSetInfo,
    *,
    top: int = 3,
    anchors: int = 5,
    neighbours: int = 5,
    threshold: float | None = None,
    coverage_threshold: float | None = None,
    reference: str = "",
) -> Explanation:
    """Explain the top classes of a label set for one image embedding.

    Classes are ranked exactly as ``classify`` ranks them (the store's sparse query, pooled per
    class). A max-pooled class is explained by its winning prompt; a mean-pooled one by the mean of
    its prompts' relative vectors, whose shares still sum to the class score."""
    vec = index.check_vectors(image_vector, "image", "query image")
    if len(vec) != 1:
        raise InputError(f"explain takes one image, got {len(vec)}")
    hits = index.anchor_topk(vec, "image")[0]
    params = index.config.params
    q_rel = relative.relative_vectors([hits.ids], [hits.scores], params.p, index.n_coords)
    cand_hits = index.rank_candidates(q_rel, labels.set_key(info.name), info.n_candidates)
    scores = labels.class_scores(cand_hits, info)[0]
    order = np.argsort(-scores, kind="stable")[: max(1, min(top, len(info.classes)))]
    n_t = len(info.templates)
    prompts = labels.prompts(info.classes, info.templates)
    ids = [info.first_id + int(c) * n_t + t for c in order for t in range(n_t)]
    rels = index.candidate_relatives(ids)
    dense = candidate_vectors(index, ids, "text")
    if len(rels) != len(ids) or len(dense) != len(ids):
        raise StoreError(f"label set {info.name!r} is incomplete in the store: rebuild it with labels create")
    candidates = []
    for c in order:
        cids = [info.first_id + int(c) * n_t + t for t in range(n_t)]
        rows = [rels[i] for i in cids]
        texts = [prompts[i - info.first_id] for i in cids]
        if info.aggregate == "max":
            per_prompt = relative.scores(q_rel, relative.from_pairs(rows, index.n_coords))[0]
            best = int(np.argmax(per_prompt))
            cids, rows, texts = [cids[best]], [rows[best]], [texts[best]]
        candidates.append(Candidate(
            label=info.classes[int(c)], score=float(scores[c]), texts=texts,
            rel=pooled_relative(rows, index.n_coords), vectors=np.stack([dense[i] for i in cids]),
        ))
    best_score = float(scores[order[0]])
    cover = float(calibrate.coverage([hits.scores], params.k, params.p)[0])
    unknown = best_score <= 0.0 or (threshold is not None and best_score < threshold) \
        or (coverage_threshold is not None and cover < coverage_threshold)
    out = explain_answers(index, vec[0], "image", hits, candidates, anchors=anchors, neighbours=neighbours,
                          reference=reference, unknown=unknown, threshold=threshold)
    out.coverage, out.coverage_threshold = cover, coverage_threshold
    return out


def explain_gallery(
    index: AsifIndex,
    query_vector: np.ndarray,
    query_modality: Modality,
    info: GallerySetInfo,
    *,
    top: int = 3,
    anchors: int = 5,
    neighbours: int = 5,
    reference: str = "",
) -> Explanation:
    """Explain the top items of a gallery search (as ``search`` ranks them) for one query.

    ``info`` is the gallery as ``gallery.resolve`` returns it (up to date with the anchors). An
    item is labelled by its ``ref`` (image path or text); an empty result is ``unknown``."""
    from asif_vdb import gallery

    if top < 1:
        raise InputError(f"top must be a positive integer, got {top!r}")
    vec = index.check_vectors(query_vector, query_modality, f"{query_modality} query")
    if len(vec) != 1:
        raise InputError(f"explain takes one query, got {len(vec)}")
    hits = index.anchor_topk(vec, query_modality)[0]
    params = index.config.params
    q_rel = relative.relative_vectors([hits.ids], [hits.scores], params.p, index.n_coords)
    found = index.rank_candidates(q_rel, gallery.set_key(info.name), int(top), with_payload=True)[0]
    ids = [int(i) for i in found.ids]
    rels = index.candidate_relatives(ids)
    dense = candidate_vectors(index, ids, info.modality)
    candidates = []
    for item, score, payload in zip(ids, found.scores.tolist(), found.payloads or [{} for _ in ids]):
        ref = payload.get("ref")
        label = str(ref) if ref else f"item {payload.get('anchor', item)}"
        candidates.append(Candidate(
            label=label, score=float(score), texts=[str(ref)] if info.modality == "text" and ref else [],
            rel=relative.from_pairs([rels[item]], index.n_coords), vectors=dense[item][None],
            item_id=int(payload.get("anchor", item)), image=str(ref) if info.modality == "image" and ref else None,
        ))
    return explain_answers(index, vec[0], query_modality, hits, candidates, anchors=anchors,
                           neighbours=neighbours, reference=reference, unknown=not candidates)


# -- the report ----------------------------------------------------------------------------------
def thumbnail_uri(image: Any, size: int = THUMBNAIL) -> str:
    """A JPEG thumbnail as a data URI (so the report is one self-contained file)."""
    from asif_vdb.encoders.images import load_image

    img = load_image(image).copy()
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(image: Any, alt: str, missing: list[str], base: Path | None) -> str:
    """An <img> with the embedded thumbnail, or a visible note when the image cannot be read."""
    if image is None:
        return '<div class="missing">no image reference</div>'
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_absolute() and base is not None and not path.exists():
            path = base / path
        if not path.is_file():
            missing.append(str(image))
            return f'<div class="missing">image file not found:<br>{html.escape(str(image))}</div>'
        image = path
    try:
        uri = thumbnail_uri(image)
    except InputError as e:
        missing.append(str(image) if isinstance(image, (str, Path)) else alt)
        return f'<div class="missing">image unreadable:<br>{html.escape(str(e))}</div>'
    return f'<img class="thumb" src="{uri}" alt="{html.escape(alt, quote=True)}">'


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 12px} h2{font-size:17px;margin:22px 0 8px}
.query{display:flex;gap:18px;align-items:flex-start}
.thumb{width:160px;height:160px;object-fit:contain;background:#eee;border:1px solid #ccc;display:block}
.missing{width:160px;height:160px;background:#fbe9e7;border:1px dashed #c62828;color:#c62828;
 font-size:11px;display:flex;align-items:center;justify-content:center;text-align:center;overflow:hidden;
 word-break:break-all}
.row{display:flex;gap:12px;flex-wrap:wrap}
.card{width:170px;font-size:12px}
.card p{margin:4px 0}
.share{font-weight:bold}
.bar{height:6px;background:#1565c0}
.unknown{color:#c62828;font-weight:bold}
table{border-collapse:collapse;font-size:13px} td,th{padding:2px 8px;text-align:left}
"""


def render_html(explanation: Explanation, query_image: Any = None, *, base: Path | None = None) -> str:
    """A self-contained HTML report: the query, each answer with its anchor pairs (image, caption,
    share), and the query's nearest anchors. Missing anchor images are reported, not fatal; their
    references are collected in ``explanation.missing_images``."""
    e = explanation
    missing: list[str] = []
    esc = html.escape
    verdict = f'<span class="unknown">unknown</span> ({esc(_why_unknown(e))})' if e.unknown \
        else f"<b>{esc(str(e.label))}</b>"
    cover = "" if e.coverage is None else (
        f"<p>anchor coverage {e.coverage:.3f}"
        + (f" (threshold {e.coverage_threshold:.3f})" if e.coverage_threshold is not None else "") + "</p>")
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>ASIF explanation: {esc(e.query)}</title>", f"<style>{_STYLE}</style>", "</head>", "<body>",
        f"<h1>ASIF explanation of {esc(e.query)}</h1>",
        '<div class="query">',
        _figure(query_image if query_image is not None else e.query, "query", missing, None)
        if e.modality == "image" else f"<p>{esc(e.query)}</p>",
        f"<div><p>answer: {verdict}</p>{cover}<table><tr><th>answer</th><th>score</th><th>shared anchors</th></tr>",
        *[f"<tr><td>{esc(a.label)}</td><td>{a.score:.4f}</td><td>{a.shared}</td></tr>" for a in e.answers],
        "</table></div></div>",
    ]
    for a in e.answers:
        parts.append(f"<h2>{esc(a.label)}: score {a.score:.4f} from {a.shared} shared anchor pairs "
                     f"(top {len(a.anchors)} shown; the rest add {a.rest:.4f})</h2>")
        if a.texts:
            parts.append(f"<p>{'prompts' if a.item_id is None else 'text'}: {esc('; '.join(a.texts))}</p>")
        parts.append('<div class="row">')
        if a.image is not None:
            parts.append(f'<div class="card">{_figure(a.image, a.label, missing, base)}<p><b>the answer</b></p></div>')
        top = max((s.share for s in a.anchors), default=0.0)
        for s in a.anchors:
            width = int(round(160 * s.share / top)) if top > 0 else 0
            parts.append(
                f'<div class="card">{_figure(s.image, s.caption, missing, base)}'
                f'<div class="bar" style="width:{width}px"></div>'
                f'<p class="share">share {s.share:.4f} ({100 * s.fraction:.1f}%)</p>'
                f"<p>{esc(s.caption)}</p>"
                f"<p>image cos {s.image_similarity:.3f} &middot; text cos {s.text_similarity:.3f} "
                f"&middot; #{s.anchor_id}</p></div>"
            )
        parts.append("</div>")
    parts.append("<h2>Nearest anchor pairs of the query</h2>")
    parts.append('<div class="row">')
    for n in e.neighbours:
        parts.append(f'<div class="card">{_figure(n.image, n.caption, missing, base)}'
                     f"<p>cos {n.similarity:.3f} &middot; #{n.anchor_id}</p><p>{esc(n.caption)}</p></div>")
    parts += ["</div>", "</body>", "</html>"]
    e.missing_images = sorted(set(missing))
    return "\n".join(parts)


def _why_unknown(e: Explanation) -> str:
    best = e.answers[0].score if e.answers else 0.0
    if best <= 0:
        return "the query shares no anchor with any answer"
    if e.coverage_threshold is not None and e.coverage is not None and e.coverage < e.coverage_threshold:
        return f"anchor coverage {e.coverage:.3f} below {e.coverage_threshold:.3f}"
    return f"best score {best:.4f} below threshold {e.threshold}"


def format_table(explanation: Explanation) -> str:
    """The explanation as plain text, for the terminal."""
    e = explanation
    head = f"{e.query}: " + (f"unknown ({_why_unknown(e)})" if e.unknown else str(e.label))
    if e.coverage is not None:
        head += f"  [anchor coverage {e.coverage:.3f}]"
    lines = [head]
    for a in e.answers:
        lines.append(f"  {a.label}  score {a.score:.4f}  ({a.shared} shared anchors)")
        lines.append(f"    {'anchor':>7} {'share':>8} {'%':>6} {'img cos':>8} {'txt cos':>8}  caption")
        for s in a.anchors:
            lines.append(f"    {s.anchor_id:>7} {s.share:>8.4f} {100 * s.fraction:>5.1f}% "
                         f"{s.image_similarity:>8.3f} {s.text_similarity:>8.3f}  {s.caption}")
        lines.append(f"    {'rest':>7} {a.rest:>8.4f}")
    lines.append("  nearest anchors of the query:")
    for n in e.neighbours:
        lines.append(f"    {n.anchor_id:>7} cos {n.similarity:.3f}  {n.caption}")
    return "\n".join(lines)
