"""The ASIF parameters a store is built with, and the engine's tuning constants."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from asif_vdb.errors import InputError

#: How a class's templates make its score: "max", the best template's (the paper's rule); "mean", the
#: mean of the templates' scores; "pool", one stored prompt per class whose embedding is the normalised
#: mean of its templates' embeddings (CLIP's prompt ensembling), so that classes, not prompts, are ranked.
Aggregate = Literal["max", "mean", "pool"]

Method = Literal["tuned", "plain"]


class FitOptions(BaseModel):
    """The options of one modality's embedding transform (maths/transforms.py: fit_transform)."""

    model_config = ConfigDict(frozen=True)

    power: float = Field(default=1.0, gt=0)
    centre: bool = True
    whiten: float | None = Field(default=None, gt=0)


#: The tuned method's defaults (benchmarks/default_method_search.py chose them; `asif tune` re-chooses
#: them from a store's own anchors): query k, stored candidates' k, p, and the transforms' options.
TUNED_K, TUNED_P = 3200, 1.5
#: Stored candidates' k of the tuned method: None, the query k (a smaller one costs CIFAR-10 top-1 0.513 -> 0.478
#: at candidate k 800: benchmarks/results/default_method_search.json).
TUNED_CANDIDATE_K: int | None = None
#: The paper's plain ASIF.
PLAIN_K, PLAIN_P = 800, 1.0


