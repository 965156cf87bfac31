"""An embedded store that can only be read: on a read-only mount, or files the user cannot write.

Qdrant Edge opens every file read-write (even ``EdgeShard.load`` fails with "Read-only file system"),
so such a store is read through a private copy in the temporary folder: a sparse copy (holes stay
holes: a few MiB for a small store, not the hundreds of MiB of preallocated logs), made when it is
opened and removed when it is closed. Every write is refused with one line.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, NoReturn

import asif_vdb.store.disk as disk
from asif_vdb.errors import ReadOnlyStoreError, StoreBusyError, StoreError
from asif_vdb.store.base import CollectionSpec
from asif_vdb.store.edge import EdgeBackend
from asif_vdb.store.lock import busy_message, holder


class ReadOnlyEdgeBackend(EdgeBackend):
    """Reads a store it cannot write, through a private copy; changes are refused."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        source = Path(path)
        held = holder(source)
        if held is not None:
            raise StoreBusyError(busy_message(source, held))
        need = disk.usage(source).allocated_bytes
        tmp_root = Path(tempfile.gettempdir())
        free = shutil.disk_usage(tmp_root).free
        if need > free * 0.9:
            raise ReadOnlyStoreError(
                f"store {source} is read-only and Qdrant Edge cannot open files read-only; reading it needs a "
                f"private copy of {need / 2**20:.0f} MiB in {tmp_root}, which has {free / 2**20:.0f} MiB free "
                "(set TMPDIR to a larger folder)")
        self._tmp = Path(tempfile.mkdtemp(prefix="asif-readonly-"))
        try:
            disk.copy_tree(source, self._tmp / "store", skip=disk.not_store_file, digests=False)
            super().__init__(self._tmp / "store")
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        self.source = source
        self.location = str(source)

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise ReadOnlyStoreError(f"store {self.location} is read-only (a read-only file system, or files you "
                                 "cannot write): this needs a write (a change, or data built on first use such as "
                                 "the anchors gallery); copy the store somewhere writable for that")

    upsert = insert_sparse = replace_sparse = update_vectors = set_payload = _refuse
    delete = delete_where = write_config = write_blob = drop_collection = restore_snapshot = _refuse

    def ensure_collection(self, spec: CollectionSpec) -> None:
        if not self.has_collection(spec.name):
            self._refuse()
        super().ensure_collection(spec)

    def optimize(self, collection: str) -> bool:
        return False

    def usage(self) -> dict[str, int] | None:
        return disk.usage(self.source).to_dict()

    def close(self) -> None:
        try:
            super().close()
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)


def open_edge(path: str | os.PathLike[str]) -> EdgeBackend:
    """The embedded store at ``path``: read-only when its folder cannot be written."""
    folder = Path(path)
    if folder.is_dir() and disk.read_only(folder):
        if not (folder / "asif_config.json").is_file():
            raise StoreError(f"{folder} is read-only and holds no store")
        return ReadOnlyEdgeBackend(folder)
    return EdgeBackend(folder)
