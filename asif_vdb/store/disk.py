"""Files of an embedded store on disk: sparse-preserving copies, sizes, checksums.

Qdrant Edge preallocates its write-ahead log (two 32 MiB segments per shard) and its payload pages
as sparse files: a small store has a few MiB on disk and hundreds of MiB of apparent size. A plain
copy (``shutil.copy``, ``cp`` without ``--sparse``) writes those holes out as zeros; these helpers
copy only the data extents (``SEEK_DATA``/``SEEK_HOLE``) and report both sizes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from asif_vdb.errors import StoreError
from asif_vdb.store.lock import LOCK_FILE

CHUNK = 1 << 20
_ZEROS = bytes(CHUNK)


@dataclass
class Usage:
    """Sizes of a directory tree: on disk (allocated blocks) and apparent (file lengths), and of its
    write-ahead logs (``wal/`` folders): allocated, and reserved ahead of writes (preallocated
    length not yet written)."""

    allocated_bytes: int = 0
    apparent_bytes: int = 0
    wal_allocated_bytes: int = 0
    wal_reserved_bytes: int = 0
    files: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"size_on_disk_bytes": self.allocated_bytes, "apparent_bytes": self.apparent_bytes,
                "wal_bytes": self.wal_allocated_bytes, "wal_reserved_bytes": self.wal_reserved_bytes,
                "files": self.files}


def usage(root: Path) -> Usage:
    """Sizes of every regular file under ``root`` (links are not followed)."""
    out = Usage()
    for path in walk(root):
        st = path.lstat()
        allocated = st.st_blocks * 512
        out.files += 1
        out.allocated_bytes += allocated
        out.apparent_bytes += st.st_size
        if "wal" in path.relative_to(root).parts[:-1]:
            out.wal_allocated_bytes += allocated
            out.wal_reserved_bytes += max(st.st_size - allocated, 0)
    return out


def walk(root: Path) -> Iterator[Path]:
    """Regular files under ``root``, sorted (symbolic links and special files are skipped)."""
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                yield path


def extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """(offset, length) of each data extent of an open file; the whole file where the file system
    cannot say."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole is left; EINVAL: SEEK_DATA unsupported
            if pos == 0 and not _supports_holes(fd):
                yield 0, size
            return
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, end - start
        pos = end


def _supports_holes(fd: int) -> bool:
    try:
        os.lseek(fd, 0, os.SEEK_HOLE)
        return True
    except OSError:
        return False


def copy_file(src: Path, dst: Path, sync: bool = True, digest_it: bool = True) -> str:
    """Copy ``src`` to ``dst`` keeping its holes; returns the sha256 of its content (holes read as
    zeros, so the digest does not depend on how the file is stored; "" without ``digest_it``).
    ``sync``: fsync the copy."""
    digest: Any = hashlib.sha256() if digest_it else _NoDigest()
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        size = os.fstat(fin.fileno()).st_size
        for offset, block in _data_blocks(fin, size, digest):
            fout.seek(offset)
            fout.write(block)
        fout.truncate(size)
        fout.flush()
        if sync:
            os.fsync(fout.fileno())
    os.chmod(dst, src.stat().st_mode & 0o777)
    return digest.hexdigest()


def sha256(path: Path) -> str:
    """The sha256 of a file's content, reading only its data extents (holes hash as zeros)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for _ in _data_blocks(f, os.fstat(f.fileno()).st_size, digest):
            pass
    return digest.hexdigest()


def _data_blocks(f: BinaryIO, size: int, digest: Any) -> Iterator[tuple[int, bytes]]:
    """The blocks of an open file's data extents with their offsets, each added to ``digest``, and
    the holes between them hashed as zeros: a sparse file reads and hashes as its apparent content."""
    pos = 0
    for start, length in extents(f.fileno(), size):
        _hash_zeros(digest, start - pos)
        f.seek(start)
        offset, left = start, length
        while left > 0:
            block = f.read(min(CHUNK, left))
            if not block:
                break
            digest.update(block)
            yield offset, block
            offset += len(block)
            left -= len(block)
        pos = start + length - left
    _hash_zeros(digest, size - pos)


class _NoDigest:
    """Stands in for a digest when none is wanted (a private copy, not a backup)."""

    def update(self, data: bytes) -> None:
        pass

    def hexdigest(self) -> str:
        return ""


def _hash_zeros(digest: Any, n: int) -> None:
    if isinstance(digest, _NoDigest):
        return
    while n > 0:
        step = min(n, CHUNK)
        digest.update(_ZEROS[:step])
        n -= step


def not_store_file(rel: Path) -> bool:
    """Files a copy of a store leaves out: the lock, half-written temporaries, dropped collections."""
    return rel.name == LOCK_FILE or rel.suffix == ".tmp" or any(part.startswith(".trash-") for part in rel.parts)


def copy_tree(src: Path, dst: Path, skip: Callable[[Path], bool] = lambda rel: False,
              digests: bool = True) -> dict[str, str]:
    """Copy every regular file under ``src`` into ``dst`` (sparse, then made durable); returns relative
    path -> sha256 (empty strings without ``digests``). Files whose relative path ``skip`` accepts are
    left out."""
    out: dict[str, str] = {}
    dst.mkdir(parents=True, exist_ok=True)
    for path in walk(src):
        rel = path.relative_to(src)
        if skip(rel):
            continue
        out[rel.as_posix()] = copy_file(path, dst / rel, sync=False, digest_it=digests)
    sync_tree(dst, [dst / rel for rel in out])
    return out


def sync_tree(root: Path, files: list[Path]) -> None:
    """fsync files and their folders, several at a time (each fsync waits for the disk, not the CPU:
    one at a time, 190 small files of a store take 0.7 s)."""
    folders = sorted({f.parent for f in files} | {root})
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(_fsync_path, [*files, *folders]))


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def restore_files(src: Path, dst: Path, files: dict[str, str]) -> None:
    """Copy the listed files (relative paths under ``src``) into ``dst``, checking each one's sha256
    as it is copied; a name that would leave ``dst`` is refused."""
    root = dst.resolve()
    for rel, want in sorted(files.items()):
        target = (dst / rel).resolve()
        if Path(rel).is_absolute() or ".." in Path(rel).parts or not target.is_relative_to(root):
            raise StoreError(f"backup file name {rel!r} leaves the store directory")
        if not (src / rel).is_file():
            raise StoreError(f"backup file {src / rel} is missing: the backup is incomplete")
        got = copy_file(src / rel, dst / rel, sync=False)
        if got != want:
            raise StoreError(f"backup file {src / rel} does not match its checksum (sha256 {got[:12]}..., "
                             f"manifest {want[:12]}...): the backup is damaged")
    sync_tree(dst, [dst / rel for rel in files])


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (renames, new files) durable."""
    _fsync_path(path)


def read_only(path: Path) -> bool:
    """Whether ``path`` (an existing directory) lies on a read-only file system or cannot be written."""
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return True
    except OSError:
        return False
    return not os.access(path, os.W_OK)
