"""The one store interface: named collections of points with dense vectors, sparse vectors and payload.

The ASIF logic (pairing, relative vectors, label sets) lives above this interface, so a backend is
only the small set of vector-database operations below, implemented once per engine.
"""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from asif_vdb.errors import StoreError

#: Collection of the generic blob store, and the bytes of one of its points.
BLOBS = "asif_blobs"
BLOB_CHUNK = 4 << 20

PayloadType = Literal["keyword", "integer"]
#: A sparse vector as read back: (indices, values).
SparseRow = tuple[np.ndarray, np.ndarray]
#: A sparse vector to write: arrays, or Python lists (the refresh builds those straight for the engine).
SparseIn = tuple["np.ndarray | Sequence[int]", "np.ndarray | Sequence[float]"]


Quantization = Literal["none", "int8", "binary", "turbo"]


@dataclass(frozen=True)
class VectorIndex:
    """How a collection's dense vectors are stored and indexed. The engine builds quantized data and
    graphs when a collection is optimised; until then (and for ``SearchMode(exact=True)``) searches
    scan the original float32 vectors."""

    quantization: Quantization = "none"
    #: HNSW graph degree; 0: no graph (searches scan the quantized or original vectors).
    hnsw_m: int = 0
    ef_construct: int = 100
    #: Original vectors memory-mapped from disk (quantized data stays in RAM).
    on_disk: bool = False
    #: Segments under this size (KB) are scanned, not indexed.
    scan_below_kb: int = 10_000


@dataclass(frozen=True)
class SearchMode:
    """How one dense search runs: exact (a scan of the originals, the default), or through the index:
    ``hnsw_ef`` candidates on the graph, and ``oversampling`` times the limit scored on quantized data
    then rescored with the originals."""

    exact: bool = True
    hnsw_ef: int | None = None
    oversampling: float | None = None


EXACT = SearchMode()


@dataclass(frozen=True)
class CollectionSpec:
    """A collection's schema: dense vectors (name -> dim), sparse vector names and when their
    inverted index is used, indexed payload fields, the dense vectors' index, and (a server) its
    shards and replicas."""

    name: str
    dense: dict[str, int] = field(default_factory=dict)
    sparse: tuple[str, ...] = ()
    #: A filtered sparse search over fewer points than this scores them one by one; over more, it
    #: walks the inverted index (None: the engine's default, 5,000).
    sparse_full_scan: int | None = None
    indexes: dict[str, PayloadType] = field(default_factory=dict)
    index: VectorIndex = VectorIndex()
    shards: int = 1
    replication: int = 1


@dataclass(frozen=True)
class Match:
    """Payload condition: ``key`` equals ``value``, or is one of ``value`` when it is a list."""

    key: str
    value: str | int | list[str] | list[int]


@dataclass(frozen=True)
class Filter:
    """All of ``must`` hold and none of ``must_not`` hold (``ids`` restricts to those point ids)."""

    must: tuple[Match, ...] = ()
    must_not: tuple[Match, ...] = ()
    ids: tuple[int, ...] | None = None

    @classmethod
    def where(cls, **conditions: Any) -> Filter:
        return cls(must=tuple(Match(k, v) for k, v in conditions.items()))


@dataclass
class PointData:
    """A point to write or one read back. Vectors not asked for are left empty."""

    id: int
    payload: dict[str, Any] = field(default_factory=dict)
    dense: dict[str, np.ndarray] = field(default_factory=dict)
    sparse: dict[str, SparseRow] = field(default_factory=dict)


@dataclass
class Hits:
    """One query's results, best first."""

    ids: np.ndarray
    scores: np.ndarray
    payloads: list[dict[str, Any]] | None = None


