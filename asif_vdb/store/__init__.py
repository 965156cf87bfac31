"""Store backends behind one interface (``Backend``), and the facade that picks one from the caller's arguments."""

from __future__ import annotations

import os

from asif_vdb.errors import StoreError
from asif_vdb.store.base import Backend, CollectionSpec, Filter, Hits, Match, PointData
from asif_vdb.store.readonly import open_edge
from asif_vdb.store.server import QdrantServerBackend


def open_backend(path: str | os.PathLike[str] | None = None, *, url: str | None = None, api_key: str | None = None,
                 location: str | None = None, prefix: str = "asif") -> Backend:
    """``path=`` opens the embedded Qdrant Edge store; ``url=`` a Qdrant server; ``location=':memory:'``
    qdrant-client's local mode (tests only). Exactly one must be given. An embedded store that cannot
    be written (a read-only mount) opens for reading only (store/readonly.py)."""
    given = [name for name, v in (("path", path), ("url", url), ("location", location)) if v is not None]
    if len(given) != 1:
        raise StoreError(f"open a store with exactly one of path=, url= or location=':memory:' (got {given or 'none'})")
    if path is not None:
        return open_edge(path)
    if url is not None:
        return QdrantServerBackend(url=url, api_key=api_key, prefix=prefix)
    if location != ":memory:":
        raise StoreError(f"location={location!r}: only ':memory:' is supported; use path= for a directory")
    return QdrantServerBackend(location=location, prefix=prefix)


__all__ = ["Backend", "CollectionSpec", "Filter", "Hits", "Match", "PointData", "open_backend"]
