"""Reopening restores anchors, label sets and configuration; other encoders are refused."""

from __future__ import annotations

import numpy as np
import pytest

from asif_vdb.client import AsifClient
from asif_vdb.config import AsifParams, EncoderSpec
from asif_vdb.errors import EncoderMismatchError, StoreError
from tests.conftest import unit_rows
from tests.test_client import CLASSES, TEMPLATES, random_anchors


def test_reopen_restores_everything(tmp_path) -> None:
    img, txt, payloads = random_anchors(50)
    queries = unit_rows(np.random.default_rng(1), 4, 1280)
    with AsifClient(tmp_path / "s", params=AsifParams(k=12, p=2.0)) as client:
        client.add_anchor_embeddings(img, txt, payloads)
        client.create_label_set("things", CLASSES, TEMPLATES)
        before = client.class_scores(queries, "things")
    with AsifClient(tmp_path / "s") as client:
        assert client.count() == 50
        assert client.params == AsifParams(k=12, p=2.0)
        assert client.label_sets() == ["things"]
        assert client.label_set("things").templates == TEMPLATES
        np.testing.assert_allclose(client.class_scores(queries, "things"), before, atol=1e-7)
        assert client.add_anchor_embeddings(img[:1], txt[:1], payloads[:1]) == [0]  # ids survive reopen


def test_other_encoder_is_refused_naming_both(tmp_path) -> None:
    img, txt, payloads = random_anchors(5)
    with AsifClient(tmp_path / "s", params=AsifParams(k=4)) as client:
        client.add_anchor_embeddings(img, txt, payloads)
    other = EncoderSpec(family="timm", name="resnet18")
    with pytest.raises(EncoderMismatchError, match="tf_efficientnet_lite0.*resnet18"):
        AsifClient(tmp_path / "s", image_encoder=other)
    with pytest.raises(EncoderMismatchError, match="all-minilm.*all-mpnet-base-v2"):
        AsifClient(tmp_path / "s", text_encoder="all-mpnet-base-v2")
    with pytest.raises(StoreError, match="k=4, p=1.0"):
        AsifClient(tmp_path / "s", params=AsifParams(k=5))
    with AsifClient(tmp_path / "s", image_encoder="default", text_encoder="default") as client:
        assert client.count() == 5


def test_half_written_pair_is_rolled_back_on_open(tmp_path) -> None:
    """A crash after one half of a pair was written leaves nothing visible, and reopening cleans up."""
    from asif_vdb.index import ANCHORS
    from asif_vdb.store.base import PointData

    img, txt, payloads = random_anchors(6)
    with AsifClient(tmp_path / "s", params=AsifParams(k=4)) as client:
        client.add_anchor_embeddings(img[:5], txt[:5], payloads[:5])
        # simulate the crash: caption half written, image half never
        client.backend.upsert(ANCHORS["text"], [PointData(5, {"caption": "x", "hash": "h", "ok": 0}, {"v": txt[5]})])
        assert client.count() == 5
        assert 5 not in set(client.index.relative(txt[5:6], "text").indices.tolist())
    with AsifClient(tmp_path / "s") as client:
        assert client.last_repair == {"completed": [], "rolled_back": [5]}
        assert client.backend.count(ANCHORS["text"]) == 5


def test_store_path_that_is_a_file_is_refused(tmp_path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        AsifClient(tmp_path / "file")
    with pytest.raises(StoreError, match="exactly one"):
        AsifClient(tmp_path / "a", location=":memory:")
