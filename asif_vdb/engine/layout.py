"""How a store is laid out in collections, and the payload keys the engine reserves for itself.

Anchor pair i is point i in both ``anchor_image`` and ``anchor_text``; i is also the coordinate of
every relative vector. Candidates (label-set prompts, gallery items) keep their dense embedding and
payload in ``candidates`` and their relative vector (a sparse vector) in ``candidate_rel`` or a later
generation of it (``candidate_rel_g<N>``, the one the config names) under the same id, so ranking them
for a query is one sparse dot-product query. Fitted transforms live in ``transform``.
"""

from __future__ import annotations

import math

from asif_vdb.schema.params import IndexSettings
from asif_vdb.schema.store import LabelSetInfo, Modality
from asif_vdb.store.base import CollectionSpec, Filter, SearchMode, VectorIndex

ANCHORS: dict[Modality, str] = {"image": "anchor_image", "text": "anchor_text"}
CANDIDATES = "candidates"
#: The first generation of the candidates' derived relative vectors; later ones add ``_g<N>``.
RELATIVES = "candidate_rel"
TRANSFORM = "transform"
MODALITIES: tuple[Modality, ...] = ("image", "text")
#: The collections every store has: one of them without a config is a store whose config was lost.
STORE_COLLECTIONS = (ANCHORS["image"], ANCHORS["text"], CANDIDATES)
#: The anchor collections' searched vector.
VECTOR = "v"

#: Payload flag: 1 once both halves of a pair are written. Queries only see complete pairs.
VISIBLE = Filter.where(ok=1)
#: Pairs written but not yet visible, or being deleted (``AnchorStore.pair_states``).
HIDDEN = Filter.where(ok=0)
#: Payload keys the engine writes itself: ``ok`` (a pair is complete), ``hash`` (its content key),
#: ``set`` (a candidate's set), ``tf`` (the refit an anchor's vector is under), ``gen`` (the write of
#: a derived vector), ``hub`` (a gallery item's statistics). A user payload may not use them.
RESERVED_PAYLOAD_KEYS = frozenset({"ok", "hash", "set", "tf", "gen", "hub"})
#: The refit mark in an anchor's payload (see RESERVED_PAYLOAD_KEYS).
REFIT_MARK = "tf"

#: Name of the anchors' own gallery; its two sides are stored as ``anchors:image`` / ``anchors:text``.
ANCHORS_GALLERY = "anchors"


def anchors_spec(modality: Modality, dim: int, settings: IndexSettings) -> CollectionSpec:
    return CollectionSpec(ANCHORS[modality], dense={VECTOR: dim},
                          indexes={"ok": "integer", "hash": "keyword", "source": "keyword"},
                          index=VectorIndex(quantization=settings.quantization, hnsw_m=settings.m if settings.hnsw else 0,
                                            ef_construct=settings.ef_construct, on_disk=settings.on_disk,
                                            scan_below_kb=settings.scan_below_kb),
                          shards=settings.shards, replication=settings.replication)


#: With a graph, the best ``k * RESCORE_MARGIN`` of the walked candidates (by their quantized scores)
#: are rescored with the original vectors, not all of them: at 300k anchors, top-800 searches walking
#: 2,400 candidates kept the same recall@800 (0.9775 mean, 0.8225 worst) rescoring 1,000 as rescoring
#: all 2,400, in 17% less time; rescoring only 800 lost recall (0.956; docs/benchmarks.md).
RESCORE_MARGIN = 1.25


def search_mode(settings: IndexSettings, limit: int, k: int) -> SearchMode:
    """The approximate search of these settings for ``limit`` results, in relative vectors of ``k``
    anchors: the graph walks ``k * oversampling`` candidates (at least ``limit``), and the best
    ``k * RESCORE_MARGIN`` of them (at least ``limit``) are rescored with the original vectors. A list
    longer than k (a candidate's reserve) takes its extra entries from the same walk: walking deeper
    for them would cost a quarter more per candidate, for entries that count only once an anchor
    above them is deleted. Without a graph, ``oversampling`` times the limit are rescored."""
    if not settings.hnsw:
        return SearchMode(exact=False, oversampling=settings.oversampling)
    ef = max(settings.ef, int(min(limit, k) * settings.oversampling), limit)
    rescored = min(ef, max(limit, math.ceil(min(limit, k) * RESCORE_MARGIN)))
    return SearchMode(exact=False, hnsw_ef=ef, oversampling=rescored / limit)


def candidates_spec(dims: dict[Modality, int]) -> CollectionSpec:
    return CollectionSpec(CANDIDATES, dense={m: dims[m] for m in MODALITIES}, indexes={"set": "keyword"})


def relatives_spec(name: str, full_scan: int | None = None) -> CollectionSpec:
    """A collection of derived relative vectors (``RELATIVES`` or one of its generations); sets of
    fewer than ``full_scan`` candidates are ranked one candidate at a time (``Tuning.sparse_full_scan``)."""
    return CollectionSpec(name, sparse=("rel",), indexes={"set": "keyword"}, sparse_full_scan=full_scan)


def transform_spec(dims: dict[Modality, int]) -> CollectionSpec:
    return CollectionSpec(TRANSFORM, dense={m: dims[m] for m in MODALITIES})


def is_relatives(name: str) -> bool:
    """Whether a collection holds derived relative vectors (any generation)."""
    return name == RELATIVES or name.startswith(RELATIVES + "_g")


def label_set_key(name: str) -> str:
    """The ``set`` payload value of the prompts of a label set written before label sets had keys of
    their own (``labels_key`` gives the one in force)."""
    return f"labels:{name}"


def new_labels_key(first_id: int) -> str:
    """The set key of a label set written from candidate id ``first_id`` on: each version of a label
    set has its own, so a replacement is written beside the set it replaces (engine/set_journal.py)."""
    return f"labels#{first_id}"


def labels_key(info: LabelSetInfo) -> str:
    """The ``set`` payload value of a stored label set's prompts."""
    return info.key or label_set_key(info.name)


def gallery_key(name: str) -> str:
    """The ``set`` payload value of a gallery's items."""
    return f"gallery:{name}"


def anchors_gallery_name(modality: Modality) -> str:
    """The stored gallery that holds the anchors' ``modality`` side."""
    return f"{ANCHORS_GALLERY}:{modality}"


def is_anchors_gallery(name: str) -> bool:
    return name == ANCHORS_GALLERY or name.startswith(f"{ANCHORS_GALLERY}:")
