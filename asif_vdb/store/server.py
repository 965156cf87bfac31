"""The server backend: qdrant-client against a Qdrant URL (or its local ``:memory:`` mode, for tests)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from asif_vdb.errors import StoreError
from asif_vdb.store.base import (
    EXACT,
    Backend,
    CollectionSpec,
    Filter,
    Hits,
    PointData,
    SearchMode,
    SparseIn,
    SparseRow,
    VectorIndex,
)

CONFIG_COLLECTION = "config"


class QdrantServerBackend(Backend):
    """Collections are named ``PREFIX_NAME`` on the server; the config is one point's payload."""

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        location: str | None = None,
        prefix: str = "asif",
        timeout: int = 60,
    ) -> None:
        from qdrant_client import QdrantClient

        if (url is None) == (location is None):
            raise StoreError("give exactly one of url= (a Qdrant server) or location=':memory:'")
        self.prefix = prefix
        self.location = url or str(location)
        try:
            if url is not None:
                self.client = QdrantClient(url=url, api_key=api_key, timeout=timeout)
                self.client.get_collections()  # fail now, with the URL in the message
            else:
                self.client = QdrantClient(location=location)
        except Exception as e:
            raise StoreError(f"cannot reach Qdrant at {self.location}: {e}") from e
        self._specs: dict[str, CollectionSpec] = {}

    def _name(self, collection: str) -> str:
        return f"{self.prefix}_{collection}"

    # -- collections -----------------------------------------------------------------------------
    def has_collection(self, name: str) -> bool:
        return bool(self.client.collection_exists(self._name(name)))

    def list_collections(self) -> list[str]:
        mine = f"{self.prefix}_"
        return [c.name[len(mine):] for c in self.client.get_collections().collections if c.name.startswith(mine)]

    def drop_collection(self, name: str) -> None:
        if self.client.collection_exists(self._name(name)):
            self.client.delete_collection(self._name(name))
        self._specs.pop(name, None)

    def ensure_collection(self, spec: CollectionSpec) -> None:
        from qdrant_client import models

        name = self._name(spec.name)
        if not self.client.collection_exists(name):
            self.client.create_collection(
                name,
                vectors_config={n: models.VectorParams(size=d, distance=models.Distance.DOT, on_disk=spec.index.on_disk,
                                                       hnsw_config=_hnsw(spec.index),
                                                       quantization_config=_quantization(spec.index))
                                for n, d in spec.dense.items()},
                sparse_vectors_config={
                    n: models.SparseVectorParams(index=models.SparseIndexParams(full_scan_threshold=spec.sparse_full_scan))
                    for n in spec.sparse} or None,
                shard_number=spec.shards, replication_factor=spec.replication,
                optimizers_config=models.OptimizersConfigDiff(indexing_threshold=spec.index.scan_below_kb),
            )
            for key, kind in spec.indexes.items():
                schema = models.PayloadSchemaType.KEYWORD if kind == "keyword" else models.PayloadSchemaType.INTEGER
                with warnings.catch_warnings():  # local mode warns that it ignores indexes
                    warnings.simplefilter("ignore")
                    self.client.create_payload_index(name, field_name=key, field_schema=schema)
        else:
            info = self.client.get_collection(name)
            vectors = info.config.params.vectors
            have = {n: v.size for n, v in vectors.items()} if isinstance(vectors, dict) else {}
            if have != spec.dense:
                raise StoreError(f"collection {name} at {self.location} has vectors {have}, expected {spec.dense}")
            known = self._specs.get(spec.name)
            if known is not None and known.index != spec.index:  # the server rebuilds in the background
                self.client.update_collection(name, vectors_config={n: models.VectorParamsDiff(
                    hnsw_config=_hnsw(spec.index), on_disk=spec.index.on_disk,
                    quantization_config=_quantization(spec.index) or models.Disabled.DISABLED) for n in spec.dense})
        self._specs[spec.name] = spec

    # -- config ----------------------------------------------------------------------------------
    def read_config(self) -> dict[str, Any] | None:
        name = self._name(CONFIG_COLLECTION)
        if not self.client.collection_exists(name):
            return None
        records = self.client.retrieve(name, [0], with_payload=True)
        if not records:
            return None
        config: dict[str, Any] = json.loads(records[0].payload["config"])
        return config

    def write_config(self, config: dict[str, Any]) -> None:
        from qdrant_client import models

        name = self._name(CONFIG_COLLECTION)
        if not self.client.collection_exists(name):
            self.client.create_collection(name, vectors_config={})
        self.client.upsert(
            name, [models.PointStruct(id=0, vector={}, payload={"config": json.dumps(config)})], wait=True
        )

    # -- conversions -----------------------------------------------------------------------------
    @staticmethod
    def _filter(where: Filter | None) -> Any:
        from qdrant_client import models

        if where is None:
            return None

        def cond(m: Any) -> Any:
            match = models.MatchAny(any=list(m.value)) if isinstance(m.value, list) else models.MatchValue(value=m.value)
            return models.FieldCondition(key=m.key, match=match)

        must: list[Any] = [cond(m) for m in where.must]
        if where.ids is not None:
            must.append(models.HasIdCondition(has_id=[int(i) for i in where.ids]))
        must_not = [cond(m) for m in where.must_not]
        return models.Filter(must=must or None, must_not=must_not or None)

    @staticmethod
    def _point(p: PointData) -> Any:
        from qdrant_client import models

        vector: dict[str, Any] = {n: np.asarray(v, np.float32).tolist() for n, v in p.dense.items()}
        for n, (idx, vals) in p.sparse.items():
            vector[n] = models.SparseVector(indices=[int(i) for i in idx], values=[float(v) for v in vals])
        return models.PointStruct(id=int(p.id), vector=vector, payload=p.payload)

    @staticmethod
    def _record(r: Any) -> PointData:
        dense: dict[str, np.ndarray] = {}
        sparse: dict[str, SparseRow] = {}
        vectors = r.vector if isinstance(r.vector, dict) else {}
        for n, v in vectors.items():
            if hasattr(v, "indices"):
                sparse[n] = (np.asarray(v.indices, np.int64), np.asarray(v.values, np.float32))
            else:
                dense[n] = np.asarray(v, np.float32)
        return PointData(id=int(r.id), payload=dict(r.payload or {}), dense=dense, sparse=sparse)

    @staticmethod
    def _hits(points: Sequence[Any], with_payload: bool | Sequence[str]) -> Hits:
        points = [p for p in points]
        return Hits(
            ids=np.fromiter((int(p.id) for p in points), dtype=np.int64, count=len(points)),
            scores=np.fromiter((p.score for p in points), dtype=np.float32, count=len(points)),
            payloads=[dict(p.payload or {}) for p in points] if with_payload else None,
        )

    @staticmethod
    def _payload_arg(with_payload: bool | Sequence[str]) -> Any:
        return with_payload if isinstance(with_payload, bool) else list(with_payload)

    # -- writes ----------------------------------------------------------------------------------
    def upsert(self, collection: str, points: Sequence[PointData]) -> None:
        if points:
            self.client.upsert(self._name(collection), [self._point(p) for p in points], wait=True)

    def update_vectors(self, collection: str, points: Sequence[PointData]) -> None:
        from qdrant_client import models

        if points:
            self.client.update_vectors(self._name(collection), [
                models.PointVectors(id=int(p.id), vector=self._point(p).vector) for p in points
            ], wait=True)

    def set_payload(self, collection: str, ids: Sequence[int], payload: dict[str, Any]) -> None:
        if len(ids):
            self.client.set_payload(self._name(collection), payload=payload, points=[int(i) for i in ids], wait=True)

    def delete(self, collection: str, ids: Sequence[int]) -> None:
        from qdrant_client import models

        if len(ids):
            self.client.delete(
                self._name(collection), points_selector=models.PointIdsList(points=[int(i) for i in ids]), wait=True
            )

    def delete_where(self, collection: str, where: Filter) -> None:
        from qdrant_client import models

        self.client.delete(
            self._name(collection), points_selector=models.FilterSelector(filter=self._filter(where)), wait=True
        )

    # -- reads -----------------------------------------------------------------------------------
    def _query_batch(self, collection: str, queries: list[Any], using: str, limit: int,
                     where: Filter | None, with_payload: bool | Sequence[str], mode: SearchMode = EXACT) -> list[Hits]:
        from qdrant_client import models

        flt = self._filter(where)
        params = _search_params(mode)
        requests = [
            models.QueryRequest(
                query=q, using=using, limit=int(limit), filter=flt,
                with_payload=self._payload_arg(with_payload), with_vector=False, params=params,
            )
            for q in queries
        ]
        out: list[Hits] = []
        for start in range(0, len(requests), 256):
            with warnings.catch_warnings():  # local mode warns that search params are moot
                warnings.simplefilter("ignore")
                responses = self.client.query_batch_points(self._name(collection), requests[start : start + 256])
            out.extend(self._hits(r.points, with_payload) for r in responses)
        return out

    def search_dense(self, collection: str, vector: str, queries: np.ndarray, limit: int, where: Filter | None = None,
                     with_payload: bool | Sequence[str] = False, mode: SearchMode = EXACT) -> list[Hits]:
        queries = np.asarray(queries, np.float32)
        if len(queries) == 0:
            return []
        if limit <= 0:
            return [Hits(np.zeros(0, np.int64), np.zeros(0, np.float32), [] if with_payload else None) for _ in queries]
        return self._query_batch(collection, [q.tolist() for q in queries], vector, limit, where, with_payload, mode)

    def search_dense_each(self, collection: str, vector: str, queries: np.ndarray, limits: Sequence[int],
                          wheres: Sequence[Filter | None]) -> list[Hits]:
        from qdrant_client import models

        requests = [
            models.QueryRequest(query=np.asarray(q, np.float32).tolist(), using=vector, limit=max(int(n), 1),
                                filter=self._filter(w), with_payload=False, with_vector=False,
                                params=models.SearchParams(exact=True))
            for q, n, w in zip(queries, limits, wheres)
        ]
        out: list[Hits] = []
        for start in range(0, len(requests), 256):
            responses = self.client.query_batch_points(self._name(collection), requests[start : start + 256])
            out.extend(self._hits(r.points, False) for r in responses)
        return out

    def search_sparse(self, collection: str, vector: str, queries: Sequence[SparseIn], limit: int,
                      where: Filter | None = None, with_payload: bool | Sequence[str] = False) -> list[Hits]:
        from qdrant_client import models

        empty = Hits(np.zeros(0, np.int64), np.zeros(0, np.float32), [] if with_payload else None)
        out: list[Hits] = [empty] * len(queries)
        todo = [i for i, (idx, _) in enumerate(queries) if len(idx) and limit > 0]
        vectors = [
            models.SparseVector(indices=[int(j) for j in queries[i][0]], values=[float(v) for v in queries[i][1]])
            for i in todo
        ]
        for i, hits in zip(todo, self._query_batch(collection, vectors, vector, limit, where, with_payload)):
            keep = hits.scores > 0
            out[i] = Hits(
                hits.ids[keep], hits.scores[keep],
                [p for p, k in zip(hits.payloads, keep) if k] if hits.payloads is not None else None,
            )
        return out

    def retrieve(self, collection: str, ids: Sequence[int], with_payload: bool | Sequence[str] = True,
                 vectors: Sequence[str] = ()) -> list[PointData]:
        if len(ids) == 0:
            return []
        records = self.client.retrieve(
            self._name(collection), [int(i) for i in ids], with_payload=with_payload,
            with_vectors=list(vectors) if vectors else False,
        )
        return [self._record(r) for r in records]

    def scroll(self, collection: str, where: Filter | None = None, with_payload: bool | Sequence[str] = True,
               vectors: Sequence[str] = (), batch: int = 1024) -> Iterator[list[PointData]]:
        offset = None
        while True:
            records, offset = self.client.scroll(
                self._name(collection), scroll_filter=self._filter(where), limit=batch, offset=offset,
                with_payload=self._payload_arg(with_payload), with_vectors=list(vectors) if vectors else False,
            )
            if records:
                yield [self._record(r) for r in records]
            if offset is None:
                return

    def count(self, collection: str, where: Filter | None = None) -> int:
        return int(self.client.count(self._name(collection), count_filter=self._filter(where), exact=True).count)

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:
            pass


def _hnsw(index: VectorIndex) -> Any:
    from qdrant_client import models

    return models.HnswConfigDiff(m=index.hnsw_m, ef_construct=index.ef_construct)


def _quantization(index: VectorIndex) -> Any:
    """The server's quantization config (quantized data in RAM, originals where ``on_disk`` says)."""
    from qdrant_client import models

    if index.quantization == "int8":
        return models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(
            type=models.ScalarType.INT8, quantile=0.99, always_ram=True))
    if index.quantization == "binary":
        return models.BinaryQuantization(binary=models.BinaryQuantizationConfig(always_ram=True))
    if index.quantization == "turbo":  # not in every server version: the nearest, 4x compression
        return models.ProductQuantization(product=models.ProductQuantizationConfig(
            compression=models.CompressionRatio.X4, always_ram=True))
    return None


def _search_params(mode: SearchMode) -> Any:
    from qdrant_client import models

    if mode.exact:
        return models.SearchParams(exact=True)
    return models.SearchParams(hnsw_ef=mode.hnsw_ef, exact=False, quantization=models.QuantizationSearchParams(
        rescore=True, oversampling=mode.oversampling))
