"""How much anchor support a prompt has (pure numpy): the anchors that stand out for it.

ASIF can only name what its anchors cover: a prompt's relative vector always holds k anchors, but
for a class no caption mentions they are the generic ones that are a little similar to everything.
An anchor *stands out* for a prompt when its similarity is at least ``z`` robust standard deviations
(1.4826 x the median absolute deviation) above the prompt's median similarity over all anchors: the
robust statistics keep a class that many anchors show (a third of a small store) from raising its own
bar; the number of such anchors, and the share of the
relative vector's squared mass they carry, measure the class's support (features/coverage.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Robust standard deviations above a prompt's median similarity for an anchor to stand out.
STAND_OUT_Z = 3.0
#: The median absolute deviation of a normal distribution times this is its standard deviation.
MAD_TO_STD = 1.4826


@dataclass
class PromptSupport:
    """Per prompt: the anchors that stand out (column indices), the share of the relative vector's
    squared mass on them, the mean similarity of its k anchors, and its best anchors (indices)."""

    strong: list[np.ndarray]
    weight: np.ndarray
    top_mean: np.ndarray
    nearest: np.ndarray


def prompt_support(sims: np.ndarray, k: int, p: float, z: float = STAND_OUT_Z, nearest: int = 3) -> PromptSupport:
    """Support of each row of ``sims`` (prompts x every anchor, in the anchor search's space)."""
    s = np.asarray(sims, np.float64)
    n, m = s.shape
    k = min(k, m)
    median = np.median(s, axis=1, keepdims=True)
    spread = MAD_TO_STD * np.median(np.abs(s - median), axis=1, keepdims=True)
    cut = median + z * np.maximum(spread, 1e-9)
    top = np.argpartition(-s, k - 1, axis=1)[:, :k]
    top_s = np.take_along_axis(s, top, axis=1)
    w = np.power(np.maximum(top_s, 0.0), p)
    w2 = w * w
    total = w2.sum(axis=1)
    on_strong = np.where(top_s >= cut, w2, 0.0).sum(axis=1)
    weight = np.divide(on_strong, total, out=np.zeros(n), where=total > 0)
    order = np.argsort(-top_s, axis=1)[:, :nearest]
    return PromptSupport(strong=[np.flatnonzero(row >= c) for row, c in zip(s, cut[:, 0])], weight=weight,
                         top_mean=top_s.mean(axis=1), nearest=np.take_along_axis(top, order, axis=1))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    ra, rb = _ranks(np.asarray(a, np.float64)), _ranks(np.asarray(b, np.float64))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / den) if den else 0.0


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=np.float64)
    for value in np.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks
