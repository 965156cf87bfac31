"""Backups of a store and bringing them back.

A backup is a folder: ``store/`` (the files of the backend's snapshot: for an embedded store, its
config with the journal, every shard after a flush and every blob; for a server, every collection's
points) and ``manifest.json`` (what it is, where it came from, and each file's size and sha256).
The manifest is written last, so a folder without one is an unfinished backup. ``restore`` checks
every file against the manifest as it copies it, into a new folder beside the target, and only then
puts that folder in the target's place: a damaged backup never replaces a store.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from asif_vdb.errors import InputError, StoreBusyError, StoreError
from asif_vdb.features.session import Session
from asif_vdb.store import disk
from asif_vdb.store.edge import CONFIG_FILE, EdgeBackend
from asif_vdb.store.lock import busy_message, holder

MANIFEST = "manifest.json"
FORMAT = "asif-backup"
VERSION = 1


def backup(session: Session, out: str | os.PathLike[str]) -> dict[str, Any]:
    """Write a backup of the session's store into ``out`` (a new or empty folder); returns what was
    written. The caller keeps updates out meanwhile (a client is used by one thread; the service
    holds its update lock); reads go on."""
    engine = session.require()
    folder = Path(out)
    if not folder.is_absolute():
        folder = folder.resolve()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise InputError(f"backup folder {folder} exists and is not empty: give a new folder")
    start = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        files = session.backend.snapshot(folder / "store")
        entries = {rel: {"sha256": digest, "bytes": (folder / "store" / rel).stat().st_size}
                   for rel, digest in sorted(files.items())}
        config = engine.config
        manifest = {
            "format": FORMAT, "version": VERSION,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "source": session.location,
            "backend": "edge" if isinstance(session.backend, EdgeBackend) else "server",
            "anchors": engine.anchors.count(),
            "label_sets": sorted(config.label_sets), "galleries": sorted(config.galleries),
            "transforms": sorted(config.transforms), "pending_updates": len(config.journal),
            "files": entries,
        }
        _write_json(folder / MANIFEST, manifest)
    except BaseException:
        shutil.rmtree(folder / "store", ignore_errors=True)
        raise
    size = disk.usage(folder)
    return {"backup": str(folder), "source": session.location, "files": len(entries),
            "bytes": size.apparent_bytes, "size_on_disk_bytes": size.allocated_bytes,
            "anchors": manifest["anchors"], "pending_updates": manifest["pending_updates"],
            "seconds": round(time.perf_counter() - start, 3)}


def read_manifest(source: str | os.PathLike[str]) -> dict[str, Any]:
    """A backup folder's manifest, checked for its format."""
    path = Path(source) / MANIFEST
    if not path.is_file():
        raise InputError(f"{source} is not a backup (no {MANIFEST}; an interrupted backup has none)")
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{path} is unreadable: {e}") from e
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise InputError(f"{path} is not an asif backup manifest")
    if int(manifest.get("version", 0)) > VERSION:
        raise InputError(f"{path} was written by a newer asif-vdb (backup version {manifest['version']})")
    return manifest


def verify(source: str | os.PathLike[str]) -> dict[str, Any]:
    """Check every file of a backup against its manifest (size and sha256) without copying."""
    manifest = read_manifest(source)
    root = Path(source) / "store"
    for rel, entry in manifest["files"].items():
        path = root / rel
        if not path.is_file():
            raise StoreError(f"backup {source} lacks {rel}: the backup is incomplete")
        if path.stat().st_size != int(entry["bytes"]) or disk.sha256(path) != entry["sha256"]:
            raise StoreError(f"backup file {path} does not match its checksum: the backup is damaged")
    return manifest


def restore(source: str | os.PathLike[str], target: str | os.PathLike[str], *, force: bool = False) -> dict[str, Any]:
    """Bring the backup in ``source`` back as the embedded store ``target``. An existing store there
    is kept unless ``force``; then it is replaced only once the restored copy is complete and
    checked. Returns what was restored."""
    start = time.perf_counter()
    manifest = read_manifest(source)
    if manifest.get("backend") != "edge":
        raise InputError(f"backup {source} holds a server's collections: restore it with url= (restore_to_server)")
    dest = Path(target)
    occupied = dest.exists() and (not dest.is_dir() or any(p.name != "asif.lock" for p in dest.iterdir()))
    if occupied and not force:
        raise StoreError(f"{dest} already holds a store (or other files): restoring would overwrite it; "
                         "give --force (force=True) to replace it, or choose a new folder")
    if occupied:
        if not dest.is_dir():
            raise StoreError(f"{dest} exists and is not a folder")
        held = holder(dest)
        if held is not None:
            raise StoreBusyError(busy_message(dest, held))
    dest.parent.mkdir(parents=True, exist_ok=True)
    fresh = dest.with_name(f".{dest.name}.restoring-{os.getpid()}")
    shutil.rmtree(fresh, ignore_errors=True)
    backend = EdgeBackend(fresh)
    try:
        files = {rel: str(e["sha256"]) for rel, e in manifest["files"].items()}
        if CONFIG_FILE not in files:
            raise StoreError(f"backup {source} has no {CONFIG_FILE}: it is not a store's backup")
        backend.restore_snapshot(Path(source) / "store", files)
    except BaseException:
        backend.close()
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    backend.close()
    old = dest.with_name(f".{dest.name}.replaced-{os.getpid()}") if occupied else None
    if old is not None:
        os.replace(dest, old)
    elif dest.exists():  # an empty folder (or one left with only a lock file)
        shutil.rmtree(dest)
    os.replace(fresh, dest)
    disk.fsync_dir(dest.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return {"store": str(dest), "backup": str(source), "files": len(files), "anchors": manifest.get("anchors"),
            "pending_updates": manifest.get("pending_updates", 0), "replaced": occupied,
            "seconds": round(time.perf_counter() - start, 3)}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    disk.fsync_dir(path.parent)
