"""Files of an embedded store: the config written atomically beside a copy of its previous version,
the free-space check that stands between a write and a full disk, and reading a shard ahead.

Qdrant Edge writes through memory-mapped files that it preallocates sparse (each write-ahead log
segment and payload page is 32 MiB long but takes no room until written). A write that lands in such
a hole on a full disk kills the process with SIGBUS: Python never sees an error. So the store checks
the room before it writes: the free space must cover every hole its files still have (what the
engine may fill without asking) plus a margin for the files it creates (a new log segment, a segment
rebuilt by an optimisation).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asif_vdb.errors import StoreError

MIB = 1 << 20
#: Room kept free beyond the holes of the store's files: new write-ahead log segments (32 MiB each)
#: and new segment files appear between two checks.
MARGIN = 96 * MIB
#: Seconds between two walks of the store's files to add up their holes (writes in between are
#: covered by the margin); free space itself is read at every check.
HOLES_TTL = 2.0
#: Bytes per read of ``read_ahead``.
READ_AHEAD_CHUNK = 8 * MIB


def backup_path(path: Path) -> Path:
    """The previous version of a file kept beside it (``asif_config.json.bak``)."""
    return path.with_name(path.name + ".bak")


def write_with_backup(path: Path, data: dict[str, Any]) -> None:
    """Replace a JSON file atomically, keeping its previous version as ``NAME.bak``: one damaged or
    deleted file is never the only copy. Both renames are atomic, so a crash leaves the old or the
    new version at each name, never a partial one. A full disk is one line naming the file."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            keep = path.with_name(path.name + ".bak.tmp")
            keep.unlink(missing_ok=True)
            try:
                os.link(path, keep)  # the previous version's own inode: no copy, nothing to fsync
            except OSError:
                shutil.copy2(path, keep)
            os.replace(keep, backup_path(path))
        os.replace(tmp, path)
        _sync_dir(path.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise io_error(e, path) from e


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``; None when the file is missing, empty, cut short or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    return data if isinstance(data, dict) else None


def _sync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # a platform without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def io_error(e: OSError, path: Path) -> StoreError:
    """An OS error on a store file as one line (a full disk says so, with the free space)."""
    if e.errno == errno.ENOSPC:
        return StoreError(f"no space left on the device of {path} ({free_bytes(path) / MIB:.0f} MiB free): "
                          "free some space, or move the store; nothing was lost")
    return StoreError(f"cannot write {path}: {e.strerror or e}")


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem of ``path``."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    st = os.statvfs(probe)
    return int(st.f_bavail) * int(st.f_frsize)


def holes(root: Path) -> int:
    """Bytes the files under ``root`` are longer than the room they take: preallocated sparse space
    the engine may fill through memory maps at any write."""
    total = 0
    for directory, _, names in os.walk(root):
        for name in names:
            try:
                st = os.stat(os.path.join(directory, name))
            except OSError:  # removed while walking
                continue
            total += max(0, st.st_size - st.st_blocks * 512)
    return total


class SpaceGuard:
    """Refuses a write (StoreError, one line) when the disk could fill up under it."""

    def __init__(self, root: Path, margin: int = MARGIN) -> None:
        self.root = root
        self.margin = margin
        self._holes = 0
        self._walked = float("-inf")

    def need(self, extra: int = 0) -> int:
        """Bytes that must be free before a write: the holes, the margin, and ``extra``."""
        now = time.monotonic()
        if now - self._walked > HOLES_TTL:
            self._holes = holes(self.root)
            self._walked = now
        return self._holes + self.margin + extra

    def check(self, what: str, extra: int = 0) -> None:
        """Raise before ``what`` when the free space does not cover ``need(extra)``."""
        free = free_bytes(self.root)
        need = self.need(extra)
        if free < need:
            raise StoreError(
                f"not enough free space to {what} in {self.root}: {free / MIB:.0f} MiB free, the store needs "
                f"{need / MIB:.0f} MiB free to write safely (see `asif info` and the guide's 'Disk space'); "
                "free some space or move the store; nothing was written")

    def forget(self) -> None:
        """Walk the files again at the next check (a collection was created, opened or rebuilt)."""
        self._walked = float("-inf")


def tree_bytes(root: Path) -> tuple[int, int]:
    """(bytes the files under ``root`` take on disk, their apparent length)."""
    used = apparent = 0
    for directory, _, names in os.walk(root):
        for name in names:
            try:
                st = os.stat(os.path.join(directory, name))
            except OSError:
                continue
            used += st.st_blocks * 512
            apparent += st.st_size
    return used, apparent


def read_ahead(root: Path, stop: Callable[[], bool] | None = None) -> int:
    """Read the files under ``root`` (write-ahead logs aside) into the page cache, smallest first: a
    memory-mapped shard's index (quantized vectors, graph, payload indexes) comes before its original
    vectors, the largest file. Sequential reads run at disk speed, where the page faults of a search
    on a cold shard read 4 KiB at a time. ``stop`` is asked between chunks. Returns the bytes read;
    a file that vanishes meanwhile (a segment replaced by an optimisation) is skipped."""
    files = []
    for directory, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d != "wal"]
        for name in names:
            path = os.path.join(directory, name)
            try:
                files.append((os.stat(path).st_size, path))
            except OSError:
                continue
    done = 0
    buffer = bytearray(READ_AHEAD_CHUNK)
    for _, path in sorted(files):
        try:
            with open(path, "rb", buffering=0) as f:
                while n := f.readinto(buffer):
                    done += n
                    if stop is not None and stop():
                        return done
        except OSError:
            continue
    return done
