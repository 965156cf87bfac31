"""Crash safety of anchor updates (issue 5): a failure at any write leaves nothing half visible, and
reopening completes or rolls back; a deleted anchor never shows up again."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from test_refresh import DI, DT, add, anchor_ids, assert_fresh, make_store, put_sets, unit

from asif_vdb import refresh
from asif_vdb.client import AsifClient
from asif_vdb.config import LabelSetInfo
from asif_vdb.errors import StoreError
from asif_vdb.index import ANCHORS, CANDIDATES
from asif_vdb.store.base import Filter

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def build(path: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    client = make_store(path, k=4)
    add(client, rng, 30, source="a")
    put_sets(client, rng, 8, 5)
    client.close()


def assert_consistent(path: Path) -> AsifClient:
    """Reopen: every pair is whole (both halves, both visible) or absent, nothing is journaled, and
    every candidate equals a rebuild."""
    client = AsifClient(path)
    index = client.index
    assert index.config.journal == []
    ids = {m: {p.id for b in client.backend.scroll(n, None, with_payload=False) for p in b} for m, n in ANCHORS.items()}
    assert ids["image"] == ids["text"]
    for name in ANCHORS.values():
        assert client.backend.count(name, Filter.where(ok=0)) == 0
    assert_fresh(client)
    return client


# -- a process killed at each write of an update -------------------------------------------------
CHILD = textwrap.dedent("""
    import os, sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from asif_vdb import refresh
    from asif_vdb.client import AsifClient
    from test_refresh import add, anchor_ids
    refresh.SWAP_MIN = {swap}
    client = AsifClient({path!r})
    backend = client.backend
    calls = {{"n": 0}}
    def dying(method, collection_prefix):
        real = getattr(backend, method)
        def wrapper(collection, *args, **kwargs):
            if not collection.startswith(collection_prefix):
                return real(collection, *args, **kwargs)
            calls["n"] += 1
            if calls["n"] == {nth} and {when!r} == "before":
                os._exit(17)  # no cleanup, no flush: the closest thing to pulling the plug
            out = real(collection, *args, **kwargs)
            if calls["n"] == {nth}:
                os._exit(17)
            return out
        setattr(backend, method, wrapper)
    dying({method!r}, {collection!r})
    if {op!r} == "add":
        add(client, np.random.default_rng(9), 12, source="b")
    else:
        client.delete_anchors(anchor_ids(client)[:10])
    os._exit(0)
