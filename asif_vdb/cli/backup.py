"""``asif backup`` and ``asif restore``: a consistent copy of a store with checksums, and bringing it back."""

from __future__ import annotations

from pathlib import Path

import click

from asif_vdb import AsifClient
from asif_vdb.cli.common import echo_json, friendly, json_option, open_client, store_options


@click.command("backup")
@store_options
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="A new (or empty) folder for the backup.")
@json_option
@friendly
def backup(store: Path | None, url: str | None, api_key: str | None, out: Path, as_json: bool) -> None:
    """Write a consistent copy of the store (config and journal, every collection, every blob, and a
    manifest with each file's sha256) to --out. A store served by another process is backed up by
    that process, which keeps answering queries meanwhile."""
    with open_client(store, url, api_key) as client:
        report = client.backup(out)
    if as_json:
        echo_json(report)
    else:
        click.echo(f"backup of {report['source']} ({report['anchors']} anchors) written to {report['backup']}: "
                   f"{report['files']} files, {report['size_on_disk_bytes'] / 2**20:.1f} MiB on disk "
                   f"({report['bytes'] / 2**20:.1f} MiB apparent) in {report['seconds']} s")


@click.command("restore")
@click.argument("backup_dir", type=click.Path(path_type=Path))
@click.option("--store", "store", envvar="ASIF_STORE", required=True, type=click.Path(path_type=Path),
              help="The embedded store to bring back (a new folder, or an existing store with --force).")
@click.option("--force", is_flag=True, help="Replace an existing store (only once the restored copy is checked).")
@json_option
@friendly
def restore(backup_dir: Path, store: Path, force: bool, as_json: bool) -> None:
    """Bring back the backup in BACKUP_DIR as --store, checking every file against the manifest."""
    report = AsifClient.restore(backup_dir, store, force=force)
    if as_json:
        echo_json(report)
    else:
        click.echo(f"restored {report['files']} files ({report['anchors']} anchors) from {report['backup']} to "
                   f"{report['store']}" + (" (the previous store replaced)" if report["replaced"] else "")
                   + f" in {report['seconds']} s")
