"""The ASIF parameters a store is built with, and the engine's tuning constants."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class AsifParams(BaseModel):
    """The ASIF hyper-parameters: non-zeros per relative vector and the exponent."""

    model_config = ConfigDict(frozen=True)

    k: int = Field(default=800, ge=1, description="non-zeros kept per relative vector")
    p: float = Field(default=1.0, gt=0, description="exponent applied to clamped similarities")

    @field_validator("p")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("p must be finite")
        return v


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
    #: Similarities held at once while an anchors gallery catches up (items x new anchors, float64).
    catch_up_cells: int = Field(default=50_000_000, ge=1)
    #: Points per write when anchors are rewritten (a refit), candidates recomputed or a gallery indexed.
    rewrite_batch: int = Field(default=512, ge=1)
