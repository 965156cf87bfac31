"""Incremental refresh (issue 5): after any adds and deletes, every stored candidate equals a rebuild.

The stores here use small made-up dimensions (no encoder is loaded): an index is created with fake
encoder identities, then reopened through AsifClient, which then never needs an encoder.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asif_vdb import gallery, refresh
from asif_vdb.client import AsifClient
from asif_vdb.config import AsifParams, EncoderIdentity, EncoderSpec, IndexConfig
from asif_vdb.index import ANCHORS, CANDIDATES, VISIBLE, AsifIndex
from asif_vdb.store.base import Filter
from asif_vdb.store.edge import EdgeBackend

DI, DT = 8, 6


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_store(path: Path, k: int, p: float = 1.0) -> AsifClient:
    """A store with tiny fake encoders' dimensions, opened through the client."""
    backend = EdgeBackend(path)
    config = IndexConfig(
        image_encoder=EncoderIdentity(family="timm", name="fake", weights="test", dim=DI),
        text_encoder=EncoderIdentity(family="sentence-transformers", name="fake", weights="test", dim=DT),
        image_spec=EncoderSpec.default_image(), text_spec=EncoderSpec.default_text(), params=AsifParams(k=k, p=p),
    )
    AsifIndex(backend, config).save()
    backend.close()
    return AsifClient(path)


def add(client: AsifClient, rng: np.random.Generator, n: int, source: str = "s",
        image: np.ndarray | None = None) -> list[int]:
    """n random pairs; with ``image`` they all share that image vector (one image, many captions:
    equal similarities on the image side, as in Flickr8k)."""
    tag = rng.integers(1 << 62)
    payloads = [{"caption": f"{tag}-{i}", "source": source} for i in range(n)]
    images = unit(rng, n, DI) if image is None else np.repeat(image[None, :], n, axis=0)
    return client.add_anchor_embeddings(images, unit(rng, n, DT), payloads)


def an_anchor_image(client: AsifClient, rng: np.random.Generator) -> np.ndarray | None:
    """The image vector of a random stored anchor (None when there is none)."""
    ids = anchor_ids(client)
    if not ids:
        return None
    return client.backend.retrieve(ANCHORS["image"], [int(rng.choice(ids))], False, ("v",))[0].dense["v"]


def put_sets(client: AsifClient, rng: np.random.Generator, n_text: int, n_image: int) -> None:
    """A label-set-like text set and an image gallery, written the way the library writes them."""
    index = client.index
    first = index.allocate_candidates(n_text + n_image)
    index.put_candidates("labels:t", list(range(first, first + n_text)), unit(rng, n_text, DT), "text",
                         [{"class": i} for i in range(n_text)])
    index.put_candidates("gallery:g", list(range(first + n_text, first + n_text + n_image)),
                         unit(rng, n_image, DI), "image", [{"ref": str(i)} for i in range(n_image)])
    index.save()


def seeded_store(path: Path, k: int, seed: int, n_anchors: int, n_text: int, n_image: int,
                 ) -> tuple[AsifClient, np.random.Generator]:
    """A store with ``n_anchors`` random pairs and a text set and an image set stored."""
    rng = np.random.default_rng(seed)
    client = make_store(path, k=k)
    add(client, rng, n_anchors)
    put_sets(client, rng, n_text, n_image)
    return client, rng


def anchor_ids(client: AsifClient) -> list[int]:
    return [p.id for b in client.backend.scroll(ANCHORS["text"], None, with_payload=False) for p in b]


