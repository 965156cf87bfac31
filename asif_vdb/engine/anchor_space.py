"""The space anchors are searched in: raw embeddings, or their fitted transforms.

With an embedding transform (maths/transforms.py) an anchor's searched vector must hold the
transformed embedding, since a dot-product search cannot transform stored points at query time.
``AnchorSpace`` is the one place that knows: the anchor store transforms what it writes and what it
searches with, and maps what it reads back to the unit input vectors (the transform is invertible),
so everything above keeps working with raw embeddings; only the similarities a search returns change.

A transform's arrays live in the ``transform`` collection, one point per matrix row and one for the
mean, in one of two row ranges ("slots"): a refit writes the slot the config does not use, so the
transform in use stays intact until the config switches.
"""

from __future__ import annotations

import numpy as np

from asif_vdb.engine.layout import TRANSFORM, transform_spec
from asif_vdb.engine.state import StoreState
from asif_vdb.errors import InputError, StoreError
from asif_vdb.maths.transforms import Transform
from asif_vdb.schema.store import Modality, TransformInfo
from asif_vdb.store.base import PointData

#: Point id of row 0 of each modality's matrix in the transform collection; the mean follows the rows.
BASE: dict[Modality, int] = {"image": 0, "text": 1 << 20}
#: Offset of slot 1's rows from slot 0's.
SLOT = 1 << 18
BATCH = 512


class AnchorSpace:
    """The fitted transforms of a store by modality (none: plain ASIF on raw cosines)."""

    def __init__(self, state: StoreState) -> None:
        self.state = state
        self.transforms: dict[Modality, Transform] = {}
        self.reload()

    def reload(self) -> None:
        """Load the transforms the config names (after opening, or after a refit switched them)."""
        self.transforms = {m: self.load(m, info) for m, info in self.state.config.transforms.items()}

    def embed(self, vectors: np.ndarray, modality: Modality) -> np.ndarray:
        """Vectors as the anchor search sees them: transformed when the store has a transform."""
        t = self.transforms.get(modality)
        return vectors if t is None else t.apply(vectors)

    def unembed(self, stored: np.ndarray, modality: Modality) -> np.ndarray:
        """The unit input vectors whose transforms are these stored vectors."""
        t = self.transforms.get(modality)
        return stored if t is None or not len(stored) else t.invert(stored)

    # -- the transform collection ----------------------------------------------------------------
    def load(self, modality: Modality, info: TransformInfo) -> Transform:
        """A stored transform, checked against its record's checksum."""
        backend, d = self.state.backend, self.state.dims[modality]
        if not backend.has_collection(TRANSFORM):
            raise StoreError(f"store {self.state.location} records a {modality} transform but has no "
                             "transform collection")
        backend.ensure_collection(transform_spec(self.state.dims))
        first = _first_row(modality, info.slot)
        got = {p.id: p.dense[modality] for p in backend.retrieve(TRANSFORM, list(range(first, first + d + 1)),
                                                                 False, (modality,)) if modality in p.dense}
        if len(got) != d + 1:
            raise StoreError(f"store {self.state.location}: the {modality} transform is incomplete "
                             f"({len(got)} of {d + 1} rows)")
        matrix = np.stack([got[first + i] for i in range(d)]).astype(np.float64)
        t = Transform(info.power, np.asarray(got[first + d], np.float64), matrix)
        if t.checksum() != info.checksum:
            raise StoreError(f"store {self.state.location}: the stored {modality} transform does not match "
                             "its record")
        return t

    def save(self, modality: Modality, t: Transform, slot: int) -> None:
        """Write a transform's rows into ``slot`` (its record goes in the config, by the caller)."""
        backend, d = self.state.backend, self.state.dims[modality]
        backend.ensure_collection(transform_spec(self.state.dims))
        if d + 1 > SLOT:
            raise InputError(f"a {modality} transform of dimension {d} does not fit the store's transform rows")
        first = _first_row(modality, slot)
        points = [PointData(first + i, payload={"modality": modality, "row": i},
                            dense={modality: np.asarray(r, np.float32)}) for i, r in enumerate([*t.matrix, t.mean])]
        for start in range(0, d + 1, BATCH):
            backend.upsert(TRANSFORM, points[start : start + BATCH])


def as_stored(t: Transform) -> Transform:
    """The transform exactly as it reads back from the store (float32 arrays)."""
    return Transform(t.power, t.mean.astype(np.float32).astype(np.float64), t.matrix.astype(np.float32).astype(np.float64))


def _first_row(modality: Modality, slot: int) -> int:
    return BASE[modality] + slot * SLOT