class Backend(ABC):
    """A vector-database engine holding several named collections and one config document."""

    #: Where this store lives, for messages ("/path/to/store", "http://host:6333").
    location: str
    #: Bytes per request of the generic blob store (servers cap a request's size).
    blob_chunk: int = BLOB_CHUNK

    @abstractmethod
    def ensure_collection(self, spec: CollectionSpec) -> None:
        """Create the collection if missing; an existing one must match the spec's vectors, and takes
        the spec's index settings (rebuilt by the next ``optimize``)."""

    @abstractmethod
    def has_collection(self, name: str) -> bool: ...

    @abstractmethod
    def list_collections(self) -> list[str]:
        """Names of this store's collections."""

    @abstractmethod
    def drop_collection(self, name: str) -> None:
        """Delete a collection and its points (nothing when there is none)."""

    @abstractmethod
    def read_config(self) -> dict[str, Any] | None:
        """The stored config document, or None for a new store."""

    @abstractmethod
    def write_config(self, config: dict[str, Any]) -> None:
        """Replace the stored config document atomically."""

    def read_config_backup(self) -> dict[str, Any] | None:
        """The config document's previous version, kept beside it (None where none is kept)."""
        return None

    @abstractmethod
    def upsert(self, collection: str, points: Sequence[PointData]) -> None: ...

    @abstractmethod
    def set_payload(self, collection: str, ids: Sequence[int], payload: dict[str, Any]) -> None: ...

    def update_vectors(self, collection: str, points: Sequence[PointData]) -> None:
        """Replace the named vectors given in each point, keeping its other vectors and payload.
        Each point is updated atomically. (Generic version: read, merge, upsert.)"""
        if not points:
            return
        names = sorted({n for p in points for n in (*p.dense, *p.sparse)})
        stored = {p.id: p for p in self.retrieve(collection, [p.id for p in points], True, names)}
        merged = []
        for p in points:
            old = stored.get(p.id)
            if old is None:
                continue
            merged.append(PointData(p.id, old.payload, {**old.dense, **p.dense}, {**old.sparse, **p.sparse}))
        self.upsert(collection, merged)

    def replace_sparse(self, collection: str, vector: str, ids: Sequence[int],
                       rels: Sequence[SparseIn], payloads: Sequence[dict[str, Any]]) -> None:
        """Delete these points and insert them anew, each with one sparse vector (indices, values as
        Python lists) and a payload: the bulk write of a refresh."""
        self.delete(collection, ids)
        self.insert_sparse(collection, vector, ids, rels, payloads)

    def insert_sparse(self, collection: str, vector: str, ids: Sequence[int],
                      rels: Sequence[SparseIn], payloads: Sequence[dict[str, Any]]) -> None:
        """Write points that have one sparse vector each (see ``replace_sparse``). (Generic: upsert.)"""
        self.upsert(collection, [PointData(int(i), pl, sparse={vector: (np.asarray(rel[0], np.int64), np.asarray(rel[1], np.float32))})
                                 for i, rel, pl in zip(ids, rels, payloads)])

    @abstractmethod
    def delete(self, collection: str, ids: Sequence[int]) -> None: ...

    @abstractmethod
    def delete_where(self, collection: str, where: Filter) -> None: ...

    @abstractmethod
    def search_dense(
        self,
        collection: str,
        vector: str,
        queries: np.ndarray,
        limit: int,
        where: Filter | None = None,
        with_payload: bool | Sequence[str] = False,
        mode: SearchMode = EXACT,
    ) -> list[Hits]:
        """Nearest neighbours by dot product for each row of ``queries`` (one batch request), exact
        unless ``mode`` says otherwise; scores are always the original vectors' dot products."""

    def search_dense_each(
        self, collection: str, vector: str, queries: np.ndarray, limits: Sequence[int], wheres: Sequence[Filter | None],
    ) -> list[Hits]:
        """Exact ``search_dense`` with its own limit and filter per query (one round trip where the
        engine allows). Used to read a few points' exact scores for many queries."""
        return [self.search_dense(collection, vector, q[None, :], n, w)[0] for q, n, w in zip(queries, limits, wheres)]

    @abstractmethod
    def search_sparse(
        self,
        collection: str,
        vector: str,
        queries: Sequence[SparseIn],
        limit: int,
        where: Filter | None = None,
        with_payload: bool | Sequence[str] = False,
    ) -> list[Hits]:
        """Points with the largest sparse dot product for each query (zero scores left out)."""

    @abstractmethod
    def retrieve(
        self,
        collection: str,
        ids: Sequence[int],
        with_payload: bool | Sequence[str] = True,
        vectors: Sequence[str] = (),
    ) -> list[PointData]:
        """The points that exist among ``ids`` (missing ids are left out)."""

    @abstractmethod
    def scroll(
        self,
        collection: str,
        where: Filter | None = None,
        with_payload: bool | Sequence[str] = True,
        vectors: Sequence[str] = (),
        batch: int = 1024,
    ) -> Iterator[list[PointData]]:
        """Every matching point, in batches, in id order."""

    @abstractmethod
    def count(self, collection: str, where: Filter | None = None) -> int: ...

    def flush(self) -> None:  # noqa: B027 - optional hook, most engines write durably already
        """Make every write durable (no-op where writes already are)."""

    # -- backups and sizes ---------------------------------------------------------------------------
    def snapshot(self, target: Path) -> dict[str, str]:
        """Write a consistent copy of the whole store (config and journal, every collection, every
        blob) as files under the empty folder ``target``; returns relative path -> sha256. No write
        may run meanwhile (the caller holds the store's update lock)."""
        raise StoreError(f"store {self.location}: this backend cannot take backups")

    def restore_snapshot(self, source: Path, files: dict[str, str]) -> None:
        """Load a snapshot written by this kind of backend into this new, empty store."""
        raise StoreError(f"store {self.location}: this backend cannot restore backups")

    def usage(self) -> dict[str, int] | None:
        """Bytes on disk (and of them, write-ahead log reserved ahead of writes); None where the
        store is not a local directory."""
        return None

    def optimize(self, collection: str) -> bool:
        """Build what the collection's index settings ask for over the points written since, and reclaim
        deleted points; returns whether anything changed (False where the engine does this itself)."""
        return False

    def read_ahead(self, collection: str, stop: Callable[[], bool] | None = None) -> int:
        """Read a collection's memory-mapped files into the page cache ahead of its first searches
        (``stop`` is asked between chunks); returns the bytes read (0 where a server keeps its own
        memory)."""
        return 0

    # -- blobs: derived arrays kept beside the collections ----------------------------------------
    def write_blob(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        """Replace the arrays stored under ``name`` (generic version: base64 chunks in a payload
        collection; an engine with a local directory writes a file instead)."""
        data = _pack(arrays)
        size = self.blob_chunk
        chunks = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
        self.ensure_collection(CollectionSpec(BLOBS, indexes={"blob": "keyword"}))
        self.delete_where(BLOBS, Filter.where(blob=name))
        for i, c in enumerate(chunks):  # one chunk per request: servers cap a request's size
            self.upsert(BLOBS, [PointData(_blob_id(name, i), {"blob": name, "part": i, "parts": len(chunks),
                                                              "data": base64.b64encode(c).decode("ascii")})])

    def read_blob(self, name: str) -> dict[str, np.ndarray] | None:
        """The arrays stored under ``name``, or None when there are none (or they are incomplete)."""
        if not self.has_collection(BLOBS):
            return None
        self.ensure_collection(CollectionSpec(BLOBS, indexes={"blob": "keyword"}))
        parts = [p for batch in self.scroll(BLOBS, Filter.where(blob=name), batch=2) for p in batch]
        if not parts or len(parts) != int(parts[0].payload.get("parts", -1)):
            return None
        parts.sort(key=lambda p: int(p.payload["part"]))
        return _unpack(b"".join(base64.b64decode(p.payload["data"]) for p in parts))

    @abstractmethod
    def close(self) -> None: ...


def _pack(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle
    return buf.getvalue()


def _unpack(data: bytes) -> dict[str, np.ndarray] | None:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):  # damaged: recomputed by the caller
        return None


def _blob_id(name: str, part: int) -> int:
    """A stable point id per (blob, chunk)."""
    return int.from_bytes(hashlib.sha256(f"{name}\0{part}".encode()).digest()[:7], "big")