def assert_fresh(client: AsifClient, tol: float = 1e-5) -> None:
    """Every candidate's stored relative vector equals the rebuild's, and its stored list is the true
    top of its anchors (ids, completeness); an anchors gallery behind the anchors is not checked."""
    index = client.index
    k, K = index.config.params.k, refresh.depth(index.config.params.k)
    behind = {f"gallery:{n}" for n, i in index.config.galleries.items() if i.behind_added or i.behind_deleted}
    for m in ("image", "text"):
        points = [pt for pt in refresh.stored(index, m) if pt[2] not in behind]  # they catch up when searched
        if not points:
            continue
        vecs = np.stack([pt[1] for pt in points])
        want = index.relative(vecs, m).toarray()
        got = np.zeros_like(want)
        for row, pt in enumerate(points):
            assert pt[3] is not None, f"candidate {pt[0]} has no stored relative vector"
            idx, vals = pt[3]
            got[row, idx] = vals
        assert np.abs(want - got).max(initial=0.0) <= tol
        every = index.anchor_count() + 1  # search every anchor: the whole positive ranking
        truth = [refresh.from_hits(h, every) for h in index.backend.search_dense(
            ANCHORS[m], "v", vecs, every, VISIBLE)]
        for pt, true in zip(points, truth):
            lst = pt[4]
            assert lst is not None, f"candidate {pt[0]} has no usable saved state"
            assert min(k, len(true)) <= len(lst) <= K
            # the same anchors as the true ranking's head, with the same similarities; their order
            # inside the list may differ only between near-equal values (settled when it matters)
            assert sorted(lst.ids.tolist()) == sorted(true.ids[: len(lst)].tolist())
            truth_sims = dict(zip(true.ids.tolist(), true.sims.tolist()))
            np.testing.assert_allclose(lst.sims, [truth_sims[i] for i in lst.ids.tolist()], atol=1e-6)
            assert np.all(np.diff(lst.sims) <= refresh.EPS)
            assert not lst.full or len(lst) == len(true)  # complete means nothing positive is missing


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


