"""The config stored with the data: encoders, parameters, label sets, galleries, transforms, journal.

It is one JSON document, written atomically, so reopening a store restores it exactly. It carries a
schema version; ``StoreConfig.load`` migrates what older versions wrote and refuses newer ones.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from asif_vdb.errors import StoreError
from asif_vdb.schema.encoders import EncoderIdentity, EncoderSpec
from asif_vdb.schema.params import Aggregate, AsifParams, IndexSettings

#: 1: the first release; 2: galleries lost the never-set ``stale`` flag, journal entries are typed.
SCHEMA_VERSION = 2
Modality = Literal["image", "text"]
#: "auto": hub-normalised while the store's tuned method has a transform in force (``StoreConfig.hub_on``).
Normalise = Literal["none", "hub", "auto"]


class LabelSetInfo(BaseModel):
    """A stored label set: its classes, the prompts' templates, and how templates are pooled."""

    name: str
    #: Display names, in class order (the prompts are made of them; they may repeat when ``ids`` is set).
    classes: list[str]
    #: Class ids, distinct, in class order; None: the names are the ids.
    ids: list[str] | None = None
    templates: list[str]
    aggregate: Aggregate = "max"
    threshold: float | None = None
    #: "Unknown" also when the query's anchor coverage is below this (maths/calibration.py; None: off).
    coverage_threshold: float | None = None
    first_id: int = 0
    #: The ``set`` payload value of its prompts (layout.labels_key); empty: ``labels:NAME``, as label
    #: sets were keyed before their creation was journaled.
    key: str = ""
    #: "hub" scores each prompt as (score - mean) / std over a reference sample of anchor images
    #: (maths/hub.py); the statistics, in candidate order, are kept here.
    normalise: Normalise = "none"
    hub_mean: list[float] | None = None
    hub_std: list[float] | None = None

    @property
    def class_ids(self) -> list[str]:
        return self.ids if self.ids is not None else self.classes

    @property
    def prompts_per_class(self) -> int:
        """Stored prompts per class: candidate ``first_id + c * prompts_per_class + t`` is class c's
        template t (one pooled prompt per class when ``aggregate == "pool"``)."""
        return 1 if self.aggregate == "pool" else len(self.templates)

    @property
    def n_candidates(self) -> int:
        return len(self.classes) * self.prompts_per_class


class GalleryInfo(BaseModel):
    """A stored gallery of images or texts ranked by their relative vectors."""

    name: str
    modality: Modality
    size: int = 0
    #: Hub normalisation of item scores; per-item statistics are in the item payloads.
    normalise: Normalise = "none"
    #: Anchors galleries only: anchor ids added / deleted since their items were brought up to date.
    #: Anchor updates leave them out (they are as large as the anchor set); their next search
    #: applies these changes (engine/anchor_galleries.py).
    behind_added: list[int] = Field(default_factory=list)
    behind_deleted: list[int] = Field(default_factory=list)


class TransformInfo(BaseModel):
    """A fitted embedding transform of one modality (maths/transforms.py). Its arrays (mean, matrix)
    live in the store's ``transform`` collection; the checksum ties them to this record."""

    power: float = Field(default=1.0, gt=0)
    centre: bool = True
    whiten: float | None = Field(default=None, gt=0)
    anchors: int = 0
    #: Anchors added or deleted since the fit (the tuned method refits when this reaches a share of ``anchors``).
    changed: int = Field(default=0, ge=0)
    checksum: str = ""
    #: Which of the two row ranges of the transform collection holds the arrays: a refit writes the
    #: other one, so the transform in use stays intact until the config switches (crash safety).
    slot: int = Field(default=0, ge=0, le=1)


