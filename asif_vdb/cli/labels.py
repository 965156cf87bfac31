"""``asif labels create|list|delete`` and ``asif classify``: label sets and zero-shot classification."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import click
from tqdm.auto import tqdm

from asif_vdb import InputError
from asif_vdb.cli.common import (
    EXIT_NOTHING,
    TEMPLATES_HELP,
    echo_json,
    friendly,
    image_inputs,
    json_option,
    labels_option,
    open_client,
    report_skipped,
    skipped_images,
    store_options,
    top_option,
    write_json,
)


@click.group()
def labels() -> None:
    """Label sets: class names x prompt templates, stored for fast classification."""


def read_classes(classes: str | None, classes_file: Path | None, encoding: str) -> list[str] | dict[str, str]:
    """Class names from --classes (comma-separated) or --classes-file (one per line, or ``ID<TAB>NAME``
    lines: class ids apart from display names, which may then repeat)."""
    if (classes is None) == (classes_file is None):
        raise click.UsageError("give --classes or --classes-file")
    if classes is not None:
        return [c.strip() for c in classes.split(",") if c.strip()]
    assert classes_file is not None
    try:
        text = classes_file.read_text(encoding=encoding)
    except UnicodeDecodeError as e:
        raise InputError(f"{classes_file}: not valid {encoding} text (byte {e.start}); give --encoding") from e
    except OSError as e:
        raise InputError(f"{classes_file}: cannot read: {e.strerror or e}") from e
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    split = [line.split("\t", 1) for line in lines]
    if not any(len(parts) == 2 for parts in split):
        return lines
    bad = [n for n, parts in enumerate(split, 1) if len(parts) != 2 or not parts[0].strip() or not parts[1].strip()]
    if bad:
        raise InputError(f"{classes_file}: line {bad[0]} is not ID<TAB>NAME (the file's other lines are)")
    ids = [parts[0].strip() for parts in split]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise InputError(f"{classes_file}: class ids are repeated: {', '.join(dupes[:5])}")
    return {parts[0].strip(): parts[1].strip() for parts in split}


@labels.command("create")
@store_options
@click.argument("name")
@click.option("--classes", default=None, help="Comma-separated class names.")
@click.option("--classes-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A file with one class name per line, or ID<TAB>NAME lines (ids apart from names).")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of --classes-file.")
@click.option("--templates", default=None, help=TEMPLATES_HELP)
@click.option("--aggregate", type=click.Choice(["pool", "max", "mean"]), default=None,
              help="How a class's templates make its score: pool (one prompt per class, the mean of the templates' "
                   "embeddings; the tuned method's default), max (the best template's score; the paper's rule and "
                   "plain ASIF's default), mean (the mean of their scores; most accurate, T times the cost).")
@click.option("--normalise", type=click.Choice(["auto", "none", "hub"]), default="auto", show_default=True,
              help="hub: score prompts as (score - mean) / std over reference anchor images; auto: hub while "
                   "the store's tuned method has its transforms in force.")
@json_option
@friendly
def labels_create(store: Path | None, url: str | None, api_key: str | None, name: str, classes: str | None,
                  classes_file: Path | None, encoding: str, templates: str | None, aggregate: str | None, normalise: str,
                  as_json: bool) -> None:
    """Create (or replace) label set NAME."""
    names = read_classes(classes, classes_file, encoding)
    with open_client(store, url, api_key) as client:
        replaced = name in client.label_sets()
        if replaced and client.label_set(name).threshold is not None:
            click.echo(f"warning: label set {name} is replaced; its calibrated thresholds go with it", err=True)
        info = client.create_label_set(name, names, templates, aggregate=aggregate,  # type: ignore[arg-type]
                                       normalise=normalise)  # type: ignore[arg-type]  # click.Choice checked both
    if as_json:
        echo_json({**info.model_dump(exclude={"hub_mean", "hub_std"}), "replaced": replaced})
    else:
        click.echo(f"label set {info.name}: {len(info.classes)} classes x {len(info.templates)} templates, "
                   f"{info.aggregate}" + (" (replaced)" if replaced else ""))


@labels.command("list")
@store_options
@json_option
@friendly
def labels_list(store: Path | None, url: str | None, api_key: str | None, as_json: bool) -> None:
    """List the stored label sets."""
    with open_client(store, url, api_key) as client:
        infos = [client.label_set(n) for n in client.label_sets()]
    if as_json:
        echo_json([i.model_dump(exclude={"hub_mean", "hub_std"}) for i in infos])
        return
    for info in infos:
        click.echo(f"{info.name}\t{len(info.classes)} classes\t{len(info.templates)} templates\t"
                   f"threshold={info.threshold}\tcoverage_threshold={info.coverage_threshold}\tnormalise={info.normalise}")


@labels.command("coverage")
@store_options
@click.argument("name")
@click.option("--few", type=click.IntRange(min=1), default=10, show_default=True,
              help="Flag classes for which fewer anchors than this stand out.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the JSON report here.")
@json_option
@friendly
def labels_coverage(store: Path | None, url: str | None, api_key: str | None, name: str, few: int, out: Path | None,
                    as_json: bool) -> None:
    """How well the anchors cover each class of label set NAME, least covered first: the anchors that
    stand out for its prompts, their share of the prompts' relative vectors, the nearest anchor
    captions. Exit code 1 when a class is barely covered."""
    with open_client(store, url, api_key) as client:
        report = client.label_coverage(name, few=few)
    write_json(out, report.to_dict())
    if as_json:
        echo_json(report.to_dict())
    else:
        click.echo(f"label set {name}: {report.anchors} anchors; an anchor stands out for a prompt at "
                   f">= median + {report.stand_out_z:g} robust std of its similarities")
        for r in report.classes:
            label = r.name if r.id == r.name else f"{r.name} ({r.id})"
            click.echo(f"{'LOW ' if r.low else '    '}{label:30s} {r.anchors:6d} anchors  weight {r.weight:.3f}  "
                       f"sim {r.similarity:.3f}  nearest: {' | '.join(r.nearest)}")
        for line in report.advice:
            click.echo(f"add: {line}")
    if report.low:
        sys.exit(EXIT_NOTHING)


@labels.command("delete")
@store_options
@click.argument("name")
@friendly
def labels_delete(store: Path | None, url: str | None, api_key: str | None, name: str) -> None:
    """Delete label set NAME."""
    with open_client(store, url, api_key) as client:
        client.delete_label_set(name)
    click.echo(f"label set {name} deleted")


@click.command()
@store_options
@click.argument("images", nargs=-1, required=True)
@labels_option()
@top_option(5, "Classes shown per image.")
@click.option("--no-threshold", is_flag=True, help="Never answer unknown (ignore the calibrated thresholds).")
@json_option
@click.option("--csv", "as_csv", is_flag=True, help="CSV: path, prediction (or unknown), the top classes and scores.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@friendly
def classify(store: Path | None, url: str | None, api_key: str | None, images: tuple[str, ...], label_set: str,
             top: int, no_threshold: bool, as_json: bool, as_csv: bool, no_progress: bool) -> None:
    """Rank the classes of a label set for each image: IMAGES are files, folders (searched
    recursively) or glob patterns. Unreadable images are skipped and named on stderr."""
    if as_json and as_csv:
        raise click.UsageError("give --json or --csv, not both")
    paths, missing = image_inputs(images)
    skipped = report_skipped(missing)
    if not paths:
        raise InputError("no image to classify" + (f" ({skipped} input(s) skipped)" if skipped else ""))
    with open_client(store, url, api_key) as client:
        client.label_set(label_set)  # a wrong name fails before any model loads
        bar = tqdm(total=len(paths), desc="classify", unit="img", disable=no_progress or len(paths) < 64, file=sys.stderr)
        writer = csv.writer(sys.stdout) if as_csv else None
        if writer is not None:
            writer.writerow(["path", "prediction", *[f for i in range(1, top + 1) for f in (f"class_{i}", f"score_{i}")]])
        done = 0
        for start in range(0, len(paths), 256):
            chunk = paths[start : start + 256]
            vectors, kept, errors = client.encode_images_skipping(chunk)
            skipped += report_skipped(skipped_images(chunk, errors))
            results = client.classify_embeddings(vectors, label_set, top, threshold=None if no_threshold else "stored") \
                if len(kept) else []
            for i, result in zip(kept, results):
                path, answer = str(chunk[i]), result.label if result.label is not None else "unknown"
                done += 1
                if writer is not None:
                    writer.writerow([path, answer, *[x for pr in result.predictions for x in (pr.label, f"{pr.score:.6f}")]])
                elif as_json:
                    echo_json({"image": path, **result.to_dict()})
                else:
                    ranked = ", ".join(f"{pr.label}{f' ({pr.id})' if pr.id != pr.label else ''} {pr.score:.3f}"
                                       for pr in result.predictions)
                    click.echo(f"{path}: {answer}  [{ranked}]")
            bar.update(len(chunk))
        bar.close()
    if done == 0:
        sys.exit(EXIT_NOTHING)
