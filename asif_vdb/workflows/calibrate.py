"""Calibrating a label set's "unknown" threshold on labelled images, through the store.

The threshold trades wrong answers for unknowns (maths/calibration.py picks it); it is stored with
the label set, where ``classify`` applies it. The two criteria (best score, anchor coverage) are
stored separately and both apply.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from asif_vdb.errors import InputError
from asif_vdb.features.label_sets import scores_and_coverage
from asif_vdb.features.session import Session
from asif_vdb.maths.calibration import Criterion, calibrate_scores
from asif_vdb.schema.results import CalibrationReport


def calibrate(session: Session, label_set: str, images: Sequence[Any] | None = None,
              truth: Sequence[int] | np.ndarray | None = None, *, embeddings: np.ndarray | None = None,
              criterion: Criterion = "score", max_wrong: float | None = None, target_accuracy: float | None = None,
              max_unknown: float | None = None, save: bool = True, progress: bool = False) -> CalibrationReport:
    """Pick a label set's threshold for ``criterion`` on labelled images (or their embeddings) and,
    with ``save``, store it. The other criterion's stored threshold is kept."""
    engine = session.require()
    info = engine.label_sets.get(label_set)
    if criterion not in ("score", "coverage"):
        raise InputError(f"criterion must be 'score' or 'coverage', got {criterion!r}")
    if (images is None) == (embeddings is None):
        raise InputError("calibrate: give images or embeddings (not both)")
    if truth is None:
        raise InputError("calibrate: the true class index of each image is needed")
    labels = np.asarray(truth)
    if labels.dtype.kind not in "iu" or labels.ndim != 1:
        raise InputError("calibrate: the true classes are a list of class indices")
    if labels.size and (labels.min() < 0 or labels.max() >= len(info.classes)):
        raise InputError(f"calibrate: class indices must be in [0, {len(info.classes)})")
    vectors = embeddings if embeddings is not None else session.encode_images(list(images or []), progress=progress)
    scores, cover = scores_and_coverage(engine, info, vectors)
    t, before, after = calibrate_scores(scores, labels, criterion_values=cover if criterion == "coverage" else None,
                                        max_wrong=max_wrong, target_accuracy=target_accuracy, max_unknown=max_unknown)
    target = {k: float(v) for k, v in (("max_wrong", max_wrong), ("target_accuracy", target_accuracy),
                                       ("max_unknown", max_unknown)) if v is not None}
    if save:
        if criterion == "score":
            info.threshold = t
        else:
            info.coverage_threshold = t
        engine.state.save()
    return CalibrationReport(label_set=label_set, criterion=criterion, threshold=t, target=target,
                             without=before, with_threshold=after, saved=save)
