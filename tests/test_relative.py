"""The ASIF maths against a direct dense computation (full similarity matrix)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from asif_vdb import relative
from tests.conftest import unit_rows


def dense_reference(q: np.ndarray, a: np.ndarray, k: int, p: float) -> np.ndarray:
    """Plain ASIF written the obvious way: full sims, keep top-k, clamp, power, normalise."""
    sims = q @ a.T
    out = np.zeros_like(sims, dtype=np.float64)
    for i, row in enumerate(sims):
        keep = np.argsort(-row, kind="stable")[: min(k, len(row))]
        vals = np.maximum(row[keep], 0) ** p
        norm = np.linalg.norm(vals)
        if norm > 0:
            out[i, keep] = vals / norm
    return out


@pytest.mark.parametrize("n_anchors,k,p", [(50, 10, 1.0), (50, 50, 2.0), (30, 100, 8.0), (200, 800, 1.0), (7, 3, 0.5)])
def test_dense_relative_matches_reference(n_anchors: int, k: int, p: float) -> None:
    rng = np.random.default_rng(n_anchors + k)
    q, a = unit_rows(rng, 12, 16), unit_rows(rng, n_anchors, 16)
    got = relative.dense_relative(q, a, k, p).toarray()
    np.testing.assert_allclose(got, dense_reference(q, a, k, p), atol=1e-6)
    norms = np.linalg.norm(got, axis=1)
    np.testing.assert_allclose(norms[norms > 0], 1.0, atol=1e-6)
    assert ((got > 0).sum(axis=1) <= min(k, n_anchors)).all()


def test_negative_similarities_are_clamped_and_all_negative_is_empty() -> None:
    ids = [np.array([3, 1, 2]), np.array([0, 1])]
    sims = [np.array([0.5, -0.2, 0.0]), np.array([-0.1, -0.9])]
    rel = relative.relative_vectors(ids, sims, p=1.0, n_coords=4)
    assert rel[0].toarray().tolist() == [[0.0, 0.0, 0.0, 1.0]]
    assert rel[1].nnz == 0  # "unknown": nothing in common with any anchor


def test_ties_keep_lowest_index_and_do_not_change_the_score() -> None:
    sims = np.array([[0.5, 0.5, 0.5, 0.1]], dtype=np.float32)
    idx, vals = relative.top_k(sims, 2)
    assert idx.tolist() == [[0, 1]] and vals.tolist() == [[0.5, 0.5]]
    # Whichever tied anchors are kept, a candidate that weights them equally scores the same.
    a = relative.relative_vectors([np.array([0, 1])], [np.array([0.5, 0.5])], 1.0, 4)
    b = relative.relative_vectors([np.array([2, 1])], [np.array([0.5, 0.5])], 1.0, 4)
    cand = relative.relative_vectors([np.array([0, 1, 2])], [np.array([0.3, 0.3, 0.3])], 1.0, 4)
    np.testing.assert_allclose(relative.scores(a, cand), relative.scores(b, cand), atol=1e-7)


def test_scores_and_contributions_match_dense_products() -> None:
    rng = np.random.default_rng(0)
    anchors_img, anchors_txt = unit_rows(rng, 60, 8), unit_rows(rng, 60, 5)
    imgs, txts = unit_rows(rng, 4, 8), unit_rows(rng, 6, 5)
    qi = relative.dense_relative(imgs, anchors_img, 20, 2.0)
    ct = relative.dense_relative(txts, anchors_txt, 20, 2.0)
    dense = dense_reference(imgs, anchors_img, 20, 2.0) @ dense_reference(txts, anchors_txt, 20, 2.0).T
    np.testing.assert_allclose(relative.scores(qi, ct), dense, atol=1e-6)
    ids, terms = relative.contributions(qi[1], ct[2])
    assert terms.sum() == pytest.approx(dense[1, 2], abs=1e-6)
    assert (np.diff(terms) <= 0).all()
    assert set(ids) <= set(qi[1].indices) & set(ct[2].indices)


def test_pairs_round_trip_and_coordinate_check() -> None:
    m = sp.csr_matrix(np.array([[0, 0.6, 0, 0.8], [0, 0, 0, 0]], dtype=np.float32))
    back = relative.from_pairs(relative.to_pairs(m), 4)
    np.testing.assert_array_equal(back.toarray(), m.toarray())
    with pytest.raises(ValueError, match="out of range"):
        relative.relative_vectors([np.array([9])], [np.array([0.5])], 1.0, 4)
    with pytest.raises(ValueError, match="disagree"):
        relative.scores(m, sp.csr_matrix((1, 5)))
