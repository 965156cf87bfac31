"""``asif info``, ``asif doctor`` (check and repair a store's invariants) and ``asif prune`` (a smaller
store for one label set)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from asif_vdb.cli.common import (
    EXIT_NOTHING,
    echo_json,
    friendly,
    json_option,
    labels_option,
    open_client,
    report_skipped,
    skipped_images,
    store_options,
)
from ingest.readers.datasets import labelled_folder


@click.command()
@store_options
@json_option
@friendly
def info(store: Path | None, url: str | None, api_key: str | None, as_json: bool) -> None:
    """Print the store's encoders, parameters, sizes, label sets and galleries (JSON, with or without --json)."""
    with open_client(store, url, api_key) as client:
        click.echo(json.dumps(client.info(), indent=1))


@click.command()
@store_options
@click.option("--repair", is_flag=True, help="Fix what can be fixed (default: only check).")
@click.option("--force", is_flag=True, help="With --repair: allow a mass deletion (of anchor halves that cannot be "
              "rebuilt, or of lost gallery items) that the repair refuses otherwise.")
@click.option("--drop-journal", is_flag=True, help="With --repair: drop unfinished updates that cannot be carried "
              "out (reported by doctor); the checks that follow repair what they left.")
@click.option("--sample", type=click.IntRange(min=1), default=None,
              help="Check the freshness of at most N candidates per modality (default: all).")
@json_option
@friendly
def doctor(store: Path | None, url: str | None, api_key: str | None, repair: bool, force: bool, drop_journal: bool,
           sample: int | None, as_json: bool) -> None:
    """Check the store's invariants (complete pairs, fresh label sets and galleries, config) and,
    with --repair, fix them. Opening a store always finishes an interrupted update first; that is
    reported too. Exit code 1 when a problem remains."""
    if (force or drop_journal) and not repair:
        raise click.UsageError("--force and --drop-journal go with --repair")
    with open_client(store, url, api_key, for_repair=True) as client:
        checks = client.doctor(repair=repair, sample=sample, force=force, drop_journal=drop_journal)
    healthy = all(c.healthy for c in checks)
    if as_json:
        echo_json({"healthy": healthy, "checks": [c.to_dict() for c in checks]})
    else:
        for c in checks:
            click.echo(c.line())
        remaining = [c for c in checks if not c.healthy]
        click.echo("healthy" if not remaining else
                   f"{len(remaining)} problem(s) remain" + ("" if repair else "; run again with --repair"))
    if not healthy:
        sys.exit(EXIT_NOTHING)


@click.command()
@store_options
@labels_option(help="The label set to specialise the store for.")
@click.option("--keep", type=click.IntRange(min=1), required=True, help="How many anchor pairs to keep.")
@click.option("--new-store", "new_store", required=True, type=click.Path(path_type=Path),
              help="Directory of the new, smaller store (new or empty).")
@click.option("--sample", "sample_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Labelled images (a folder per class, named as the classes) that guide the choice and on "
                   "which accuracy is reported.")
@click.option("-k", "k", type=click.IntRange(min=1), default=None, help="Non-zeros per relative vector in the new "
              "store (default: the smaller of the store's k and a tenth of the kept anchors).")
@click.option("--method", type=click.Choice(["auto", "candidates", "score_mass", "correct", "margin"]),
              default="auto", show_default=True,
              help="How anchors are ranked (auto: margin with --sample, else candidates).")
@json_option
@friendly
def prune(store: Path | None, url: str | None, api_key: str | None, label_set: str, keep: int, new_store: Path,
          sample_dir: Path | None, k: int | None, method: str, as_json: bool) -> None:
    """Write a smaller store with the KEEP anchors that matter most to one label set, and report its
    accuracy against the full store's on --sample."""
    with open_client(store, url, api_key) as client:
        vectors = labels = None
        if sample_dir is not None:
            data = labelled_folder(sample_dir, client.label_set(label_set).classes)
            vectors, kept, errors = client.encode_images_skipping(data.paths, progress=True)
            report_skipped(skipped_images(data.paths, errors))
            labels = data.labels[kept]
        report = client.prune(label_set, keep, new_store, query_vectors=vectors, query_labels=labels, k=k,
                              method=method)  # type: ignore[arg-type]  # click.Choice
    if as_json:
        echo_json(report)
        return
    for key, value in report.items():
        click.echo(f"{key}: {value}")
