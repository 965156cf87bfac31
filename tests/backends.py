"""Open the same client on every store backend: embedded Edge, qdrant-client :memory:, a real server."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

_SERVER_URL: str | None = None


def qdrant_server_url() -> str:
    """Start one Qdrant container per session with testcontainers; skip with the reason if impossible."""
    global _SERVER_URL
    if _SERVER_URL is not None:
        return _SERVER_URL
    if shutil.which("docker") is None:
        pytest.skip("server tests need Docker (no docker binary on this machine)")
    try:
        import docker

        docker.from_env().ping()
    except Exception as e:  # no engine, no socket, no permission
        pytest.skip(f"server tests need a running Docker engine: {e}")
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    container = DockerContainer("qdrant/qdrant:latest").with_exposed_ports(6333)
    container.start()
    wait_for_logs(container, "Qdrant gRPC listening", timeout=60)
    _SERVER_URL = f"http://{container.get_container_host_ip()}:{container.get_exposed_port(6333)}"
    return _SERVER_URL


@contextmanager
def open_store(kind: str, tmp_path: Path, **kwargs: Any) -> Iterator[Any]:
    from asif_vdb.client import AsifClient

    if kind == "edge":
        client = AsifClient(tmp_path / "store", **kwargs)
    elif kind == "memory":
        client = AsifClient(location=":memory:", **kwargs)
    elif kind == "server":
        client = AsifClient(url=qdrant_server_url(), prefix=f"t{uuid.uuid4().hex[:8]}", **kwargs)
    else:
        raise ValueError(kind)
    try:
        yield client
    finally:
        client.close()


BACKENDS = ["edge", "memory", pytest.param("server", marks=pytest.mark.server)]
