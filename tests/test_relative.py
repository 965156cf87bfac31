"""The ASIF maths against a direct dense computation (full similarity matrix)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from helpers import unit_rows

from asif_vdb.maths import relative


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


def stable_top_k(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top-k rule written the obvious way: a stable descending sort (ties: lowest index first)."""
    order = np.argsort(-sims, axis=1, kind="stable")[:, : min(k, sims.shape[1])]
    return order, np.take_along_axis(sims, order, axis=1)


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


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 7, 8, 20])
def test_top_k_with_ties_equals_a_stable_sort(k: int) -> None:
    """Rows with ties at the k-th value (and elsewhere), k below and equal to (and above) the row
    length: the partition-based top-k gives exactly the stable sort's ids and values, best first."""
    rng = np.random.default_rng(k)
    sims = np.array([
        [0.5, 0.5, 0.5, 0.1, 0.9, 0.5, 0.2, 0.5],  # a four-way tie at 0.5 after the best
        [0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3],  # everything tied
        [0.1, 0.9, 0.1, 0.8, 0.1, 0.7, 0.1, 0.6],  # tie at the bottom
        [0.0, -0.0, 0.2, 0.0, -0.1, 0.2, 0.0, -0.1],  # signed zeros compare equal
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2],  # no tie
        [0.2, 0.4, 0.4, 0.2, 0.4, 0.2, 0.4, 0.2],  # two tied groups
    ], dtype=np.float32)
    # plus random rows drawn from a few levels, so that ties fall at the k-th value somewhere
    levels = np.array([0.1, 0.25, 0.4, 0.6], np.float32)
    sims = np.vstack([sims, rng.choice(levels, size=(40, 8))])
    want_idx, want_vals = stable_top_k(sims, k)
    idx, vals = relative.top_k(sims, k)
    assert idx.shape == (len(sims), min(k, 8))
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(vals, want_vals)
    if k < 8:  # a tie at the k-th value really is exercised (the rows of one level)
        kth = want_vals[:, -1]
        assert ((sims == kth[:, None]).sum(axis=1) > (want_vals == kth[:, None]).sum(axis=1)).any()
    # and top_k_rows (chunked) agrees with it on the same similarities
    q, a = unit_rows(rng, 9, 6), unit_rows(rng, 8, 6)
    a[5] = a[2]  # two equal anchors: equal similarities for every query
    r_idx, r_vals = relative.top_k_rows(q, a, k, chunk=4)
    s_idx, s_vals = stable_top_k(q.astype(np.float32) @ a.T, k)
    np.testing.assert_array_equal(r_idx, s_idx)
    np.testing.assert_array_equal(r_vals, s_vals)


def test_relative_flat_is_relative_vectors() -> None:
    """The flat form (counts, ids, values) holds exactly the CSR rows of relative_vectors, in input
    order, with non-positive weights and "unknown" rows left out."""
    rng = np.random.default_rng(5)
    ids = [rng.permutation(50)[: int(n)] for n in rng.integers(0, 12, size=30)]
    sims = [rng.uniform(-0.5, 1.0, size=len(i)).astype(np.float32) for i in ids]
    ids[3], sims[3] = np.array([4, 7]), np.array([-0.2, 0.0], np.float32)  # all non-positive: unknown
    ids[4], sims[4] = np.array([], np.int64), np.array([], np.float32)  # nothing at all
    for p in (1.0, 3.0, 0.5):
        counts, flat_ids, values = relative.relative_flat(ids, sims, p)
        assert counts.dtype == np.int64 and flat_ids.dtype == np.int64 and values.dtype == np.float32
        assert counts.tolist() == [int((s > 0).sum()) for s in sims]
        assert counts[3] == counts[4] == 0
        rel = relative.relative_vectors(ids, sims, p, 50)
        starts = np.concatenate([[0], np.cumsum(counts)])
        for row, (i, s) in enumerate(zip(ids, sims)):
            got_ids, got_vals = flat_ids[starts[row]:starts[row + 1]], values[starts[row]:starts[row + 1]]
            assert got_ids.tolist() == i[s > 0].tolist()  # input order kept
            dense = np.zeros(50, np.float32)
            dense[got_ids] = got_vals
            np.testing.assert_array_equal(dense, rel[row].toarray()[0])
            if counts[row]:
                assert np.linalg.norm(got_vals) == pytest.approx(1.0, abs=1e-6)
    empty = relative.relative_flat([np.array([], np.int64)] * 2, [np.array([], np.float32)] * 2, 1.0)
    assert [a.tolist() for a in empty] == [[0, 0], [], []]


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
