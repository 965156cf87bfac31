"""Hub normalisation of candidate scores, as pure functions (no I/O); the engine keeps the statistics.

A few candidates (a prompt naming a class many anchor captions mention, an image that resembles many
anchors) score high against every query. Hub normalisation scores a candidate as
``(score - mean) / std`` over a fixed reference sample of queries drawn from the anchors of the query
modality, so a candidate that is near everything no longer wins by default.
"""

from __future__ import annotations

import numpy as np

from asif_vdb.errors import InputError

#: Reference queries for hub statistics: at most this many anchors, evenly spaced by id.
HUB_REFERENCE = 1000
#: A candidate whose scores barely vary over the reference set keeps this spread (no division by 0).
MIN_STD = 1e-6


def reference_sample(ids: np.ndarray, n: int = HUB_REFERENCE) -> np.ndarray:
    """At most ``n`` ids evenly spaced through the sorted ``ids``: a fixed, reproducible sample."""
    ids = np.unique(np.asarray(ids, np.int64))
    if len(ids) <= n:
        return ids
    return ids[np.floor(np.arange(n) * (len(ids) / n)).astype(np.int64)]


def hub_statistics(reference_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-candidate (mean, std) of scores against the reference queries: (n_ref, n_cand) in."""
    s = np.asarray(reference_scores, np.float64)
    if s.ndim != 2 or s.shape[0] == 0:
        raise InputError("hub statistics need at least one reference query")
    return s.mean(axis=0), np.maximum(s.std(axis=0), MIN_STD)


def hub_normalise(scores: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(score - mean) / std`` per candidate (columns)."""
    return ((np.asarray(scores, np.float64) - np.asarray(mean)[None, :]) / np.asarray(std)[None, :]).astype(np.float32)


def hub_normalise_rows(scores: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``hub_normalise``, except that a row of all-zero scores (a query sharing no anchor with any
    candidate) stays all zero: it has no evidence to normalise, and zero keeps it "unknown"."""
    s = np.asarray(scores, np.float64)
    out = hub_normalise(s, mean, std)
    out[~(s != 0).any(axis=1)] = 0.0
    return out
