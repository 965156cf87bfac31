"""``asif gallery`` (named collections of images or texts) and ``asif search`` (text -> image,
image -> text, by ASIF relative vectors)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import click

from asif_vdb.cli import friendly, open_client, store_options
from asif_vdb.errors import InputError


@click.group()
def gallery() -> None:
    """Galleries: named collections of images or texts to search with a text or an image."""


@gallery.command("add")
@store_options
@click.argument("name")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option("--table", type=click.Path(path_type=Path), default=None,
              help="CSV with a column 'image' (paths) or 'text'; other columns are stored as payload.")
@click.option("--images", "images_dir", type=click.Path(path_type=Path), default=None,
              help="Folder the table's image paths are relative to (default: the table's folder).")
@click.option("--text", "texts", multiple=True, help="A text to add (repeatable): makes a text gallery.")
@friendly
def gallery_add(store, url, api_key, name, files, table, images_dir, texts) -> None:
    """Add image FILES (or a --table, or --text items) to gallery NAME, created if new."""
    given = sum(bool(x) for x in (files, table, texts))
    if given != 1:
        raise click.UsageError("give image FILES, --table CSV or --text (one of the three)")
    images, text_items, payloads = None, None, None
    if files:
        images = list(files)
    elif texts:
        text_items = list(texts)
    else:
        images, text_items, payloads = _read_table(table, images_dir)
    with open_client(store, url, api_key) as client:
        ids = client.index_gallery(name, images=images, texts=text_items, payloads=payloads,
                                   progress=len(images or text_items or []) > 64)
        info = client.gallery(name)
    click.echo(f"gallery {name}: added {len(ids)} {info.modality}(s), ids {_span(ids)}; {info.size} in all")


def _read_table(table: Path, images_dir: Path | None) -> tuple[list[Path] | None, list[str] | None, list[dict[str, Any]]]:
    if not table.is_file():
        raise InputError(f"{table}: table not found")
    with table.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        rows = list(reader)
    if ("image" in columns) == ("text" in columns):
        raise InputError(f"{table}: needs exactly one of the columns 'image' and 'text'; found {columns}")
    key = "image" if "image" in columns else "text"
    payloads = [{c: v for c, v in r.items() if c != key and c is not None} for r in rows]
    if key == "text":
        return None, [r["text"] for r in rows], payloads
    root = images_dir or table.parent
    return [root / r["image"] for r in rows], None, payloads


def _span(ids: list[int]) -> str:
    if not ids:
        return "none"
    return f"{ids[0]}..{ids[-1]}" if ids == list(range(ids[0], ids[-1] + 1)) and len(ids) > 1 else \
        ",".join(map(str, ids))


@gallery.command("list")
@store_options
@friendly
def gallery_list(store, url, api_key) -> None:
    """List the stored galleries (name, modality, size)."""
    with open_client(store, url, api_key) as client:
        for name in client.galleries():
            info = client.gallery(name)
            click.echo(f"{name}\t{info.modality}\t{info.size} items" + ("\tstale (recomputed at next search)"
                                                                         if info.stale else ""))


@gallery.command("delete")
@store_options
@click.argument("name")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "drop_all", is_flag=True, help="Delete the whole gallery.")
@friendly
def gallery_delete(store, url, api_key, name, ids, drop_all) -> None:
    """Delete items IDS from gallery NAME, or the whole gallery with --all."""
    if bool(ids) == drop_all:
        raise click.UsageError("give item IDS or --all")
    with open_client(store, url, api_key) as client:
        if drop_all:
            client.delete_gallery(name)
            click.echo(f"gallery {name} deleted")
        else:
            n = client.delete_from_gallery(name, list(ids))
            click.echo(f"gallery {name}: deleted {n} of {len(ids)} item(s); {client.gallery(name).size} left")


@click.command()
@store_options
@click.argument("query")
@click.option("--gallery", "gallery_name", required=True,
              help="Gallery name, or 'anchors' (anchor images for a text, anchor captions for an image).")
@click.option("--top", type=int, default=10, show_default=True)
@click.option("--modality", type=click.Choice(["text", "image"]), default=None,
              help="What QUERY is (default: an image if it names an existing file, else a text).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per hit.")
@friendly
def search(store, url, api_key, query, gallery_name, top, modality, as_json) -> None:
    """Rank the items of a gallery for QUERY, a text or an image file."""
    with open_client(store, url, api_key) as client:
        hits = client.search(query, gallery_name, top=top, modality=modality)
    if not hits:
        click.echo("no item shares an anchor with the query", err=True)
    for rank, h in enumerate(hits, 1):
        if as_json:
            click.echo(json.dumps({"rank": rank, "id": h.id, "score": h.score, **h.payload}))
            continue
        extra = {k: v for k, v in h.payload.items() if k != "ref"}
        click.echo(f"{rank:>3}  {h.score:.4f}  #{h.id}  {h.payload.get('ref')}" + (f"  {json.dumps(extra)}" if extra else ""))
