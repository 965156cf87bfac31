"""``asif gallery add|list|delete`` (named collections of images or texts) and ``asif search``
(text -> image, image -> text, by ASIF relative vectors)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from asif_vdb import InputError
from asif_vdb.cli.common import (
    EXIT_NOTHING,
    echo_json,
    friendly,
    image_inputs,
    json_option,
    open_client,
    report_skipped,
    skipped_images,
    store_options,
    top_option,
)
from ingest.readers.datasets import item_table


@click.group()
def gallery() -> None:
    """Galleries: named collections of images or texts to search with a text or an image."""


@gallery.command("add")
@store_options
@click.argument("name")
@click.argument("files", nargs=-1)
@click.option("--table", type=click.Path(path_type=Path), default=None,
              help="A table with a column 'image' (paths) or 'text'; other columns are stored as payload.")
@click.option("--images", "images_dir", type=click.Path(path_type=Path), default=None,
              help="Folder the table's image paths are relative to (default: the table's folder).")
@click.option("--encoding", default="utf-8-sig", show_default=True, help="Text encoding of the table.")
@click.option("--text", "texts", multiple=True, help="A text to add (repeatable): makes a text gallery.")
@json_option
@friendly
def gallery_add(store: Path | None, url: str | None, api_key: str | None, name: str, files: tuple[str, ...],
                table: Path | None, images_dir: Path | None, encoding: str, texts: tuple[str, ...],
                as_json: bool) -> None:
    """Add image FILES (files, folders or glob patterns), a --table, or --text items to gallery NAME,
    created if new. Unreadable images and empty rows are skipped and named on stderr."""
    if sum(bool(x) for x in (files, table, texts)) != 1:
        raise click.UsageError("give image FILES, --table or --text (one of the three)")
    images: list[Any] | None = None
    text_items: list[str] | None = None
    payloads: list[dict[str, Any]] | None = None
    skipped = 0
    if files:
        images, missing = image_inputs(files)
        skipped += report_skipped(missing)
    elif texts:
        text_items = list(texts)
    else:
        assert table is not None
        items = item_table(table, images_dir, encoding)
        skipped += report_skipped(items.skipped)
        images, text_items, payloads = items.images, items.texts, items.payloads
    with open_client(store, url, api_key) as client:
        if images is not None:
            vectors, kept, errors = client.encode_images_skipping(images, progress=len(images) > 64)
            skipped += report_skipped(skipped_images(images, errors))
            chosen = [payloads[i] if payloads is not None else {} for i in kept]
            ids = client.index_gallery_embeddings(name, vectors, "image",
                                                  [{"ref": str(Path(images[i]).resolve()), **p}
                                                   for i, p in zip(kept, chosen)]) if kept else []
        else:
            ids = client.index_gallery(name, texts=text_items, payloads=payloads,
                                       progress=len(text_items or []) > 64)
        size = client.gallery(name).size if ids else 0
        modality = client.gallery(name).modality if ids else ("image" if images is not None else "text")
    if as_json:
        echo_json({"gallery": name, "added": len(ids), "ids": ids, "skipped": skipped, "size": size})
    else:
        click.echo(f"gallery {name}: added {len(ids)} {modality}(s), ids {_span(ids)}; {size} in all"
                   + (f"; {skipped} skipped" if skipped else ""))
    if not ids:
        sys.exit(EXIT_NOTHING)


def _span(ids: list[int]) -> str:
    if not ids:
        return "none"
    return f"{ids[0]}..{ids[-1]}" if ids == list(range(ids[0], ids[-1] + 1)) and len(ids) > 1 else \
        ",".join(map(str, ids))


@gallery.command("list")
@store_options
@json_option
@friendly
def gallery_list(store: Path | None, url: str | None, api_key: str | None, as_json: bool) -> None:
    """List the stored galleries (name, modality, size)."""
    with open_client(store, url, api_key) as client:
        infos = [client.gallery(n) for n in client.galleries()]
    if as_json:
        echo_json([{**i.model_dump(exclude={"behind_added", "behind_deleted"}),
                    "behind": len(i.behind_added) + len(i.behind_deleted)} for i in infos])
        return
    for info in infos:
        behind = len(info.behind_added) + len(info.behind_deleted)
        click.echo(f"{info.name}\t{info.modality}\t{info.size} items"
                   + (f"\t{behind} anchor change(s) applied at its next search" if behind else ""))


@gallery.command("delete")
@store_options
@click.argument("name")
@click.argument("ids", nargs=-1, type=click.IntRange(min=0))
@click.option("--all", "drop_all", is_flag=True, help="Delete the whole gallery.")
@friendly
def gallery_delete(store: Path | None, url: str | None, api_key: str | None, name: str, ids: tuple[int, ...],
                   drop_all: bool) -> None:
    """Delete items IDS from gallery NAME, or the whole gallery with --all."""
    if bool(ids) == drop_all:
        raise click.UsageError("give item IDS or --all")
    with open_client(store, url, api_key) as client:
        if drop_all:
            client.delete_gallery(name)
            click.echo(f"gallery {name} deleted")
            return
        n = client.delete_from_gallery(name, list(ids))
        click.echo(f"gallery {name}: deleted {n} of {len(ids)} item(s); {client.gallery(name).size} left")
    if n == 0:
        sys.exit(EXIT_NOTHING)


@click.command()
@store_options
@click.argument("query")
@click.option("--gallery", "gallery_name", required=True,
              help="Gallery name, or 'anchors' (anchor images for a text, anchor captions for an image).")
@top_option(10, "Hits shown.")
@click.option("--modality", type=click.Choice(["text", "image"]), default=None,
              help="What QUERY is (default: an image if it names an existing file, else a text).")
@json_option
@friendly
def search(store: Path | None, url: str | None, api_key: str | None, query: str, gallery_name: str, top: int,
           modality: str | None, as_json: bool) -> None:
    """Rank the items of a gallery for QUERY, a text or an image file."""
    if not query.strip():
        raise InputError("the query is empty")
    with open_client(store, url, api_key) as client:
        hits = client.search(query, gallery_name, top=top, modality=modality)  # type: ignore[arg-type]  # click.Choice
    if as_json:
        echo_json([{"rank": rank, **h.to_dict()} for rank, h in enumerate(hits, 1)])
        return
    if not hits:
        click.echo("no item shares an anchor with the query", err=True)
    for rank, h in enumerate(hits, 1):
        extra = {k: v for k, v in h.payload.items() if k != "ref"}
        click.echo(f"{rank:>3}  {h.score:.4f}  #{h.id}  {h.payload.get('ref')}"
                   + (f"  {json.dumps(extra, ensure_ascii=False)}" if extra else ""))
