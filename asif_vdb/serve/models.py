"""The shapes of the service's JSON: request bodies (strict: a boolean is not a number) and answers.

Answers reuse the library's own records (``Classification``, ``SearchHit``, ``Explanation``,
``LabelSetInfo``, ``GalleryInfo``), so the service and the Python client speak one vocabulary.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from asif_vdb.schema.results import AnchorShare, Classification, Explanation, Neighbour, SearchHit

#: Most answers one request may ask for.
MAX_TOP = 1000
#: Most vectors one JSON request may carry.
MAX_VECTORS = 1024
#: Longest embedding accepted (encoders in use have at most a few thousand dimensions).
MAX_DIM = 8192
#: A payload condition: a value, or a list of accepted values.
Condition = str | int | list[str] | list[int]
Top = Annotated[int, Field(ge=1, le=MAX_TOP)]
Vector = Annotated[list[float], Field(min_length=1, max_length=MAX_DIM)]
Vectors = Annotated[list[Vector], Field(min_length=1, max_length=MAX_VECTORS)]


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class ErrorOut(BaseModel):
    """Every error: one line saying what was wrong with which input."""

    detail: str


class Health(BaseModel):
    status: Literal["ok"]
    anchors: int
    #: Updates this service has completed since it started.
    updates: int
    read_only: bool


class ClassifyVectors(Strict):
    labels: str = Field(min_length=1, max_length=200)
    vectors: Vectors
    top: Top = 5
    #: "stored": the label set's calibrated thresholds; "none": never unknown; a number: this threshold.
    threshold: Literal["stored", "none"] | float = "stored"


class SearchVectors(Strict):
    gallery: str = Field(min_length=1, max_length=200)
    modality: Literal["image", "text"]
    vectors: Vectors
    top: Top = 10
    where: dict[str, Condition] | None = None


class ExplainVector(Strict):
    vector: Vector
    modality: Literal["image", "text"]
    labels: str | None = Field(default=None, min_length=1, max_length=200)
    gallery: str | None = Field(default=None, min_length=1, max_length=200)
    top: Annotated[int, Field(ge=1, le=50)] = 3
    anchors: Annotated[int, Field(ge=1, le=50)] = 5
    neighbours: Annotated[int, Field(ge=0, le=50)] = 5
    threshold: Literal["stored", "none"] | float = "stored"
    reference: str = Field(default="", max_length=4096)


class AddEmbeddings(Strict):
    image_vectors: Vectors
    text_vectors: Vectors
    payloads: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=MAX_VECTORS)]


class LookupHashes(Strict):
    hashes: Annotated[list[Annotated[str, Field(min_length=1, max_length=200)]], Field(max_length=65536)]


class DeleteAnchors(Strict):
    """Exactly one of the two: anchor ids, or payload conditions (e.g. ``{"source": "mine"}``)."""

    ids: Annotated[list[Annotated[int, Field(ge=0, le=2**63 - 1)]], Field(max_length=1_000_000)] | None = None
    where: dict[str, Condition] | None = None


class AnchorIds(Strict):
    ids: Annotated[list[Annotated[int, Field(ge=0, le=2**63 - 1)]], Field(max_length=10_000)]


class BackupRequest(Strict):
    #: A new folder on the service's machine.
    out: str = Field(min_length=1, max_length=4096)


class SearchOut(BaseModel):
    """One result list per query, best first."""

    results: list[list[SearchHit]]
    updates: int


class ClassifyOut(BaseModel):
    results: list[Classification]
    #: The uploaded files' names, in the order of ``results`` (empty for vectors).
    images: list[str] = Field(default_factory=list)
    updates: int


class ImageGroupOut(BaseModel):
    """Anchor pairs that share one image: shown once with each caption."""

    image: str | None
    share: float
    fraction: float
    anchors: list[AnchorShare]


class NeighbourGroupOut(BaseModel):
    image: str | None
    anchors: list[Neighbour]


class ExplainOut(BaseModel):
    explanation: Explanation
    #: Per answer, its anchor pairs grouped by image (as the HTML report shows them).
    groups: list[list[ImageGroupOut]]
    neighbour_groups: list[NeighbourGroupOut]
    updates: int


class AnchorChange(BaseModel):
    anchors_before: int
    anchors_after: int
    added: int = 0
    already_stored: int = 0
    deleted: int = 0
    matched: int = 0
    ids: list[int] = Field(default_factory=list)
    #: Inputs left out, with the reason for each.
    skipped: list[str] = Field(default_factory=list)
    seconds: float = 0.0


class AnchorPair(BaseModel):
    id: int
    caption: str | None = None
    source: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)


class AnchorList(BaseModel):
    count: int
    pairs: list[AnchorPair]


class BackupOut(BaseModel):
    backup: str
    source: str
    files: int
    bytes: int
    size_on_disk_bytes: int
    anchors: int
    pending_updates: int
    seconds: float


class EncoderOut(BaseModel):
    spec: dict[str, Any]
    identity: dict[str, Any]


class Encoders(BaseModel):
    image: EncoderOut
    text: EncoderOut
