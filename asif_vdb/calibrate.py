"""Choosing the "unknown" threshold of a label set on labelled images.

ASIF answers "unknown" when the best class score is too low: the query shares too little with the
anchors behind any class. The threshold trades wrong answers for unknowns; it is picked on labelled
data for a target (at most this fraction of the answers wrong, or at most this fraction unknown)
and stored with the label set, where ``classify`` applies it.

The pure functions work on score arrays: ``best`` (each image's best score) and ``correct`` (whether
that best class is right). An image is unknown when ``best <= 0`` or ``best < threshold``.

Two criteria can be calibrated and stored per label set, and both apply:

- ``score`` (the paper's): the best class score. It predicts whether an answer is right, so it is
  the one that trades wrong answers for unknowns.
- ``coverage``: how well the anchors cover the query, whatever the classes: the root mean square of
  its top-k clamped anchor similarities (power p), i.e. its relative vector's norm before
  normalisation over sqrt(k). It hardly predicts right vs wrong among photos, but it separates
  inputs no anchor resembles (noise, flat colours, text) from photos far better than the score
  (benchmarks/unknown.py). Calibrate it with ``max_unknown`` on in-distribution images: "reject
  at most this fraction of images like these".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from asif_vdb import labels, relative
from asif_vdb.errors import InputError

Criterion = Literal["score", "coverage"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Breakdown:
    """Fractions of all images: right, unknown, wrong (they sum to 1), as the paper reports them."""

    n: int
    right: float
    unknown: float
    wrong: float

    @property
    def answered_accuracy(self) -> float:
        """Right among answered (1.0 when nothing is answered)."""
        answered = self.right + self.wrong
        return self.right / answered if answered > 0 else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "answered_accuracy": self.answered_accuracy}


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


def answered(best: np.ndarray, threshold: float | None) -> np.ndarray:
    """Which images get an answer: a positive best score that reaches the threshold."""
    b = np.asarray(best, dtype=np.float64)
    keep = b > 0
    if threshold is not None:
        keep &= b >= threshold
    return keep


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
        limit = max_wrong if max_wrong is not None else 1.0 - float(target_accuracy)
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


def scores_and_coverage(index: Any, info: Any, image_vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class scores of a label set (exactly as ``class_scores``) and anchor coverage, from one
    top-k anchor search per image."""
    vecs = index.check_vectors(image_vectors, "image", "image queries")
    hits = index.anchor_topk(vecs, "image")
    params = index.config.params
    rel = relative.relative_vectors([h.ids for h in hits], [h.scores for h in hits], params.p, index.n_coords)
    ranked = index.rank_candidates(rel, labels.set_key(info.name), info.n_candidates)
    return labels.class_scores(ranked, info), coverage([h.scores for h in hits], params.k, params.p)


def mark_uncovered(results: Sequence[Any], cover: np.ndarray, limit: float) -> None:
    """Mark results unknown where the query's coverage is below ``limit`` (in place)."""
    for result, c in zip(results, cover):
        if c < limit:
            result.unknown = True


@dataclass
class CalibrationReport:
    """What ``calibrate`` chose and the breakdown without and with the threshold."""

    label_set: str
    criterion: str
    threshold: float
    target: dict[str, float]
    without: Breakdown
    with_threshold: Breakdown
    saved: bool

    def to_dict(self) -> dict[str, Any]:
        return {"label_set": self.label_set, "criterion": self.criterion, "threshold": self.threshold,
                "target": self.target, "without": self.without.to_dict(),
                "with_threshold": self.with_threshold.to_dict(), "saved": self.saved}

    def format(self) -> str:
        rows = [f"label set {self.label_set}: {self.criterion} threshold {self.threshold:.6g} "
                f"({', '.join(f'{k} {v:g}' for k, v in self.target.items())}; {self.without.n} images)",
                f"{'':16s} {'right':>7s} {'unknown':>8s} {'wrong':>7s} {'acc. answered':>14s}"]
        for name, b in (("no threshold", self.without), ("with threshold", self.with_threshold)):
            rows.append(f"{name:16s} {100 * b.right:6.1f}% {100 * b.unknown:7.1f}% {100 * b.wrong:6.1f}% "
                        f"{100 * b.answered_accuracy:13.1f}%")
        return "\n".join(rows)


