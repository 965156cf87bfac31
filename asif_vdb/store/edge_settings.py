"""What Qdrant Edge is told about a collection: its vectors, their quantization, graph and memory
placement, its payload indexes and how one search runs; and the index settings recorded beside a
shard (the engine does not report the ones a collection was built with).

Memory placement (``VectorIndex.on_disk``): in RAM, the engine reads the original vectors into memory
when it loads a shard and copies the quantized data and payload indexes into its own heap (at 1M
1280-d anchors that is 7-12 s per collection, most of it page faults). On disk, every part is
memory-mapped and loading reads nothing: the first searches read the pages they touch, and
``store.files.read_ahead`` reads them all at disk speed into the page cache, after which a search
runs as fast as in RAM (benchmarks/scale.py, docs/benchmarks.md).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from asif_vdb.errors import StoreError
from asif_vdb.store.base import CollectionSpec, PayloadType, SearchMode, VectorIndex

#: The index settings a shard was built with, recorded beside it.
INDEX_FILE = "asif_index.json"
#: Segments at or under this size (KB) stay plain (scanned) until they grow: the engine's default.
FULL_SCAN_KB = 10_000


def edge() -> Any:
    """The qdrant_edge module (a dependency; imported here so that its absence is one clear line)."""
    try:
        import qdrant_edge
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise StoreError("the embedded store needs qdrant-edge-py: pip install qdrant-edge-py") from e
    return qdrant_edge


def edge_config(spec: CollectionSpec) -> Any:
    """The engine's config of a collection: each dense vector with its quantization and graph (m=0:
    none), held in RAM or memory-mapped; the sparse vectors and their full-scan bound."""
    qe = edge()
    index = spec.index
    mapped = qe.Memory.Cold if index.on_disk else None
    ram: dict[str, Any] = {"memory": mapped} if index.on_disk else {"always_ram": True}
    quantization: Any = None
    if index.quantization == "int8":
        quantization = qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=0.99, **ram)
    elif index.quantization == "binary":
        quantization = qe.BinaryQuantizationConfig(**ram)
    elif index.quantization == "turbo":
        quantization = qe.TurboQuantQuantizationConfig(bits=qe.TurboQuantBitSize.Bits4, **ram)
    hnsw = qe.HnswIndexConfig(m=index.hnsw_m, ef_construct=index.ef_construct, full_scan_threshold=FULL_SCAN_KB,
                              memory=mapped)
    vectors = {n: qe.EdgeVectorParams(size=d, distance=qe.Distance.Dot, memory=mapped,
                                      quantization_config=quantization, hnsw_config=hnsw) for n, d in spec.dense.items()}
    sparse = {n: qe.EdgeSparseVectorParams(full_scan_threshold=spec.sparse_full_scan) for n in spec.sparse}
    return qe.EdgeConfig(vectors=vectors, sparse_vectors=sparse or None,
                         optimizers=qe.EdgeOptimizersConfig(indexing_threshold=index.scan_below_kb))


def payload_index(kind: PayloadType, on_disk: bool) -> Any:
    """A payload index's schema: in RAM, or, with the vectors on disk, memory-mapped and read into the
    page cache when the shard loads (tens of MB at 1M anchors; building an in-RAM index of 1M hashes
    from its files takes seconds). Integer fields are only ever matched, never ranged: a lookup index
    (a range index besides doubled the load time and slowed filtered searches)."""
    qe = edge()
    if not on_disk:
        return qe.PayloadSchemaType.Keyword if kind == "keyword" else qe.PayloadSchemaType.Integer
    if kind == "keyword":
        return qe.KeywordIndexParams(memory=qe.Memory.Cached)
    return qe.IntegerIndexParams(lookup=True, range=False, memory=qe.Memory.Cached)


def search_params(mode: SearchMode) -> Any:
    """Exact: a scan of the originals (quantized data ignored). Otherwise the graph with ``hnsw_ef``
    and quantized scores rescored with the originals (rescoring is off unless asked for)."""
    qe = edge()
    if mode.exact:
        return qe.SearchParams(exact=True)
    quantization = qe.QuantizationSearchParams(rescore=True, oversampling=mode.oversampling) \
        if mode.oversampling is not None else qe.QuantizationSearchParams(rescore=True)
    return qe.SearchParams(hnsw_ef=mode.hnsw_ef, exact=False, quantization=quantization)


def stored_sizes(directory: Path) -> dict[str, int]:
    config = json.loads((directory / "edge_config.json").read_text())
    return {n: int(v["size"]) for n, v in (config.get("vectors") or {}).items()}


def stored_index(directory: Path) -> VectorIndex:
    """The index settings a collection was built with (a collection written before they were
    recorded was built plain: the default)."""
    path = directory / INDEX_FILE
    if not path.exists():
        return VectorIndex()
    data = json.loads(path.read_text())
    return VectorIndex(**{k: v for k, v in data.items() if k in VectorIndex.__dataclass_fields__})


def record_index(directory: Path, index: VectorIndex) -> None:
    tmp = directory / (INDEX_FILE + ".tmp")
    tmp.write_text(json.dumps(asdict(index)))
    os.replace(tmp, directory / INDEX_FILE)
