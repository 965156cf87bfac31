"""The Python client on every backend: anchors, label sets, classification against dense ASIF."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import (
    BACKENDS,
    DEFAULT_DI,
    demo_pairs,
    open_store,
    random_anchors,
    unit_rows,
)
from helpers import THING_CLASSES as CLASSES
from helpers import THING_TEMPLATES as TEMPLATES

from asif_vdb import AsifParams
from asif_vdb.errors import InputError, NotFoundError
from asif_vdb.maths import relative


def dense_class_scores(client, img_anchors, txt_anchors, queries, k, p, aggregate="max") -> np.ndarray:
    prompts = [t.format(c) for c in CLASSES for t in TEMPLATES]
    cand = relative.dense_relative(client.encode_texts(prompts), txt_anchors, k, p)
    q = relative.dense_relative(queries, img_anchors, k, p)
    grid = relative.scores(q, cand).reshape(len(queries), len(CLASSES), len(TEMPLATES))
    return grid.max(axis=2) if aggregate == "max" else grid.mean(axis=2)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("aggregate", ["max", "mean"])
def test_classification_equals_dense_asif(backend: str, aggregate: str, tmp_path) -> None:
    img, txt, payloads = random_anchors(120)
    queries = unit_rows(np.random.default_rng(7), 9, DEFAULT_DI)
    params = AsifParams(k=25, p=3.0)
    with open_store(backend, tmp_path, params=params) as client:
        ids = client.add_anchor_embeddings(img, txt, payloads)
        assert ids == list(range(120)) and client.count() == 120
        client.create_label_set("things", CLASSES, TEMPLATES, aggregate=aggregate)
        got = client.class_scores(queries, "things")
        want = dense_class_scores(client, img, txt, queries, 25, 3.0, aggregate)
        np.testing.assert_allclose(got, want, atol=1e-5)
        results = client.classify_embeddings(queries, "things", top=3)
        assert len(results) == len(queries)
        for row, res in zip(want, results):
            assert len(res.predictions) == 3
            assert res.predictions[0].label == CLASSES[int(np.argmax(row))]
            assert res.predictions[0].score == pytest.approx(row.max(), abs=1e-5)


def test_backends_are_congruent(tmp_path) -> None:
    """The embedded store and qdrant-client's local mode give the same rankings on the same data."""
    img, txt, payloads = random_anchors(80, seed=3)
    queries = unit_rows(np.random.default_rng(11), 6, DEFAULT_DI)
    got = {}
    for backend in ("edge", "memory"):
        with open_store(backend, tmp_path / backend, params=AsifParams(k=15, p=2.0)) as client:
            client.add_anchor_embeddings(img, txt, payloads)
            client.create_label_set("things", CLASSES, TEMPLATES)
            got[backend] = client.class_scores(queries, "things")
    np.testing.assert_allclose(got["edge"], got["memory"], atol=1e-6)
    assert (np.argsort(-got["edge"], axis=1) == np.argsort(-got["memory"], axis=1)).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_duplicates_deletes_and_payloads(backend: str, tmp_path) -> None:
    img, txt, payloads = random_anchors(30, seed=5)
    with open_store(backend, tmp_path, params=AsifParams(k=10)) as client:
        client.add_anchor_embeddings(img, txt, payloads)
        again = client.add_anchor_embeddings(img[:5], txt[:5], payloads[:5])
        assert again == [0, 1, 2, 3, 4] and client.count() == 30
        assert client.delete_anchors([1, 2, 999]) == 2
        assert client.count() == 28
        assert client.anchor_ids() == [0] + list(range(3, 30))
        assert set(client.anchors([0, 1, 3])) == {0, 3}
        assert client.anchors([3])[3]["caption"] == "pair 3"
        # a deleted pair never ranks again: its coordinate is gone from every relative vector
        rel = client.engine.anchors.relative(img[:4], "image")
        assert rel.shape[0] == 4 and rel.nnz > 0
        assert not ({1, 2} & set(rel.indices.tolist()))
        # the rows of the still-stored pairs 0 and 3 rank their own pair first
        assert rel[0].indices[np.argmax(rel[0].data)] == 0 and rel[3].indices[np.argmax(rel[3].data)] == 3


