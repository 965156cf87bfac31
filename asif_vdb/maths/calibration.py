"""Choosing the "unknown" threshold of a label set, as pure functions on score arrays (no I/O).

ASIF answers "unknown" when the best class score is too low: the query shares too little with the
anchors behind any class. The threshold trades wrong answers for unknowns; it is picked on labelled
data for a target (at most this fraction of the answers wrong, or at most this fraction unknown).

``best`` holds each image's best score and ``correct`` whether that best class is right. Two
criteria can be calibrated and both apply (``is_unknown``):

- ``score`` (the paper's): the best class score. It predicts whether an answer is right, so it is
  the one that trades wrong answers for unknowns.
- ``coverage``: how well the anchors cover the query, whatever the classes: the root mean square of
  its top-k clamped anchor similarities (power p), i.e. its relative vector's norm before
  normalisation over sqrt(k). It hardly predicts right vs wrong among photos, but it separates
  inputs no anchor resembles (noise, flat colours, text) from photos far better than the score
  (benchmarks/unknown.py). Calibrate it with ``max_unknown`` on in-distribution images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from asif_vdb.errors import InputError
from asif_vdb.schema.results import Breakdown

Criterion = Literal["score", "coverage"]


def _arrays(best: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    b = np.asarray(best, dtype=np.float64).ravel()
    c = np.asarray(correct, dtype=bool).ravel()
    if b.shape != c.shape:
        raise InputError(f"calibration: {b.size} scores but {c.size} correctness flags")
    if b.size == 0:
        raise InputError("calibration needs at least one labelled image")
    if not np.isfinite(b).all():
        raise InputError("calibration: scores hold NaN or infinite values")
    return b, c


def answered(best: np.ndarray | Sequence[float], threshold: float | None) -> np.ndarray:
    """Which images get an answer: a positive best score that reaches the threshold (the
    array form of ``is_unknown`` without coverage)."""
    b = np.asarray(best, dtype=np.float64)
    keep = b > 0
    if threshold is not None:
        keep &= b >= threshold
    return keep


def is_unknown(best: float, threshold: float | None = None, coverage: float | None = None,
               coverage_threshold: float | None = None) -> bool:
    """The one "unknown" rule: the query shares no anchor with any answer (best score 0), or a
    calibrated threshold says so (best score below ``threshold``; anchor coverage below
    ``coverage_threshold``)."""
    if best <= 0.0 or (threshold is not None and best < threshold):
        return True
    return coverage is not None and coverage_threshold is not None and coverage < coverage_threshold


def breakdown(best: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray,
              threshold: float | None) -> Breakdown:
    b, c = _arrays(best, correct)
    ans = answered(b, threshold)
    n = b.size
    return Breakdown(n=n, right=float((ans & c).sum() / n), unknown=float((~ans).sum() / n),
                     wrong=float((ans & ~c).sum() / n))


def pick_threshold(
    best: Sequence[float] | np.ndarray,
    correct: Sequence[bool] | np.ndarray,
    *,
    max_wrong: float | None = None,
    target_accuracy: float | None = None,
    max_unknown: float | None = None,
) -> float:
    """The threshold that meets one target on these scores.

    - ``max_wrong``: at most this fraction of the *answered* images wrong; the lowest such threshold
      (most answers) wins. ``target_accuracy`` A is the same target stated as ``max_wrong = 1 - A``.
    - ``max_unknown``: at most this fraction of all images unknown; the highest such threshold
      (fewest wrong answers) wins.

    The threshold sits halfway between the lowest answered score and the next lower score, so it
    reproduces the chosen split on these scores with the widest margin; 0.0 means "answer every
    positive score". Raises InputError when no threshold meets the target.
    """
    targets = [t for t in (max_wrong, target_accuracy, max_unknown) if t is not None]
    if len(targets) != 1:
        raise InputError("give exactly one target: max_wrong, target_accuracy or max_unknown")
    if not 0.0 <= targets[0] <= 1.0:
        raise InputError(f"a calibration target is a fraction in [0, 1], got {targets[0]}")
    b, c = _arrays(best, correct)
    n = b.size
    pos = b > 0
    order = np.argsort(-b[pos], kind="stable")
    s, ok = b[pos][order], c[pos][order]
    if s.size == 0:
        raise InputError("calibration: no image has a positive score (no anchors shared with any class)")
    # Answering every score >= s[i] answers exactly the prefix up to the last index of s[i]'s ties.
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    n_answered = last + 1
    wrong = np.cumsum(~ok)[last]
    values = s[last]
    lower = np.r_[values[1:], 0.0]  # the next lower distinct score (0: nothing lower is answerable)

    if max_unknown is not None:
        unknown = (n - n_answered) / n
        feasible = np.flatnonzero(unknown <= max_unknown + 1e-12)
        if feasible.size == 0:
            raise InputError(
                f"no threshold keeps unknowns at or below {max_unknown:.3f}: "
                f"{(n - s.size) / n:.3f} of the images score 0 and are always unknown"
            )
        j = int(feasible[0])  # highest threshold that still answers enough
    else:
        limit = max_wrong if max_wrong is not None else 1.0 - float(target_accuracy or 0.0)
        rate = wrong / n_answered
        feasible = np.flatnonzero(rate <= limit + 1e-12)
        if feasible.size == 0:
            j_best = int(np.argmin(rate))
            raise InputError(
                f"no threshold keeps wrong answers at or below {limit:.3f} of those answered; the lowest "
                f"reachable is {rate[j_best]:.3f} (answering the {int(n_answered[j_best])} best-scoring of {n})"
            )
        j = int(feasible[-1])  # lowest threshold that meets the target
    if j == len(values) - 1:
        return 0.0
    return float((values[j] + lower[j]) / 2.0)


def coverage(similarities: Sequence[np.ndarray], k: int, p: float) -> np.ndarray:
    """Each query's anchor coverage: sqrt(sum over its top-k anchors of max(sim, 0)^(2p) / k).

    Missing slots (fewer than k anchors) count as 0, so a sparse anchor set covers less."""
    out = np.zeros(len(similarities), dtype=np.float64)
    for i, sims in enumerate(similarities):
        w = np.power(np.maximum(np.asarray(sims, dtype=np.float64), 0.0), p)
        out[i] = np.sqrt(np.sum(w * w) / max(k, 1))
    return out


def best_and_correct(scores: np.ndarray, truth: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's best score and whether its best class is the true one."""
    scores = np.asarray(scores)
    truth = np.asarray(truth, dtype=np.int64)
    if scores.ndim != 2 or scores.shape[0] != truth.size:
        raise InputError(f"calibration: scores of shape {scores.shape} for {truth.size} labels")
    top = np.argmax(scores, axis=1)
    return scores[np.arange(len(top)), top], top == truth


def calibrate_scores(
    scores: np.ndarray, truth: Sequence[int] | np.ndarray, *, criterion_values: np.ndarray | None = None,
    max_wrong: float | None = None, target_accuracy: float | None = None, max_unknown: float | None = None,
) -> tuple[float, Breakdown, Breakdown]:
    """(threshold, breakdown without, breakdown with) from class scores and true class indices.

    The threshold applies to ``criterion_values`` when given (e.g. coverage), else to the best
    score; an image whose best score is 0 stays unknown either way."""
    best, correct = best_and_correct(scores, truth)
    values = best if criterion_values is None else np.asarray(criterion_values, dtype=np.float64)
    # A zero best score is unknown whatever the criterion: give it no value to be answered by.
    values = np.where(best > 0, values, 0.0)
    t = pick_threshold(values, correct, max_wrong=max_wrong, target_accuracy=target_accuracy,
                       max_unknown=max_unknown)
    return t, breakdown(values, correct, None), breakdown(values, correct, t)
