"""``asif serve``: the store behind an HTTP API and a web page (asif_vdb/serve/)."""

from __future__ import annotations

import ipaddress
import signal
from pathlib import Path

import click

from asif_vdb import AsifClient
from asif_vdb.cli.common import friendly, open_client
from asif_vdb.serve.runner import serve as run_service
from asif_vdb.serve.runner import uploads_folder
from asif_vdb.serve.service import Service, Settings


@click.command("serve")
@click.option("--store", "store", envvar="ASIF_STORE", default=None, type=click.Path(path_type=Path),
              help="Embedded store directory (default ./asif_store, or $ASIF_STORE).")
@click.option("--url", envvar="ASIF_URL", default=None, help="Qdrant server URL instead of --store.")
@click.option("--qdrant-api-key", envvar="ASIF_API_KEY", default=None, help="The Qdrant server's API key (with --url).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (loopback only by default; 0.0.0.0 for every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port (0: any free one).")
@click.option("--api-key", envvar="ASIF_SERVE_API_KEY", default=None,
              help="Key that requests changing the store must send in the X-API-Key header ($ASIF_SERVE_API_KEY).")
@click.option("--cors", "cors", multiple=True, metavar="ORIGIN",
              help="Let pages from ORIGIN (e.g. http://localhost:3000) call the API; repeatable. Off by default.")
@click.option("--max-upload-mb", type=click.IntRange(min=1), default=32, show_default=True,
              help="Largest uploaded file (image or table).")
@click.option("--uploads", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where uploaded anchor images are kept (default: the embedded store's uploads folder).")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True, help="Server log level (requests are logged at info; keys never are).")
@click.option("--warm-up/--no-warm-up", "warm_up", default=True, show_default=True,
              help="Search the anchors a few times before listening, so the first query is not the slow one.")
@friendly
def serve(store: Path | None, url: str | None, qdrant_api_key: str | None, host: str, port: int, api_key: str | None,
          cors: tuple[str, ...], max_upload_mb: int, uploads: Path | None, log_level: str, warm_up: bool) -> None:
    """Serve the store: the web page at /, the API at /docs. One process holds the store; queries
    run side by side and see the store before or after each update, never in between; updates
    queue. Other `asif` commands on the same store are sent here automatically. Ctrl-C stops."""
    if not _loopback(host) and api_key is None:
        click.echo(f"warning: listening on {host} without --api-key: anyone who can reach this port can change "
                   "the store", err=True)
    client = open_client(store, url, qdrant_api_key)
    if not isinstance(client, AsifClient):
        client.close()
        raise click.UsageError(f"the store is already served at {client.location}")
    with client:
        settings = Settings(api_key=api_key, cors=cors, max_upload_bytes=max_upload_mb << 20,
                            uploads=uploads or uploads_folder(client))
        service = Service(client, settings)

        warm = f", warmed up in {client.warm_up():.2f} s" if warm_up and client.engine is not None else ""

        def ready(address: str) -> None:
            click.echo(f"serving {client.location} ({client.count()} anchors{warm}) at {address}: the page at "
                       f"{address}/, the API at {address}/docs; Ctrl-C stops", err=True)

        previous = signal.signal(signal.SIGTERM, _interrupt)  # a stop request closes the store like Ctrl-C
        try:
            run_service(service, host, port, log_level=log_level, ready=ready)
        except OSError as e:
            raise click.UsageError(str(e)) from None
        except KeyboardInterrupt:  # uvicorn stops cleanly on the signal, then raises it again
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
    click.echo("stopped; the store is closed", err=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
