"""Evaluation metrics in plain numpy: top-k accuracy, confusion matrices, recall@k.

Ranking ties are broken by the lowest index (a stable sort), the same rule as ``relative.top_k``,
so a metric never depends on the sort implementation.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

import numpy as np


def ranked(scores: np.ndarray, top: int | None = None) -> np.ndarray:
    """Column indices of each row, best first (the first ``top`` of them)."""
    s = np.asarray(scores)
    if s.ndim != 2:
        raise ValueError(f"scores must be 2-D, got shape {s.shape}")
    order = np.argsort(-s, axis=1, kind="stable")
    return order if top is None else order[:, :top]


def topk_accuracy(scores: np.ndarray, labels: Sequence[int] | np.ndarray, ks: Iterable[int] = (1, 5)) -> dict[int, float]:
    """Fraction of rows whose true label is among their k best-scored classes, for each k."""
    truth = np.asarray(labels)
    s = np.asarray(scores)
    if s.shape[0] != len(truth):
        raise ValueError(f"{s.shape[0]} score rows but {len(truth)} labels")
    if len(truth) == 0:
        raise ValueError("no rows to evaluate")
    wanted = sorted({int(k) for k in ks})
    order = ranked(s, max(wanted))
    hit_rank = np.where(order == truth[:, None], np.arange(order.shape[1])[None, :], order.shape[1])
    first = hit_rank.min(axis=1)
    return {k: float(np.mean(first < k)) for k in wanted}


def confusion_matrix(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts: row = true class, column = predicted class."""
    t, p = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    if t.shape != p.shape:
        raise ValueError(f"{t.size} true labels but {p.size} predictions")
    for name, a in (("true label", t), ("prediction", p)):
        if a.size and (a.min() < 0 or a.max() >= n_classes):
            raise ValueError(f"a {name} is outside 0..{n_classes - 1}")
    out = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(out, (t, p), 1)
    return out


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """Recall of each class (diagonal over row sums); NaN for a class with no examples."""
    c = np.asarray(confusion, np.float64)
    totals = c.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(c) / np.where(totals > 0, totals, 1), np.nan)


def recall_at_k(
    retrieved: Sequence[Sequence[int]] | np.ndarray,
    relevant: Sequence[Collection[int] | int],
    ks: Iterable[int] = (1, 5, 10),
) -> dict[int, float]:
    """Fraction of queries with at least one relevant item among their first k retrieved, for each k.

    ``retrieved[i]`` is query i's ranked item ids (any length; shorter lists simply miss);
    ``relevant[i]`` is one id or a collection of ids (image -> text: any of the image's captions)."""
    if len(retrieved) != len(relevant):
        raise ValueError(f"{len(retrieved)} retrieved lists but {len(relevant)} relevance sets")
    if len(retrieved) == 0:
        raise ValueError("no queries to evaluate")
    ks = sorted(set(int(k) for k in ks))
    first = np.empty(len(retrieved), np.int64)
    for i, (items, rel) in enumerate(zip(retrieved, relevant)):
        rel_set = {int(r) for r in rel} if isinstance(rel, Collection) else {int(rel)}
        first[i] = next((r for r, item in enumerate(items) if int(item) in rel_set), np.iinfo(np.int64).max)
    return {k: float(np.mean(first < k)) for k in ks}
