"""The ``asif`` command: each command parses options and calls the library; errors print, not trace."""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from asif_vdb.errors import AsifError

DEFAULT_STORE = "asif_store"


def store_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--store PATH (embedded, default) or --url [--api-key] (Qdrant server)."""
    fn = click.option("--api-key", envvar="ASIF_API_KEY", default=None, help="Qdrant server API key.")(fn)
    fn = click.option("--url", envvar="ASIF_URL", default=None, help="Qdrant server URL instead of --store.")(fn)
    fn = click.option(
        "--store", "store", envvar="ASIF_STORE", default=None, type=click.Path(path_type=Path),
        help=f"Embedded store directory (default ./{DEFAULT_STORE}, or $ASIF_STORE).",
    )(fn)
    return fn


def store_exists(store: Path) -> bool:
    """Whether an embedded store (its config) is at ``store``."""
    from asif_vdb.store.edge import CONFIG_FILE

    return (store / CONFIG_FILE).is_file()


def open_client(store: Path | None, url: str | None, api_key: str | None, *, create: bool = False,
                **kwargs: Any) -> Any:
    """The store of --store / --url. Only commands that add anchors (``create``) start a new
    embedded store; the others name the path that holds none instead of leaving an empty store
    there (a mistyped --store would otherwise look like a store without anchors)."""
    from asif_vdb.client import AsifClient
    from asif_vdb.errors import NotFoundError

    if url is not None and store is not None:
        raise click.UsageError("give --store or --url, not both")
    if url is not None:
        return AsifClient(url=url, api_key=api_key, **kwargs)
    path = store or Path(DEFAULT_STORE)
    if not create and not store_exists(path):
        raise NotFoundError(f"no store at {path}: create one with `asif ingest INPUT --store {path}` "
                            f"or `asif anchors add TABLE --store {path}`")
    return AsifClient(path, **kwargs)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Expected failures become one clear line on stderr and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AsifError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


@click.group()
@click.version_option(package_name="asif-vdb")
def main() -> None:
    """asif: zero-shot image classification and search from two frozen encoders + anchor pairs."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _new_store_kwargs(image_encoder: str | None, text_encoder: str | None, k: int | None, p: float | None) -> dict[str, Any]:
    from asif_vdb.config import AsifParams

    kwargs: dict[str, Any] = {"image_encoder": image_encoder, "text_encoder": text_encoder}
    if k is not None or p is not None:
        defaults = AsifParams()
        kwargs["params"] = AsifParams(k=k or defaults.k, p=p or defaults.p)
    return kwargs


@main.group()
def labels() -> None:
    """Label sets: class names x prompt templates, stored for fast classification."""


@labels.command("create")
@store_options
@click.argument("name")
@click.option("--classes", default=None, help="Comma-separated class names.")
@click.option("--classes-file", type=click.Path(exists=True, path_type=Path), default=None,
              help="A file with one class name per line.")
@click.option("--templates", default=None,
              help="Built-in list (default, cifar10, imagenet, imagenet7), a file, or one template with {}.")
@click.option("--aggregate", type=click.Choice(["max", "mean"]), default="max", show_default=True)
@click.option("--normalise", type=click.Choice(["none", "hub"]), default="none", show_default=True,
              help="hub: score prompts as (score - mean) / std over reference anchor images.")
@friendly
def labels_create(store, url, api_key, name, classes, classes_file, templates, aggregate, normalise) -> None:
    """Create (or rebuild) label set NAME."""
    if (classes is None) == (classes_file is None):
        raise click.UsageError("give --classes or --classes-file")
    names = ([c.strip() for c in classes.split(",") if c.strip()] if classes
             else [line.strip() for line in classes_file.read_text().splitlines() if line.strip()])
    with open_client(store, url, api_key) as client:
        info = client.create_label_set(name, names, templates, aggregate=aggregate, normalise=normalise)
    click.echo(f"label set {info.name}: {len(info.classes)} classes x {len(info.templates)} templates")


@labels.command("list")
@store_options
@friendly
def labels_list(store, url, api_key) -> None:
    """List the stored label sets."""
    with open_client(store, url, api_key) as client:
        for name in client.label_sets():
            info = client.label_set(name)
            click.echo(f"{name}\t{len(info.classes)} classes\t{len(info.templates)} templates\t"
                       f"threshold={info.threshold}")


