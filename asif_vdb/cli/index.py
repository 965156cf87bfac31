"""``asif index show|set|optimize``: how the store searches its anchors (exact, or quantized / HNSW)."""

from __future__ import annotations

from pathlib import Path

import click

from asif_vdb.cli.common import echo_json, friendly, index_from_options, index_options, json_option, open_client, store_options


@click.group("index")
def index_group() -> None:
    """The anchor index: exact scans, or quantized vectors and an HNSW graph with exact rescoring."""


@index_group.command("show")
@store_options
@json_option
@friendly
def index_show(store: Path | None, url: str | None, api_key: str | None, as_json: bool) -> None:
    """Print the store's anchor index settings."""
    with open_client(store, url, api_key) as client:
        settings = client.search_index().model_dump()
    if as_json:
        echo_json(settings)
    else:
        for key, value in settings.items():
            click.echo(f"{key}\t{value}")


@index_group.command("set")
@store_options
@index_options
@click.option("--ef", type=click.IntRange(min=0), default=None, help="Graph candidates per search (0: k x oversampling).")
@click.option("--oversampling", type=click.FloatRange(1.0, 16.0), default=None,
              help="Candidates per result scored on quantized data, then rescored with the originals.")
@click.option("--m", "m", type=click.IntRange(2, 128), default=None, help="HNSW graph degree.")
@click.option("--on-disk/--in-ram", "on_disk", default=None,
              help="Vectors, quantized copy, graph and payload indexes memory-mapped rather than read into RAM at open.")
@click.option("--exact-below", type=click.IntRange(min=0), default=None,
              help="Searches stay exact while the store has fewer anchors than this.")
@json_option
@friendly
def index_set(store: Path | None, url: str | None, api_key: str | None, index_preset: str | None,
              quantization: str | None, hnsw: bool | None, ef: int | None, oversampling: float | None, m: int | None,
              on_disk: bool | None, exact_below: int | None, as_json: bool) -> None:
    """Change how the store searches its anchors and build the index now (minutes for millions)."""
    with open_client(store, url, api_key) as client:
        current = client.search_index()
        settings = index_from_options(index_preset, quantization, hnsw, current) or current
        fine = {k: v for k, v in (("ef", ef), ("oversampling", oversampling), ("m", m), ("on_disk", on_disk),
                                  ("exact_below", exact_below)) if v is not None}
        settings = settings.model_copy(update=fine)
        seconds = client.set_search_index(settings)
    if as_json:
        echo_json({"index": settings.model_dump(), "build_seconds": seconds})
    else:
        click.echo(f"index: {settings.model_dump()}; built in {sum(seconds.values()):.1f} s")


@index_group.command("optimize")
@store_options
@json_option
@friendly
def index_optimize(store: Path | None, url: str | None, api_key: str | None, as_json: bool) -> None:
    """Index the anchors written since the last build and compact the derived vectors."""
    with open_client(store, url, api_key) as client:
        seconds = client.optimize()
    if as_json:
        echo_json({"optimized": seconds, "seconds": round(sum(seconds.values()), 3)})
    else:
        click.echo("nothing to do" if not seconds else
                   ", ".join(f"{name} {s:.1f} s" for name, s in seconds.items()))
