"""Crash safety of anchor updates (issue 5): a failure at any write leaves nothing half visible, and
reopening completes or rolls back; a deleted anchor never shows up again.

The stores here use made-up encoders (declared identities: no model is loaded). A kill runs the
update in a child process that exits without any cleanup at one chosen backend call.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import DI, DT, add, assert_fresh, copy_store, make_store, put_sets, structured, unit_rows

from asif_vdb import AsifClient, StoreError
from asif_vdb.engine.layout import ANCHORS, VECTOR, gallery_key
from asif_vdb.schema.store import LabelSetInfo
from asif_vdb.store.base import Filter

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def backend(client: AsifClient):
    """The store's backend (these tests check what is stored, and break its writes)."""
    assert client.engine is not None
    return client.engine.state.backend


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
    assert client.engine is not None and client.engine.config.journal == []
    store = backend(client)
    ids = {m: {p.id for b in store.scroll(n, None, with_payload=False) for p in b} for m, n in ANCHORS.items()}
    assert ids["image"] == ids["text"] == set(client.anchor_ids())
    for name in ANCHORS.values():
        assert store.count(name, Filter.where(ok=0)) == 0
    assert_fresh(client)
    return client


def run_child(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


# -- a process killed at each write of an update -------------------------------------------------
CHILD = textwrap.dedent("""
    import os, sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from asif_vdb import AsifClient, Tuning
    from helpers import add
    client = AsifClient({path!r}, tuning=Tuning(swap_min={swap}))
    backend = client.engine.state.backend
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
        client.delete_anchors(client.anchor_ids()[:10])
    os._exit(0)
""")

# What reopening must find and do: "nothing" (no point was written), "rolled back" (a lone caption
# half), "completed" (both halves were written: the pairs are kept), "deleted" (a begun delete).
KILL_POINTS = [  # (update, backend call, collection prefix, nth such call, die before/after it, recovery)
    ("add", "upsert", "anchor_", 1, "before", "nothing"),  # ids allocated, nothing written
    ("add", "upsert", "anchor_", 1, "after", "rolled back"),  # caption half written, image half never
    ("add", "upsert", "anchor_", 2, "after", "completed"),   # both halves written, none committed
    ("add", "set_payload", "anchor_", 1, "after", "completed"),  # image half visible, caption half not
    ("add", "delete", "candidate_rel", 1, "before", "completed"),  # pairs visible, candidates not refreshed
    ("add", "delete", "candidate_rel", 1, "after", "completed"),  # derived vectors deleted, not yet written again
    ("add", "replace_sparse", "candidate_rel", 1, "after", "completed"),  # derived vectors written, lists not saved
    ("add", "write_blob", "candidate_lists", 1, "after", "completed"),  # refreshed, journal not yet cleared
    ("delete", "set_payload", "anchor_", 1, "after", "deleted"),  # image half hidden, caption half visible
    ("delete", "delete", "anchor_", 1, "after", "deleted"),  # caption half deleted, image half still there
    ("delete", "delete", "candidate_rel", 1, "before", "deleted"),
    ("delete", "replace_sparse", "candidate_rel", 1, "after", "deleted"),
]


#: With every candidate rewritten into a new collection that the config then switches to (swap_min=1).
SWAP_KILL_POINTS = [
    ("add", "insert_sparse", "candidate_rel", 1, "after", "completed"),  # new generation written, not switched to
    ("add", "drop_collection", "candidate_rel", 1, "before", "completed"),  # switched, the old one not dropped
    ("add", "drop_collection", "candidate_rel", 1, "after", "completed"),  # old one dropped, lists not saved
    ("delete", "insert_sparse", "candidate_rel", 1, "before", "deleted"),
    ("delete", "drop_collection", "candidate_rel", 1, "before", "deleted"),
]


@pytest.mark.parametrize("op,method,collection,nth,when,recovery,swap",
                         [(*point, 10**9) for point in KILL_POINTS] + [(*point, 1) for point in SWAP_KILL_POINTS])
def test_a_killed_update_is_completed_or_rolled_back_on_open(tmp_path, op, method, collection, nth, when,
                                                             recovery, swap) -> None:
    path = tmp_path / "s"
    build(path)
    with AsifClient(path) as client:
        before = set(client.anchor_ids())
        first_new = client.engine.config.next_anchor_id
    code = CHILD.format(tests=str(TESTS), path=str(path), nth=nth, method=method, collection=collection, op=op,
                        when=when, swap=swap)
    run = run_child(code)
    assert run.returncode == 17, run.stderr
    client = assert_consistent(path)
    generations = [n for n in backend(client).list_collections() if n.startswith("candidate_rel")]
    assert generations == [client.engine.derived.live]  # a generation the crash left behind is gone
    after = set(client.anchor_ids())
    batch = list(range(first_new, first_new + 12))  # the ids the add allocated
    repair = client.last_repair
    if op == "add":  # all of the batch or none of it
        assert after == (before | set(batch) if recovery == "completed" else before)
    else:
        assert after == before - set(sorted(before)[:10])  # a begun delete is always finished
    assert repair.completed == (batch if recovery == "completed" else [])
    assert repair.rolled_back == (batch if recovery == "rolled back" else [])
    assert repair.deleted == (sorted(before)[:10] if recovery == "deleted" else [])
    client.close()


# -- failures inside the process ----------------------------------------------------------------
def test_a_failed_write_is_rolled_back_at_once_and_nothing_is_visible(tmp_path, monkeypatch) -> None:
    path = tmp_path / "s"
    build(path)
    client = AsifClient(path)
    before = client.count()
    store = backend(client)
    real = store.upsert

    def fail_on_image_side(collection, points):
        if collection == ANCHORS["image"]:
            raise OSError("disk full")
        return real(collection, points)

    monkeypatch.setattr(store, "upsert", fail_on_image_side)
    rng = np.random.default_rng(1)
    with pytest.raises(OSError, match="disk full"):
        add(client, rng, 5)
    assert client.count() == before
    assert store.count(ANCHORS["text"]) == before  # the lone caption halves are gone
    assert client.engine.config.journal == []
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

    monkeypatch.setattr(backend(client), "set_payload", broken)
    with pytest.raises(OSError, match="connection lost"):
        add(client, rng, 5)
    assert client.engine.config.journal  # kept for the next open
    with pytest.raises(StoreError, match="unfinished update"):
        client.search_embeddings(unit_rows(rng, 1, DI), "image", "t")
    monkeypatch.undo()
    client.close()
    reopened = assert_consistent(path)
    assert len(reopened.last_repair.completed) == 5  # both halves were written: completed
    reopened.close()


# -- deleted anchors are gone from every answer -------------------------------------------------
def test_a_deleted_anchor_never_appears_in_any_result(tmp_path) -> None:
    rng = np.random.default_rng(3)
    client = make_store(tmp_path / "s", k=4)
    add(client, rng, 40, source="a")
    add(client, rng, 10, source="private")
    put_sets(client, rng, 8, 5)
    engine = client.engine
    assert engine is not None
    # a label set of 8 classes, one template (prompt embeddings of the made-up text encoder)
    classes = [f"c{i}" for i in range(8)]
    engine.label_sets.store(LabelSetInfo(name="t", classes=classes, templates=["{}"]), classes, unit_rows(rng, 8, DT))
    client.index_anchors_gallery("image")
    queries = unit_rows(rng, 20, DI)
    used = {int(i) for lst in engine.anchors.relative(queries, "image").tolil().rows for i in lst}
    gone = set(client.anchor_ids_where(source="private"))
    assert used & gone, "the test needs deleted anchors that queries used"
    assert client.delete_anchors_where(source="private") == 10

    assert client.anchors(sorted(gone)) == {}
    q_rel = engine.anchors.relative(queries, "image")
    assert not set(q_rel.indices.tolist()) & gone
    items = {p.payload["anchor"] for b in engine.candidates.points(gallery_key("anchors:image"), ["anchor"]) for p in b}
    assert items and not items & gone  # the deleted pairs' own items (their payloads) went at once

    def no_trace(skip: str | None) -> None:
        for m in ("image", "text"):
            for _, _, key, rel, lst in engine.lists.stored(m):
                if key != skip:
                    assert not set(rel[0].tolist()) & gone
                    assert not set(lst.ids.tolist()) & gone

    no_trace(skip="gallery:anchors:image")  # the anchors gallery applies the deletion when searched:
    for hits in client.search_embeddings(unit_rows(rng, 10, DT), "text", "anchors", top=50):
        assert hits and not {h.id for h in hits} & gone
    no_trace(skip=None)
    # classification scores are those of a rebuild without the deleted anchors
    prompts = engine.anchors.relative(engine.label_sets.prompt_vectors(engine.label_sets.get("t")), "text")
    want = (q_rel @ prompts.T).toarray()
    assert (want > 0).any(axis=1).all()
    np.testing.assert_allclose(client.class_scores(queries, "t"), want, atol=1e-5)
    for row, result in enumerate(client.classify_embeddings(queries, "t", top=8, threshold=None)):
        np.testing.assert_allclose([p.score for p in result.predictions], np.sort(want[row])[::-1], atol=1e-5)
    for q in queries[:5]:
        explanation = client.explain_embedding(q, "t", top=3, anchors=20, neighbours=20)
        shown = {a.anchor_id for ans in explanation.answers for a in ans.anchors}
        shown |= {n.anchor_id for n in explanation.neighbours}
        assert shown and not shown & gone
    assert_fresh(client)
    client.close()


def test_journal_entries_survive_in_the_config_file(tmp_path, monkeypatch) -> None:
    """The journal is part of the config document (what makes recovery possible after a kill): an
    update whose rollback failed stays in the file until a reopen carries it through."""
    path = tmp_path / "s"
    build(path)
    config_file = path / "asif_config.json"
    assert json.loads(config_file.read_text())["journal"] == []
    client = AsifClient(path)
    first = client.engine.config.next_anchor_id

    def broken(*args, **kwargs):
        raise OSError("connection lost")

    monkeypatch.setattr(backend(client), "set_payload", broken)
    with pytest.raises(OSError, match="connection lost"):
        add(client, np.random.default_rng(4), 3)
    assert json.loads(config_file.read_text())["journal"] == [{"op": "add", "from": first}]
    monkeypatch.undo()
    client.close()
    assert_consistent(path).close()
    assert json.loads(config_file.read_text())["journal"] == []


# -- a process killed while refitting an embedding transform ----------------------------------------
TRANSFORM_CHILD = textwrap.dedent("""
    import os, sys
    from asif_vdb import AsifClient, Tuning
    client = AsifClient({path!r}, tuning=Tuning(rewrite_batch=16))  # several anchor batches: a kill can fall between two
    backend = client.engine.state.backend
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
#: Embeddings of the default encoders' dimensions, as in the methods tests (k=12, p=2).
IMAGE_DIM, TEXT_DIM = 1280, 384

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
    rng = np.random.default_rng(0)
    img, txt = structured(rng, 60, IMAGE_DIM), structured(rng, 60, TEXT_DIM)
    rng = np.random.default_rng(11)
    with make_store(path, k=12, p=2.0, image_dim=IMAGE_DIM, text_dim=TEXT_DIM) as client:
        client.add_anchor_embeddings(img, txt, [{"caption": f"pair {i}"} for i in range(60)])
        client.set_transform(**FIRST_FIT)
        client.index_gallery_embeddings("pics", structured(rng, 25, IMAGE_DIM), "image")
        client.index_gallery_embeddings("notes", structured(rng, 20, TEXT_DIM), "text")
        client.normalise_gallery("notes", "hub")
    return structured(rng, 6, IMAGE_DIM), structured(rng, 5, TEXT_DIM)


def _transform_state(client: AsifClient, image_q: np.ndarray, text_q: np.ndarray) -> dict:
    """What a refit changes, as queries see it (and the anchors as stored)."""
    assert client.engine is not None
    state = {"transforms": client.transforms(),
             "rel": client.engine.anchors.relative(image_q, "image").toarray(),
             "anchors": np.stack([p.dense[VECTOR] for b in backend(client).scroll(ANCHORS["image"], None, False,
                                                                                  (VECTOR,)) for p in b])}
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
    path, reference = tmp_path / "s", tmp_path / "ref"
    image_q, text_q = _transform_store(path)
    copy_store(path, reference)
    with AsifClient(reference) as client:
        old = _transform_state(client, image_q, text_q)
        client.set_transform(**REFIT)
        new = _transform_state(client, image_q, text_q)
    assert new["transforms"] != old["transforms"] and "text" not in new["transforms"]
    code = TRANSFORM_CHILD.format(path=str(path), method=method, prefix=prefix, nth=nth, when=when, refit=REFIT)
    run = run_child(code)
    assert run.returncode == 17, run.stderr
    with AsifClient(path) as client:
        assert client.engine is not None and client.engine.config.journal == []
        _assert_same_state(_transform_state(client, image_q, text_q), new if expect == "new" else old)
        assert client.last_repair.transform_finished == (["image", "text"] if expect == "new" else [])
        slot = client.transforms()["image"]["slot"]
        client.set_transform(**REFIT)  # and the store refits again from there, into the other slot
        assert client.transforms()["image"]["slot"] == 1 - slot


def test_a_gallery_killed_while_being_indexed_is_rolled_back_on_open(tmp_path) -> None:
    """Adding items is journaled: a kill after some batches were written leaves the gallery as it was
    (here: absent, as the add created it), so running the add again gives no duplicates."""
    path = tmp_path / "s"
    build(path)
    code = textwrap.dedent(f"""
        import os, sys
        import numpy as np
        sys.path.insert(0, {str(TESTS)!r})
        from asif_vdb import AsifClient, Tuning
        from helpers import DI, unit_rows
        client = AsifClient({str(path)!r}, tuning=Tuning(rewrite_batch=4))
        backend = client.engine.state.backend
        real, calls = backend.replace_sparse, []
        def dying(*args, **kwargs):
            real(*args, **kwargs)
            calls.append(1)
            if len(calls) == 3:
                os._exit(17)
        backend.replace_sparse = dying
        client.index_gallery_embeddings("pics", unit_rows(np.random.default_rng(3), 19, DI), "image")
        os._exit(0)
    """)
    run = run_child(code)
    assert run.returncode == 17, run.stderr
    with AsifClient(path) as client:
        assert client.engine is not None
        assert client.last_repair.sets_rolled_back == ["gallery pics"]
        assert "pics" not in client.galleries() and not client.engine.candidates.ids(gallery_key("pics"))
        ids = client.index_gallery_embeddings("pics", unit_rows(np.random.default_rng(3), 19, DI), "image")
        assert client.gallery("pics").size == len(ids) == 19
    assert_consistent(path).close()


@pytest.mark.parametrize("method,nth", [("delete", 1), ("replace_sparse", 1), ("insert_sparse", 1),
                                        ("write_config", 1)])
def test_an_anchors_gallery_killed_while_catching_up_catches_up_on_its_next_search(tmp_path, method, nth) -> None:
    path = tmp_path / "s"
    build(path)
    with AsifClient(path) as client:
        client.index_anchors_gallery("image")
        rng = np.random.default_rng(21)
        add(client, rng, 6, source="b")
        client.delete_anchors(client.anchor_ids()[:4])
        assert client.gallery("anchors:image").behind_deleted
    code = textwrap.dedent(f"""
        import os, sys
        import numpy as np
        sys.path.insert(0, {str(TESTS)!r})
        from asif_vdb import AsifClient
        from helpers import DT, unit_rows
        client = AsifClient({str(path)!r})
        backend = client.engine.state.backend
        real, calls = getattr(backend, {method!r}), []
        def dying(*args, **kwargs):
            out = real(*args, **kwargs)
            calls.append(1)
            if len(calls) == {nth}:
                os._exit(17)
            return out
        setattr(backend, {method!r}, dying)
        # a text searching the anchors searches their image side, which catches up first
        client.search_embeddings(unit_rows(np.random.default_rng(1), 1, DT), "text", "anchors", top=5)
        os._exit(0)
    """)
    run = run_child(code)
    assert run.returncode == 17, run.stderr  # killed inside the catch-up
    with AsifClient(path) as client:
        hits = client.search_embeddings(unit_rows(np.random.default_rng(2), 3, DT), "text", "anchors", top=50)
        info = client.gallery("anchors:image")
        assert not info.behind_added and not info.behind_deleted
        assert client.engine is not None
        items = [p.payload["anchor"] for b in client.engine.candidates.points(gallery_key("anchors:image"), ["anchor"])
                 for p in b]
        assert sorted(items) == client.anchor_ids() and info.size == len(items) == 32
        assert all(row and {h.id for h in row} <= set(items) for row in hits)
    assert_consistent(path).close()
