"""``asif methods``: the options beyond plain ASIF: embedding transforms fitted on the anchors
(maths/transforms.py), and hub normalisation of label sets and galleries (maths/hub.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from asif_vdb import RECOMMENDED
from asif_vdb.cli.common import echo_json, friendly, json_option, open_client, store_options

POSITIVE = click.FloatRange(min=0, min_open=True)


@click.group()
def methods() -> None:
    """Refinements of plain ASIF: embedding transforms and hub normalisation."""


def _side(power: float | None, whiten: float | None, no_centre: bool) -> dict[str, Any] | None:
    if power is None and whiten is None and not no_centre:
        return None
    opts: dict[str, Any] = {"centre": not no_centre}
    if power is not None:
        opts["power"] = power
    if whiten is not None:
        opts["whiten"] = whiten
    return opts


@methods.command("transform")
@store_options
@click.option("--recommended", is_flag=True, help=f"The measured choice: {json.dumps(RECOMMENDED['transform'])}.")
@click.option("--plain", is_flag=True, help="Remove both transforms (raw cosines, plain ASIF).")
@click.option("--image-power", type=POSITIVE, default=None, help="Signed power of image components (e.g. 0.5).")
@click.option("--image-whiten", type=POSITIVE, default=None, help="Whiten images with this shrinkage (e.g. 10).")
@click.option("--image-no-centre", is_flag=True, help="Do not subtract the anchor images' mean.")
@click.option("--text-power", type=POSITIVE, default=None, help="Signed power of text components.")
@click.option("--text-whiten", type=POSITIVE, default=None, help="Whiten texts with this shrinkage (e.g. 3).")
@click.option("--text-no-centre", is_flag=True, help="Do not subtract the anchor captions' mean.")
@json_option
@friendly
def transform(store: Path | None, url: str | None, api_key: str | None, recommended: bool, plain: bool,
              image_power: float | None, image_whiten: float | None, image_no_centre: bool, text_power: float | None,
              text_whiten: float | None, text_no_centre: bool, as_json: bool) -> None:
    """Fit embedding transforms on the current anchors, rewrite them and every label set and gallery.

    Sides given no option keep raw cosines. The fitted transform stays fixed as anchors are added;
    run this again to refit."""
    image, text = _side(image_power, image_whiten, image_no_centre), _side(text_power, text_whiten, text_no_centre)
    if sum([recommended, plain, image is not None or text is not None]) != 1:
        raise click.UsageError("give exactly one of --recommended, --plain or per-side options")
    if recommended:
        image, text = RECOMMENDED["transform"]["image"], RECOMMENDED["transform"]["text"]
    with open_client(store, url, api_key) as client:
        records = client.set_transform(image=image, text=text)
    if as_json:
        echo_json(records)
        return
    if not records:
        click.echo("no transforms: plain ASIF on raw cosines")
    for m, r in records.items():
        click.echo(f"{m}: power={r['power']} centre={r['centre']} whiten={r['whiten']} (fitted on {r['anchors']} anchors)")


@methods.command("hub")
@store_options
@click.argument("name")
@click.option("--gallery", "is_gallery", is_flag=True, help="NAME is a gallery (default: a label set).")
@click.option("--off", is_flag=True, help="Turn hub normalisation off.")
@friendly
def hub(store: Path | None, url: str | None, api_key: str | None, name: str, is_gallery: bool, off: bool) -> None:
    """Hub-normalise label set (or gallery) NAME: scores become (score - mean) / std over reference anchors."""
    mode: Any = "none" if off else "hub"
    with open_client(store, url, api_key) as client:
        if is_gallery:
            client.normalise_gallery(name, mode)
        else:
            client.normalise_label_set(name, mode)
    click.echo(f"{'gallery' if is_gallery else 'label set'} {name}: normalise={mode}")


@methods.command("show")
@store_options
@json_option
@friendly
def show(store: Path | None, url: str | None, api_key: str | None, as_json: bool) -> None:
    """The store's transforms and which label sets and galleries are hub-normalised (JSON, with or
    without --json)."""
    with open_client(store, url, api_key) as client:
        info = {"params": client.params.model_dump(), "transforms": client.transforms(),
                "label_sets": {n: client.label_set(n).normalise for n in client.label_sets()},
                "galleries": {n: client.gallery(n).normalise for n in client.galleries()}}
    click.echo(json.dumps(info, indent=1))
