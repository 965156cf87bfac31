"""``asif explain`` (the anchor pairs behind an answer, as a table and an HTML report) and
``asif calibrate`` (the label set's "unknown" threshold, chosen on labelled images)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from asif_vdb.cli import friendly, open_client, store_options


@click.command()
@store_options
@click.argument("query")
@click.option("--labels", "label_set", default=None, help="Label set name: explain the top classes of image QUERY.")
@click.option("--gallery", default=None,
              help="Gallery name (or 'anchors'): explain the top search hits of QUERY, a text or an image file.")
@click.option("--modality", type=click.Choice(["image", "text"]), default=None,
              help="With --gallery: what QUERY is (default: an image if it names a file, else a text).")
@click.option("--top", type=int, default=3, show_default=True, help="Answers to explain.")
@click.option("--anchors", type=int, default=5, show_default=True, help="Anchor pairs shown per answer.")
@click.option("--neighbours", type=int, default=5, show_default=True, help="Nearest anchors of the query shown.")
@click.option("--html", "html_out", type=click.Path(path_type=Path), default=None,
              help="Write a self-contained HTML report (thumbnails embedded) to this file.")
@click.option("--no-threshold", is_flag=True, help="Never answer unknown (ignore the calibrated thresholds).")
@click.option("--json", "as_json", is_flag=True, help="Print the explanation as JSON instead of a table.")
@friendly
def explain(store, url, api_key, query, label_set, gallery, modality, top, anchors, neighbours, html_out,
            no_threshold, as_json) -> None:
    """Explain the answers for QUERY by the anchor pairs that contributed most to each score: the top
    classes of an image (--labels) or the top hits of a gallery search (--gallery)."""
    from asif_vdb.explain import format_table, render_html

    if (label_set is None) == (gallery is None):
        raise click.UsageError("give --labels or --gallery")
    if top < 1 or anchors < 1 or neighbours < 0:
        raise click.UsageError("--top and --anchors must be at least 1, --neighbours at least 0")
    with open_client(store, url, api_key) as client:
        if label_set is not None:
            result = client.explain(Path(query), label_set, top=top, anchors=anchors, neighbours=neighbours,
                                    threshold=None if no_threshold else "stored")
        else:
            result = client.explain_search(query, gallery, top=top, anchors=anchors, neighbours=neighbours,
                                           modality=modality)
    if html_out is not None:
        page = render_html(result, Path(query) if result.modality == "image" else None)
        html_out.parent.mkdir(parents=True, exist_ok=True)
        html_out.write_text(page, encoding="utf-8")
    click.echo(json.dumps(result.to_dict()) if as_json else format_table(result))
    if html_out is not None:
        note = f" ({len(result.missing_images)} anchor image(s) not found)" if result.missing_images else ""
        click.echo(f"report written to {html_out}{note}", err=as_json)


@click.command()
@store_options
@click.option("--labels", "label_set", required=True, help="Label set name.")
@click.option("--data", "data", required=True, type=click.Path(path_type=Path),
              help="Labelled images as an ImageFolder: one sub-folder per class, named as the class.")
@click.option("--class-map", type=click.Path(exists=True, path_type=Path), default=None,
              help="JSON object {folder name: class name} for folders named otherwise.")
@click.option("--criterion", type=click.Choice(["score", "coverage"]), default="score", show_default=True,
              help="score: the best class score (the paper's; trades wrong answers for unknowns). coverage: "
                   "how well the anchors cover the image (rejects inputs unlike any anchor: noise, text).")
@click.option("--max-wrong", type=float, default=None,
              help="Target: at most this fraction of the answered images wrong (default for score: 0.1).")
@click.option("--target-accuracy", type=float, default=None,
              help="Target: at least this accuracy among answered images (= --max-wrong 1-A).")
@click.option("--max-unknown", type=float, default=None,
              help="Target: at most this fraction of images unknown, the highest such threshold "
                   "(default for coverage: 0.05).")
@click.option("--dry-run", is_flag=True, help="Report the threshold without storing it.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@friendly
def calibrate(store, url, api_key, label_set, data, class_map, criterion, max_wrong, target_accuracy, max_unknown,
              dry_run, as_json) -> None:
    """Choose and store a label set's "unknown" threshold on labelled images; print the
    right / unknown / wrong breakdown without and with it. The two criteria are stored separately
    and both apply in classify."""
    from asif_vdb import calibrate as cal

    given = [t for t in (max_wrong, target_accuracy, max_unknown) if t is not None]
    if len(given) > 1:
        raise click.UsageError("give one of --max-wrong, --target-accuracy, --max-unknown")
    if not given and criterion == "score":
        max_wrong = 0.1
    elif not given:
        max_unknown = 0.05
    with open_client(store, url, api_key) as client:
        info = client.label_set(label_set)
        paths, truth = cal.read_image_folder(data, info.classes, class_map)
        report = cal.calibrate(client, label_set, paths, truth, criterion=criterion, max_wrong=max_wrong,
                               target_accuracy=target_accuracy, max_unknown=max_unknown,
                               save=not dry_run, progress=len(paths) > 256)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
        return
    click.echo(report.format())
    click.echo("stored with the label set; classify applies it (--no-threshold turns it off)" if report.saved
               else "dry run: not stored")