@main.command()
@store_options
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--labels", "label_set", required=True, help="Label set name.")
@click.option("--top", type=int, default=5, show_default=True)
@click.option("--no-threshold", is_flag=True, help="Never answer unknown (ignore the calibrated threshold).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image.")
@friendly
def classify(store, url, api_key, images, label_set, top, no_threshold, as_json) -> None:
    """Rank the classes of a label set for each IMAGE."""
    with open_client(store, url, api_key) as client:
        results = client.classify(list(images), label_set, top=top, threshold=None if no_threshold else "stored")
    for path, result in zip(images, results):
        if as_json:
            click.echo(json.dumps({"image": str(path), **result.to_dict()}))
            continue
        answer = result.label if result.label is not None else "unknown"
        ranked = ", ".join(f"{p.label} {p.score:.3f}" for p in result.predictions)
        click.echo(f"{path}: {answer}  [{ranked}]")


@main.command()
@store_options
@friendly
def info(store, url, api_key) -> None:
    """Print the store's encoders, parameters, sizes and label sets."""
    with open_client(store, url, api_key) as client:
        click.echo(json.dumps(client.info(), indent=1))


@main.command()
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("asif_demo"), show_default=True,
              help="Where the demo writes its images and its store.")
@friendly
def demo(workdir: Path) -> None:
    """Offline end to end: draw anchors, ingest them, build a label set, classify unseen images."""
    import shutil

    from asif_vdb.client import AsifClient
    from asif_vdb.config import AsifParams
    from asif_vdb.demo import SHAPES, make_demo_data
    from asif_vdb.minimal_ingest import ingest_csv

    t0 = time.perf_counter()
    store = workdir / "store"
    if store.exists():
        shutil.rmtree(store)
    table, queries = make_demo_data(workdir / "data")
    click.echo(f"[1/4] drew {sum(1 for _ in table.open()) - 1} anchor pairs and {len(queries)} queries in {workdir}")
    with AsifClient(store, params=AsifParams(k=20, p=1.0)) as client:
        report = ingest_csv(client, table, source="demo")
        click.echo(f"[2/4] ingested {report['ingested']} pairs into the embedded store {store} "
                   f"(k={client.params.k}, p={client.params.p})")
        client.create_label_set("shapes", list(SHAPES), templates=["a {} on a background."])
        click.echo(f"[3/4] label set 'shapes': {', '.join(SHAPES)} (template 'a {{}} on a background.')")
        results = client.classify([q for q, _ in queries], "shapes", top=3)
    right = 0
    click.echo("[4/4] zero-shot classification of unseen drawings:")
    for (path, truth), result in zip(queries, results):
        right += result.label == truth
        ranked = ", ".join(f"{p.label} {p.score:.3f}" for p in result.predictions)
        click.echo(f"  {path.name:20s} true={truth:8s} predicted={result.label or 'unknown':8s} [{ranked}]")
    click.echo(f"accuracy {right}/{len(queries)}; {time.perf_counter() - t0:.1f} s in all. "
               f"Try: asif classify --store {store} --labels shapes {queries[0][0]}")


from asif_vdb import cli_explain  # noqa: E402  (issue 6: explain, calibrate)

main.add_command(cli_explain.explain); main.add_command(cli_explain.calibrate)  # noqa: E702
from asif_vdb import cli_eval, cli_search  # noqa: E402  (issue 4: galleries, search, eval)

main.add_command(cli_search.gallery); main.add_command(cli_search.search); main.add_command(cli_eval.eval_group)  # noqa: E702,E501

from ingest.cli import ingest as _ingest  # noqa: E402  (issue 3: the ingestion pipeline)

main.add_command(_ingest)

from asif_vdb import cli_anchors  # noqa: E402  (issue 5: anchors add/delete/list, doctor, prune)

main.add_command(cli_anchors.anchors); main.add_command(cli_anchors.doctor); main.add_command(cli_anchors.prune)  # noqa: E702,E501

from asif_vdb import cli_methods  # noqa: E402  (issue 4B: transforms, hub normalisation)

main.add_command(cli_methods.methods)


if __name__ == "__main__":
    main()
