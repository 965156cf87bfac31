"""The embedded default backend: Qdrant Edge, Qdrant's engine in-process, one shard per collection."""

from __future__ import annotations

import os
import shutil
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import asif_vdb.store.disk as disk
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
)
from asif_vdb.store.edge_settings import (
    edge,
    edge_config,
    payload_index,
    record_index,
    search_params,
    stored_index,
    stored_sizes,
)
from asif_vdb.store.files import SpaceGuard, backup_path, read_ahead, read_json, tree_bytes, write_with_backup
from asif_vdb.store.lock import StoreLock

CONFIG_FILE = "asif_config.json"


class EdgeBackend(Backend):
    """Collections live in ``PATH/collections/NAME``; the config document in ``PATH/asif_config.json``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"store path {self.path} exists and is not a directory")
        self.path.mkdir(parents=True, exist_ok=True)
        #: Held until close: a second process gets one line naming this one (store/lock.py).
        self.lock = StoreLock.acquire(self.path)
        self._sweep()
        #: Every write checks the free space first: a full disk kills the engine's process (SIGBUS).
        self.space = SpaceGuard(self.path)
        self._shards: dict[str, Any] = {}
        self._specs: dict[str, CollectionSpec] = {}
        self._blob_thread: threading.Thread | None = None
        self._blob_pending: dict[str, dict[str, np.ndarray]] = {}
        self._blob_lock = threading.Lock()
        self._blob_error: StoreError | None = None
        self._closed = False

    # -- collections -----------------------------------------------------------------------------
    def _dir(self, name: str) -> Path:
        return self.path / "collections" / name

    def has_collection(self, name: str) -> bool:
        return name in self._shards or (self._dir(name) / "edge_config.json").exists() or (
            self._dir(name).is_dir() and any(self._dir(name).iterdir())
        )

    def list_collections(self) -> list[str]:
        root = self.path / "collections"
        on_disk = {d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")} if root.is_dir() else set()
        return sorted(on_disk | set(self._shards))

    def drop_collection(self, name: str) -> None:
        """Its folder is renamed out of the way at once (so it is gone even if the removal is cut
        short: ``_sweep`` finishes it on the next open); a background thread closes the shard (a
        flush nobody needs: 0.08 s for 8,000 sparse points) and removes the folder."""
        shard = self._shards.pop(name, None)
        self._specs.pop(name, None)
        directory = self._dir(name)
        trash = directory.with_name(f".trash-{name}-{time.time_ns()}")
        if directory.exists():
            os.replace(directory, trash)

        def remove() -> None:
            try:
                if shard is not None:
                    shard.close()
            finally:
                shutil.rmtree(trash, ignore_errors=True)

        threading.Thread(target=remove, name=f"asif-drop-{name}").start()  # finishes before exit

    def _sweep(self) -> None:
        """Remove folders of collections dropped by a process that stopped before it finished."""
        root = self.path / "collections"
        for trash in root.glob(".trash-*") if root.is_dir() else ():
            shutil.rmtree(trash, ignore_errors=True)

    def ensure_collection(self, spec: CollectionSpec) -> None:
        """Create or open a collection. An existing one whose index settings differ from the spec's
        (recorded in ``asif_index.json`` beside the shard) is reopened with the new settings, which the
        next ``optimize`` builds (the engine rebuilds only the segments whose settings changed)."""
        current = self._specs.get(spec.name)
        if current is not None and current.index == spec.index:
            return
        directory = self._dir(spec.name)
        self.space.check(f"open collection {spec.name}")
        try:
            if spec.name in self._shards:
                self._shards.pop(spec.name).close()
            if directory.is_dir() and (directory / "edge_config.json").exists():
                have = stored_sizes(directory)
                if have != spec.dense:
                    raise StoreError(f"collection {spec.name} in {self.path} has vectors {have}, expected {spec.dense}")
                built = stored_index(directory)
                if built == spec.index:
                    shard = edge().EdgeShard.load(str(directory))
                else:
                    shard = edge().EdgeShard.load(str(directory), edge_config(spec))
                    if built.on_disk != spec.index.on_disk:  # the payload indexes move with the vectors
                        self._index_payload(shard, spec, replace=True)
                    record_index(directory, spec.index)
            else:
                directory.mkdir(parents=True, exist_ok=True)
                shard = edge().EdgeShard.create(str(directory), edge_config(spec))
                record_index(directory, spec.index)
                self._index_payload(shard, spec)
        except StoreError:
            raise
        except Exception as e:
            raise StoreError(f"cannot open collection {spec.name} in {self.path}: {e}") from e
        self._shards[spec.name] = shard
        self._specs[spec.name] = spec
        self.space.forget()

    @staticmethod
    def _index_payload(shard: Any, spec: CollectionSpec, replace: bool = False) -> None:
        qe = edge()
        for key, kind in spec.indexes.items():
            if replace:
                shard.update(qe.UpdateOperation.delete_field_index(key))
            shard.update(qe.UpdateOperation.create_field_index(key, payload_index(kind, spec.index.on_disk)))

    def read_ahead(self, collection: str, stop: Callable[[], bool] | None = None) -> int:
        """Its files, the index before the original vectors (store/files.py)."""
        return read_ahead(self._dir(collection), lambda: self._closed or (stop is not None and stop()))

    def _shard(self, name: str) -> Any:
        try:
            return self._shards[name]
        except KeyError:
            raise StoreError(f"collection {name} is not open in {self.path}") from None

    # -- config ----------------------------------------------------------------------------------
    def read_config(self) -> dict[str, Any] | None:
        path = self.path / CONFIG_FILE
        if not path.exists():
            return None
        config = read_json(path)
        if config is None:
            raise StoreError(f"store config {path} is unreadable (damaged or cut short): "
                             "`asif doctor --repair` restores its previous version")
        return config

    def read_config_backup(self) -> dict[str, Any] | None:
        return read_json(backup_path(self.path / CONFIG_FILE))

    def write_config(self, config: dict[str, Any]) -> None:
        write_with_backup(self.path / CONFIG_FILE, config)

    # -- conversions -----------------------------------------------------------------------------
    def _filter(self, where: Filter | None) -> Any:
        if where is None:
            return None
        qe = edge()

        def cond(m: Any) -> Any:
            match = qe.MatchAny(list(m.value)) if isinstance(m.value, list) else qe.MatchValue(m.value)
            return qe.FieldCondition(key=m.key, match=match)

        must = [cond(m) for m in where.must]
        if where.ids is not None:
            must.append(qe.HasIdCondition(set(int(i) for i in where.ids)))
        must_not = [cond(m) for m in where.must_not]
        return qe.Filter(must=must or None, must_not=must_not or None)

    @staticmethod
    def _with_payload(with_payload: bool | Sequence[str]) -> Any:
        if isinstance(with_payload, bool):
            return with_payload
        return edge().PayloadSelector.Include(list(with_payload))

    def _point(self, p: PointData) -> Any:
        qe = edge()
        return qe.Point(id=int(p.id), vector=self._vectors(p), payload=p.payload)

    @staticmethod
    def _vectors(p: PointData) -> dict[str, Any]:
        qe = edge()
        vector: dict[str, Any] = {n: np.asarray(v, np.float32).tolist() for n, v in p.dense.items()}
        for n, (idx, vals) in p.sparse.items():
            vector[n] = qe.SparseVector(indices=np.asarray(idx, np.int64).tolist(),
                                        values=np.asarray(vals, np.float32).tolist())
        return vector

    @staticmethod
    def _record(r: Any) -> PointData:
        dense: dict[str, np.ndarray] = {}
        sparse: dict[str, SparseRow] = {}
        for n, v in (r.vector or {}).items():
            if hasattr(v, "indices"):
                sparse[n] = (np.asarray(v.indices, np.int64), np.asarray(v.values, np.float32))
            else:
                dense[n] = np.asarray(v, np.float32)
        return PointData(id=int(r.id), payload=dict(r.payload or {}), dense=dense, sparse=sparse)

    @staticmethod
    def _hits(points: list[Any], with_payload: bool | Sequence[str]) -> Hits:
        return Hits(
            ids=np.fromiter((int(p.id) for p in points), dtype=np.int64, count=len(points)),
            scores=np.fromiter((p.score for p in points), dtype=np.float32, count=len(points)),
            payloads=[dict(p.payload or {}) for p in points] if with_payload else None,
        )

    # -- writes ----------------------------------------------------------------------------------
    def upsert(self, collection: str, points: Sequence[PointData]) -> None:
        self.space.check(f"write to {collection}")
        if points:
            qe = edge()
            self._shard(collection).update(qe.UpdateOperation.upsert_points([self._point(p) for p in points]))

    def insert_sparse(self, collection: str, vector: str, ids: Sequence[int], rels: Sequence[SparseIn],
                      payloads: Sequence[dict[str, Any]]) -> None:
        """Built straight into the engine's objects: this runs for every candidate after an anchor
        update (8,000 points of 800 entries), where intermediate PointData cost ~0.1 s."""
        self.space.check(f"write to {collection}")
        if not len(ids):
            return
        qe = edge()
        sparse, point = qe.SparseVector, qe.Point
        self._shard(collection).update(qe.UpdateOperation.upsert_points([
            point(id=int(i), vector={vector: sparse(indices=idx, values=vals)}, payload=pl)
            for i, (idx, vals), pl in zip(ids, rels, payloads)
        ]))

    def update_vectors(self, collection: str, points: Sequence[PointData]) -> None:
        self.space.check(f"write to {collection}")
        if points:
            qe = edge()
            self._shard(collection).update(qe.UpdateOperation.update_vectors(
                [qe.PointVectors(int(p.id), self._vectors(p)) for p in points]
            ))

    def set_payload(self, collection: str, ids: Sequence[int], payload: dict[str, Any]) -> None:
        self.space.check(f"write to {collection}")
        if len(ids):
            qe = edge()
            self._shard(collection).update(qe.UpdateOperation.set_payload([int(i) for i in ids], payload))

    def delete(self, collection: str, ids: Sequence[int]) -> None:
        self.space.check(f"write to {collection}")
        if len(ids):
            qe = edge()
            self._shard(collection).update(qe.UpdateOperation.delete_points([int(i) for i in ids]))

    def delete_where(self, collection: str, where: Filter) -> None:
        self.space.check(f"write to {collection}")
        qe = edge()
        self._shard(collection).update(qe.UpdateOperation.delete_points_by_filter(self._filter(where)))

    # -- reads -----------------------------------------------------------------------------------
    def search_dense(self, collection: str, vector: str, queries: np.ndarray, limit: int, where: Filter | None = None,
                     with_payload: bool | Sequence[str] = False, mode: SearchMode = EXACT) -> list[Hits]:
        qe = edge()
        queries = np.asarray(queries, np.float32)
        if len(queries) == 0 or limit <= 0:
            return [Hits(np.zeros(0, np.int64), np.zeros(0, np.float32), [] if with_payload else None) for _ in queries]
        flt = self._filter(where)
        params = search_params(mode)
        requests = [
            qe.QueryRequest(
                limit=int(limit), query=qe.Query.Nearest(q.tolist(), using=vector), filter=flt,
                params=params, with_payload=self._with_payload(with_payload), with_vector=False,
            )
            for q in queries
        ]
        results = self._shard(collection).query_batch(qe.QueryBatchRequest(requests))
        return [self._hits(r, with_payload) for r in results]

    def search_dense_each(self, collection: str, vector: str, queries: np.ndarray, limits: Sequence[int],
                          wheres: Sequence[Filter | None]) -> list[Hits]:
        qe = edge()
        queries = np.asarray(queries, np.float32)
        params = qe.SearchParams(exact=True)
        requests = [
            qe.QueryRequest(limit=max(int(n), 1), query=qe.Query.Nearest(q.tolist(), using=vector),
                            filter=self._filter(w), params=params, with_payload=False, with_vector=False)
            for q, n, w in zip(queries, limits, wheres)
        ]
        if not requests:
            return []
        return [self._hits(r, False) for r in self._shard(collection).query_batch(qe.QueryBatchRequest(requests))]

    def search_sparse(self, collection: str, vector: str, queries: Sequence[SparseIn], limit: int,
                      where: Filter | None = None, with_payload: bool | Sequence[str] = False) -> list[Hits]:
        qe = edge()
        flt = self._filter(where)
        out: list[Hits | None] = [None] * len(queries)
        requests, positions = [], []
        for i, (idx, vals) in enumerate(queries):
            if len(idx) == 0 or limit <= 0:
                out[i] = Hits(np.zeros(0, np.int64), np.zeros(0, np.float32), [] if with_payload else None)
                continue
            requests.append(qe.QueryRequest(
                limit=int(limit),
                query=qe.Query.Nearest(qe.SparseVector(indices=[int(j) for j in idx], values=[float(v) for v in vals]), using=vector),
                filter=flt, with_payload=self._with_payload(with_payload), with_vector=False,
            ))
            positions.append(i)
        if requests:
            results = self._shard(collection).query_batch(qe.QueryBatchRequest(requests))
            for i, r in zip(positions, results):
                out[i] = self._hits([p for p in r if p.score > 0], with_payload)
        return [h if h is not None else Hits(np.zeros(0, np.int64), np.zeros(0, np.float32), []) for h in out]

    def retrieve(self, collection: str, ids: Sequence[int], with_payload: bool | Sequence[str] = True,
                 vectors: Sequence[str] = ()) -> list[PointData]:
        if len(ids) == 0:
            return []
        records = self._shard(collection).retrieve(
            [int(i) for i in ids], with_payload=with_payload, with_vector=list(vectors) if vectors else False
        )
        return [self._record(r) for r in records]

    def scroll(self, collection: str, where: Filter | None = None, with_payload: bool | Sequence[str] = True,
               vectors: Sequence[str] = (), batch: int = 1024) -> Iterator[list[PointData]]:
        qe = edge()
        shard = self._shard(collection)
        offset = None
        flt = self._filter(where)
        while True:
            records, offset = shard.scroll(qe.ScrollRequest(
                offset=offset, limit=batch, filter=flt, with_payload=self._with_payload(with_payload),
                with_vector=list(vectors) if vectors else False,
            ))
            if records:
                yield [self._record(r) for r in records]
            if offset is None:
                return

    def count(self, collection: str, where: Filter | None = None) -> int:
        qe = edge()
        return int(self._shard(collection).count(qe.CountRequest(exact=True, filter=self._filter(where))))

    def optimize(self, collection: str) -> bool:
        """Blocking, and it holds the GIL: measured on a real store, a thread running it stalls the
        caller for its whole 0.6 s, so it is not run in the background. The new segment needs room."""
        self.space.check(f"optimize {collection}", extra=tree_bytes(self._dir(collection))[0])
        return bool(self._shard(collection).optimize())

    # -- blobs: one .npz file each, replaced atomically --------------------------------------------
    def _blob_path(self, name: str) -> Path:
        return self.path / "blobs" / f"{name}.npz"

    def write_blob(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        """Written by a background thread (the file is all it touches; blobs hold derived data whose
        loss costs a recomputation, never correctness), so an update need not wait for the disk.
        A blob not yet written when a newer one of the same name comes is superseded, not waited
        for. Reads, flush and close wait for the writer."""
        path = self._blob_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._blob_lock:
            self._blob_pending[name] = arrays
            if self._blob_thread is None:
                self._blob_thread = threading.Thread(target=self._write_blobs, name="asif-blobs")  # finishes before exit
                self._blob_thread.start()

    def _write_blobs(self) -> None:
        while True:
            with self._blob_lock:
                if not self._blob_pending:
                    self._blob_thread = None
                    return
                name, arrays = self._blob_pending.popitem()
            path = self._blob_path(name)
            tmp = path.with_suffix(".tmp")
            try:
                with tmp.open("wb") as f:
                    np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle
                os.replace(tmp, path)
            except OSError as e:
                self._blob_error = StoreError(f"cannot write {path}: {e}")

    def _wait_blob(self) -> None:
        thread = self._blob_thread
        if thread is not None:
            thread.join()
        error, self._blob_error = self._blob_error, None
        if error is not None:
            raise error

    def read_blob(self, name: str) -> dict[str, np.ndarray] | None:
        self._wait_blob()
        path = self._blob_path(name)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):  # damaged: recomputed by the caller
            return None

    def flush(self) -> None:
        self._wait_blob()
        for shard in self._shards.values():
            shard.flush()

    def close(self) -> None:
        self._closed = True  # a read-ahead thread stops at its next chunk
        try:
            self._wait_blob()
        finally:
            self._close_shards()
            self.lock.release()

    # -- backups and sizes: the store's files (store/disk.py) ---------------------------------------
    def snapshot(self, target: Path) -> dict[str, str]:
        """Flush, then copy the config (with its journal), every shard and every blob into ``target``,
        keeping holes; no write may run meanwhile. A flushed shard's files are a valid snapshot of it."""
        self.flush()
        return disk.copy_tree(self.path, Path(target), skip=disk.not_store_file)

    def restore_snapshot(self, source: Path, files: dict[str, str]) -> None:
        """Copy a snapshot's files into this (empty) store before any collection is opened."""
        disk.restore_files(Path(source), self.path, files)

    def usage(self) -> dict[str, int] | None:
        return disk.usage(self.path).to_dict()

    def _close_shards(self) -> None:
        for shard in self._shards.values():
            try:
                shard.flush()
                shard.close()
            except Exception:  # closing twice is harmless
                pass
        self._shards.clear()