class AddEntry(BaseModel):
    """Anchor pairs are being added: ids from ``first`` up to the config's next id may be half written."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    op: Literal["add"] = "add"
    first: int = Field(alias="from", ge=0)


#: An anchor id: a point id of the engine (an unsigned 63-bit integer).
AnchorId = Annotated[int, Field(ge=0, le=2**63 - 1)]


class DeleteEntry(BaseModel):
    """These anchor pairs are being deleted."""

    op: Literal["delete"] = "delete"
    ids: list[AnchorId]


class LabelSetEntry(BaseModel):
    """A label set is being written under a new set key ``key``; one config write switches ``name``
    to it, then the prompts of the set it replaces (set key ``old``) are dropped. On open: before
    the switch the half-written prompts are dropped (the old set stays), after it the old ones."""

    op: Literal["labels"] = "labels"
    name: str
    key: str
    old: str | None = None


class GalleryEntry(BaseModel):
    """Items are being added to gallery ``name`` from candidate id ``first`` on (``created``: the
    gallery is new). On open the add is rolled back: the gallery is as it was before it."""

    op: Literal["gallery"] = "gallery"
    name: str
    first: int = Field(ge=0)
    created: bool = False


class RefitEntry(BaseModel):
    """The embedding transforms are being refitted (always carried forward, never rolled back):
    ``phase`` "anchors" while anchors are rewritten under the new transforms (each marked ``gen``),
    "candidates" once the config uses them and candidates are being recomputed."""

    op: Literal["transform"] = "transform"
    gen: int
    phase: Literal["anchors", "candidates"]
    new: dict[Modality, TransformInfo | None]
    #: Parameters the store switches to with the transforms (``asif tune``); None: unchanged.
    params: AsifParams | None = None


class DropEntry(BaseModel):
    """The candidates of set key ``key`` are being deleted (their label set or gallery is gone from
    the config already); on open the deletion is finished."""

    op: Literal["drop"] = "drop"
    key: str


JournalEntry = Annotated[AddEntry | DeleteEntry | RefitEntry | LabelSetEntry | GalleryEntry | DropEntry,
                         Field(discriminator="op")]
_ENTRY: TypeAdapter[JournalEntry] = TypeAdapter(JournalEntry)


class StoreConfig(BaseModel):
    """Everything stored with the data so that reopening a store restores it exactly."""

    schema_version: int = SCHEMA_VERSION
    image_encoder: EncoderIdentity
    text_encoder: EncoderIdentity
    image_spec: EncoderSpec
    text_spec: EncoderSpec
    params: AsifParams = Field(default_factory=AsifParams)
    #: How anchor searches run (exact, or quantized / HNSW with rescoring).
    index: IndexSettings = Field(default_factory=IndexSettings)
    next_anchor_id: int = 0
    next_candidate_id: int = 0
    label_sets: dict[str, LabelSetInfo] = Field(default_factory=dict)
    galleries: dict[str, GalleryInfo] = Field(default_factory=dict)
    #: The collection holding the candidates' derived relative vectors: a refresh that rewrites every
    #: candidate writes them into a new generation and switches here (engine/derived.py).
    relatives: str = "candidate_rel"
    #: Updates begun and not yet finished: carried forward or rolled back on open.
    journal: list[JournalEntry] = Field(default_factory=list)
    #: Journal entries that cannot be carried out (unreadable, or refused by the engine on every
    #: open), as stored: queries refuse to run until ``asif doctor --repair --drop-journal`` drops them.
    blocked: list[dict[str, Any]] = Field(default_factory=list)
    #: Embedding transforms by modality; empty: plain ASIF on raw cosines.
    transforms: dict[Modality, TransformInfo] = Field(default_factory=dict)

    def encoder(self, modality: Modality) -> EncoderIdentity:
        return self.image_encoder if modality == "image" else self.text_encoder

    def hub_on(self, normalise: Normalise) -> bool:
        """Whether a label set or gallery with this ``normalise`` is hub-normalised now."""
        return normalise == "hub" or (normalise == "auto" and self.params.tuned and self.params.hub
                                      and bool(self.transforms))

    def spec(self, modality: Modality) -> EncoderSpec:
        return self.image_spec if modality == "image" else self.text_spec

    def dump(self) -> dict[str, Any]:
        """The JSON document to store (journal entries under their stored field names)."""
        return self.model_dump(mode="json", by_alias=True)

    @classmethod
    def load(cls, raw: dict[str, Any], location: str) -> StoreConfig:
        """Parse a stored document, migrating older schema versions; StoreError naming the store
        when it is newer than this version understands or cannot be read."""
        version = raw.get("schema_version", 1) if isinstance(raw, dict) else None
        if not isinstance(version, int):
            raise StoreError(f"store {location} has an unreadable config (no schema version)")
        if version > SCHEMA_VERSION:
            raise StoreError(f"store {location} was written by a newer asif-vdb (config schema {version}; "
                             f"this version reads up to {SCHEMA_VERSION}): upgrade asif-vdb")
        try:
            return cls.model_validate(set_aside_unreadable_entries(migrate(raw)))
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise StoreError(f"store {location} has an unreadable config: {where}: {first['msg']}") from e


def set_aside_unreadable_entries(doc: dict[str, Any]) -> dict[str, Any]:
    """Journal entries that do not parse (an id out of range written by the first release) move to
    ``blocked``: the store opens, says so, and offers to drop them, instead of failing to open."""
    journal = doc.get("journal")
    if not isinstance(journal, list):
        return doc
    keep, blocked = [], list(doc.get("blocked") or [])
    for entry in journal:
        try:
            _ENTRY.validate_python(entry)
            keep.append(entry)
        except ValidationError as e:
            first = e.errors()[0]
            blocked.append({"entry": entry, "error": f"{'.'.join(str(x) for x in first['loc'])}: {first['msg']}"})
    return {**doc, "journal": keep, "blocked": blocked}


def migrate(raw: dict[str, Any]) -> dict[str, Any]:
    """An older config document brought to the current schema (a copy; the input is not changed)."""
    doc = dict(raw)
    if doc.get("schema_version", 1) < 2:
        doc["galleries"] = {name: {k: v for k, v in g.items() if k != "stale"}
                            for name, g in doc.get("galleries", {}).items()}
    if isinstance(doc.get("params"), dict) and "method" not in doc["params"]:
        doc["params"] = {**doc["params"], "method": "plain"}  # written before the tuned method existed
    doc["schema_version"] = SCHEMA_VERSION
    return doc
