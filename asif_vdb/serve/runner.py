"""Running the service: in the foreground on a TCP port (``asif serve``), or in the background of a
command that holds the store for a while, on a private Unix socket (``shared``).

Either way the store's lock file records the address once the server accepts requests, and clears it
when the server stops: that is how another process's CLI or ``RemoteClient.for_store`` find it.
"""

from __future__ import annotations

import logging
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from asif_vdb import AsifClient
from asif_vdb.remote import RemoteClient
from asif_vdb.serve.app import create_app
from asif_vdb.serve.guard import GuardedClient
from asif_vdb.serve.service import Service, Settings
from asif_vdb.store.lock import StoreLock

log = logging.getLogger("asif_vdb.serve")


def uploads_folder(client: AsifClient) -> Path | None:
    """An embedded store keeps uploaded anchor images in its own ``uploads`` folder (so that backups
    take them along); a server store has no folder."""
    lock = StoreLock.held(client.location)
    return lock.store / "uploads" if lock is not None else None


def client_address(host: str, port: int) -> str:
    """The URL other processes use: a wildcard bind is reached through the loopback address."""
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(service: Service, host: str = "127.0.0.1", port: int = 8000, *, log_level: str = "info",
          ready: Any = None) -> None:
    """Serve until interrupted (Ctrl-C stops it cleanly); ``ready(url)`` is called once it accepts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    url = client_address(host, sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(create_app(service), log_level=log_level, server_header=False,
                                           timeout_graceful_shutdown=10))
    lock = StoreLock.held(service.client.location)
    watcher = threading.Thread(target=_when_started, args=(server, lock, url, ready), daemon=True)
    watcher.start()
    try:
        server.run(sockets=[sock])
    finally:
        if lock is not None:
            lock.advertise(None)
        sock.close()


def _when_started(server: uvicorn.Server, lock: StoreLock | None, url: str, ready: Any) -> None:
    while not server.started and not server.should_exit:
        time.sleep(0.02)
    if server.started:
        if lock is not None:
            lock.advertise(url)
        if ready is not None:
            ready(url)


@contextmanager
def shared(client: AsifClient | RemoteClient, settings: Settings | None = None) -> Iterator[Any]:
    """Serve the store from a background thread while the caller works on it, on a Unix socket in a
    private folder (only this user can connect), named by the store's lock file. Yields the client
    to work with: every store operation of it goes through the same guard as the requests', so a
    request sees the store before or after each update. A store with no lock (a server) is not
    shared: the client is yielded as it is."""
    lock = StoreLock.held(client.location) if isinstance(client, AsifClient) else None
    if lock is None or not isinstance(client, AsifClient):
        yield client
        return
    service = Service(client, settings or Settings(uploads=uploads_folder(client)))
    folder = Path(tempfile.mkdtemp(prefix="asif-share-"))
    path = folder / "asif.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    server = uvicorn.Server(uvicorn.Config(create_app(service), log_level="warning", lifespan="off",
                                           server_header=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="asif-share", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    if server.started:
        lock.advertise(f"unix:{path}")
    else:  # sharing is a convenience: the work goes on without it
        log.warning("could not share the store through %s; other processes cannot read it meanwhile", path)
    try:
        yield GuardedClient(client, service.guard)
    finally:
        lock.advertise(None)
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        shutil.rmtree(folder, ignore_errors=True)
