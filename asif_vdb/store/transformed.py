"""A backend view that stores anchor vectors transformed and shows every caller raw ones.

With an embedding transform (methods.py) the anchors' searched vector ``v`` must hold the
transformed embedding, since a dot-product search cannot transform stored points at query time. This
view is the one place that knows: writes of ``v`` to an anchor collection are transformed, dense
searches on ``v`` transform their queries, and reads of ``v`` are mapped back to the unit input
vectors (the transform is invertible). Everything above it (refresh, galleries, pruning,
explanations) keeps working with raw embeddings; only the similarity a search returns changes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from asif_vdb.methods import Transform
from asif_vdb.store.base import Filter, Hits, PointData

VECTOR = "v"


class TransformedBackend:
    """Wraps a Backend; ``collections`` maps an anchor collection name to its transform."""

    def __init__(self, inner: Any, collections: dict[str, Transform]) -> None:
        self.inner = inner
        self.collections = collections

    def __getattr__(self, name: str) -> Any:  # everything not overridden goes straight through
        return getattr(self.inner, name)

    def _forward(self, collection: str, points: Sequence[PointData]) -> list[PointData]:
        return self._map(collection, list(points), "apply")

    def _back(self, collection: str, points: list[PointData]) -> list[PointData]:
        return self._map(collection, points, "invert")

    def _map(self, collection: str, points: list[PointData], direction: str) -> list[PointData]:
        """Apply the collection's transform (or its inverse) to the points' anchor vectors."""
        t = self.collections.get(collection)
        rows = [i for i, p in enumerate(points) if VECTOR in p.dense]
        if t is None or not rows:
            return points
        moved = getattr(t, direction)(np.stack([points[i].dense[VECTOR] for i in rows]))
        for j, i in enumerate(rows):
            points[i] = replace(points[i], dense={**points[i].dense, VECTOR: moved[j]})
        return points

    def _queries(self, collection: str, vector: str, queries: np.ndarray) -> np.ndarray:
        t = self.collections.get(collection)
        return queries if t is None or vector != VECTOR else t.apply(queries)

    # -- the overridden operations ----------------------------------------------------------------
    def upsert(self, collection: str, points: Sequence[PointData]) -> None:
        self.inner.upsert(collection, self._forward(collection, points))

    def update_vectors(self, collection: str, points: Sequence[PointData]) -> None:
        self.inner.update_vectors(collection, self._forward(collection, points))

    def search_dense(self, collection: str, vector: str, queries: np.ndarray, limit: int,
                     where: Filter | None = None, with_payload: bool | Sequence[str] = False) -> list[Hits]:
        return self.inner.search_dense(collection, vector, self._queries(collection, vector, queries), limit,
                                       where, with_payload)

    def search_dense_each(self, collection: str, vector: str, queries: np.ndarray, limits: Sequence[int],
                          wheres: Sequence[Filter | None]) -> list[Hits]:
        return self.inner.search_dense_each(collection, vector, self._queries(collection, vector, queries),
                                            limits, wheres)

    def retrieve(self, collection: str, ids: Sequence[int], with_payload: bool = True,
                 vectors: Sequence[str] = ()) -> list[PointData]:
        return self._back(collection, self.inner.retrieve(collection, ids, with_payload, vectors))

    def scroll(self, collection: str, where: Filter | None = None, with_payload: bool | Sequence[str] = True,
               vectors: Sequence[str] = (), batch: int = 1024) -> Iterator[list[PointData]]:
        for points in self.inner.scroll(collection, where, with_payload, vectors, batch):
            yield self._back(collection, points)
