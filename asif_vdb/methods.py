"""Optional refinements of plain ASIF, as pure functions (no I/O); the index applies them.

- Centring: subtract a fixed mean (the anchors' mean, per modality) from every embedding before
  cosine. Off-the-shelf embeddings share a large common direction, so raw cosines to the anchors
  are all high and barely discriminate; centred ones spread out.
- Hub normalisation: some candidates (a prompt naming a class that many anchor captions mention,
  a gallery image that resembles many anchors) score high against every query. Their score is
  standardised by their own mean and spread over a reference query set taken from the anchors.
"""

from __future__ import annotations

import numpy as np

from asif_vdb.errors import InputError

#: Below this norm a centred vector has no direction left (the input equals the mean).
ZERO_NORM = 1e-6


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    arr = np.asarray(vectors, dtype=np.float32)
    return arr / np.linalg.norm(arr, axis=-1, keepdims=True)


def mean_vector(vectors: np.ndarray) -> np.ndarray:
    """The mean of L2-normalised rows: the centre to subtract (norm < 1)."""
    arr = unit_rows(np.atleast_2d(vectors))
    if len(arr) == 0:
        raise InputError("cannot compute a mean of zero vectors")
    return arr.astype(np.float64).mean(axis=0).astype(np.float32)


def centre(vectors: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Unit rows of ``normalise(v) - mean``; a row equal to the mean has no direction and is refused."""
    arr = unit_rows(np.atleast_2d(vectors)) - np.asarray(mean, np.float32)[None, :]
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if (norms < ZERO_NORM).any():
        raise InputError(f"vector #{int(np.argmin(norms))} equals the centring mean: it has no direction")
    return (arr / norms).astype(np.float32)