def test_add_anchors_from_images_and_classify(demo_data, tmp_path) -> None:
    """Real encoders on drawn images: the demo's shapes are classified from 162 anchors."""
    table, queries = demo_data
    pairs = demo_pairs(table)
    with open_store("edge", tmp_path, params=AsifParams(k=20, p=1.0)) as client:
        ids = client.add_anchors([p for p, _ in pairs], [c for _, c in pairs], source="demo")
        assert len(set(ids)) == len(pairs) == client.count() == 162
        assert client.add_anchors([pairs[0][0]], [pairs[0][1]]) == [ids[0]]
        assert client.count() == 162
        stored = client.anchors([ids[0]])[ids[0]]
        assert (stored["caption"], stored["source"], stored["image"]) == (pairs[0][1], "demo", str(pairs[0][0].resolve()))
        client.create_label_set("shapes", ["circle", "square", "triangle"], "a {} on a background.")
        results = client.classify([q for q, _ in queries], "shapes", top=3)
        accuracy = np.mean([r.label == truth for r, (_, truth) in zip(results, queries)])
        assert accuracy >= 0.75


CAPTIONED = [{"caption": "a"}, {"caption": "b"}]


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda c: c.add_anchor_embeddings(np.eye(2, 10), np.eye(2, 384), CAPTIONED), "dimension 1280"),
        (lambda c: c.add_anchor_embeddings(np.eye(2, 1280), np.eye(3, 384), CAPTIONED), "differ"),
        (lambda c: c.add_anchor_embeddings(np.zeros((1, 1280)), np.ones((1, 384)), CAPTIONED[:1]), "all zeros"),
        (lambda c: c.add_anchor_embeddings(np.full((1, 1280), np.nan), np.ones((1, 384)), CAPTIONED[:1]), "NaN"),
        (lambda c: c.add_anchor_embeddings(np.ones(1280), np.ones(384), CAPTIONED[:1]), "2-D"),
        (lambda c: c.add_anchor_embeddings(np.eye(2, 1280), np.eye(2, 384), [{}, {}]), "non-empty caption"),
        (lambda c: c.add_anchor_embeddings(np.ones((2, 1280)), np.ones((2, 384)), CAPTIONED), "same hash"),
        (lambda c: c.add_anchor_embeddings(np.ones((1, 1280)), np.ones((1, 384)), [{"caption": "a", "ok": 1}]),
         "reserved"),
        (lambda c: c.add_anchors(["x.jpg"], ["   "]), "caption #0 is empty"),
        (lambda c: c.add_anchors(["missing.jpg"], ["a dog"]), "missing.jpg: image file not found"),
        (lambda c: c.add_anchors(["a.jpg", "b.jpg"], ["a dog"]), "2 images but 1 captions"),
        (lambda c: c.create_label_set("x", []), "at least one class"),
        (lambda c: c.create_label_set("x", ["a", "a"]), "repeated: a"),
        (lambda c: c.create_label_set("x", "cat"), "a list of names"),
        (lambda c: c.create_label_set("x", ["a"], ["no placeholder"]), "no '\\{\\}' placeholder"),
        (lambda c: c.delete_anchors([1.0]), "not an integer id"),
        (lambda c: c.delete_anchors([True]), "not an integer id"),
        (lambda c: c.delete_anchors([2**63]), "out of range"),
    ],
)
def test_bad_inputs_raise_clear_errors_and_write_nothing(call, match, tmp_path) -> None:
    img, txt, payloads = random_anchors(5)
    with open_store("edge", tmp_path, params=AsifParams(k=4)) as client:
        client.add_anchor_embeddings(img, txt, payloads)
        with pytest.raises(InputError, match=match):
            call(client)
        assert client.count() == 5
        assert client.label_sets() == []


def test_corrupt_image_is_named(tmp_path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with open_store("edge", tmp_path) as client:
        with pytest.raises(InputError, match="broken.jpg"):
            client.add_anchors([bad], ["a caption"])
        assert client.count() == 0


def test_unknown_label_set_lists_known(tmp_path) -> None:
    img, txt, payloads = random_anchors(5)
    with open_store("edge", tmp_path, params=AsifParams(k=4)) as client:
        client.add_anchor_embeddings(img, txt, payloads)
        client.create_label_set("things", CLASSES)
        with pytest.raises(NotFoundError, match="no label set 'nope'.*known: things"):
            client.classify_embeddings(img[:1], "nope")
