"""``asif explain`` (the anchor pairs behind an answer, as a table and an HTML report) and
``asif calibrate`` (a label set's "unknown" threshold, chosen on labelled images)."""

from __future__ import annotations

from pathlib import Path

import click

from asif_vdb.cli.common import (
    echo_json,
    friendly,
    json_option,
    labels_option,
    open_client,
    report_skipped,
    skipped_images,
    store_options,
    top_option,
    write_json,
)
from asif_vdb.features.report import format_table, render_html
from ingest.readers.datasets import labelled_folder


@click.command()
@store_options
@click.argument("query")
@labels_option(required=False, help="Label set: explain the top classes of image QUERY.")
@click.option("--gallery", default=None,
              help="Gallery name (or 'anchors'): explain the top search hits of QUERY, a text or an image file.")
@click.option("--modality", type=click.Choice(["image", "text"]), default=None,
              help="With --gallery: what QUERY is (default: an image if it names a file, else a text).")
@top_option(3, "Answers to explain.")
@click.option("--anchors", type=click.IntRange(min=1), default=5, show_default=True, help="Anchor pairs shown per answer.")
@click.option("--neighbours", type=click.IntRange(min=0), default=5, show_default=True,
              help="Nearest anchors of the query shown.")
@click.option("--html", "html_out", type=click.Path(path_type=Path), default=None,
              help="Write a self-contained HTML report (thumbnails embedded) to this file.")
@click.option("--no-threshold", is_flag=True, help="Never answer unknown (ignore the calibrated thresholds).")
@json_option
@friendly
def explain(store: Path | None, url: str | None, api_key: str | None, query: str, label_set: str | None,
            gallery: str | None, modality: str | None, top: int, anchors: int, neighbours: int,
            html_out: Path | None, no_threshold: bool, as_json: bool) -> None:
    """Explain the answers for QUERY by the anchor pairs that contributed most to each score: the top
    classes of an image (--labels) or the top hits of a gallery search (--gallery)."""
    if (label_set is None) == (gallery is None):
        raise click.UsageError("give --labels or --gallery")
    with open_client(store, url, api_key) as client:
        if label_set is not None:
            result = client.explain(Path(query), label_set, top=top, anchors=anchors, neighbours=neighbours,
                                    threshold=None if no_threshold else "stored")
        else:
            assert gallery is not None
            result = client.explain_search(query, gallery, top=top, anchors=anchors, neighbours=neighbours,
                                           modality=modality)  # type: ignore[arg-type]  # click.Choice
    if html_out is not None:
        page = render_html(result, Path(query) if result.modality == "image" else None)
        html_out.parent.mkdir(parents=True, exist_ok=True)
        html_out.write_text(page, encoding="utf-8")
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(format_table(result))
    if html_out is not None:
        note = f" ({len(result.missing_images)} anchor image(s) not found)" if result.missing_images else ""
        click.echo(f"report written to {html_out}{note}", err=as_json)


@click.command()
@store_options
@labels_option()
@click.option("--data", "data", required=True, type=click.Path(path_type=Path),
              help="Labelled images as an ImageFolder: one sub-folder per class, named as the class.")
@click.option("--class-map", type=click.Path(exists=True, path_type=Path), default=None,
              help="JSON object {folder name: class name} for folders named otherwise.")
@click.option("--criterion", type=click.Choice(["score", "coverage"]), default="score", show_default=True,
              help="score: the best class score (the paper's; trades wrong answers for unknowns). coverage: "
                   "how well the anchors cover the image (rejects inputs unlike any anchor: noise, text).")
@click.option("--max-wrong", type=click.FloatRange(0, 1), default=None,
              help="Target: at most this fraction of the answered images wrong (default for score: 0.1).")
@click.option("--target-accuracy", type=click.FloatRange(0, 1), default=None,
              help="Target: at least this accuracy among answered images (= --max-wrong 1-A).")
@click.option("--max-unknown", type=click.FloatRange(0, 1), default=None,
              help="Target: at most this fraction of images unknown, the highest such threshold "
                   "(default for coverage: 0.05).")
@click.option("--dry-run", is_flag=True, help="Report the threshold without storing it.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the report as JSON to this file.")
@json_option
@friendly
def calibrate(store: Path | None, url: str | None, api_key: str | None, label_set: str, data: Path,
              class_map: Path | None, criterion: str, max_wrong: float | None, target_accuracy: float | None,
              max_unknown: float | None, dry_run: bool, out: Path | None, as_json: bool) -> None:
    """Choose and store a label set's "unknown" threshold on labelled images; print the
    right / unknown / wrong breakdown without and with it. The two criteria are stored separately
    and both apply in classify. Unreadable images are skipped and named on stderr."""
    given = [t for t in (max_wrong, target_accuracy, max_unknown) if t is not None]
    if len(given) > 1:
        raise click.UsageError("give one of --max-wrong, --target-accuracy, --max-unknown")
    if not given and criterion == "score":
        max_wrong = 0.1
    elif not given:
        max_unknown = 0.05
    with open_client(store, url, api_key) as client:
        info = client.label_set(label_set)
        folder = labelled_folder(data, info.classes, class_map)
        vectors, kept, errors = client.encode_images_skipping(folder.paths, progress=len(folder.paths) > 256)
        report_skipped(skipped_images(folder.paths, errors))
        report = client.calibrate(label_set, embeddings=vectors, truth=folder.labels[kept],
                                  criterion=criterion,  # type: ignore[arg-type]  # click.Choice
                                  max_wrong=max_wrong, target_accuracy=target_accuracy, max_unknown=max_unknown,
                                  save=not dry_run)
    write_json(out, report.to_dict())
    if as_json:
        echo_json(report.to_dict())
        return
    click.echo(report.format())
    click.echo("stored with the label set; classify applies it (--no-threshold turns it off)" if report.saved
               else "dry run: not stored")
