"""``asif eval``: zero-shot classification and retrieval metrics on a dataset, and sweeps over the
number of anchors, k and p (JSON results + PNG plots)."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from asif_vdb.cli.common import (
    TEMPLATES_HELP,
    echo_json,
    friendly,
    json_option,
    open_client,
    parse_list,
    report_skipped,
    store_options,
    write_json,
)
from asif_vdb.encoders import get_encoder, parse_spec
from asif_vdb.features.label_sets import prompts
from asif_vdb.features.templates import load_templates
from asif_vdb.schema.encoders import EncoderSpec
from asif_vdb.workflows import evaluate as ev
from ingest.readers.datasets import caption_table, labelled_folder


@click.group("eval")
def eval_group() -> None:
    """Evaluate a store (or ASIF settings) on labelled images or image-caption pairs."""


@eval_group.command("classify")
@store_options
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--class-map", type=click.Path(exists=True, path_type=Path), default=None,
              help="JSON object {folder name: class name} (default: class = folder name).")
@click.option("--templates", default="default", show_default=True, help=TEMPLATES_HELP)
@click.option("--limit-per-class", type=click.IntRange(min=1), default=None, help="Evaluate at most N images per class.")
@click.option("--labels", "label_set", default="eval", show_default=True,
              help="Name of the label set built for the evaluation (must not exist).")
@click.option("--keep-labels", is_flag=True, help="Keep the label set after the evaluation.")
@click.option("--batch", type=click.IntRange(min=1), default=256, show_default=True, help="Images encoded at once.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the report as JSON to this file.")
@json_option
@friendly
def eval_classify(store: Path | None, url: str | None, api_key: str | None, dataset: Path, class_map: Path | None,
                  templates: str, limit_per_class: int | None, label_set: str, keep_labels: bool, batch: int,
                  out: Path | None, as_json: bool) -> None:
    """Zero-shot top-1/top-5, per-class accuracy and confusion matrix on an ImageFolder DATASET
    (DATASET/CLASS/*.jpg) through the store's anchors."""
    data = labelled_folder(dataset, class_map=class_map, limit_per_class=limit_per_class)
    with open_client(store, url, api_key) as client:
        report = client.evaluate_classification(data.paths, data.labels, data.classes, templates, label_set=label_set,
                                                keep=keep_labels, batch=batch, progress=len(data.paths) > batch)
    report["dataset"] = str(dataset)
    write_json(out, report)
    if as_json:
        echo_json(report)
    else:
        click.echo(ev.format_classify(report))


@eval_group.command("retrieval")
@store_options
@click.argument("table", type=click.Path(path_type=Path))
@click.option("--images", "images_dir", type=click.Path(path_type=Path), default=None,
              help="Folder the table's image paths are relative to (default: the table's folder, "
                   "or its images/ sub-folder).")
@click.option("--splits", type=click.Path(path_type=Path), default=None, help="A table image,split.")
@click.option("--split", default=None, help="Evaluate the images of this split only (e.g. test).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate the first N images only.")
@click.option("--encoding", default="utf-8-sig", show_default=True, help="Text encoding of the tables.")
@click.option("--gallery", "name", default="eval", show_default=True,
              help="Prefix of the two galleries built for the evaluation (NAME-images, NAME-captions; must not exist).")
@click.option("--keep-galleries", is_flag=True, help="Keep the two galleries afterwards.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the report as JSON to this file.")
@json_option
@friendly
def eval_retrieval(store: Path | None, url: str | None, api_key: str | None, table: Path, images_dir: Path | None,
                   splits: Path | None, split: str | None, limit: int | None, encoding: str, name: str,
                   keep_galleries: bool, out: Path | None, as_json: bool) -> None:
    """Text->image and image->text R@1/5/10 on a table TABLE image,caption: the images are the
    gallery, the first caption of each image its query; an image query is right if any of its
    captions is retrieved."""
    data = caption_table(table, images_dir, splits, split, limit, encoding)
    report_skipped(data.skipped)
    with open_client(store, url, api_key) as client:
        report = client.evaluate_retrieval(data.images, data.captions, name=name, keep=keep_galleries,
                                           progress=len(data.images) > 64)
    report.update(table=str(table), split=split, skipped=len(data.skipped))
    write_json(out, report)
    if as_json:
        echo_json(report)
        return
    click.echo(f"{report['n_images']} images, {report['n_captions']} captions, {report['anchors']} anchors "
               f"(k={report['k']}, p={report['p']:g})")
    for direction, label in (("t2i", "text->image"), ("i2t", "image->text")):
        click.echo(f"{label}: " + "  ".join(f"R@{k} {report[f'{direction}_R@{k}']:.4f}" for k in (1, 5, 10)))


@eval_group.command("sweep")
@click.option("--anchor-table", type=click.Path(path_type=Path), required=True,
              help="A table image,caption of the anchor pairs (one pair per row).")
@click.option("--anchor-images", type=click.Path(path_type=Path), default=None,
              help="Folder the anchor table's image paths are relative to.")
@click.option("--anchor-splits", type=click.Path(path_type=Path), default=None, help="A table image,split.")
@click.option("--anchor-split", default=None, help="Use the anchor pairs of this split only (e.g. train).")
@click.option("--dataset", type=click.Path(path_type=Path), required=True,
              help="ImageFolder to classify (DATASET/CLASS/*.jpg).")
@click.option("--class-map", type=click.Path(exists=True, path_type=Path), default=None)
@click.option("--templates", default="default", show_default=True, help=TEMPLATES_HELP)
@click.option("--limit-per-class", type=click.IntRange(min=1), default=None)
@click.option("--anchors", "counts", default="all", show_default=True,
              help="Comma-separated numbers of anchors (a fixed random subset each), or 'all'.")
@click.option("--k-values", default="800", show_default=True, help="Comma-separated k values.")
@click.option("--p-values", default="1", show_default=True, help="Comma-separated p values.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the anchor subsets.")
@click.option("--image-encoder", default=None, help="timm model (default: the offline default).")
@click.option("--text-encoder", default=None, help="sentence-transformers model (default: the offline default).")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Embedding cache (default $ASIF_CACHE or ~/.cache/asif-vdb).")
@click.option("--no-cache", is_flag=True, help="Encode everything again, write no cache.")
@click.option("--out-dir", type=click.Path(path_type=Path), required=True, help="Folder for sweep.json and the PNGs.")
@json_option
@friendly
def eval_sweep(anchor_table: Path, anchor_images: Path | None, anchor_splits: Path | None, anchor_split: str | None,
               dataset: Path, class_map: Path | None, templates: str, limit_per_class: int | None, counts: str,
               k_values: str, p_values: str, seed: int, image_encoder: str | None, text_encoder: str | None,
               cache_dir: Path | None, no_cache: bool, out_dir: Path, as_json: bool) -> None:
    """Zero-shot accuracy on an ImageFolder for every (number of anchors, k, p): the "zero-shot
    capabilities emerge early" curve. Dense ASIF on cached embeddings (the store's maths, no store)."""
    cache = None if no_cache else (cache_dir or ev.CACHE_DIR)
    ks, ps = parse_list(k_values, int, "--k-values"), parse_list(p_values, float, "--p-values")
    tmpl = load_templates(templates)
    anchors = caption_table(anchor_table, anchor_images, anchor_splits, anchor_split)
    report_skipped(anchors.skipped)
    pair_image = np.asarray([i for i, caps in enumerate(anchors.captions) for _ in caps])
    pair_caption = [c for caps in anchors.captions for c in caps]
    total = len(pair_caption)
    count_list = [total] if counts.strip() == "all" else parse_list(counts, int, "--anchors")
    data = labelled_folder(dataset, class_map=class_map, limit_per_class=limit_per_class)
    img_enc = get_encoder(parse_spec(image_encoder, modality="image") if image_encoder else EncoderSpec.default_image())
    txt_enc = get_encoder(parse_spec(text_encoder, modality="text") if text_encoder else EncoderSpec.default_text())
    click.echo(f"{total} anchor pairs ({len(anchors.images)} images), {len(data.paths)} images in "
               f"{len(data.classes)} classes, {len(tmpl)} template(s); encoding (cached in {cache})", err=True)
    anchor_img = ev.encode_cached(img_enc, anchors.images, "image", cache)[pair_image]
    anchor_txt = ev.encode_cached(txt_enc, pair_caption, "text", cache)
    query_img = ev.encode_cached(img_enc, data.paths, "image", cache)
    prompt_vecs = txt_enc.encode(prompts(data.classes, tmpl))
    results = ev.sweep_classification(anchor_img, anchor_txt, query_img, data.labels, prompt_vecs, len(data.classes),
                                      counts=count_list, ks=ks, ps=ps, seed=seed)
    report = {"dataset": str(dataset), "anchor_table": str(anchor_table), "anchor_split": anchor_split,
              "anchor_pairs": total, "n_images": len(data.paths), "classes": data.classes, "templates": tmpl,
              "seed": seed, "image_encoder": img_enc.identity.describe(),
              "text_encoder": txt_enc.identity.describe(), "results": results}
    write_json(out_dir / "sweep.json", report)
    pngs = ev.plot_sweep(results, out_dir, title=f"{Path(dataset).name}: top-1 vs anchors")
    if as_json:
        echo_json(report)
        return
    for r in results:
        click.echo(f"anchors {r['anchors']:>6}  k {r['k_used']:>5}  p {r['p']:<4g}  top-1 {r['top1']:.4f}  "
                   f"top-5 {r['top5']:.4f}")
    click.echo(f"wrote {out_dir / 'sweep.json'} and {', '.join(str(p) for p in pngs)}")