def best_and_correct(scores: np.ndarray, truth: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's best score and whether its best class is the true one."""
    scores = np.asarray(scores)
    truth = np.asarray(truth, dtype=np.int64)
    if scores.ndim != 2 or scores.shape[0] != truth.size:
        raise InputError(f"calibration: scores of shape {scores.shape} for {truth.size} labels")
    top = np.argmax(scores, axis=1)
    return scores[np.arange(len(top)), top], top == truth


def read_class_map(class_map: str | Path | dict[str, str] | None) -> dict[str, str]:
    """A {folder: class} map given as a dict or a JSON file (None: no renaming)."""
    if class_map is None or isinstance(class_map, dict):
        return dict(class_map or {})
    try:
        data = json.loads(Path(class_map).read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{class_map}: cannot read the class map as JSON: {e}") from e
    if not isinstance(data, dict):
        raise InputError(f"{class_map}: a class map is a JSON object {{folder: class}}")
    return {str(k): str(v) for k, v in data.items()}


def read_image_folder(
    root: str | Path, classes: Sequence[str], class_map: dict[str, str] | str | Path | None = None
) -> tuple[list[Path], np.ndarray]:
    """Images of an ImageFolder (``root/CLASS/*.jpg``) and their class indices in ``classes``.

    A folder name must be a class of the label set, or be mapped to one by ``class_map`` (a dict or
    a JSON file {folder: class})."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder (expected an ImageFolder: one sub-folder per class)")
    mapping = read_class_map(class_map)
    index = {c: i for i, c in enumerate(classes)}
    paths: list[Path] = []
    labels: list[int] = []
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise InputError(f"{root}: no class sub-folders")
    unknown = [f.name for f in folders if mapping.get(f.name, f.name) not in index]
    if unknown:
        raise InputError(
            f"{root}: folder(s) {', '.join(unknown)} match no class of the label set "
            f"({', '.join(classes)}); rename them or give a class map"
        )
    for folder in folders:
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        paths.extend(files)
        labels.extend([index[mapping.get(folder.name, folder.name)]] * len(files))
    if not paths:
        raise InputError(f"{root}: no images found in its class folders")
    return paths, np.asarray(labels, dtype=np.int64)


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


def calibrate(
    client: Any,
    label_set: str,
    images: Sequence[Any] | None = None,
    truth: Sequence[int] | np.ndarray | None = None,
    *,
    embeddings: np.ndarray | None = None,
    criterion: Criterion = "score",
    max_wrong: float | None = None,
    target_accuracy: float | None = None,
    max_unknown: float | None = None,
    save: bool = True,
    progress: bool = False,
) -> CalibrationReport:
    """Pick label set ``label_set``'s threshold for ``criterion`` on labelled images (or their
    embeddings) and, with ``save``, store it so that ``classify`` applies it. The other criterion's
    stored threshold is kept; the breakdowns count only this criterion."""
    info = client.label_set(label_set)
    if criterion not in ("score", "coverage"):
        raise InputError(f"criterion must be 'score' or 'coverage', got {criterion!r}")
    if (images is None) == (embeddings is None):
        raise InputError("calibrate: give images or embeddings (not both)")
    if truth is None:
        raise InputError("calibrate: the true class index of each image is needed")
    if embeddings is None:
        embeddings = client.encode_images(list(images), progress=progress)
    truth = np.asarray(truth, dtype=np.int64)
    if truth.size and (truth.min() < 0 or truth.max() >= len(info.classes)):
        raise InputError(f"calibrate: class indices must be in [0, {len(info.classes)})")
    scores, cover = scores_and_coverage(client.index, info, embeddings)
    t, before, after = calibrate_scores(
        scores, truth, criterion_values=cover if criterion == "coverage" else None,
        max_wrong=max_wrong, target_accuracy=target_accuracy, max_unknown=max_unknown,
    )
    target = {k: v for k, v in (("max_wrong", max_wrong), ("target_accuracy", target_accuracy),
                                ("max_unknown", max_unknown)) if v is not None}
    if save:
        if criterion == "score":
            info.threshold = t
        else:
            info.coverage_threshold = t
        client.index.save()
    return CalibrationReport(label_set=label_set, criterion=criterion, threshold=t, target=target,
                             without=before, with_threshold=after, saved=save)
