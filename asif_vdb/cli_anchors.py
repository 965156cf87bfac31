"""``asif anchors add|delete|list``, ``asif doctor`` and ``asif prune`` (issue 5: live anchor updates).

Every command that changes anchors returns once the pairs are written and every label set and
gallery is fresh, and prints the anchor count before and after.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from asif_vdb.cli import friendly, open_client, store_options


@click.group()
def anchors() -> None:
    """Add, delete and list anchor pairs; label sets and galleries follow at once."""


@anchors.command("add")
@store_options
@click.argument("tables", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--images", "images_dir", type=click.Path(path_type=Path), default=None,
              help="Folder the tables' image paths are relative to (default: each table's folder).")
@click.option("--source", default=None, help="Source name stored with each pair (default: the table's name).")
@click.option("--limit", type=int, default=None, help="Add at most N pairs per table.")
@click.option("--batch", type=int, default=1024, show_default=True,
              help="Pairs encoded and written per update (each update refreshes the label sets once).")
@friendly
def anchors_add(store, url, api_key, tables, images_dir, source, limit, batch) -> None:
    """Add the image,caption pairs of each CSV TABLE."""
    from asif_vdb.minimal_ingest import ingest_csv

    with open_client(store, url, api_key, create=True) as client:
        before = client.count()
        t0 = time.perf_counter()
        reports = [ingest_csv(client, table, images_dir=images_dir, source=source, limit=limit, batch=batch)
                   for table in tables]
        after = client.count()
    added = sum(r["ingested"] for r in reports)
    duplicates = sum(r["duplicates"] for r in reports)
    click.echo(f"anchors: {before} -> {after} (+{added}, {duplicates} duplicate(s) skipped) "
               f"in {time.perf_counter() - t0:.1f} s; label sets and galleries refreshed")


@anchors.command("delete")
@store_options
@click.argument("ids", nargs=-1, type=int)
@click.option("--where", "conditions", multiple=True, metavar="KEY=VALUE",
              help="Delete every pair whose payload has KEY=VALUE (e.g. source=NAME); repeat to AND conditions.")
@click.option("--dry-run", is_flag=True, help="Only say how many pairs would be deleted.")
@friendly
def anchors_delete(store, url, api_key, ids, conditions, dry_run) -> None:
    """Delete anchor pairs by ID, or all pairs matching --where (e.g. one source's data)."""
    if bool(ids) == bool(conditions):
        raise click.UsageError("give anchor IDs or --where KEY=VALUE, not both and not neither")
    where = _conditions(conditions)
    with open_client(store, url, api_key) as client:
        before = client.count()
        targets = sorted(set(ids)) if ids else client.anchor_ids_where(**where)
        if dry_run:
            click.echo(f"anchors: {before}; would delete {len(targets)}")
            return
        t0 = time.perf_counter()
        removed = client.delete_anchors(targets)
        after = client.count()
    missing = len(targets) - removed
    click.echo(f"anchors: {before} -> {after} (-{removed}" + (f", {missing} id(s) not found" if missing else "")
               + f") in {time.perf_counter() - t0:.1f} s; label sets and galleries refreshed")


@anchors.command("list")
@store_options
@click.option("--where", "conditions", multiple=True, metavar="KEY=VALUE", help="Only pairs with KEY=VALUE.")
@click.option("--limit", type=int, default=20, show_default=True)
@friendly
def anchors_list(store, url, api_key, conditions, limit) -> None:
    """Print matching pairs (id, source, caption) and how many there are."""
    where = _conditions(conditions)
    with open_client(store, url, api_key) as client:
        ids = client.anchor_ids_where(**where) if where else None
        if ids is None:
            ids = [p.id for b in client.backend.scroll("anchor_text", None, with_payload=False) for p in b] \
                if client._index else []
        payloads = client.anchors(ids[:limit])
    for i in ids[:limit]:
        p = payloads.get(i, {})
        click.echo(f"{i}\t{p.get('source', '')}\t{p.get('caption', '')}")
    click.echo(f"{len(ids)} pair(s)" + (f" (first {limit} shown)" if len(ids) > limit else ""))


def _conditions(items: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.UsageError(f"--where takes KEY=VALUE, got {item!r}")
        out[key.strip()] = int(value) if value.lstrip("-").isdigit() else value
    return out


@click.command()
@store_options
@click.option("--repair", is_flag=True, help="Fix what can be fixed (default: only check).")
@click.option("--sample", type=int, default=None,
              help="Check the freshness of at most N candidates per modality (default: all).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of lines.")
@friendly
def doctor(store, url, api_key, repair, sample, as_json) -> None:
    """Check the store's invariants (complete pairs, fresh label sets and galleries, config) and,
    with --repair, fix them. Opening a store always finishes an interrupted update first; that is
    reported too. Exit code 1 when a problem remains."""
    from asif_vdb import doctor as doc

    with open_client(store, url, api_key) as client:
        checks = doc.run(client, repair=repair, sample=sample)
    if as_json:
        click.echo(json.dumps({"healthy": all(c.healthy for c in checks), "checks": [c.to_dict() for c in checks]}))
    else:
        for c in checks:
            click.echo(c.line())
        remaining = [c for c in checks if not c.healthy]
        click.echo("healthy" if not remaining else
                   f"{len(remaining)} problem(s) remain" + ("" if repair else "; run again with --repair"))
    if not all(c.healthy for c in checks):
        sys.exit(1)


@click.command()
@store_options
@click.option("--labels", "label_set", required=True, help="The label set to specialise the store for.")
@click.option("--keep", type=int, required=True, help="How many anchor pairs to keep.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Directory of the new store.")
@click.option("--sample", "sample_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Labelled images (a folder per class, named as the classes) that guide the choice and on "
                   "which accuracy is reported.")
@click.option("--k", "k", type=int, default=None, help="Non-zeros per relative vector in the new store "
              "(default: the smaller of the store's k and a tenth of the kept anchors).")
@click.option("--method", type=click.Choice(["auto", "candidates", "score_mass", "correct", "margin"]),
              default="auto", show_default=True,
              help="How anchors are ranked (auto: margin with --sample, else candidates).")
@friendly
def prune(store, url, api_key, label_set, keep, out, sample_dir, k, method) -> None:
    """Write a smaller store with the KEEP anchors that matter most to one label set, and report
    its accuracy against the full store's on --sample."""
    from asif_vdb import prune as pr

    with open_client(store, url, api_key) as client:
        vectors = labels = None
        if sample_dir is not None:
            vectors, labels = pr.encode_sample(client, sample_dir, client.label_set(label_set).classes)
        report = pr.prune_store(client, label_set, keep, out, query_vectors=vectors, query_labels=labels, k=k,
                                method=method)
    click.echo(json.dumps(report))
