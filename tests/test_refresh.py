"""Incremental refresh: after any adds and deletes, every stored candidate equals a rebuild.

The stores here use small made-up dimensions (declared encoder identities: no encoder is loaded).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from helpers import DI, DT, add, anchor_image, assert_fresh, make_store, put_sets, seeded_store, unit_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asif_vdb import AsifClient, Tuning
from asif_vdb.engine.layout import ANCHORS, CANDIDATES, VECTOR, gallery_key, relatives_spec
from asif_vdb.engine.list_store import LISTS_BLOB, blob_name
from asif_vdb.maths.anchor_lists import AnchorList, rel_lists, rel_matrix
from asif_vdb.maths.relative import to_pairs
from asif_vdb.store.base import BLOBS, Filter, PointData
from asif_vdb.store.server import QdrantServerBackend

#: Every refresh that changes anything writes all candidates into a new generation, and anchors
#: galleries catch up a few new anchors at a time.
SWITCHING = Tuning(swap_min=1, swap_share=0.0, catch_up_cells=60)


def backend(client: AsifClient):
    assert client.engine is not None
    return client.engine.state.backend


def text_candidates(client: AsifClient) -> np.ndarray:
    assert client.engine is not None
    return np.stack([pt.dense["text"] for b in client.engine.candidates.points("gallery:t", False, ("text",))
                     for pt in b])


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 12)),
        st.tuples(st.just("add_same_image"), st.integers(1, 6)),
        st.tuples(st.just("delete"), st.floats(0.0, 0.6)),
        st.tuples(st.just("delete_source"), st.sampled_from(["a", "b"])),
        st.tuples(st.just("reopen"), st.just(0)),
        st.tuples(st.just("anchors_gallery"), st.sampled_from(["image", "text"])),  # build, or catch up
    ),
    min_size=1, max_size=7,
)


@settings(max_examples=int(os.environ.get("ASIF_HYPOTHESIS_EXAMPLES", "25")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(k=st.integers(1, 6), p=st.sampled_from([0.5, 1.0, 2.0]), n0=st.integers(0, 25),
       n_text=st.integers(0, 12), n_image=st.integers(0, 8), ops=OPS, seed=st.integers(0, 2**31))
def test_any_sequence_of_updates_equals_a_rebuild(k, p, n0, n_text, n_image, ops, seed) -> None:
    run_updates(k, p, n0, n_text, n_image, ops, seed, None)


@settings(max_examples=int(os.environ.get("ASIF_HYPOTHESIS_EXAMPLES", "25")) // 2, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(k=st.integers(1, 6), p=st.sampled_from([0.5, 1.0, 2.0]), n0=st.integers(0, 25),
       n_text=st.integers(1, 12), n_image=st.integers(0, 8), ops=OPS, seed=st.integers(0, 2**31))
def test_any_sequence_of_updates_equals_a_rebuild_when_full_rewrites_switch_collections(
        k, p, n0, n_text, n_image, ops, seed) -> None:
    """The same, with every refresh that changes anything writing all candidates into a new
    collection (in use: 1,000 candidates or more, 90% of them changed), and anchors galleries
    catching up a few new anchors at a time."""
    run_updates(k, p, n0, n_text, n_image, ops, seed, SWITCHING)


def run_updates(k, p, n0, n_text, n_image, ops, seed, tuning: Tuning | None) -> None:
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s"
        client = make_store(path, k, p, tuning=tuning)
        try:
            if n0:
                add(client, rng, n0, source="a")
            put_sets(client, rng, n_text, n_image)
            assert_fresh(client)
            for op, arg in ops:
                if op == "add":
                    add(client, rng, arg, source=str(rng.choice(["a", "b"])))
                elif op == "add_same_image":  # more captions of a stored image: exact ties
                    add(client, rng, arg, source="b", image=anchor_image(client, rng))
                elif op == "delete":
                    ids = client.anchor_ids()
                    client.delete_anchors([int(i) for i in rng.choice(ids, int(arg * len(ids)), replace=False)]
                                          if ids else [])
                elif op == "delete_source":
                    client.delete_anchors_where(source=arg)
                elif op == "anchors_gallery":
                    client.engine.galleries.anchors_gallery(arg)
                else:
                    client.close()
                    client = AsifClient(path, tuning=tuning)
                assert_fresh(client)  # anchors galleries behind the anchors are left out
                assert client.engine.config.journal == []
            for name in [g for g in client.galleries() if g.startswith("anchors:")]:  # every change they missed
                client.engine.galleries.anchors_gallery(name.split(":")[1])
            assert not any(client.gallery(g).behind_added or client.gallery(g).behind_deleted
                           for g in client.galleries())
            assert_fresh(client)
        finally:
            client.close()


def test_equal_similarities_are_ranked_by_anchor_id(tmp_path) -> None:
    """Ten anchors with one image vector tie for every image query; the top-k takes the lowest ids,
    whatever order the store returns them in, so that every rebuild is the same."""
    rng = np.random.default_rng(8)
    client = make_store(tmp_path / "s", k=3)
    image = unit_rows(rng, 1, DI)[0]
    add(client, rng, 5)
    ids = add(client, rng, 10, image=image)
    hits = client.engine.anchors.topk(image[None, :], "image")[0]
    assert hits.ids.tolist() == sorted(ids)[:3]
    put_sets(client, rng, 4, 6)
    add(client, rng, 4, image=image)  # ties between stored and new anchors
    client.delete_anchors(sorted(ids)[:2])
    assert_fresh(client)
    client.close()


def test_near_ties_are_settled_by_the_stores_own_similarities(tmp_path) -> None:
    """With a huge eps every boundary counts as a near tie, so every update takes the path that re-reads
    similarities from the store; the result must still be a rebuild."""
    rng = np.random.default_rng(3)
    client = make_store(tmp_path / "s", k=4, tuning=Tuning(eps=0.05))
    add(client, rng, 30)
    put_sets(client, rng, 10, 6)
    add(client, rng, 8)
    assert client.last_refresh.resolved > 0
    assert_fresh(client)
    client.delete_anchors(client.anchor_ids()[::3])
    assert client.last_refresh.resolved > 0
    assert_fresh(client)
    client.close()


def test_deletions_beyond_the_reserve_search_again(tmp_path) -> None:
    rng = np.random.default_rng(4)
    client = make_store(tmp_path / "s", k=3)
    add(client, rng, 60)
    put_sets(client, rng, 6, 4)
    client.delete_anchors(client.anchor_ids()[:50])  # more than the 16-entry reserve of most lists
    assert client.last_refresh.searched > 0
    assert_fresh(client)
    client.close()


def test_only_affected_candidates_are_rewritten(tmp_path) -> None:
    """An anchor nobody ranks highly changes nothing; deleting it rewrites nothing either."""
    rng = np.random.default_rng(5)
    client = make_store(tmp_path / "s", k=2)
    add(client, rng, 200)
    put_sets(client, rng, 8, 0)
    far = -text_candidates(client).mean(axis=0)
    far /= np.linalg.norm(far)
    new = client.add_anchor_embeddings(unit_rows(rng, 1, DI), far[None, :], [{"caption": "far away"}])
    assert client.last_refresh.rewritten == 0 and client.last_refresh.candidates == 8
    client.delete_anchors(new)
    assert client.last_refresh.rewritten == 0
    assert_fresh(client)
    client.close()


def test_candidates_stored_without_state_are_searched_once(tmp_path) -> None:
    """Candidates written without a derived relative vector or state (a crash between the two writes)
    get them from a search on open, then stay exact."""
    rng = np.random.default_rng(6)
    client = make_store(tmp_path / "s", k=3)
    add(client, rng, 20)
    vecs = unit_rows(rng, 5, DT)
    rel = client.engine.anchors.relative(vecs, "text")
    assert len(to_pairs(rel)) == 5
    backend(client).upsert(CANDIDATES, [PointData(100 + i, {"set": "labels:old"}, {"text": vecs[i]})
                                        for i in range(5)])
    client.close()
    client = AsifClient(tmp_path / "s")  # on open: the five are searched and written
    assert client.last_repair.searched == 5
    hits = client.engine.candidates.rank(rel, "labels:old", 5)
    assert all(100 + i in h.ids for i, h in enumerate(hits)), "each repaired candidate is found by its own vector"
    add(client, rng, 5)
    assert_fresh(client)
    client.close()


def test_user_galleries_follow_updates_and_anchor_galleries_are_left_behind(tmp_path) -> None:
    rng = np.random.default_rng(7)
    client = make_store(tmp_path / "s", k=3)
    add(client, rng, 20)
    ids = client.index_gallery_embeddings("g", unit_rows(rng, 5, DI), "image", [{"ref": str(i)} for i in range(5)])
    client.index_anchors_gallery("text")
    add(client, rng, 4)
    assert client.last_refresh.galleries_behind == ["anchors:text"]
    assert client.last_refresh.candidates == 5  # the user gallery's items, refreshed; the anchors' left out
    assert len(client.gallery("anchors:text").behind_added) == 4
    assert client.gallery("g").size == len(ids)
    assert_fresh(client)
    client.engine.galleries.anchors_gallery("text")
    assert client.gallery("anchors:text").size == 24 and not client.gallery("anchors:text").behind_added
    assert client.engine.candidates.count_set(gallery_key("anchors:text")) == 24
    assert_fresh(client)
    client.close()


def test_refresh_on_the_qdrant_client_backend() -> None:
    """The same updates through qdrant-client (local :memory: mode): per-query filters, and the lists
    kept in the generic blob store (payload chunks, made small here so that there are many)."""
    rng = np.random.default_rng(9)
    client = make_store(None, k=3)
    store = backend(client)
    assert isinstance(store, QdrantServerBackend)
    store.blob_chunk = 1000
    add(client, rng, 25)
    put_sets(client, rng, 6, 4)
    add(client, rng, 6, image=anchor_image(client, rng))
    client.delete_anchors(client.anchor_ids()[::4])
    assert_fresh(client)
    client.engine.lists.reset()  # read everything back from the store, then update again
    assert store.count(BLOBS) > 3
    add(client, rng, 5)
    assert client.last_refresh.searched == 0, "the saved lists were read back, not searched again"
    assert_fresh(client)
    hits = store.search_dense_each(ANCHORS["text"], VECTOR, unit_rows(rng, 2, DT), [2, 1],
                                   [Filter(ids=(1, 2)), Filter(ids=(3,))])
    assert sorted(hits[0].ids.tolist()) == [1, 2] and hits[1].ids.tolist() == [3]
    # and a full rewrite into a new collection, switched to (a :memory: store cannot be reopened with
    # another tuning: the engine's is replaced)
    client.engine.state.tuning = Tuning(swap_min=1)
    first = client.engine.derived.live
    add(client, rng, 40)
    assert client.engine.derived.live != first and first not in store.list_collections()
    assert_fresh(client)
    client.close()


def test_a_damaged_list_blob_costs_a_search_not_correctness(tmp_path) -> None:
    """The saved lists are derived data: a truncated blob is ignored, the lists are searched again on
    the next update, and the blob is whole again afterwards."""
    rng = np.random.default_rng(11)
    client = make_store(tmp_path / "s", k=3)
    add(client, rng, 20)
    put_sets(client, rng, 5, 3)
    client.close()
    blob = tmp_path / "s" / "blobs" / f"{LISTS_BLOB}.npz"
    blob.write_bytes(blob.read_bytes()[:100])
    client = AsifClient(tmp_path / "s")
    assert backend(client).read_blob(LISTS_BLOB) is None
    add(client, rng, 4)
    assert_fresh(client)
    assert backend(client).read_blob(LISTS_BLOB) is not None
    client.close()


@pytest.mark.parametrize("p", [1.0, 3.0])
def test_written_relative_vectors_equal_the_dense_maths(p) -> None:
    """The lists a refresh writes are rel_matrix's rows: top-k, clamped at 0, ^p, L2-normalised; an
    all-negative or empty list gives an empty vector."""
    rng = np.random.default_rng(12)
    k = 5
    lists = []
    for n in (8, 5, 3, 0, 6):
        sims = np.sort(rng.uniform(-0.3, 1.0, n))[::-1]
        lists.append(AnchorList(rng.choice(100, n, replace=False), sims, False))
    lists.append(AnchorList(np.array([4, 9]), np.array([-0.1, -0.2]), True))
    want = rel_matrix(lists, k, p, 100).toarray()
    for row, (ids, vals) in enumerate(rel_lists(lists, k, p)):
        got = np.zeros(100)
        got[ids] = vals
        np.testing.assert_allclose(got, want[row], atol=1e-7)
        top = lists[row].sims[:k]
        dense = np.maximum(top, 0) ** p
        if dense.any():
            assert np.isclose(np.linalg.norm(got), 1.0, atol=1e-6)
            np.testing.assert_allclose(got[lists[row].ids[:k]], dense / np.linalg.norm(dense), atol=1e-7)
        else:
            assert not ids


def test_compaction_between_updates_keeps_every_candidate_exact(tmp_path) -> None:
    """Compaction of the deleted derived points (here after every update) must never lose or mix up
    a vector, across reopens too."""
    path, tuning = tmp_path / "s", Tuning(garbage_ratio=0.0)
    client, rng = seeded_store(path, k=4, seed=11, n_anchors=60, n_text=10, n_image=6, tuning=tuning)
    for step in range(6):
        if step % 2:
            client.delete_anchors(client.anchor_ids()[:7])
        else:
            add(client, rng, 9)
        assert "compact" in client.last_refresh.seconds
        assert_fresh(client)
        if step == 3:
            client.close()
            client = AsifClient(path, tuning=tuning)
    client.close()


def test_a_refresh_of_every_candidate_switches_to_a_new_collection(tmp_path) -> None:
    """Rewriting every candidate goes to a fresh collection named in the config; the old one is
    dropped, nothing is left to compact, and a reopened store serves the new one."""
    path = tmp_path / "s"
    client, rng = seeded_store(path, k=4, seed=12, n_anchors=40, n_text=6, n_image=3, tuning=Tuning(swap_min=1))
    names = [client.engine.derived.live]
    for _ in range(3):
        add(client, rng, 30)  # 30 new among 40: every candidate's top 4 changes
        assert client.last_refresh.rewritten == backend(client).count(CANDIDATES) == 9
        names.append(client.engine.derived.live)
        assert_fresh(client)
    assert len(set(names)) == len(names)
    live = [n for n in backend(client).list_collections() if n.startswith("candidate_rel")]
    assert live == [names[-1]]
    assert client.engine.derived.garbage == 0
    client.close()
    client = AsifClient(path)
    assert client.engine.derived.live == names[-1]
    assert_fresh(client)
    client.close()


def test_a_generation_left_by_a_crash_is_dropped_on_open(tmp_path) -> None:
    path = tmp_path / "s"
    client, _ = seeded_store(path, k=3, seed=13, n_anchors=20, n_text=4, n_image=0)
    backend(client).ensure_collection(relatives_spec("candidate_rel_g1"))  # written, never switched to
    client.close()
    client = AsifClient(path)
    assert "candidate_rel_g1" not in backend(client).list_collections()
    assert_fresh(client)
    client.close()


def test_a_refresh_of_most_candidates_also_switches(tmp_path) -> None:
    """Past ``swap_share`` of the candidates changed, the unchanged rest is written again beside them
    into the new collection; the report still counts only the changed ones."""
    client, rng = seeded_store(tmp_path / "s", k=2, seed=14, n_anchors=200, n_text=8, n_image=0,
                               tuning=Tuning(swap_min=1, swap_share=0.01))
    prompts = text_candidates(client)
    first = client.engine.derived.live
    near = prompts[0] / np.linalg.norm(prompts[0])  # a caption equal to one prompt: its top 2 change
    client.add_anchor_embeddings(unit_rows(rng, 1, DI), near[None, :], [{"caption": "one prompt's twin"}])
    assert 0 < client.last_refresh.rewritten < backend(client).count(CANDIDATES)
    assert client.engine.derived.live != first
    assert backend(client).count(client.engine.derived.live) == backend(client).count(CANDIDATES)
    assert_fresh(client)
    client.close()


@pytest.mark.parametrize("reopen", [False, True])
def test_a_gallery_indexed_in_batches_saves_the_lists_once(tmp_path, monkeypatch, reopen) -> None:
    """Each save writes every candidate's list: once per batch made large galleries quadratic. With
    ``reopen`` the process starts without the candidates in memory (it reads them once)."""
    tuning = Tuning(rewrite_batch=4)
    client, rng = seeded_store(tmp_path / "s", k=4, seed=12, n_anchors=30, n_text=6, n_image=5, tuning=tuning)
    if reopen:
        client.close()
        client = AsifClient(tmp_path / "s", tuning=tuning)
    saves = []
    real = backend(client).write_blob
    monkeypatch.setattr(backend(client), "write_blob", lambda name, arrays: (saves.append(name), real(name, arrays)))
    ids = client.index_gallery_embeddings("big", unit_rows(rng, 19, DI), "image", [{"ref": str(i)} for i in range(19)])
    assert saves == [LISTS_BLOB]  # 5 batches, one save
    client.index_anchors_gallery("text")  # 30 anchors in batches of 4, in a blob of its own
    assert saves == [LISTS_BLOB] * 2 + [blob_name("gallery:anchors:text")]
    assert client.gallery("big").size == len(ids)
    assert_fresh(client)
    saves.clear()
    add(client, rng, 2)  # the anchors gallery is left behind: its (larger) blob is not written again
    assert saves == [LISTS_BLOB]
    client.engine.galleries.anchors_gallery("text")  # it catches up: now it is, once
    assert saves[1:] == [LISTS_BLOB, blob_name("gallery:anchors:text")]
    assert_fresh(client)
    client.close()
    client = AsifClient(tmp_path / "s", tuning=tuning)  # the saved lists serve every candidate: nothing searched
    assert client.last_repair.searched == 0
    add(client, rng, 3)
    assert client.last_refresh.searched == 0
    client.engine.galleries.anchors_gallery("text")  # the anchors gallery catches up
    assert_fresh(client)
    client.close()


def test_an_update_after_opening_reads_no_anchors_gallery(tmp_path, monkeypatch) -> None:
    """The anchors galleries (as many candidates as anchors) are left out of updates, so an update
    neither reads their lists nor their embeddings; their catch-up reads them."""
    client, rng = seeded_store(tmp_path / "s", k=4, seed=13, n_anchors=30, n_text=6, n_image=5)
    client.index_anchors_gallery("image")
    client.close()
    client = AsifClient(tmp_path / "s")
    reads = []
    real = backend(client).read_blob
    monkeypatch.setattr(backend(client), "read_blob", lambda name: (reads.append(name), real(name))[1])
    add(client, rng, 4)
    assert reads == [LISTS_BLOB]
    assert client.engine.lists.absent == {"gallery:anchors:image": 30}
    assert client.last_refresh.candidates == 11  # the user galleries' candidates only
    client.engine.galleries.anchors_gallery("image")
    assert reads[1:] == [blob_name("gallery:anchors:image")]
    assert client.engine.lists.absent == {}
    assert client.gallery("anchors:image").size == 34
    assert_fresh(client)
    client.close()
