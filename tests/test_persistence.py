"""Reopening restores anchors, label sets and configuration; other encoders are refused; a store
written by the previous release opens and answers the same."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import DEFAULT_DI, random_anchors, restore_v1_store, unit_rows
from helpers import THING_CLASSES as CLASSES
from helpers import THING_TEMPLATES as TEMPLATES

from asif_vdb import AsifClient, AsifParams, EncoderSpec
from asif_vdb.engine.layout import ANCHORS, VECTOR
from asif_vdb.errors import EncoderMismatchError, StoreError
from asif_vdb.store.base import PointData
from asif_vdb.workflows.demo import make_demo_data


def test_reopen_restores_everything(tmp_path) -> None:
    img, txt, payloads = random_anchors(50)
    queries = unit_rows(np.random.default_rng(1), 4, DEFAULT_DI)
    with AsifClient(tmp_path / "s", params=AsifParams(k=12, p=2.0)) as client:
        client.add_anchor_embeddings(img, txt, payloads)
        client.create_label_set("things", CLASSES, TEMPLATES)
        before = client.class_scores(queries, "things")
    assert before.shape == (4, len(CLASSES)) and (before > 0).any()
    with AsifClient(tmp_path / "s") as client:
        assert client.count() == 50
        assert client.params == AsifParams(k=12, p=2.0)
        assert client.label_sets() == ["things"]
        assert client.label_set("things").templates == TEMPLATES
        assert client.label_set("things").classes == CLASSES
        assert client.anchors([7])[7]["caption"] == "pair 7"
        np.testing.assert_allclose(client.class_scores(queries, "things"), before, atol=1e-7)
        assert client.add_anchor_embeddings(img[:1], txt[:1], payloads[:1]) == [0]  # ids survive reopen
        assert client.count() == 50


def test_other_encoder_is_refused_naming_both(tmp_path) -> None:
    img, txt, payloads = random_anchors(5)
    with AsifClient(tmp_path / "s", params=AsifParams(k=4)) as client:
        client.add_anchor_embeddings(img, txt, payloads)
    other = EncoderSpec(family="timm", name="resnet18")
    with pytest.raises(EncoderMismatchError, match="tf_efficientnet_lite2.*resnet18"):
        AsifClient(tmp_path / "s", image_encoder=other)
    with pytest.raises(EncoderMismatchError, match="all-minilm.*all-mpnet-base-v2"):
        AsifClient(tmp_path / "s", text_encoder="all-mpnet-base-v2")
    with pytest.raises(StoreError, match="k=4, p=1.0"):
        AsifClient(tmp_path / "s", params=AsifParams(k=5))
    with AsifClient(tmp_path / "s", image_encoder="default", text_encoder="default") as client:
        assert client.count() == 5


def test_half_written_pair_is_rolled_back_on_open(tmp_path) -> None:
    """A crash after one half of a pair was written leaves nothing visible, and reopening cleans up."""
    img, txt, payloads = random_anchors(6)
    with AsifClient(tmp_path / "s", params=AsifParams(k=4)) as client:
        client.add_anchor_embeddings(img[:5], txt[:5], payloads[:5])
        engine = client.engine
        assert engine is not None
        # simulate the crash: the id was allocated durably, the caption half written, the image half never
        engine.config.next_anchor_id = 6
        engine.state.save()
        engine.state.backend.upsert(ANCHORS["text"],
                                    [PointData(5, {"caption": "x", "hash": "h", "ok": 0}, {VECTOR: txt[5]})])
        assert engine.state.backend.count(ANCHORS["text"]) == 6
        assert client.count() == 5 and 5 not in client.anchor_ids()
        assert 5 not in set(engine.anchors.relative(txt[5:6], "text").indices.tolist())
    with AsifClient(tmp_path / "s") as client:
        assert client.last_repair.completed == [] and client.last_repair.rolled_back == [5]
        assert client.last_repair.anything
        assert client.engine is not None and client.engine.state.backend.count(ANCHORS["text"]) == 5
        assert client.count() == 5
        # the next pair takes a new id, never the rolled-back one
        assert client.add_anchor_embeddings(img[5:6], txt[5:6], payloads[5:6]) == [6]


def test_store_path_that_is_a_file_is_refused(tmp_path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        AsifClient(tmp_path / "file")
    with pytest.raises(StoreError, match="exactly one"):
        AsifClient(tmp_path / "a", location=":memory:")


def _answers(hits_per_query) -> tuple[list[list[str]], np.ndarray]:
    """(labels per query, scores) of classifications given as [(label, score), ...] per query."""
    return [[label for label, _ in row] for row in hits_per_query], np.array([[s for _, s in row] for row in hits_per_query])


def test_store_written_by_the_previous_release_answers_the_same(tmp_path) -> None:
    """A store the first release wrote (schema 1: a fitted transform, a hub-normalised label set, an
    image gallery, the anchors gallery) opens, answers exactly as that release did, and is healthy."""
    expected = restore_v1_store(tmp_path / "store")
    _, queries = make_demo_data(tmp_path / "data", per_combo=1)
    assert [q.relative_to(tmp_path).as_posix() for q, _ in queries] == expected["queries"]
    images = [q for q, _ in queries]
    for attempt in ("first open", "reopen"):  # the first open may upgrade the config: answers stay
        with AsifClient(tmp_path / "store") as client:
            assert not client.last_repair.anything, attempt
            assert client.count() == expected["count"] == 34
            assert client.label_sets() == ["hubbed", "shapes"]
            assert client.label_set("hubbed").normalise == "hub"
            for label_set in ("shapes", "hubbed"):
                got = client.classify(images, label_set, top=3)
                want_labels, want_scores = _answers(expected["classify" if label_set == "shapes" else "hubbed"])
                assert [[p.label for p in r.predictions] for r in got] == want_labels, (attempt, label_set)
                # to float32 noise: oneDNN's convolutions may round differently from run to run, and a
                # hub-normalised score divides by a small deviation (1.3e-6 seen on a score of 1.53)
                np.testing.assert_allclose([[p.score for p in r.predictions] for r in got], want_scores,
                                           rtol=1e-5, atol=1e-6)
            for gallery, key in (("pics", "gallery"), ("anchors", "search")):
                hits = client.search("a red circle", gallery, top=5)
                assert [h.id for h in hits] == [i for i, _ in expected[key]], (attempt, gallery)
                np.testing.assert_allclose([h.score for h in hits], [s for _, s in expected[key]], atol=1e-6)
            checks = client.doctor()
            assert [c.name for c in checks if not c.ok] == [], [c.line() for c in checks]
            assert {"config", "anchor pairs", "label set shapes", "label set hubbed", "gallery pics",
                    "fresh"} <= {c.name for c in checks}
