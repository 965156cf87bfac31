"""``asif serve``: the store behind an HTTP API (FastAPI) and a web page, many readers and live updates.

``create_app`` builds the application over a ``Service`` (one open store, its guard, the settings);
``runner`` serves it on a TCP port (``asif serve``) or, for a command that holds the store for a
while (``asif ingest``), on a private Unix socket that the store's lock file names, so that other
processes read through it instead of failing to open the store.
"""

from asif_vdb.serve.app import create_app
from asif_vdb.serve.guard import GuardedClient, StoreGuard
from asif_vdb.serve.service import Service, Settings

__all__ = ["GuardedClient", "Service", "Settings", "StoreGuard", "create_app"]
