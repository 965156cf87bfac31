"""``asif ingest``: the ingestion pipeline (ingest/) from the command line."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from asif_vdb import AsifClient
from asif_vdb.cli.common import (
    EXIT_NOTHING,
    echo_json,
    friendly,
    json_option,
    new_store_kwargs,
    new_store_options,
    open_client,
    store_exists,
    store_options,
    store_path,
)
from asif_vdb.encoders.precision import PRECISIONS
from asif_vdb.remote import RemoteClient
from asif_vdb.serve.runner import shared
from ingest.config import IngestConfig
from ingest.embeddings import find_parts
from ingest.pipeline import default_report_path, open_input, run_ingest
from ingest.readers import FORMATS


@click.command("ingest")
@store_options
@click.argument("input_path", metavar="INPUT")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Input format (default: detected from INPUT's shape).")
@click.option("--image-column", default="image", show_default=True,
              help="Tables: the image column.")
@click.option("--caption-column", default="caption", show_default=True,
              help="Tables: the caption column.")
@click.option("--images", "images_dir", type=click.Path(path_type=Path), default=None,
              help="Tables and COCO: folder that image paths are relative to "
                   "(default: the file's folder).")
@click.option("--source", default=None,
              help="Source name stored with each pair (default: from INPUT).")
@click.option("--limit", type=click.IntRange(min=0), default=None,
              help="Only the first N pairs of INPUT (reruns with the same N resume).")
@click.option("--dry-run", is_flag=True,
              help="Read, check and decode; count what would be ingested; "
                   "write nothing to the store.")
@click.option("--report", "report", type=click.Path(path_type=Path), default=None,
              help="JSONL of skipped samples and their reasons "
                   "(default: STORE.ingest-report.jsonl).")
@click.option("--batch", type=click.IntRange(min=1), default=256, show_default=True,
              help="Pairs looked up, encoded and written per store call.")
@click.option("--image-batch", type=click.IntRange(min=1), default=None,
              help="Images per forward pass (default: the encoder's).")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Decode + preprocess threads.")
@click.option("--streams", type=click.IntRange(min=1), default=None,
              help="CPU: parallel single-threaded encoder streams (default 1: the encoders "
                   "run on the pipeline's thread with all torch threads).")
@click.option("--min-side", type=click.IntRange(min=1), default=8, show_default=True,
              help="Skip images with a side shorter than this (1x1 tracking pixels, placeholders).")
@click.option("--precision", type=click.Choice(PRECISIONS), default=None,
              help="Forward passes in float32 or bfloat16; auto: bfloat16 for the text encoder "
                   "where the hardware has native bfloat16 (default $ASIF_PRECISION or auto). "
                   "An execution setting: stores accept vectors of either.")
@click.option("--encoding", default="utf-8-sig", show_default=True,
              help="Text encoding of CSV/TSV/JSONL tables; an undecodable row is skipped and reported.")
@click.option("--embeddings", is_flag=True,
              help="INPUT holds embeddings computed elsewhere (clip-retrieval's img_emb/, text_emb/, metadata/, or "
                   "image_emb.npy + text_emb.npy + a metadata table); declare the encoders that made them "
                   "with --image-encoder and --text-encoder.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@new_store_options
@json_option
@friendly
def ingest(store: Path | None, url: str | None, api_key: str | None, input_path: str, fmt: str | None,
           image_column: str, caption_column: str, images_dir: Path | None, source: str | None, limit: int | None,
           dry_run: bool, report: Path | None, batch: int, image_batch: int | None, workers: int, streams: int | None,
           min_side: int, precision: str | None, encoding: str, embeddings: bool, no_progress: bool, image_encoder: str | None,
           text_encoder: str | None, k: int | None, p: float | None, index_preset: str | None,
           quantization: str | None, hnsw: bool | None, shards: int | None, replicas: int | None,
           as_json: bool) -> None:
    """Add image-caption anchor pairs from INPUT: webdataset shards (.tar, brace patterns such as
    'shards/{00000..00009}.tar', or a folder of them), an img2dataset `files` folder, a folder of
    images with .txt captions, a CSV/TSV/JSONL/parquet table, or a COCO captions JSON.

    Bad samples are skipped and listed with their reason in the report; pairs already stored are
    skipped before decoding, so rerunning an interrupted command resumes it. Exit code 1 when
    nothing could be ingested, 2 for a wrong configuration.
    """
    if url is not None and store is not None:
        raise click.UsageError("give --store or --url, not both")
    report_path = str(report) if report is not None else default_report_path(None if url is not None else store_path(store))
    config = IngestConfig(
        input=input_path, format=fmt, image_column=image_column, caption_column=caption_column,
        images_dir=str(images_dir) if images_dir else None, source=source, limit=limit,
        dry_run=dry_run, report=report_path, batch=batch, image_batch=image_batch, workers=workers,
        streams=streams, min_side=min_side, progress=not no_progress, encoding=encoding, embeddings=embeddings,
    ).check()
    if embeddings:
        if image_encoder is None or text_encoder is None:
            raise click.UsageError("--embeddings needs --image-encoder and --text-encoder: the models that made them "
                                   "('default' for the offline defaults)")
        find_parts(input_path)  # a wrong input is reported before any store is created
    else:
        open_input(config)
    kwargs = {**new_store_kwargs(image_encoder, text_encoder, k, p, index_preset, quantization, hnsw, shards, replicas),
              "precision": precision}
    if dry_run and url is None and not store_exists(store_path(store)):
        client: AsifClient | RemoteClient = AsifClient(location=":memory:", **kwargs)  # a dry run creates no store
    else:
        client = open_client(store, url, api_key, create=True, **kwargs)
    with client, shared(client) as working:  # other processes read the store through this one meanwhile
        summary = run_ingest(working, config)
    if as_json:
        echo_json(summary.to_dict())
    else:
        click.echo(summary.table())
    if summary.usable == 0:
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(summary.skipped.items())) or "empty input"
        click.echo(f"error: nothing could be ingested from {input_path} ({summary.read} read; "
                   f"skipped: {reasons}); see {summary.report}", err=True)
        sys.exit(EXIT_NOTHING)
