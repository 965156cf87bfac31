"""Label sets: class names x prompt templates stored as candidates, and per-class pooling of scores."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from asif_vdb.config import LabelSetInfo
from asif_vdb.errors import InputError
from asif_vdb.results import Classification, Prediction
from asif_vdb.store.base import Hits
from asif_vdb.templates import fill


def set_key(name: str) -> str:
    return f"labels:{name}"


def check_classes(classes: Sequence[str]) -> list[str]:
    out = [str(c) for c in classes]
    if not out:
        raise InputError("a label set needs at least one class name")
    for i, c in enumerate(out):
        if not c.strip():
            raise InputError(f"class #{i} has an empty name")
    dupes = sorted({c for c in out if out.count(c) > 1})
    if dupes:
        raise InputError(f"class names are repeated: {', '.join(dupes)}")
    return out


def prompts(classes: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Prompt i*T + t is template t filled with class i: the candidate id order of a label set."""
    return [fill(t, c) for c in classes for t in templates]


def class_scores(hits: Sequence[Hits], info: LabelSetInfo) -> np.ndarray:
    """(n_queries, n_classes) scores from candidate hits: max (the paper) or mean over templates.

    Candidates a query shares no anchor with score 0 (Qdrant leaves them out of the results)."""
    n_c, n_t = len(info.classes), len(info.templates)
    per_prompt = np.zeros((len(hits), n_c * n_t), dtype=np.float32)
    for row, h in enumerate(hits):
        per_prompt[row, h.ids - info.first_id] = h.scores
    if info.normalise != "none":  # hub normalisation (issue 4B; methods_index.py)
        from asif_vdb.methods_index import normalise_prompt_scores

        per_prompt = normalise_prompt_scores(per_prompt, info)
    grid = per_prompt.reshape(len(hits), n_c, n_t)
    return grid.max(axis=2) if info.aggregate == "max" else grid.mean(axis=2)


def top_predictions(
    scores: np.ndarray, classes: Sequence[str], top: int, threshold: float | None
) -> list[Classification]:
    top = max(1, min(top, len(classes)))
    order = np.argsort(-scores, axis=1, kind="stable")[:, :top]
    out = []
    for row, idx in enumerate(order):
        preds = [Prediction(classes[i], float(scores[row, i])) for i in idx]
        best = preds[0].score
        unknown = best <= 0.0 or (threshold is not None and best < threshold)
        out.append(Classification(preds, unknown=unknown, threshold=threshold))
    return out
