"""Choosing the tuned method's settings from a store's own anchors, with no labels (pure numpy).

The anchor pairs are the one coupled data every store has. A slice of them is held out (whole
groups: the captions of one image go together, else a held-out caption would find its own image
among the anchors), the transforms are fitted on the rest, and each setting (query k, p, the
transforms' whitening strengths) is scored by retrieval of the held-out pairs with the rest as
anchors: each held-out caption ranks the held-out images, each held-out image the held-out captions
(one caption per group, the first), with candidates at the store's candidate k and, when the method
hub-normalises, over a reference sample of the remaining anchors, as the store would. The score is
the mean of R@1, R@5 and R@10 over both directions.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from asif_vdb.errors import InputError
from asif_vdb.maths import hub as hubs
from asif_vdb.maths.relative import relative_vectors, scores, top_k_rows
from asif_vdb.maths.transforms import fit_transform

RECALL_AT = (1, 5, 10)


@dataclass(frozen=True)
class Grid:
    """The settings ``tune`` compares."""

    ks: tuple[int, ...] = (800, 1600, 3200)
    ps: tuple[float, ...] = (1.0, 1.5, 2.0)
    image_whiten: tuple[float, ...] = (3.0, 10.0, 30.0)
    text_whiten: tuple[float, ...] = (1.0, 3.0, 10.0)


@dataclass
class Row:
    """One setting and its held-out retrieval figures."""

    k: int
    p: float
    image_whiten: float
    text_whiten: float
    figures: dict[str, float] = field(default_factory=dict)

    @property
    def score(self) -> float:
        return self.figures["score"]


def holdout(groups: Sequence[str], n_groups: int, seed: int = 0) -> np.ndarray:
    """Mask of the rows held out: every row of ``n_groups`` groups drawn at random (fixed seed)."""
    names = np.asarray([str(g) for g in groups])
    unique = np.unique(names)
    if n_groups < 10 or len(unique) < 2 * n_groups:
        raise InputError(f"tuning holds out {n_groups} groups of pairs and needs at least twice as many; "
                         f"the store has {len(unique)} (add anchors, or hold out fewer)")
    chosen = np.random.default_rng(seed).choice(unique, n_groups, replace=False)
    return np.isin(names, chosen)


def recall(s: np.ndarray) -> dict[str, float]:
    """R@k of a square score matrix whose row i's right answer is column i (ties count against it)."""
    diag = s[np.arange(len(s)), np.arange(len(s))]
    rank = (s > diag[:, None]).sum(axis=1) + (s == diag[:, None]).sum(axis=1) - 1
    return {f"R@{k}": round(float(np.mean(rank < k)), 4) for k in RECALL_AT}


class _Side:
    """One modality under one whitening strength: its queries' top anchors, any k up to K."""

    def __init__(self, anchors: np.ndarray, queries: np.ndarray, reference: np.ndarray, options: dict[str, float],
                 K: int) -> None:
        t = fit_transform(anchors, options.get("power", 1.0), True, options["whiten"])
        a = t.apply(anchors)
        self.query_ids, self.query_sims = top_k_rows(t.apply(queries), a, K)
        self.ref_ids, self.ref_sims = top_k_rows(a[reference], a, K)
        self.n = len(anchors)

    def rel(self, which: str, k: int, p: float) -> sp.csr_matrix:
        ids, sims = (self.query_ids, self.query_sims) if which == "query" else (self.ref_ids, self.ref_sims)
        return relative_vectors(list(ids[:, :k]), list(sims[:, :k]), p, self.n)


def tune(image: np.ndarray, text: np.ndarray, groups: Sequence[str], *, grid: Grid = Grid(), candidate_k: int | None = None,
         image_power: float = 0.5, hub: bool = True, n_groups: int = 1000, seed: int = 0,
         progress: Callable[[str], None] | None = None) -> list[Row]:
    """Score every setting of ``grid`` on held-out anchor pairs (rows of ``image`` / ``text``, unit
    vectors, grouped by ``groups``); rows best first. ``candidate_k`` None: candidates use each
    setting's k, like queries."""
    image, text = np.asarray(image, np.float32), np.asarray(text, np.float32)
    if not len(image) == len(text) == len(groups):
        raise InputError(f"{len(image)} image vectors, {len(text)} caption vectors and {len(groups)} groups differ")
    held = holdout(groups, n_groups, seed)
    names = np.asarray([str(g) for g in groups])
    first = np.flatnonzero(held)[np.unique(names[held], return_index=True)[1]]  # one pair per held-out group
    rest = np.flatnonzero(~held)
    ref = hubs.reference_sample(np.arange(len(rest)))
    K = min(max(grid.ks), len(rest))
    images = {w: _Side(image[rest], image[first], ref, {"power": image_power, "whiten": w}, K) for w in grid.image_whiten}
    if progress:
        progress(f"image side: {len(grid.image_whiten)} strengths")
    texts = {w: _Side(text[rest], text[first], ref, {"whiten": w}, K) for w in grid.text_whiten}
    if progress:
        progress(f"caption side: {len(grid.text_whiten)} strengths")
    rows = []
    for wi, wt, k, p in itertools.product(grid.image_whiten, grid.text_whiten, grid.ks, grid.ps):
        kk, ck = min(k, K), min(candidate_k or k, k, K)
        im, tx = images[wi], texts[wt]
        q_img, q_txt = im.rel("query", kk, p), tx.rel("query", kk, p)
        g_img, g_txt = im.rel("query", ck, p), tx.rel("query", ck, p)
        t2i, i2t = scores(q_txt, g_img), scores(q_img, g_txt)
        if hub:
            t2i = _hub(t2i, scores(tx.rel("ref", kk, p), g_img))
            i2t = _hub(i2t, scores(im.rel("ref", kk, p), g_txt))
        f = {**{f"t2i_{m}": v for m, v in recall(t2i).items()}, **{f"i2t_{m}": v for m, v in recall(i2t).items()}}
        f["score"] = round(float(np.mean(list(f.values()))), 4)
        rows.append(Row(k=k, p=p, image_whiten=wi, text_whiten=wt, figures=f))
    return sorted(rows, key=lambda r: -r.score)


def _hub(s: np.ndarray, reference: np.ndarray) -> np.ndarray:
    mean, std = hubs.hub_statistics(reference)
    return hubs.hub_normalise_rows(s, mean, std)