""")

KILL_POINTS = [  # (update, backend call, collection prefix, nth such call, die before/after it)
    ("add", "upsert", "anchor_", 1, "before"),  # ids allocated, nothing written
    ("add", "upsert", "anchor_", 1, "after"),   # caption half written, image half never: rolled back
    ("add", "upsert", "anchor_", 2, "after"),   # both halves written, none committed: completed
    ("add", "set_payload", "anchor_", 1, "after"),  # image half visible, caption half not: completed
    ("add", "delete", "candidate_rel", 1, "before"),  # pairs visible, candidates not refreshed
    ("add", "delete", "candidate_rel", 1, "after"),  # derived vectors deleted, not yet written again
    ("add", "replace_sparse", "candidate_rel", 1, "after"),  # derived vectors written, their states not saved
    ("add", "write_blob", "candidate_lists", 1, "after"),  # refreshed, journal not yet cleared
    ("delete", "set_payload", "anchor_", 1, "after"),  # image half hidden, caption half visible
    ("delete", "delete", "anchor_", 1, "after"),  # caption half deleted, image half still there
    ("delete", "delete", "candidate_rel", 1, "before"),
    ("delete", "replace_sparse", "candidate_rel", 1, "after"),
]


#: With every candidate rewritten into a new collection that the config then switches to (SWAP_MIN=1).
SWAP_KILL_POINTS = [
    ("add", "insert_sparse", "candidate_rel", 1, "after"),  # new generation written, not switched to
    ("add", "drop_collection", "candidate_rel", 1, "before"),  # switched, the old one not dropped
    ("add", "drop_collection", "candidate_rel", 1, "after"),  # old one dropped, lists not saved
    ("delete", "insert_sparse", "candidate_rel", 1, "before"),
    ("delete", "drop_collection", "candidate_rel", 1, "before"),
]


@pytest.mark.parametrize("op,method,collection,nth,when,swap",
                         [(*point, 10**9) for point in KILL_POINTS] + [(*point, 1) for point in SWAP_KILL_POINTS])
def test_a_killed_update_is_completed_or_rolled_back_on_open(tmp_path, op, method, collection, nth, when,
                                                             swap) -> None:
    path = tmp_path / "s"
    build(path)
    with AsifClient(path) as client:
        before = set(anchor_ids(client))
    code = CHILD.format(tests=str(TESTS), path=str(path), nth=nth, method=method, collection=collection, op=op,
                        when=when, swap=swap)
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 17, run.stderr
    client = assert_consistent(path)
    generations = [n for n in client.backend.list_collections() if n.startswith("candidate_rel")]
    assert generations == [client.index.relatives]  # a generation the crash left behind is gone
    after = set(anchor_ids(client))
    if op == "add":
        assert after >= before and len(after - before) in (0, 12)  # all of the batch or none of it
    else:
        assert after == before - set(sorted(before)[:10])  # a begun delete is always finished
    repair = client.last_repair
    assert repair["completed"] or repair["rolled_back"] or repair.get("deleted") or when == "before"
    client.close()


# -- failures inside the process ----------------------------------------------------------------
def test_a_failed_write_is_rolled_back_at_once_and_nothing_is_visible(tmp_path, monkeypatch) -> None:
    path = tmp_path / "s"
    build(path)
    client = AsifClient(path)
    before = client.count()
    real = client.backend.upsert

    def fail_on_image_side(collection, points):
        if collection == ANCHORS["image"]:
            raise OSError("disk full")
        return real(collection, points)

    monkeypatch.setattr(client.backend, "upsert", fail_on_image_side)
    rng = np.random.default_rng(1)
    with pytest.raises(OSError, match="disk full"):
        add(client, rng, 5)
    assert client.count() == before
    assert client.backend.count(ANCHORS["text"]) == before  # the lone caption halves are gone
    assert client.index.config.journal == []
    assert_fresh(client)  # queries run, and see nothing of the failed batch
    client.close()
    assert_consistent(path).close()


def test_when_even_the_rollback_fails_queries_refuse_until_reopened(tmp_path, monkeypatch) -> None:
    path = tmp_path / "s"
    build(path)
    client = AsifClient(path)
    rng = np.random.default_rng(2)

    def broken(*args, **kwargs):
        raise OSError("connection lost")

    monkeypatch.setattr(client.backend, "set_payload", broken)
    with pytest.raises(OSError, match="connection lost"):
        add(client, rng, 5)
    assert client.index.config.journal  # kept for the next open
    with pytest.raises(StoreError, match="unfinished anchor update"):
        client.index.relative(unit(rng, 1, DI), "image")
    monkeypatch.undo()
    client.close()
    reopened = assert_consistent(path)
    assert len(reopened.last_repair["completed"]) == 5  # both halves were written: completed
    reopened.close()


# -- deleted anchors are gone from every answer -------------------------------------------------
def test_a_deleted_anchor_never_appears_in_any_result(tmp_path) -> None:
    from asif_vdb import gallery

    rng = np.random.default_rng(3)
    client = make_store(tmp_path / "s", k=4)
    add(client, rng, 40, source="a")
    add(client, rng, 10, source="private")
    put_sets(client, rng, 8, 5)
    first = min(p.id for b in client.backend.scroll(CANDIDATES, None, with_payload=False) for p in b)
    client.index.config.label_sets["t"] = LabelSetInfo(
        name="t", classes=[f"c{i}" for i in range(8)], templates=["{}"], first_id=first)
    client.index.save()
    gallery.build_anchors_gallery(client.index, "image")
    queries = unit(rng, 20, DI)
    used = {int(i) for lst in client.index.relative(queries, "image").tolil().rows for i in lst}
    gone = set(client.anchor_ids_where(source="private"))
    assert used & gone, "the test needs deleted anchors that queries used"
    assert client.delete_anchors_where(source="private") == 10

    assert client.anchors(sorted(gone)) == {}
    assert not set(client.index.relative(queries, "image").indices.tolist()) & gone
    items = {p.payload["anchor"] for b in client.backend.scroll(CANDIDATES, Filter.where(set="gallery:anchors:image"),
                                                                 ["anchor"]) for p in b}
    assert items and not items & gone  # the deleted pairs' own items (their payloads) went at once

    def no_trace(skip: str | None) -> None:
        for m in ("image", "text"):
            for _, _, key, rel, lst in refresh.stored(client.index, m):
                if key != skip:
                    assert not set(rel[0].tolist()) & gone
                    assert not set(lst.ids.tolist()) & gone

    no_trace(skip="gallery:anchors:image")  # the anchors gallery applies the deletion when searched:
    for hits in client.search_embeddings(unit(rng, 10, DT), "text", "anchors", top=50):
        assert not {h.id for h in hits} & gone
    no_trace(skip=None)
    for result in client.classify_embeddings(queries, "t", top=8, threshold=None):
        assert result.predictions
    for q in queries[:5]:
        explanation = client.explain_embedding(q, "t", top=3, anchors=20, neighbours=20)
        shown = {a.anchor_id for ans in explanation.answers for a in ans.anchors}
        shown |= {n.anchor_id for n in explanation.neighbours}
        assert not shown & gone
    assert_fresh(client)
    client.close()


def test_journal_entries_survive_in_the_config_file(tmp_path) -> None:
    """The journal is part of the config document (what makes recovery possible after a kill)."""
    path = tmp_path / "s"
    build(path)
    config = json.loads((path / "asif_config.json").read_text())
    assert config["journal"] == []
    assert DI and DT


# -- a process killed while refitting an embedding transform ----------------------------------------
TRANSFORM_CHILD = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {tests!r})
    from asif_vdb import methods_index
    from asif_vdb.client import AsifClient
    methods_index.BATCH = 16  # several anchor batches: a kill can fall between two of them
    client = AsifClient({path!r})
    backend = client.index.raw_backend
    calls = {{"n": 0}}
    real = getattr(backend, {method!r})
    def wrapper(*args, **kwargs):
        if {prefix!r} and not str(args[0]).startswith({prefix!r}):
            return real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == {nth} and {when!r} == "before":
            os._exit(17)
        out = real(*args, **kwargs)
        if calls["n"] == {nth}:
            os._exit(17)
        return out
    setattr(backend, {method!r}, wrapper)
    client.set_transform(**{refit!r})
    os._exit(0)
""")
FIRST_FIT = {"image": {"power": 0.5, "whiten": 3.0}, "text": {"whiten": 1.0}}
REFIT = {"image": {"whiten": 1.0}, "text": None}  # the image transform changes slot, the text one goes

