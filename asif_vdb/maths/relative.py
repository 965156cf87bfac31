"""The ASIF maths, with no I/O: top-k, relative vectors from anchor similarities, sparse scoring.

A relative vector of a query has one coordinate per anchor id. It keeps the query's top-k anchor
similarities, clamps them at 0, raises them to the power p and L2-normalises them. An image and a
text are compared by the dot product of their relative vectors (the same anchor id is the same
image-caption pair in both spaces). ``relative_flat`` is the one implementation of that formula:
the CSR matrices of queries and the lists the engine stores for candidates both come from it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

#: Relative vectors whose norm before normalisation is below this are all-zero ("unknown").
ZERO_NORM = 1e-12


def top_k(similarities: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of each row's k largest entries (k capped at the row length),
    best first; equal values rank by lowest index, so the answer never depends on the sort."""
    sims = np.asarray(similarities, dtype=np.float32)
    if sims.ndim != 2:
        raise ValueError(f"similarities must be 2-D, got shape {sims.shape}")
    n_rows, n_cols = sims.shape
    k = min(int(k), n_cols)
    if k <= 0:
        return np.zeros((n_rows, 0), np.int64), np.zeros((n_rows, 0), np.float32)
    if k == n_cols:
        order = np.argsort(-sims, axis=1, kind="stable")
        return order, np.take_along_axis(sims, order, axis=1)
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(sims, part, axis=1)
    # argpartition breaks a tie at the k-th value arbitrarily: such rows take the exact sort.
    kth = vals.min(axis=1)
    tied = np.flatnonzero((sims == kth[:, None]).sum(axis=1) != (vals == kth[:, None]).sum(axis=1))
    for row in tied.tolist():
        part[row] = np.argsort(-sims[row], kind="stable")[:k]
        vals[row] = sims[row, part[row]]
    order = np.lexsort((part, -vals), axis=1)
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)


def clamp_power(sims: np.ndarray, p: float) -> np.ndarray:
    """Similarities clamped at 0 and raised to p: the weights of a relative vector before normalising."""
    return np.power(np.maximum(sims, 0.0), p)


def relative_flat(
    anchor_ids: Sequence[np.ndarray], similarities: Sequence[np.ndarray], p: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Relative vectors in flat form: (entries per row, anchor ids, float32 values), rows in input
    order, each row's entries in its input order with non-positive weights left out. A row whose
    weights vanish (no positive similarity) has no entries: it is the all-zero "unknown" vector."""
    n = len(anchor_ids)
    lengths = np.fromiter((len(ids) for ids in anchor_ids), np.int64, n)
    if not lengths.sum():
        return np.zeros(n, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    ids = np.concatenate([np.asarray(i, np.int64) for i in anchor_ids])
    weights = clamp_power(np.concatenate([np.asarray(s, np.float64) for s in similarities]), p)
    rows = np.repeat(np.arange(n), lengths)
    keep = weights > 0
    ids, weights, rows = ids[keep], weights[keep], rows[keep]
    norms = np.sqrt(np.bincount(rows, weights=weights * weights, minlength=n))
    live = norms[rows] >= ZERO_NORM
    values = (weights[live] / norms[rows][live]).astype(np.float32)
    counts = np.bincount(rows[live], minlength=n).astype(np.int64)
    return counts, ids[live], values


def relative_vectors(
    anchor_ids: Sequence[np.ndarray], similarities: Sequence[np.ndarray], p: float, n_coords: int
) -> sp.csr_matrix:
    """L2-normalised relative vectors from each query's top-k anchor ids and similarities, as an
    (n_queries, n_coords) CSR matrix; a query with no positive similarity gets an empty row."""
    counts, ids, values = relative_flat(anchor_ids, similarities, p)
    if ids.size and ids.max() >= n_coords:
        raise ValueError(f"anchor id {int(ids.max())} out of range for {n_coords} coordinates")
    indptr = np.concatenate([[0], np.cumsum(counts)])
    out = sp.csr_matrix((values, ids, indptr), shape=(len(anchor_ids), n_coords))
    out.sum_duplicates()
    out.sort_indices()
    return out


def dense_relative(queries: np.ndarray, anchors: np.ndarray, k: int, p: float) -> sp.csr_matrix:
    """Relative vectors computed directly from embeddings (the reference, and the sweep engine).

    ``queries`` (n, d) and ``anchors`` (N, d) must be L2-normalised; coordinates are anchor rows.
    """
    idx, vals = top_k_rows(queries, anchors, k)
    return relative_vectors(list(idx), list(vals), p, anchors.shape[0])


def top_k_rows(queries: np.ndarray, anchors: np.ndarray, k: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Each query's k most similar anchors (indices, similarities), in chunks that bound memory."""
    anchors = np.asarray(anchors, np.float32)
    idx, vals = [], []
    for start in range(0, len(queries), chunk):
        i, v = top_k(np.asarray(queries[start : start + chunk], np.float32) @ anchors.T, k)
        idx.append(i)
        vals.append(v)
    if not idx:
        return np.zeros((0, min(k, len(anchors))), np.int64), np.zeros((0, min(k, len(anchors))), np.float32)
    return np.concatenate(idx), np.concatenate(vals)


def scores(queries: sp.spmatrix, candidates: sp.spmatrix) -> np.ndarray:
    """Dense (n_queries, n_candidates) matrix of sparse dot products."""
    if queries.shape[1] != candidates.shape[1]:
        raise ValueError(
            f"relative vectors disagree on coordinates: {queries.shape[1]} vs {candidates.shape[1]}"
        )
    return np.asarray((queries @ candidates.T).todense(), dtype=np.float32)


def contributions(query: sp.spmatrix, candidate: sp.spmatrix) -> tuple[np.ndarray, np.ndarray]:
    """Per-anchor terms of one score: (anchor ids, query entry x candidate entry), largest first.

    The terms sum to the score: this is why every ASIF answer can be explained by anchors.
    """
    prod = sp.csr_matrix(query).multiply(sp.csr_matrix(candidate)).tocsr()
    ids, vals = prod.indices.astype(np.int64), prod.data.astype(np.float32)
    order = np.argsort(-vals, kind="stable")
    return ids[order], vals[order]


def to_pairs(matrix: sp.spmatrix) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split a CSR matrix into per-row (indices, values), the form a vector database stores."""
    m = sp.csr_matrix(matrix)
    return [
        (m.indices[m.indptr[i] : m.indptr[i + 1]].copy(), m.data[m.indptr[i] : m.indptr[i + 1]].copy())
        for i in range(m.shape[0])
    ]


def from_pairs(pairs: Sequence[tuple[Sequence[int] | np.ndarray, Sequence[float] | np.ndarray]],
               n_coords: int) -> sp.csr_matrix:
    """Stack per-row (indices, values) into a CSR matrix with ``n_coords`` columns."""
    indptr = np.zeros(len(pairs) + 1, np.int64)
    np.cumsum([len(idx) for idx, _ in pairs], out=indptr[1:])
    ind = np.concatenate([np.asarray(i, np.int64) for i, _ in pairs]) if pairs else np.zeros(0, np.int64)
    dat = np.concatenate([np.asarray(v, np.float32) for _, v in pairs]) if pairs else np.zeros(0, np.float32)
    out = sp.csr_matrix((dat, ind, indptr), shape=(len(pairs), n_coords))
    out.sum_duplicates()
    out.sort_indices()
    return out
