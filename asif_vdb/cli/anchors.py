"""``asif anchors add|delete|list``: anchor pairs change and every label set and gallery follows at once."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from asif_vdb.cli.common import (
    EXIT_NOTHING,
    echo_json,
    friendly,
    json_option,
    new_store_kwargs,
    new_store_options,
    open_client,
    parse_conditions,
    store_options,
    store_path,
)
from asif_vdb.serve.runner import shared
from ingest.config import IngestConfig
from ingest.pipeline import default_report_path, open_input, run_ingest


@click.group()
def anchors() -> None:
    """Add, delete and list anchor pairs; label sets and galleries follow at once."""


@anchors.command("add")
@store_options
@click.argument("inputs", nargs=-1, required=True)
@click.option("--images", "images_dir", type=click.Path(path_type=Path), default=None,
              help="Folder the tables' image paths are relative to (default: each table's folder).")
@click.option("--source", default=None, help="Source name stored with each pair (default: from each input).")
@click.option("--limit", type=click.IntRange(min=0), default=None, help="Add at most N pairs per input.")
@click.option("--batch", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Pairs encoded and written per update (each update refreshes the label sets once).")
@click.option("--encoding", default="utf-8-sig", show_default=True, help="Text encoding of CSV/TSV/JSONL tables.")
@click.option("--report", type=click.Path(path_type=Path), default=None,
              help="JSONL of skipped pairs and their reasons (default: STORE.ingest-report.jsonl).")
@new_store_options
@json_option
@friendly
def anchors_add(store: Path | None, url: str | None, api_key: str | None, inputs: tuple[str, ...],
                images_dir: Path | None, source: str | None, limit: int | None, batch: int, encoding: str,
                report: Path | None, image_encoder: str | None, text_encoder: str | None, k: int | None,
                p: float | None, index_preset: str | None, quantization: str | None, hnsw: bool | None,
                shards: int | None, replicas: int | None, as_json: bool) -> None:
    """Add the pairs of each INPUT (a table image,caption or any format `asif ingest` reads). Bad
    pairs are skipped and listed in the report; the count before and after is printed."""
    report_path = str(report) if report else default_report_path(None if url else store_path(store))
    configs = [IngestConfig(input=item, images_dir=str(images_dir) if images_dir else None, source=source,
                            limit=limit, batch=batch, encoding=encoding, report=report_path, progress=False).check()
               for item in inputs]
    for config in configs:
        open_input(config)  # a wrong input is reported before any store is created
    with open_client(store, url, api_key, create=True, **new_store_kwargs(image_encoder, text_encoder, k, p, index_preset, quantization,
                                                                            hnsw, shards, replicas)) as client, \
            shared(client) as working:  # other processes read the store through this one meanwhile
        before = working.count()
        t0 = time.perf_counter()
        summaries = [run_ingest(working, config) for config in configs]
        after = working.count()
    added = sum(s.ingested for s in summaries)
    skipped = sum(sum(n for r, n in s.skipped.items() if r != "already_stored") for s in summaries)
    stored = sum(s.already_stored for s in summaries)
    result = {"anchors_before": before, "anchors_after": after, "added": added, "already_stored": stored,
              "skipped": skipped, "seconds": round(time.perf_counter() - t0, 2), "report": report_path}
    if as_json:
        echo_json(result)
    else:
        click.echo(f"anchors: {before} -> {after} (+{added}; {stored} already stored, {skipped} skipped: see "
                   f"{report_path}) in {result['seconds']} s; label sets and galleries refreshed")
    if added == 0 and stored == 0:
        sys.exit(EXIT_NOTHING)


@anchors.command("delete")
@store_options
@click.argument("ids", nargs=-1, type=click.IntRange(min=0))
@click.option("--where", "conditions", multiple=True, metavar="KEY=VALUE",
              help="Delete every pair whose payload has KEY=VALUE (e.g. source=NAME); repeat to AND conditions.")
@click.option("--dry-run", is_flag=True, help="Only say how many pairs would be deleted.")
@json_option
@friendly
def anchors_delete(store: Path | None, url: str | None, api_key: str | None, ids: tuple[int, ...],
                   conditions: tuple[str, ...], dry_run: bool, as_json: bool) -> None:
    """Delete anchor pairs by ID, or all pairs matching --where (e.g. one source's data)."""
    if bool(ids) == bool(conditions):
        raise click.UsageError("give anchor IDs or --where KEY=VALUE, not both and not neither")
    with open_client(store, url, api_key) as client:
        before = client.count()
        targets = sorted(set(ids)) if ids else client.anchor_ids_where(**parse_conditions(conditions))
        t0 = time.perf_counter()
        removed = 0 if dry_run else client.delete_anchors(targets)
        after = client.count()
    result: dict[str, Any] = {"anchors_before": before, "anchors_after": after, "matched": len(targets),
                              "deleted": removed, "dry_run": dry_run, "seconds": round(time.perf_counter() - t0, 2)}
    if as_json:
        echo_json(result)
    elif dry_run:
        click.echo(f"anchors: {before}; would delete {len(targets)}")
    else:
        missing = len(targets) - removed
        click.echo(f"anchors: {before} -> {after} (-{removed}" + (f", {missing} id(s) not found" if missing else "")
                   + f") in {result['seconds']} s; label sets and galleries refreshed")
    if not dry_run and removed == 0:
        sys.exit(EXIT_NOTHING)


@anchors.command("list")
@store_options
@click.option("--where", "conditions", multiple=True, metavar="KEY=VALUE", help="Only pairs with KEY=VALUE.")
@click.option("--limit", type=click.IntRange(min=0), default=20, show_default=True, help="Show at most N pairs.")
@json_option
@friendly
def anchors_list(store: Path | None, url: str | None, api_key: str | None, conditions: tuple[str, ...], limit: int,
                 as_json: bool) -> None:
    """Print matching pairs (id, source, caption) and how many there are."""
    where = parse_conditions(conditions)
    with open_client(store, url, api_key) as client:
        ids = client.anchor_ids_where(**where) if where else client.anchor_ids()
        payloads = client.anchors(ids[:limit])
    if as_json:
        echo_json({"count": len(ids), "pairs": [{"id": i, **payloads.get(i, {})} for i in ids[:limit]]})
        return
    for i in ids[:limit]:
        pl = payloads.get(i, {})
        click.echo(f"{i}\t{pl.get('source', '')}\t{pl.get('caption', '')}")
    click.echo(f"{len(ids)} pair(s)" + (f" (first {limit} shown)" if len(ids) > limit else ""))