class AsifParams(BaseModel):
    """The ASIF hyper-parameters: non-zeros per relative vector and the exponent, and the method.

    ``method="tuned"`` (the default) is plain ASIF until the store holds ``fit_min_anchors`` anchors;
    from then on the store fits the embedding transforms (``image_fit``, ``text_fit``) on its anchors,
    keeps them fixed while anchors change, and refits once the anchors added or deleted since reach
    ``refit_share`` of those it was fitted on; label sets and galleries created without a
    ``normalise`` choice are hub-normalised while a transform is in force (``hub``). Given none of
    k, p and candidate_k it takes the tuned ones; otherwise the missing ones are the paper's (k=800,
    p=1). ``method="plain"`` is the paper's ASIF (k=800, p=1 by default) whatever the store's size."""

    model_config = ConfigDict(frozen=True)

    k: int = Field(default=TUNED_K, ge=1, description="non-zeros kept per query relative vector")
    p: float = Field(default=TUNED_P, gt=0, description="exponent applied to clamped similarities")
    method: Method = "tuned"
    #: Non-zeros of the stored candidates' relative vectors (label-set prompts, gallery items); None:
    #: ``k``. Smaller than ``k`` bounds the cost of ranking them (docs/benchmarks.md, default method).
    candidate_k: int | None = Field(default=None, ge=1)
    image_fit: FitOptions = FitOptions(power=0.5, whiten=10.0)
    text_fit: FitOptions = FitOptions(whiten=3.0)
    hub: bool = True
    #: Measured by benchmarks/auto_fit_threshold.py: the tuned method beats plain ASIF from the smallest store
    #: measured (250 anchors); 500 leaves a margin for a whitening fitted on so few.
    fit_min_anchors: int = Field(default=500, ge=2)
    refit_share: float = Field(default=0.25, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _method_defaults(cls, data: Any) -> Any:
        """k, p and candidate k default together: the tuned ones when the method is tuned and none of
        them is given, else the paper's (k=800, p=1, candidate k = k) for whichever is missing."""
        if not isinstance(data, dict):
            return data
        out = dict(data)
        if out.get("method", "tuned") != "plain" and not {"k", "p", "candidate_k"} & set(out):
            out.update(k=TUNED_K, p=TUNED_P, candidate_k=TUNED_CANDIDATE_K)
        out.setdefault("k", PLAIN_K)
        out.setdefault("p", PLAIN_P)
        return out

    @field_validator("p")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("p must be finite")
        return v

    @property
    def stored_k(self) -> int:
        """The k of stored candidates' relative vectors."""
        return self.candidate_k if self.candidate_k is not None else self.k

    @property
    def tuned(self) -> bool:
        return self.method == "tuned"

    @property
    def aggregate(self) -> Aggregate:
        """How a new label set pools its templates unless told: the tuned method stores one pooled
        prompt per class (better than the best template's score there, and T times cheaper to rank
        and to keep up to date: benchmarks/results/template_pooling.json); plain ASIF keeps the paper's
        best-template rule."""
        return "pool" if self.tuned else "max"

    def describe(self) -> str:
        ck = f", candidate k={self.candidate_k}" if self.candidate_k is not None else ""
        return f"method={self.method}, k={self.k}{ck}, p={self.p:g}"


#: The combination chosen by benchmarks/methods_search.py on the calibration data (CIFAR-10's first
#: 100 images per class, Flickr8k val) with the default offline encoders and Flickr8k-train anchors:
#: store parameters k and p, ``AsifClient.set_transform(**transform)``, and ``normalise="hub"`` for
#: label sets and galleries. Other encoders or anchors may prefer other values.
RECOMMENDED: dict[str, Any] = {
    "k": 3200,
    "p": 1.5,
    "transform": {"image": {"power": 0.5, "whiten": 10.0}, "text": {"whiten": 3.0}},
    "hub": True,
}


class Tuning(BaseModel):
    """Engine constants that trade speed for memory or write volume; never change a result.

    They are parameters (``AsifClient(..., tuning=Tuning(...))``) so that tests and benchmarks can
    drive every path (a generation switch on a tiny store, a catch-up in many chunks)."""

    model_config = ConfigDict(frozen=True)

    #: Orders decided by similarities closer than this are re-read from the store (maths/anchor_lists.py).
    eps: float = Field(default=3e-7, gt=0)
    #: A write of every candidate's relative vector, at least this many, goes to a new generation of
    #: the derived collection that then replaces the live one: as fast as rewriting in place, and it
    #: leaves no deleted points to slow queries or to compact (0.6 s for 8,000 candidates).
    swap_min: int = Field(default=1000, ge=1)
    #: ... and so does a refresh that changes at least this share of them (the rest are written again
    #: unchanged): below ~0.9 the extra writes cost more than the compaction they save.
    swap_share: float = Field(default=0.9, ge=0, le=1)
    #: Deleted derived points tolerated, as a multiple of the live ones, before compaction.
    garbage_ratio: float = Field(default=4.0, ge=0)
    #: Derived points written since the last optimisation, as a share of the live ones (and at least
    #: ``settle_min``), before the collection is optimised: growth by a constant factor between two
    #: optimisations keeps their total cost linear in the points written.
    settle_share: float = Field(default=0.2, gt=0)
    settle_min: int = Field(default=1000, ge=1)
    #: A label set or gallery of fewer candidates than this is ranked by scoring each one; a larger one
    #: through the sparse inverted index. Qdrant's default, 5,000, scored a 1,000-class pooled label set
    #: (k=3200) one prompt at a time, 4.5-5x slower than the index (benchmarks/results/sparse_full_scan.json).
    #: It is set when the derived collection is created (a store, or a rewrite of every candidate).
    sparse_full_scan: int = Field(default=100, ge=0)
    #: Similarities held at once while an anchors gallery catches up (items x new anchors, float64).
    catch_up_cells: int = Field(default=50_000_000, ge=1)
    #: Points per write when anchors are rewritten (a refit), candidates recomputed or a gallery indexed.
    rewrite_batch: int = Field(default=512, ge=1)


class IndexSettings(BaseModel):
    """How anchor searches run: an exact scan of the float32 vectors, or Qdrant's own machinery:
    quantized vectors kept in RAM (int8, binary or TurboQuant) scanned or walked on an HNSW graph, with
    ``oversampling`` times the limit rescored against the original vectors. The same settings go to a
    Qdrant server (``shards`` and ``replication`` only there)."""

    model_config = ConfigDict(frozen=True)

    quantization: Literal["none", "int8", "binary", "turbo"] = "none"
    hnsw: bool = False
    #: Graph degree and build effort.
    m: int = Field(default=16, ge=2, le=128)
    ef_construct: int = Field(default=100, ge=4)
    #: Graph candidates per search; 0: the limit times ``oversampling`` (the engine's own rule).
    ef: int = Field(default=0, ge=0)
    #: Candidates per result scored on quantized data, then rescored with the originals.
    oversampling: float = Field(default=1.5, ge=1.0, le=16.0)
    #: Vectors, quantized data, graph and payload indexes memory-mapped from disk rather than read into
    #: RAM when the store opens: opening a 1M-anchor store takes about 2 s instead of 19, and ``warm_up``
    #: reads them into the page cache at disk speed (store/edge_settings.py).
    on_disk: bool = False
    #: Searches stay exact while the store has allocated fewer anchor ids than this.
    exact_below: int = Field(default=0, ge=0)
    #: Segments smaller than this (KB) are scanned rather than indexed (Qdrant's indexing threshold):
    #: new anchors are searchable at once and indexed once they outgrow a scan.
    scan_below_kb: int = Field(default=10_000, ge=1)
    shards: int = Field(default=1, ge=1)
    replication: int = Field(default=1, ge=1)

    @property
    def approximate(self) -> bool:
        return self.quantization != "none" or self.hnsw


#: Anchors below which the default index searches exactly: an exact scan of 100k 1280-d anchors takes
#: about as long as the sparse ranking of 1,000 classes, and building a graph costs minutes; above it the
#: graph's search time hardly grows (benchmarks/scale.py, docs/benchmarks.md).
AUTO_EXACT_BELOW = 100_000

#: Named settings for the command line (``--index``); measured in benchmarks/scale.py and
#: benchmarks/index_quality.py. The graph walks k x 3 candidates: on the Flickr8k anchors with the
#: default method, x1.5 changed 2.3% of CIFAR-10 answers, x3 0.4%. The approximate presets keep the
#: index on disk (memory-mapped): at 1M anchors opening takes 2 s rather than 19.
INDEX_PRESETS: dict[str, IndexSettings] = {
    "exact": IndexSettings(),
    "int8": IndexSettings(quantization="int8", oversampling=2.0, on_disk=True),
    "hnsw": IndexSettings(quantization="int8", hnsw=True, oversampling=3.0, on_disk=True),
    "auto": IndexSettings(quantization="int8", hnsw=True, oversampling=3.0, exact_below=AUTO_EXACT_BELOW, on_disk=True),
}
#: What a new store searches with unless told otherwise: exact until it holds ``AUTO_EXACT_BELOW``
#: anchors, then int8 + HNSW with exact rescoring (the first update past it builds the graph).
DEFAULT_INDEX = INDEX_PRESETS["auto"]


def index_settings(value: IndexSettings | str | None) -> IndexSettings | None:
    """Settings as given, or those of a preset name; ValueError naming the presets otherwise."""
    if value is None or isinstance(value, IndexSettings):
        return value
    if value not in INDEX_PRESETS:
        raise InputError(f"index {value!r}: expected one of {', '.join(INDEX_PRESETS)} or IndexSettings(...)")
    return INDEX_PRESETS[value]