TRANSFORM_KILL_POINTS = [  # (backend call, collection prefix, nth, before/after, transform in force after)
    ("upsert", "transform", 1, "after", "old"),  # new rows half written, nothing journaled
    ("upsert", "anchor_image", 2, "after", "new"),  # some image anchors rewritten
    ("upsert", "anchor_text", 1, "before", "new"),  # image anchors done, captions not begun
    ("write_config", "", 2, "before", "new"),  # every anchor rewritten, config not switched
    ("write_config", "", 2, "after", "new"),  # switched, candidates not recomputed
    ("upsert", "candidates", 1, "after", "new"),  # candidates half recomputed
]


def _transform_store(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """60 structured pairs under FIRST_FIT, an image gallery and a hub-normalised text gallery;
    returns (image queries, text queries)."""
    from test_methods import PARAMS, anchor_data, structured

    img, txt, pay = anchor_data(60)
    rng = np.random.default_rng(11)
    with AsifClient(path, params=PARAMS) as client:
        client.add_anchor_embeddings(img, txt, pay)
        client.set_transform(**FIRST_FIT)
        client.index_gallery_embeddings("pics", structured(rng, 25, 1280), "image")
        client.index_gallery_embeddings("notes", structured(rng, 20, 384), "text")
        client.normalise_gallery("notes", "hub")
    return structured(rng, 6, 1280), structured(rng, 5, 384)


def _transform_state(client: AsifClient, image_q: np.ndarray, text_q: np.ndarray) -> dict:
    """What a refit changes, as queries see it (and the anchors as read back)."""
    state = {"transforms": client.transforms(),
             "rel": client.index.relative(image_q, "image").toarray(),
             "anchors": np.stack([p.dense["v"] for b in client.backend.scroll("anchor_image", None, False, ("v",))
                                  for p in b])}
    for gallery, queries, modality in (("pics", text_q, "text"), ("notes", image_q, "image")):
        hits = client.search_embeddings(queries, modality, gallery, top=8)
        state[gallery] = ([[h.id for h in row] for row in hits], np.array([[h.score for h in row] for row in hits]))
    return state


def _assert_same_state(got: dict, want: dict) -> None:
    assert got["transforms"] == want["transforms"]
    np.testing.assert_allclose(got["rel"], want["rel"], atol=1e-5)
    np.testing.assert_allclose(got["anchors"], want["anchors"], atol=2e-4)
    for gallery in ("pics", "notes"):
        assert got[gallery][0] == want[gallery][0]
        np.testing.assert_allclose(got[gallery][1], want[gallery][1], atol=1e-5)


@pytest.mark.parametrize("method,prefix,nth,when,expect", TRANSFORM_KILL_POINTS)
def test_a_killed_refit_leaves_the_old_transform_or_is_finished_on_open(tmp_path, method, prefix, nth, when,
                                                                        expect) -> None:
    import shutil

    path, reference = tmp_path / "s", tmp_path / "ref"
    image_q, text_q = _transform_store(path)
    shutil.copytree(path, reference)
    with AsifClient(reference) as client:
        old = _transform_state(client, image_q, text_q)
        client.set_transform(**REFIT)
        new = _transform_state(client, image_q, text_q)
    assert new["transforms"] != old["transforms"] and "text" not in new["transforms"]
    code = TRANSFORM_CHILD.format(tests=str(TESTS), path=str(path), method=method, prefix=prefix, nth=nth,
                                  when=when, refit=REFIT)
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 17, run.stderr
    with AsifClient(path) as client:
        assert client.index.config.journal == []
        _assert_same_state(_transform_state(client, image_q, text_q), new if expect == "new" else old)
        if expect == "new":
            assert client.last_repair["transform_finished"] == ["image", "text"]
        slot = client.transforms()["image"]["slot"]
        client.set_transform(**REFIT)  # and the store refits again from there, into the other slot
        assert client.transforms()["image"]["slot"] == 1 - slot


def test_a_gallery_killed_while_being_indexed_is_searchable_and_exact_on_open(tmp_path) -> None:
    """Indexing saves the candidates' lists once, at the end: a kill before that leaves candidates
    with their relative vectors (searchable) but no saved list, which the next update searches."""
    path = tmp_path / "s"
    build(path)
    code = textwrap.dedent(f"""
        import os, sys
        import numpy as np
        sys.path.insert(0, {str(TESTS)!r})
        from asif_vdb import gallery
        from asif_vdb.client import AsifClient
        from test_refresh import DI, unit
        gallery.REFRESH_BATCH = 4
        client = AsifClient({str(path)!r})
        real, calls = client.backend.replace_sparse, []
        def dying(*args, **kwargs):
            real(*args, **kwargs)
            calls.append(1)
            if len(calls) == 3:
                os._exit(17)
        client.backend.replace_sparse = dying
        client.index_gallery_embeddings("pics", unit(np.random.default_rng(3), 19, DI), "image")
        os._exit(0)
    """)
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 17, run.stderr
    with AsifClient(path) as client:  # 3 batches of 4 items written: searchable at once
        items = {p.id for b in client.backend.scroll(CANDIDATES, Filter.where(set="gallery:pics"), False)
                 for p in b}
        assert len(items) == 12
        hits = client.search_embeddings(unit(np.random.default_rng(4), 4, DT), "text", "pics", top=20)
        assert {x.id for h in hits for x in h} <= items and any(hits)
        add(client, np.random.default_rng(5), 3)  # the first update searches their lists again
    assert_consistent(path).close()


@pytest.mark.parametrize("method,nth", [("delete", 1), ("replace_sparse", 1), ("insert_sparse", 1),
                                        ("write_config", 1)])
def test_an_anchors_gallery_killed_while_catching_up_catches_up_on_its_next_search(tmp_path, method, nth) -> None:
    from asif_vdb import gallery

    path = tmp_path / "s"
    build(path)
    with AsifClient(path) as client:
        gallery.build_anchors_gallery(client.index, "image")
        rng = np.random.default_rng(21)
        add(client, rng, 6, source="b")
        client.delete_anchors(anchor_ids(client)[:4])
        assert client.gallery("anchors:image").behind_deleted
    code = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(TESTS)!r})
        from asif_vdb import gallery
        from asif_vdb.client import AsifClient
        client = AsifClient({str(path)!r})
        real, calls = getattr(client.backend, {method!r}), []
        def dying(*args, **kwargs):
            out = real(*args, **kwargs)
            calls.append(1)
            if len(calls) == {nth}:
                os._exit(17)
            return out
        setattr(client.backend, {method!r}, dying)
        gallery.resolve(client.index, "anchors:image", "text")
        os._exit(0)
    """)
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 17, run.stderr  # killed inside the catch-up
    with AsifClient(path) as client:
        gallery.resolve(client.index, "anchors:image", "text")
        info = client.gallery("anchors:image")
        assert not info.behind_added and not info.behind_deleted
        items = [p.payload["anchor"] for b in client.backend.scroll(CANDIDATES, Filter.where(set="gallery:anchors:image"),
                                                                      ["anchor"]) for p in b]
        assert sorted(items) == sorted(anchor_ids(client)) and info.size == len(items)
    assert_consistent(path).close()