@settings(max_examples=int(os.environ.get("ASIF_HYPOTHESIS_EXAMPLES", "25")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(k=st.integers(1, 6), p=st.sampled_from([0.5, 1.0, 2.0]), n0=st.integers(0, 25),
       n_text=st.integers(0, 12), n_image=st.integers(0, 8), ops=OPS, seed=st.integers(0, 2**31))
def test_any_sequence_of_updates_equals_a_rebuild(k, p, n0, n_text, n_image, ops, seed) -> None:
    run_updates(k, p, n0, n_text, n_image, ops, seed)


@settings(max_examples=int(os.environ.get("ASIF_HYPOTHESIS_EXAMPLES", "25")) // 2, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(k=st.integers(1, 6), p=st.sampled_from([0.5, 1.0, 2.0]), n0=st.integers(0, 25),
       n_text=st.integers(1, 12), n_image=st.integers(0, 8), ops=OPS, seed=st.integers(0, 2**31))
def test_any_sequence_of_updates_equals_a_rebuild_when_full_rewrites_switch_collections(
        k, p, n0, n_text, n_image, ops, seed) -> None:
    """The same, with every refresh that changes anything writing all candidates into a new
    collection (in use: 1,000 candidates or more, 90% of them changed), and anchors galleries
    catching up a few new anchors at a time."""
    saved = refresh.SWAP_MIN, refresh.SWAP_SHARE, gallery.CATCH_UP_CELLS
    refresh.SWAP_MIN, refresh.SWAP_SHARE, gallery.CATCH_UP_CELLS = 1, 0.0, 60
    try:
        run_updates(k, p, n0, n_text, n_image, ops, seed)
    finally:
        refresh.SWAP_MIN, refresh.SWAP_SHARE, gallery.CATCH_UP_CELLS = saved


def run_updates(k, p, n0, n_text, n_image, ops, seed) -> None:
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s"
        client = make_store(path, k, p)
        try:
            if n0:
                add(client, rng, n0, source="a")
            put_sets(client, rng, n_text, n_image)
            assert_fresh(client)
            for op, arg in ops:
                if op == "add":
                    add(client, rng, arg, source=str(rng.choice(["a", "b"])))
                elif op == "add_same_image":  # more captions of a stored image: exact ties
                    add(client, rng, arg, source="b", image=an_anchor_image(client, rng))
                elif op == "delete":
                    ids = anchor_ids(client)
                    client.delete_anchors(list(rng.choice(ids, int(arg * len(ids)), replace=False)) if ids else [])
                elif op == "delete_source":
                    client.delete_anchors_where(source=arg)
                elif op == "anchors_gallery":
                    gallery.resolve(client.index, f"anchors:{arg}", "text")
                else:
                    client.close()
                    client = AsifClient(path)
                assert_fresh(client)  # anchors galleries behind the anchors are left out
                assert client.index.config.journal == []
            for name in list(client.index.config.galleries):  # every change they missed, at once
                gallery.resolve(client.index, name, "text")
            assert not any(i.behind_added or i.behind_deleted for i in client.index.config.galleries.values())
            assert_fresh(client)
        finally:
            client.close()


def test_equal_similarities_are_ranked_by_anchor_id(tmp_path) -> None:
    """Ten anchors with one image vector tie for every image query; the top-k takes the lowest ids,
    whatever order the store returns them in, so that every rebuild is the same."""
    rng = np.random.default_rng(8)
    client = make_store(tmp_path / "s", k=3)
    image = unit(rng, 1, DI)[0]
    add(client, rng, 5)
    ids = add(client, rng, 10, image=image)
    hits = client.index.anchor_topk(image[None, :], "image")[0]
    assert hits.ids.tolist() == sorted(ids)[:3]
    put_sets(client, rng, 4, 6)
    add(client, rng, 4, image=image)  # ties between stored and new anchors
    client.delete_anchors(sorted(ids)[:2])
    assert_fresh(client)
    client.close()


def test_near_ties_are_settled_by_the_stores_own_similarities(tmp_path, monkeypatch) -> None:
    """With a huge EPS every boundary counts as a near tie, so every update takes the path that re-reads
    similarities from Qdrant; the result must still be a rebuild."""
    monkeypatch.setattr(refresh, "EPS", 0.05)
    rng = np.random.default_rng(3)
    client = make_store(tmp_path / "s", k=4)
    add(client, rng, 30)
    put_sets(client, rng, 10, 6)
    add(client, rng, 8)
    assert client.last_refresh.resolved > 0
    assert_fresh(client)
    client.delete_anchors(anchor_ids(client)[::3])
    assert client.last_refresh.resolved > 0
    assert_fresh(client)
    client.close()


def test_deletions_beyond_the_reserve_search_again(tmp_path) -> None:
    rng = np.random.default_rng(4)
    client = make_store(tmp_path / "s", k=3)
    add(client, rng, 60)
    put_sets(client, rng, 6, 4)
    client.delete_anchors(anchor_ids(client)[:50])  # more than the 16-entry reserve of most lists
    assert client.last_refresh.searched > 0
    assert_fresh(client)
    client.close()


def test_only_affected_candidates_are_rewritten(tmp_path) -> None:
    """An anchor nobody ranks highly changes nothing; deleting it rewrites nothing either."""
    rng = np.random.default_rng(5)
    client = make_store(tmp_path / "s", k=2)
    add(client, rng, 200)
    put_sets(client, rng, 8, 0)
    prompts = np.stack([pt.dense["text"] for b in client.backend.scroll(CANDIDATES, None, False, ("text",))
                        for pt in b])
    far = -prompts.mean(axis=0)
    far /= np.linalg.norm(far)
    new = client.add_anchor_embeddings(unit(rng, 1, DI), far[None, :], [{"caption": "far away"}])
    assert client.last_refresh.rewritten == 0
    client.delete_anchors(new)
    assert client.last_refresh.rewritten == 0
    assert_fresh(client)
    client.close()


def test_candidates_stored_without_state_are_searched_once(tmp_path) -> None:
    """Candidates written without a derived relative vector or state (an older store's layout, or a
    crash between the two writes) get them from a search on open, then stay exact."""
    from asif_vdb.store.base import PointData

    rng = np.random.default_rng(6)
    client = make_store(tmp_path / "s", k=3)
    add(client, rng, 20)
    vecs = unit(rng, 5, DT)
    rel = client.index.relative(vecs, "text")
    from asif_vdb.relative import to_pairs

    assert len(to_pairs(rel)) == 5
    client.backend.upsert(CANDIDATES, [PointData(100 + i, {"set": "labels:old"}, {"text": vecs[i]})
                                       for i in range(5)])
    client.close()
    client = AsifClient(tmp_path / "s")  # on open: the five are searched and written
    assert client.last_repair.get("searched") == 5
    hits = client.index.rank_candidates(rel, "labels:old", 5)
    assert all(100 + i in h.ids for i, h in enumerate(hits)), "each repaired candidate is found by its own vector"
    add(client, rng, 5)
    assert_fresh(client)
    client.close()


def test_galleries_marked_stale_are_recomputed_and_anchor_galleries_left_behind(tmp_path) -> None:
    rng = np.random.default_rng(7)
    client = make_store(tmp_path / "s", k=3)
    add(client, rng, 20)
    ids = gallery.add_items(client.index, "g", unit(rng, 5, DI), "image", [{"ref": str(i)} for i in range(5)])
    gallery.build_anchors_gallery(client.index, "text")
    client.index.config.galleries["g"].stale = True
    add(client, rng, 4)
    assert "g" in client.last_refresh.galleries_recomputed
    assert "anchors:text" in client.last_refresh.galleries_behind
    assert len(client.index.config.galleries["anchors:text"].behind_added) == 4
    assert not client.index.config.galleries["g"].stale
    assert client.index.count_set(gallery.set_key("g")) == len(ids)
    assert_fresh(client)
    gallery.resolve(client.index, "anchors:text", "image")
    assert client.index.count_set(gallery.set_key("anchors:text")) == 24
    assert_fresh(client)
    client.close()


def test_refresh_on_the_qdrant_client_backend(monkeypatch) -> None:
    """The same updates through qdrant-client (local :memory: mode): per-query filters, and the lists
    kept in the generic blob store (payload chunks, made small here so that there are many)."""
    from asif_vdb.store import base
    from asif_vdb.store.server import QdrantServerBackend

    monkeypatch.setattr(base, "BLOB_CHUNK", 1000)

    rng = np.random.default_rng(9)
    client = AsifClient(location=":memory:")
    config = IndexConfig(
        image_encoder=EncoderIdentity(family="timm", name="fake", weights="test", dim=DI),
        text_encoder=EncoderIdentity(family="sentence-transformers", name="fake", weights="test", dim=DT),
        image_spec=EncoderSpec.default_image(), text_spec=EncoderSpec.default_text(), params=AsifParams(k=3),
    )
    assert isinstance(client.backend, QdrantServerBackend)
    client._index = AsifIndex(client.backend, config)
    client._index.save()
    add(client, rng, 25)
    put_sets(client, rng, 6, 4)
    add(client, rng, 6, image=an_anchor_image(client, rng))
    client.delete_anchors(anchor_ids(client)[::4])
    assert_fresh(client)
    client.index._refresh_cache = None  # read everything back from the store, then update again
    assert client.backend.count(base.BLOBS) > 3
    add(client, rng, 5)
    assert client.last_refresh.searched == 0, "the saved lists were read back, not searched again"
    assert_fresh(client)
    hits = client.backend.search_dense_each(ANCHORS["text"], "v", unit(rng, 2, DT), [2, 1],
                                            [Filter(ids=(1, 2)), Filter(ids=(3,))])
    assert sorted(hits[0].ids.tolist()) == [1, 2] and hits[1].ids.tolist() == [3]
    monkeypatch.setattr(refresh, "SWAP_MIN", 1)  # and a full rewrite into a new collection, switched to
    first = client.index.relatives
    add(client, rng, 40)
    assert client.index.relatives != first and first not in client.backend.list_collections()
    assert_fresh(client)


def test_a_damaged_list_blob_costs_a_search_not_correctness(tmp_path) -> None:
    """The saved lists are derived data: a truncated blob is ignored, the lists are searched again on
    the next update, and the blob is whole again afterwards."""
    rng = np.random.default_rng(11)
    client = make_store(tmp_path / "s", k=3)
    add(client, rng, 20)
    put_sets(client, rng, 5, 3)
    client.close()
    blob = tmp_path / "s" / "blobs" / f"{refresh.LISTS_BLOB}.npz"
    blob.write_bytes(blob.read_bytes()[:100])
    client = AsifClient(tmp_path / "s")
    assert client.backend.read_blob(refresh.LISTS_BLOB) is None
    add(client, rng, 4)
    assert_fresh(client)
    assert client.backend.read_blob(refresh.LISTS_BLOB) is not None
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
        lists.append(refresh.AnchorList(rng.choice(100, n, replace=False), sims, False))
    lists.append(refresh.AnchorList(np.array([4, 9]), np.array([-0.1, -0.2]), True))
    want = refresh.rel_matrix(lists, k, p, 100).toarray()
    for row, (ids, vals) in enumerate(refresh.rel_lists(lists, k, p)):
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


def test_compaction_between_updates_keeps_every_candidate_exact(tmp_path, monkeypatch) -> None:
    """Compaction of the deleted derived points (here after every update) must never lose or mix up
    a vector, across reopens too."""
    monkeypatch.setattr(refresh, "GARBAGE_RATIO", 0.0)
    path = tmp_path / "s"
    client, rng = seeded_store(path, k=4, seed=11, n_anchors=60, n_text=10, n_image=6)
    for step in range(6):
        if step % 2:
            client.delete_anchors(anchor_ids(client)[:7])
        else:
            add(client, rng, 9)
        assert "compact" in client.last_refresh.seconds
        assert_fresh(client)
        if step == 3:
            client.close()
            client = AsifClient(path)
    client.close()


def test_a_refresh_of_every_candidate_switches_to_a_new_collection(tmp_path, monkeypatch) -> None:
    """Rewriting every candidate goes to a fresh collection named in the config; the old one is
    dropped, nothing is left to compact, and a reopened store serves the new one."""
    monkeypatch.setattr(refresh, "SWAP_MIN", 1)
    path = tmp_path / "s"
    client, rng = seeded_store(path, k=4, seed=12, n_anchors=40, n_text=6, n_image=3)
    names = [client.index.relatives]
    for _ in range(3):
        add(client, rng, 30)  # 30 new among 40: every candidate's top 4 changes
        assert client.last_refresh.rewritten == client.backend.count(CANDIDATES)
        names.append(client.index.relatives)
        assert_fresh(client)
    assert len(set(names)) == len(names)
    live = [n for n in client.backend.list_collections() if n.startswith("candidate_rel")]
    assert live == [names[-1]]
    assert getattr(client.index, "_rel_garbage", 0) == 0
    client.close()
    client = AsifClient(path)
    assert client.index.relatives == names[-1]
    assert_fresh(client)
    client.close()


def test_a_generation_left_by_a_crash_is_dropped_on_open(tmp_path) -> None:
    path = tmp_path / "s"
    client, _ = seeded_store(path, k=3, seed=13, n_anchors=20, n_text=4, n_image=0)
    from asif_vdb.index import relatives_spec

    client.backend.ensure_collection(relatives_spec("candidate_rel_g1"))  # written, never switched to
    client.close()
    client = AsifClient(path)
    assert "candidate_rel_g1" not in client.backend.list_collections()
    assert_fresh(client)
    client.close()


def test_a_refresh_of_most_candidates_also_switches(tmp_path, monkeypatch) -> None:
    """Past SWAP_SHARE of the candidates changed, the unchanged rest is written again beside them
    into the new collection; the report still counts only the changed ones."""
    monkeypatch.setattr(refresh, "SWAP_MIN", 1)
    monkeypatch.setattr(refresh, "SWAP_SHARE", 0.01)
    client, rng = seeded_store(tmp_path / "s", k=2, seed=14, n_anchors=200, n_text=8, n_image=0)
    prompts = np.stack([pt.dense["text"] for b in client.backend.scroll(CANDIDATES, None, False, ("text",))
                        for pt in b])
    first = client.index.relatives
    near = prompts[0] / np.linalg.norm(prompts[0])  # a caption equal to one prompt: its top 2 change
    client.add_anchor_embeddings(unit(rng, 1, DI), near[None, :], [{"caption": "one prompt's twin"}])
    assert 0 < client.last_refresh.rewritten < client.backend.count(CANDIDATES)
    assert client.index.relatives != first
    assert client.backend.count(client.index.relatives) == client.backend.count(CANDIDATES)
    assert_fresh(client)
    client.close()


@pytest.mark.parametrize("reopen", [False, True])
def test_a_gallery_indexed_in_batches_saves_the_lists_once(tmp_path, monkeypatch, reopen) -> None:
    """Each save writes every candidate's list: once per batch made large galleries quadratic. With
    ``reopen`` the process starts without the candidates in memory (it reads them once)."""
    client, rng = seeded_store(tmp_path / "s", k=4, seed=12, n_anchors=30, n_text=6, n_image=5)
    if reopen:
        client.close()
        client = AsifClient(tmp_path / "s")
    monkeypatch.setattr(gallery, "REFRESH_BATCH", 4)
    saves = []
    real = client.backend.write_blob
    monkeypatch.setattr(client.backend, "write_blob", lambda name, arrays: (saves.append(name), real(name, arrays)))
    ids = gallery.add_items(client.index, "big", unit(rng, 19, DI), "image", [{"ref": str(i)} for i in range(19)])
    assert saves == [refresh.LISTS_BLOB]  # 5 batches, one save
    gallery.build_anchors_gallery(client.index, "text")  # 30 anchors in batches of 4, in a blob of its own
    assert saves == [refresh.LISTS_BLOB] * 2 + [refresh.lists_blob("gallery:anchors:text")]
    assert client.index.count_set(gallery.set_key("big")) == len(ids)
    assert_fresh(client)
    saves.clear()
    add(client, rng, 2)  # the anchors gallery is left behind: its (larger) blob is not written again
    assert saves == [refresh.LISTS_BLOB]
    gallery.resolve(client.index, "anchors:text", "image")  # it catches up: now it is, once
    assert saves[1:] == [refresh.LISTS_BLOB, refresh.lists_blob("gallery:anchors:text")]
    assert_fresh(client)
    client.close()
    client = AsifClient(tmp_path / "s")  # the saved lists serve every candidate: nothing searched
    assert not client.last_repair.get("searched")
    add(client, rng, 3)
    gallery.resolve(client.index, "anchors:text", "image")  # the anchors gallery catches up
    assert_fresh(client)
    client.close()


def test_an_update_after_opening_reads_no_anchors_gallery(tmp_path, monkeypatch) -> None:
    """The anchors galleries (as many candidates as anchors) are left out of updates, so an update
    neither reads their lists nor their embeddings; their catch-up reads them."""
    client, rng = seeded_store(tmp_path / "s", k=4, seed=13, n_anchors=30, n_text=6, n_image=5)
    gallery.build_anchors_gallery(client.index, "image")
    client.close()
    client = AsifClient(tmp_path / "s")
    reads = []
    real = client.backend.read_blob
    monkeypatch.setattr(client.backend, "read_blob", lambda name: (reads.append(name), real(name))[1])
    add(client, rng, 4)
    assert reads == [refresh.LISTS_BLOB]
    assert client.index._refresh_cache.absent == {"gallery:anchors:image": 30}
    assert client.last_refresh.candidates == 11  # the label-set and gallery candidates only
    gallery.resolve(client.index, "anchors:image", "text")
    assert reads[1:] == [refresh.lists_blob("gallery:anchors:image")]
    assert client.index._refresh_cache.absent == {}
    assert client.index.count_set("gallery:anchors:image") == 34
    assert_fresh(client)
    client.close()
