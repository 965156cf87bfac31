"""The ASIF maths, with no I/O: relative vectors from anchor similarities, and sparse scoring.

A relative vector of a query has one coordinate per anchor id. It keeps the query's top-k anchor
similarities, clamps them at 0, raises them to the power p and L2-normalises them. An image and a
text are compared by the dot product of their relative vectors (the same anchor id is the same
image-caption pair in both spaces).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

#: Relative vectors whose norm before normalisation is below this are all-zero ("unknown").
ZERO_NORM = 1e-12


def top_k(similarities: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of each row's k largest entries (k capped at the row length).

    Rows are returned in descending order. Ties at the k-th value are broken by lowest index.
    """
    sims = np.asarray(similarities, dtype=np.float32)
    if sims.ndim != 2:
        raise ValueError(f"similarities must be 2-D, got shape {sims.shape}")
    n_cols = sims.shape[1]
    k = min(k, n_cols)
    if k == 0:
        return np.zeros((sims.shape[0], 0), np.int64), np.zeros((sims.shape[0], 0), np.float32)
    # Stable descending sort on the negated values gives lowest-index-first among ties.
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sims, order, axis=1)


def relative_vectors(
    anchor_ids: Sequence[np.ndarray],
    similarities: Sequence[np.ndarray],
    p: float,
    n_coords: int,
) -> sp.csr_matrix:
    """Build L2-normalised relative vectors from each query's top-k anchor ids and similarities.

    ``anchor_ids[i]`` and ``similarities[i]`` hold query i's top-k anchors (any order). The result
    is an (n_queries, n_coords) CSR matrix; a query with no positive similarity gets an empty row.
    """
    rows, cols, vals = [], [], []
    for i, (ids, sims) in enumerate(zip(anchor_ids, similarities)):
        ids = np.asarray(ids, dtype=np.int64)
        weights = clamp_power(np.asarray(sims, dtype=np.float64), p)
        keep = weights > 0
        ids, weights = ids[keep], weights[keep]
        norm = float(np.sqrt(np.sum(weights * weights)))
        if norm < ZERO_NORM:
            continue
        rows.append(np.full(len(ids), i, dtype=np.int64))
        cols.append(ids)
        vals.append(weights / norm)
    n = len(anchor_ids)
    if not rows:
        return sp.csr_matrix((n, n_coords), dtype=np.float32)
    r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    if c.size and c.max() >= n_coords:
        raise ValueError(f"anchor id {int(c.max())} out of range for {n_coords} coordinates")
    out = sp.csr_matrix((v.astype(np.float32), (r, c)), shape=(n, n_coords))
    out.sum_duplicates()
    out.sort_indices()
    return out


def clamp_power(sims: np.ndarray, p: float) -> np.ndarray:
    """Similarities clamped at 0 and raised to p: the weights of a relative vector before normalising."""
    return np.power(np.maximum(sims, 0.0), p)


def dense_relative(queries: np.ndarray, anchors: np.ndarray, k: int, p: float) -> sp.csr_matrix:
    """Relative vectors computed directly from embeddings (the reference, and the sweep engine).

    ``queries`` (n, d) and ``anchors`` (N, d) must be L2-normalised; coordinates are anchor rows.
    """
    sims = np.asarray(queries, np.float32) @ np.asarray(anchors, np.float32).T
    idx, vals = top_k(sims, k)
    return relative_vectors(list(idx), list(vals), p, anchors.shape[0])


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
    q = sp.csr_matrix(query)
    c = sp.csr_matrix(candidate)
    prod = q.multiply(c).tocsr()
    ids, vals = prod.indices.astype(np.int64), prod.data.astype(np.float32)
    order = np.argsort(-vals, kind="stable")
    return ids[order], vals[order]


def to_pairs(matrix: sp.csr_matrix) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split a CSR matrix into per-row (indices, values), the form a vector database stores."""
    m = sp.csr_matrix(matrix)
    return [
        (m.indices[m.indptr[i] : m.indptr[i + 1]].copy(), m.data[m.indptr[i] : m.indptr[i + 1]].copy())
        for i in range(m.shape[0])
    ]


def from_pairs(pairs: Sequence[tuple[Sequence[int], Sequence[float]]], n_coords: int) -> sp.csr_matrix:
    """Stack per-row (indices, values) into a CSR matrix with ``n_coords`` columns."""
    indptr = [0]
    indices: list[np.ndarray] = []
    data: list[np.ndarray] = []
    for idx, vals in pairs:
        indices.append(np.asarray(idx, dtype=np.int64))
        data.append(np.asarray(vals, dtype=np.float32))
        indptr.append(indptr[-1] + len(idx))
    ind = np.concatenate(indices) if indices else np.zeros(0, np.int64)
    dat = np.concatenate(data) if data else np.zeros(0, np.float32)
    out = sp.csr_matrix((dat, ind, np.asarray(indptr)), shape=(len(pairs), n_coords))
    out.sum_duplicates()
    out.sort_indices()
    return out
