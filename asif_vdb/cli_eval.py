"""``asif eval``: zero-shot classification and retrieval metrics on a dataset, and sweeps over the
number of anchors, k and p (JSON results + PNG plots)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from asif_vdb.cli import friendly, open_client, store_options

TEMPLATES_HELP = "Built-in list (default, cifar10, imagenet, imagenet7), a file, or one template with {}."


@click.group("eval")
def eval_group() -> None:
    """Evaluate a store (or ASIF settings) on labelled images or image-caption pairs."""


def _write_json(out: Path | None, report: dict[str, Any]) -> None:
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))


@eval_group.command("classify")
@store_options
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--class-map", type=click.Path(exists=True, path_type=Path), default=None,
              help="JSON object {folder name: class name} (default: class = folder name).")
@click.option("--templates", default="default", show_default=True, help=TEMPLATES_HELP)
@click.option("--limit-per-class", type=int, default=None, help="Evaluate at most N images per class.")
@click.option("--label-set", default="eval", show_default=True,
              help="Name of the label set built for the evaluation (must not exist).")
@click.option("--keep-label-set", is_flag=True, help="Keep the label set after the evaluation.")
@click.option("--batch", type=int, default=256, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the report as JSON here.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of text.")
@friendly
def eval_classify(store, url, api_key, dataset, class_map, templates, limit_per_class, label_set,
                  keep_label_set, batch, out, as_json) -> None:
    """Zero-shot top-1/top-5, per-class accuracy and confusion matrix on an ImageFolder DATASET
    (DATASET/CLASS/*.jpg) through the store's anchors."""
    from asif_vdb.evaluate import eval_classify as run
    from asif_vdb.evaluate import format_classify, image_folder

    paths, labels, classes = image_folder(dataset, class_map, limit_per_class)
    with open_client(store, url, api_key) as client:
        report = run(client, paths, labels, classes, templates, label_set=label_set, keep=keep_label_set,
                     batch=batch, progress=len(paths) > batch)
    report["dataset"] = str(dataset)
    _write_json(out, report)
    click.echo(json.dumps(report) if as_json else format_classify(report))


@eval_group.command("retrieval")
@store_options
@click.argument("table", type=click.Path(path_type=Path))
@click.option("--images", "images_dir", type=click.Path(path_type=Path), default=None,
              help="Folder the table's image paths are relative to (default: the table's folder, "
                   "or its images/ sub-folder).")
@click.option("--splits", type=click.Path(path_type=Path), default=None, help="CSV image,split.")
@click.option("--split", default=None, help="Evaluate the images of this split only (e.g. test).")
@click.option("--limit", type=int, default=None, help="Evaluate the first N images only.")
@click.option("--name", default="eval", show_default=True,
              help="Prefix of the two galleries built for the evaluation (must not exist).")
@click.option("--keep-galleries", is_flag=True, help="Keep NAME-images and NAME-captions afterwards.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the report as JSON here.")
@friendly
def eval_retrieval(store, url, api_key, table, images_dir, splits, split, limit, name, keep_galleries, out) -> None:
    """Text->image and image->text R@1/5/10 on a CSV TABLE image,caption: the images are the
    gallery, the first caption of each image its query; an image query is right if any of its
    captions is retrieved."""
    from asif_vdb.evaluate import caption_table
    from asif_vdb.evaluate import eval_retrieval as run

    data = caption_table(table, images_dir, splits, split, limit)
    with open_client(store, url, api_key) as client:
        report = run(client, data, name=name, keep=keep_galleries, progress=len(data.images) > 64)
    report.update(table=str(table), split=split)
    _write_json(out, report)
    click.echo(f"{report['n_images']} images, {report['n_captions']} captions, {report['anchors']} anchors "
               f"(k={report['k']}, p={report['p']:g})")
    for direction, label in (("t2i", "text->image"), ("i2t", "image->text")):
        click.echo(f"{label}: " + "  ".join(f"R@{k} {report[f'{direction}_R@{k}']:.4f}" for k in (1, 5, 10)))


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{what}: expected comma-separated integers, got {text!r}") from None
    if not values:
        raise click.BadParameter(f"{what}: no value given")
    return values


def _floats(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{what}: expected comma-separated numbers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise click.BadParameter(f"{what}: give positive numbers")
    return values


@eval_group.command("sweep")
@click.option("--anchor-table", type=click.Path(path_type=Path), required=True,
              help="CSV image,caption of the anchor pairs (one pair per row).")
@click.option("--anchor-images", type=click.Path(path_type=Path), default=None,
              help="Folder the anchor table's image paths are relative to.")
@click.option("--anchor-splits", type=click.Path(path_type=Path), default=None, help="CSV image,split.")
@click.option("--anchor-split", default=None, help="Use the anchor pairs of this split only (e.g. train).")
@click.option("--dataset", type=click.Path(path_type=Path), required=True,
              help="ImageFolder to classify (DATASET/CLASS/*.jpg).")
@click.option("--class-map", type=click.Path(exists=True, path_type=Path), default=None)
@click.option("--templates", default="default", show_default=True, help=TEMPLATES_HELP)
@click.option("--limit-per-class", type=int, default=None)
@click.option("--anchors", "counts", default="all", show_default=True,
              help="Comma-separated numbers of anchors (a fixed random subset each), or 'all'.")
@click.option("-k", "--k", "ks", default="800", show_default=True, help="Comma-separated k values.")
@click.option("-p", "--p", "ps", default="1", show_default=True, help="Comma-separated p values.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the anchor subsets.")
@click.option("--image-encoder", default=None, help="timm model (default: the offline default).")
@click.option("--text-encoder", default=None, help="sentence-transformers model (default: the offline default).")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Embedding cache (default $ASIF_CACHE or ~/.cache/asif-vdb).")
@click.option("--no-cache", is_flag=True, help="Encode everything again, write no cache.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for sweep.json and the PNGs.")
@friendly
def eval_sweep(anchor_table, anchor_images, anchor_splits, anchor_split, dataset, class_map, templates,
               limit_per_class, counts, ks, ps, seed, image_encoder, text_encoder, cache_dir, no_cache, out) -> None:
    """Zero-shot accuracy on an ImageFolder for every (number of anchors, k, p): the "zero-shot
    capabilities emerge early" curve. Dense ASIF on cached embeddings (the store's maths, no store)."""
    import numpy as np

    from asif_vdb import evaluate as ev
    from asif_vdb.client import get_encoder
    from asif_vdb.config import EncoderSpec
    from asif_vdb.encoders import parse_spec
    from asif_vdb.labels import prompts
    from asif_vdb.templates import load_templates

    cache = None if no_cache else (cache_dir or ev.CACHE_DIR)
    ks_list, ps_list = _ints(ks, "--k"), _floats(ps, "--p")
    tmpl = load_templates(templates)
    anchors = ev.caption_table(anchor_table, anchor_images, anchor_splits, anchor_split)
    pair_image = np.asarray([i for i, caps in enumerate(anchors.captions) for _ in caps])
    pair_caption = [c for caps in anchors.captions for c in caps]
    total = len(pair_caption)
    count_list = [total] if counts.strip() == "all" else _ints(counts, "--anchors")
    paths, labels, classes = ev.image_folder(dataset, class_map, limit_per_class)
    img_enc = get_encoder(parse_spec(image_encoder, modality="image") if image_encoder else EncoderSpec.default_image())
    txt_enc = get_encoder(parse_spec(text_encoder, modality="text") if text_encoder else EncoderSpec.default_text())
    click.echo(f"{total} anchor pairs ({len(anchors.images)} images), {len(paths)} images in "
               f"{len(classes)} classes, {len(tmpl)} template(s); encoding (cached in {cache})", err=True)
    anchor_img = ev.encode_cached(img_enc, anchors.images, "image", cache)[pair_image]
    anchor_txt = ev.encode_cached(txt_enc, pair_caption, "text", cache)
    query_img = ev.encode_cached(img_enc, paths, "image", cache)
    prompt_vecs = txt_enc.encode(prompts(classes, tmpl))
    results = ev.sweep_classification(anchor_img, anchor_txt, query_img, labels, prompt_vecs, len(classes),
                                      counts=count_list, ks=ks_list, ps=ps_list, seed=seed)
    report = {"dataset": str(dataset), "anchor_table": str(anchor_table), "anchor_split": anchor_split,
              "anchor_pairs": total, "n_images": len(paths), "classes": classes, "templates": tmpl,
              "seed": seed, "image_encoder": img_enc.identity.describe(),
              "text_encoder": txt_enc.identity.describe(), "results": results}
    _write_json(out / "sweep.json", report)
    pngs = ev.plot_sweep(results, out, title=f"{Path(dataset).name}: top-1 vs anchors")
    for r in results:
        click.echo(f"anchors {r['anchors']:>6}  k {r['k_used']:>5}  p {r['p']:<4g}  top-1 {r['top1']:.4f}  "
                   f"top-5 {r['top5']:.4f}")
    click.echo(f"wrote {out / 'sweep.json'} and {', '.join(str(p) for p in pngs)}")
