"""The lock of an embedded store: one process holds it while the store is open.

Qdrant Edge opens every file read-write and has no read-only mode, so two processes must never open
one store; its own WAL lock only says "Kind(WouldBlock)". This lock comes first and names the
holder: ``fcntl.flock`` on ``PATH/asif.lock``, whose JSON records the holder's pid, host and start
time, and the address of the service through which it shares the store (``asif serve``, or a
long-running command), so that readers can send their requests there.

The kernel releases a flock when its process dies, however it dies: a lock file left by a killed
process is stale by definition, and the next open takes it over and rewrites it (``stale`` then
records the holder it replaced). The file is never deleted, so two openers always lock the same
inode.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from asif_vdb.errors import StoreBusyError, StoreError

LOCK_FILE = "asif.lock"
#: A probe by a reader (``holder``) holds the lock for microseconds; an opener retries this long.
RETRY_SECONDS = 0.2


@dataclass(frozen=True)
class Holder:
    """Who holds a store: what its lock file says."""

    pid: int
    host: str
    started: float
    #: Where the holder serves the store (``http://HOST:PORT`` or ``unix:PATH``), if it does.
    serve: str | None = None

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        try:
            data: Any = json.loads(text)
            return cls(pid=int(data["pid"]), host=str(data["host"]), started=float(data["started"]),
                       serve=str(data["serve"]) if data.get("serve") else None)
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        if self.host != socket.gethostname():
            return f"another process (pid {self.pid} on {self.host})"
        if self.pid == os.getpid():
            return "this process"
        return f"another process (pid {self.pid})" if self.pid > 0 else "another process"


def busy_message(store: Path, holder: Holder | None) -> str:
    """The one line a second opener gets."""
    who = holder.describe() if holder is not None else "another process"
    return f"store {store} is open in {who}"


class StoreLock:
    """The held lock of one store (``acquire``); ``release`` on close."""

    #: Locks this process holds, by store directory (so a service can advertise its address).
    _held: dict[Path, StoreLock] = {}

    def __init__(self, store: Path, fd: int, holder: Holder, stale: Holder | None) -> None:
        self.store = store
        self._fd: int | None = fd
        self.holder = holder
        #: The holder named by a lock file whose process had died (None when the file was free).
        self.stale = stale

    @classmethod
    def acquire(cls, store: Path) -> StoreLock:
        """Lock ``store`` for this process, or raise StoreBusyError naming the holder."""
        store = Path(store)
        key = store.resolve()
        path = store / LOCK_FILE
        deadline = time.monotonic() + RETRY_SECONDS
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as e:
                raise StoreError(f"cannot create the lock file {path}: {e.strerror or e}") from e
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                previous = _read(fd)
                os.close(fd)
                if key in cls._held or time.monotonic() > deadline:
                    raise StoreBusyError(busy_message(store, previous)) from None
                time.sleep(0.02)
                continue
            break
        stale = _read(fd)
        holder = Holder(pid=os.getpid(), host=socket.gethostname(), started=time.time())
        lock = cls(store, fd, holder, stale)
        lock._write()
        cls._held[key] = lock
        return lock

    @classmethod
    def held(cls, store: str | os.PathLike[str]) -> StoreLock | None:
        """The lock this process holds on ``store``, if any."""
        return cls._held.get(Path(store).resolve())

    def advertise(self, serve: str | None) -> None:
        """Record (or, with None, clear) the address through which this process shares the store."""
        self.holder = Holder(self.holder.pid, self.holder.host, self.holder.started, serve)
        self._write()

    def _write(self) -> None:
        if self._fd is None:
            return
        data = json.dumps(asdict(self.holder)).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)
        os.fsync(self._fd)

    def release(self) -> None:
        """Unlock (the file stays, naming its last holder: a flock nobody holds is free)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        type(self)._held.pop(self.store.resolve(), None)
        try:
            os.ftruncate(fd, 0)
        except OSError:  # the lock matters, not its note
            pass
        os.close(fd)  # closing the descriptor releases the flock


def holder(store: str | os.PathLike[str]) -> Holder | None:
    """Who holds ``store`` now (None when nobody does, or there is no lock file)."""
    path = Path(store) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            for _ in range(5):  # the holder may be rewriting its note this very moment
                note = _read(fd)
                if note is not None:
                    return note
                time.sleep(0.02)
            return Holder(pid=0, host=socket.gethostname(), started=0.0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read(fd: int) -> Holder | None:
    try:
        return Holder.parse(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
    except OSError:
        return None
