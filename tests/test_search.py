"""Galleries and multimodal search: store results equal dense ASIF, and survive reopening."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_fresh, open_store, unit_rows
from PIL import Image

from asif_vdb import AsifClient, AsifParams, InputError, NotFoundError, Tuning
from asif_vdb.engine.layout import gallery_key
from asif_vdb.features.galleries import query_modality
from asif_vdb.maths import relative

K, P = 25, 3.0
PARAMS = AsifParams(k=K, p=P)


def anchors(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    rng = np.random.default_rng(seed)
    return unit_rows(rng, n, 1280), unit_rows(rng, n, 384), [{"caption": f"pair {i}"} for i in range(n)]


def dense_top(queries, q_anchors, items, i_anchors, top: int) -> tuple[list[list[int]], np.ndarray]:
    """Dense ASIF: row indices of the top items (positive scores only) and the full score matrix."""
    s = relative.scores(relative.dense_relative(queries, q_anchors, K, P),
                        relative.dense_relative(items, i_anchors, K, P))
    order = np.argsort(-s, axis=1, kind="stable")[:, :top]
    return [[int(j) for j in row if s[i, j] > 0] for i, row in enumerate(order)], s


def check_equal(hits, ids: list[int], want_rows: list[list[int]], s: np.ndarray) -> None:
    assert len(hits) == len(want_rows)
    for i, (row_hits, want) in enumerate(zip(hits, want_rows)):
        assert [h.id for h in row_hits] == [ids[j] for j in want]
        np.testing.assert_allclose([h.score for h in row_hits], s[i, want], atol=1e-5)


@pytest.mark.parametrize("backend", ["edge", "memory"])
def test_search_equals_dense_both_directions(backend: str, tmp_path) -> None:
    img, txt, payloads = anchors(150)
    rng = np.random.default_rng(5)
    gallery_img, gallery_txt = unit_rows(rng, 40, 1280), unit_rows(rng, 30, 384)
    q_txt, q_img = unit_rows(rng, 6, 384), unit_rows(rng, 4, 1280)
    with open_store(backend, tmp_path, params=PARAMS) as client:
        client.add_anchor_embeddings(img, txt, payloads)
        pics = client.index_gallery_embeddings("pics", gallery_img, "image",
                                               [{"ref": f"img{i}.jpg", "n": i} for i in range(40)])
        caps = client.index_gallery_embeddings("caps", gallery_txt, "text")
        assert len(set(pics) | set(caps)) == 70
        # text -> image
        want, s = dense_top(q_txt, txt, gallery_img, img, 10)
        hits = client.search_embeddings(q_txt, "text", "pics", top=10)
        check_equal(hits, pics, want, s)
        assert hits[0][0].payload == {"ref": f"img{pics.index(hits[0][0].id)}.jpg", "n": pics.index(hits[0][0].id)}
        # image -> text
        want, s = dense_top(q_img, img, gallery_txt, txt, 7)
        check_equal(client.search_embeddings(q_img, "image", "caps", top=7), caps, want, s)
        # image -> image works too: every relative vector lives in the anchor space
        want, s = dense_top(q_img, img, gallery_img, img, 5)
        check_equal(client.search_embeddings(q_img, "image", "pics", top=5), pics, want, s)


def test_text_and_image_queries_by_type(tmp_path) -> None:
    img, txt, payloads = anchors(100, seed=1)
    gallery_img = unit_rows(np.random.default_rng(2), 20, 1280)
    photo = tmp_path / "query.png"
    Image.new("RGB", (64, 64), (200, 40, 40)).save(photo)
    with open_store("memory", tmp_path, params=PARAMS) as client:
        client.add_anchor_embeddings(img, txt, payloads)
        ids = client.index_gallery_embeddings("pics", gallery_img, "image")
        text = "a dog running on the beach"
        by_text = client.search(text, "pics", top=5)
        want, s = dense_top(client.encode_texts([text]), txt, gallery_img, img, 5)
        check_equal([by_text], ids, want, s)
        # an existing file path is an image; modality= overrides
        by_path = client.search(str(photo), "pics", top=5)
        assert by_path == client.search_embeddings(client.encode_images([photo]), "image", "pics", 5)[0]
        assert client.search(str(photo), "pics", top=5, modality="text") == \
            client.search_embeddings(client.encode_texts([str(photo)]), "text", "pics", 5)[0]
        mixed = client.search_many([text, photo], "pics", top=5)
        assert mixed == [by_text, by_path]


def test_query_modality() -> None:
    assert query_modality("a cat") == "text"
    assert query_modality(np.zeros((4, 4, 3), np.uint8)) == "image"
    assert query_modality(Image.new("RGB", (2, 2))) == "image"
    assert query_modality("a cat", "image") == "image"
    with pytest.raises(InputError, match="neither a text nor an image"):
        query_modality(3.5)
    with pytest.raises(InputError, match="modality"):
        query_modality("x", "audio")


def test_galleries_survive_reopen_and_delete(tmp_path) -> None:
    img, txt, payloads = anchors(120, seed=4)
    rng = np.random.default_rng(9)
    gallery_img, q_txt = unit_rows(rng, 30, 1280), unit_rows(rng, 5, 384)
    store = tmp_path / "store"
    with AsifClient(store, params=PARAMS) as client:
        client.add_anchor_embeddings(img, txt, payloads)
        ids = client.index_gallery_embeddings("pics", gallery_img, "image", [{"ref": str(i)} for i in range(30)])
        before = client.search_embeddings(q_txt, "text", "pics", top=8)
    with AsifClient(store) as client:
        assert client.galleries() == ["pics"]
        info = client.gallery("pics")
        assert (info.name, info.modality, info.size, info.normalise) == ("pics", "image", 30, "auto")
        assert client.search_embeddings(q_txt, "text", "pics", top=8) == before
        gone = [h.id for h in before[0][:3]]
        assert client.delete_from_gallery("pics", gone + [10**9]) == 3
        assert client.gallery("pics").size == 27
    with AsifClient(store) as client:
        after = client.search_embeddings(q_txt, "text", "pics", top=8)
        keep = [ids.index(i) for i in ids if i not in gone]
        want, s = dense_top(q_txt, txt, gallery_img[keep], img, 8)
        check_equal(after, [ids[j] for j in keep], want, s)
        client.delete_gallery("pics")
        assert client.galleries() == []
        with pytest.raises(NotFoundError, match="no gallery 'pics'"):
            client.search_embeddings(q_txt, "text", "pics")


def test_gallery_follows_anchor_changes_and_doctor_repairs_its_vectors(tmp_path) -> None:
    img, txt, payloads = anchors(160, seed=6)
    rng = np.random.default_rng(8)
    gallery_txt, q_img = unit_rows(rng, 25, 384), unit_rows(rng, 4, 1280)
    with open_store("edge", tmp_path, params=PARAMS) as client:
        client.add_anchor_embeddings(img[:100], txt[:100], payloads[:100])
        ids = client.index_gallery_embeddings("caps", gallery_txt, "text")
        client.add_anchor_embeddings(img[100:], txt[100:], payloads[100:])
        client.delete_anchors(range(0, 30))
        want, s = dense_top(q_img, img[30:], gallery_txt, txt[30:], 10)
        check_equal(client.search_embeddings(q_img, "image", "caps", top=10), ids, want, s)
        # stored relative vectors that differ from their recomputation are found and rewritten by
        # doctor --repair (from the items' stored embeddings), and the search is right again
        engine = client.engine
        backend, live = engine.state.backend, engine.derived.live
        points = backend.retrieve(live, ids, True, ("rel",))
        assert len(points) == len(ids)
        for pt in points:  # scramble the stored relative vectors
            pt.sparse = {"rel": (np.array([150]), np.array([1.0], np.float32))}
        backend.upsert(live, points)
        with pytest.raises(AssertionError):
            check_equal(client.search_embeddings(q_img, "image", "caps", top=10), ids, want, s)
        fresh = {c.name: c for c in client.doctor()}["fresh"]
        assert not fresh.ok and f"{len(ids)} stale" in fresh.detail and not fresh.repaired
        fresh = {c.name: c for c in client.doctor(repair=True)}["fresh"]
        assert fresh.repaired == f"rewrote {len(ids)} candidate(s) from a recomputation"
        check_equal(client.search_embeddings(q_img, "image", "caps", top=10), ids, want, s)
        assert all(c.ok for c in client.doctor())
        assert_fresh(client)


def anchor_items(client, side: str) -> dict[int, int]:
    """anchor id -> its item id in the anchors gallery of ``side``."""
    batches = client.engine.candidates.points(gallery_key(f"anchors:{side}"), with_payload=["anchor"])
    return {p.payload["anchor"]: p.id for b in batches for p in b}


def more_pairs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    img, txt, payloads = anchors(n, seed=seed)
    return img, txt, [{**p, "caption": f"extra {i}"} for i, p in enumerate(payloads)]


@pytest.mark.parametrize("backend,cells", [("edge", None), ("edge", 200), ("memory", None)])
def test_anchors_gallery(tmp_path, backend, cells) -> None:  # cells 200: 2 new anchors at a time
    tuning = Tuning(catch_up_cells=cells) if cells is not None else None
    img, txt, payloads = anchors(90, seed=12)
    rng = np.random.default_rng(13)
    q_txt, q_img = unit_rows(rng, 3, 384), unit_rows(rng, 3, 1280)
    with open_store(backend, tmp_path, params=PARAMS, tuning=tuning) as client:
        ids = client.add_anchor_embeddings(img[:80], txt[:80], payloads[:80])
        # text query -> anchor images, each ranked by the relative vector of its own image
        want, s = dense_top(q_txt, txt[:80], img[:80], img[:80], 6)
        hits = client.search_embeddings(q_txt, "text", "anchors", top=6)
        check_equal(hits, ids, want, s)
        assert hits[0][0].payload["caption"] == f"pair {hits[0][0].id}"
        # image query -> anchor captions
        want, s = dense_top(q_img, img[:80], txt[:80], txt[:80], 6)
        check_equal(client.search_embeddings(q_img, "image", "anchors", top=6), ids, want, s)
        assert set(client.galleries()) == {"anchors:image", "anchors:text"}
        items_before = anchor_items(client, "image")
        # an anchor update leaves the indexed sides behind; their next search catches up
        ids += client.add_anchor_embeddings(img[80:], txt[80:], payloads[80:])
        assert set(client.galleries()) == {"anchors:image", "anchors:text"}
        assert client.last_refresh.galleries_behind == ["anchors:image", "anchors:text"]
        assert client.gallery("anchors:image").behind_added == ids[80:]
        assert client.info()["galleries"]["anchors:image"]["behind"] == 10  # a count, not the ids
        want, s = dense_top(q_txt, txt, img, img, 6)
        check_equal(client.search_embeddings(q_txt, "text", "anchors", top=6), ids, want, s)
        items = anchor_items(client, "image")
        assert {a: items[a] for a in items_before} == items_before  # caught up, not rebuilt
        assert sorted(items) == sorted(ids) and client.gallery("anchors:image").behind_added == []
        # deletions, old and new anchors alike, and more additions before the next search
        gone = [ids[3], ids[40], ids[85]]
        client.delete_anchors(gone)
        extra = more_pairs(5, seed=14)
        ids += client.add_anchor_embeddings(*extra)
        keep = [i for i, a in enumerate(ids) if a not in gone]
        all_img, all_txt = np.concatenate([img, extra[0]]), np.concatenate([txt, extra[1]])
        kept_ids = [ids[i] for i in keep]
        for query, modality, side in ((q_txt, "text", "image"), (q_img, "image", "text")):
            mine = all_txt if modality == "text" else all_img
            items_vecs = all_img if side == "image" else all_txt
            want, s = dense_top(query, mine[keep], items_vecs[keep], items_vecs[keep], 6)
            check_equal(client.search_embeddings(query, modality, "anchors", top=6), kept_ids, want, s)
            assert sorted(anchor_items(client, side)) == sorted(kept_ids)
        assert_fresh(client)
        with pytest.raises(InputError, match="reserved"):
            client.index_gallery_embeddings("anchors", img[:2], "image")
        with pytest.raises(InputError, match="delete anchors instead"):
            client.delete_from_gallery("anchors:image", [0])


def test_gallery_input_errors(tmp_path) -> None:
    img, txt, payloads = anchors(50)
    with open_store("memory", tmp_path, params=PARAMS) as client:
        with pytest.raises(NotFoundError, match="add anchors first"):
            client.search_embeddings(txt[:1], "text", "pics")
        client.add_anchor_embeddings(img, txt, payloads)
        client.index_gallery_embeddings("pics", img[:5], "image")
        with pytest.raises(InputError, match="holds images; cannot add texts"):
            client.index_gallery_embeddings("pics", txt[:5], "text")
        with pytest.raises(InputError, match="dimension 1280"):
            client.index_gallery_embeddings("pics", txt[:5], "image")
        with pytest.raises(InputError, match="reserved"):
            client.index_gallery_embeddings("pics", img[:1], "image", [{"set": "x"}])
        for key in ("ok", "set", "tf"):  # the store's own anchor fields
            with pytest.raises(InputError, match=rf"pair #0: payload keys \['{key}'\] are reserved"):
                client.add_anchor_embeddings(img[:1], txt[:1], [{"caption": "c", key: 1}])
        assert client.count() == 50
        with pytest.raises(InputError, match="exactly one"):
            client.index_gallery("pics")
        with pytest.raises(InputError, match="top must be a positive integer"):
            client.search_embeddings(txt[:1], "text", "pics", top=0)
        with pytest.raises(InputError, match="2 payloads for 1 items"):
            client.index_gallery_embeddings("pics", img[:1], "image", [{}, {}])
        assert client.gallery("pics").size == 5


def test_an_anchors_gallery_far_behind_is_built_anew(tmp_path) -> None:
    img, txt, payloads = anchors(60, seed=15)
    q_txt = unit_rows(np.random.default_rng(16), 3, 384)
    with open_store("edge", tmp_path, params=PARAMS) as client:
        ids = client.add_anchor_embeddings(img[:40], txt[:40], payloads[:40])
        client.index_anchors_gallery("image")
        before = anchor_items(client, "image")
        ids += client.add_anchor_embeddings(img[40:], txt[40:], payloads[40:])  # 20 > 40 items / 4
        want, s = dense_top(q_txt, txt, img, img, 6)
        check_equal(client.search_embeddings(q_txt, "text", "anchors", top=6), ids, want, s)
        after = anchor_items(client, "image")
        assert sorted(after) == sorted(ids) and not set(after.values()) & set(before.values())
        assert not client.gallery("anchors:image").behind_added
