"""Precision is an execution setting: bfloat16 and float32 vectors agree, and stores accept either."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from asif_vdb import AsifClient, AsifParams, EncoderIdentity, EncoderSpec
from asif_vdb.encoders import get_encoder, precision
from asif_vdb.errors import InputError


@pytest.mark.parametrize(
    "value,env,family,native,expected",
    [
        ("float32", None, "sentence-transformers", True, "float32"),
        ("bfloat16", None, "sentence-transformers", False, "bfloat16"),
        ("bfloat16", None, "timm", False, "bfloat16"),
        ("auto", None, "sentence-transformers", True, "bfloat16"),
        ("auto", None, "sentence-transformers", False, "float32"),
        ("auto", None, "timm", True, "float32"),  # bf16 moves its vectors too far (cosine 0.995)
        (None, None, "sentence-transformers", True, "bfloat16"),
        (None, "float32", "sentence-transformers", True, "float32"),
        (None, "bfloat16", "timm", False, "bfloat16"),
        ("float32", "bfloat16", "timm", True, "float32"),  # the spec beats the environment
    ],
)
def test_resolve(monkeypatch, value, env, family: str, native: bool, expected: str) -> None:
    monkeypatch.setattr(precision, "native_bf16", lambda device: native)
    if env is None:
        monkeypatch.delenv(precision.ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(precision.ENV_VAR, env)
    assert precision.resolve(value, device="cpu", family=family) == expected


def test_bad_precisions_are_named(monkeypatch) -> None:
    with pytest.raises(ValueError, match="precision"):
        EncoderSpec(family="timm", name="x", precision="fp16")
    with pytest.raises(InputError, match="precision must be one of auto, float32, bfloat16; got 'half'"):
        AsifClient(location=":memory:", precision="half")
    monkeypatch.setenv(precision.ENV_VAR, "bf16")
    with pytest.raises(InputError, match=r"\$ASIF_PRECISION must be one of .*got 'bf16'"):
        precision.resolve(None, device="cpu", family="timm")


def _spec(default: EncoderSpec, value: str) -> EncoderSpec:
    return default.model_copy(update={"precision": value})


@pytest.fixture(scope="module")
def captions(shared_datasets: Path) -> list[str]:
    with (shared_datasets / "flickr8k" / "captions.csv").open(newline="", encoding="utf-8") as f:
        return [row["caption"] for _, row in zip(range(300), csv.DictReader(f))]


def test_text_bf16_agrees_with_fp32(captions: list[str]) -> None:
    """Real Flickr8k captions: the same float32, unit-norm rows up to ~1e-5 (measured 0.99997)."""
    fp32 = get_encoder(_spec(EncoderSpec.default_text(), "float32"))
    bf16 = get_encoder(_spec(EncoderSpec.default_text(), "bfloat16"))
    assert (fp32.precision, bf16.precision) == ("float32", "bfloat16")
    assert fp32.identity == bf16.identity  # precision is no part of what a store checks
    a, b = fp32.encode(captions), bf16.encode(captions)
    assert a.dtype == b.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert float(np.min(np.sum(a * b, axis=1))) >= 0.999


def test_image_bf16_on_request_is_float32_and_close() -> None:
    """bfloat16 images are opt-in (auto keeps float32): still float32 unit rows, same top-1 class."""
    from sklearn.datasets import load_sample_image

    photos = [load_sample_image(p) for p in ("china.jpg", "flower.jpg")]
    fp32 = get_encoder(EncoderSpec.default_image())
    bf16 = get_encoder(_spec(EncoderSpec.default_image(), "bfloat16"))
    assert (fp32.precision, bf16.precision) == ("float32", "bfloat16")
    assert fp32.identity == bf16.identity
    a, b = fp32.encode(photos), bf16.encode(photos)
    assert b.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert float(np.min(np.sum(a * b, axis=1))) >= 0.99
    top1 = np.argmax(fp32.classify_logits(photos), axis=1).tolist()
    assert top1[0] == 698  # the palace
    assert np.argmax(bf16.classify_logits(photos), axis=1).tolist() == top1


@pytest.mark.parametrize("built,opened,tolerance", [
    ("float32", "auto", 2e-3), ("auto", "float32", 2e-3),  # auto: bf16 texts where native
    ("float32", "bfloat16", 0.05), ("bfloat16", "float32", 0.05),  # bf16 images move scores ~0.03
])
def test_store_built_in_one_precision_serves_the_other(demo_data, tmp_path, built: str,
                                                       opened: str, tolerance: float) -> None:
    """Same labels, scores within `tolerance`; the reopened store also takes new anchors."""
    table, queries = demo_data
    rows = list(csv.DictReader(table.open()))[:60]
    images, texts = [table.parent / r["image"] for r in rows], [r["caption"] for r in rows]
    query_images = [q for q, _ in queries]
    with AsifClient(tmp_path / "s", params=AsifParams(k=20, p=1.0), precision=built) as client:
        client.add_anchors(images[:40], texts[:40])
        client.create_label_set("shapes", ["circle", "square", "triangle"], "a {} on a background.")
        before = client.classify(query_images, "shapes", top=3)
    with AsifClient(tmp_path / "s", precision=opened) as client:
        text, image = client.encoder("text"), client.encoder("image")
        # the opened precision is the one used (auto: bfloat16 texts only where the device computes it)
        want_text = opened if opened != "auto" else \
            ("bfloat16" if precision.native_bf16(text.device) else "float32")
        assert text.precision == want_text
        assert image.precision == ("bfloat16" if opened == "bfloat16" else "float32")  # auto keeps images float32
        after = client.classify(query_images, "shapes", top=3)
        client.add_anchors(images[40:], texts[40:])  # and it takes new anchors
        assert client.count() == 60
    assert [r.label for r in after] == [r.label for r in before]
    for x, y in zip(before, after):
        assert abs(x.score - y.score) < tolerance


def test_the_embeddings_cache_keeps_float32_and_bfloat16_apart(tmp_path) -> None:
    """`asif eval`'s cache is keyed by what made the vectors, precision included: a bfloat16 pass must
    not be served float32 vectors (or the reverse)."""
    from asif_vdb.workflows.evaluate import encode_cached

    class Fake:
        identity = EncoderIdentity(family="sentence-transformers", name="fake", weights="test", dim=2)

        def __init__(self, precision: str) -> None:
            self.precision, self.calls = precision, 0

        def encode(self, items, progress=False):
            self.calls += 1
            return np.full((len(items), 2), 1.0 if self.precision == "float32" else 2.0, np.float32)

    fp32, bf16 = Fake("float32"), Fake("bfloat16")
    assert encode_cached(fp32, ["a", "b"], "text", tmp_path)[0, 0] == 1.0
    assert encode_cached(bf16, ["a", "b"], "text", tmp_path)[0, 0] == 2.0
    assert encode_cached(fp32, ["a", "b"], "text", tmp_path)[0, 0] == 1.0
    assert (fp32.calls, bf16.calls) == (1, 1)
