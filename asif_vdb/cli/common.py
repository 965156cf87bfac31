"""What every command shares: the store options, one vocabulary of options, JSON output, exit codes.

Exit codes: 0 ok; 1 nothing was done, or a problem was found (``doctor``); 2 a usage or input error,
printed as one line (never a traceback).
"""

from __future__ import annotations

import functools
import glob
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from asif_vdb import IMAGE_SUFFIXES, AsifClient, AsifError, AsifParams, NotFoundError
from asif_vdb.remote import RemoteClient
from asif_vdb.schema.params import DEFAULT_INDEX, INDEX_PRESETS, IndexSettings
from asif_vdb.store.lock import holder

DEFAULT_STORE = "asif_store"
CONFIG_FILE = "asif_config.json"
EXIT_OK, EXIT_NOTHING, EXIT_INPUT = 0, 1, 2
EXIT_CODES = "Exit codes: 0 ok; 1 nothing done or a problem found; 2 usage or input error (one line on stderr)."
TEMPLATES_HELP = "Built-in list (default, cifar10, imagenet, imagenet7), a file, or one template with {}."

F = TypeVar("F", bound=Callable[..., Any])


def store_options(fn: F) -> F:
    """--store PATH (embedded, default) or --url [--api-key] (a Qdrant server)."""
    fn = click.option("--api-key", envvar="ASIF_API_KEY", default=None, help="Qdrant server API key.")(fn)
    fn = click.option("--url", envvar="ASIF_URL", default=None, help="Qdrant server URL instead of --store.")(fn)
    fn = click.option("--store", "store", envvar="ASIF_STORE", default=None, type=click.Path(path_type=Path),
                      help=f"Embedded store directory (default ./{DEFAULT_STORE}, or $ASIF_STORE).")(fn)
    return fn


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(fn)


def top_option(default: int, help: str = "How many answers to show.") -> Callable[[F], F]:
    return click.option("--top", type=click.IntRange(min=1), default=default, show_default=True, help=help)


def labels_option(required: bool = True, help: str = "Label set name.") -> Callable[[F], F]:
    return click.option("--labels", "label_set", required=required, default=None, help=help)


def index_options(fn: F) -> F:
    """How anchor searches run: a preset, or its two main choices."""
    fn = click.option("--hnsw/--no-hnsw", "hnsw", default=None,
                      help="Walk an HNSW graph instead of scanning (with --quantization: rescored).")(fn)
    fn = click.option("--quantization", type=click.Choice(["none", "int8", "binary", "turbo"]), default=None,
                      help="Anchor vectors quantized in RAM, candidates rescored with the originals.")(fn)
    fn = click.option("--index", "index_preset", type=click.Choice(sorted(INDEX_PRESETS)), default=None,
                      help="Anchor search preset: exact, int8 (a quantized scan), hnsw (graph + int8), auto (exact "
                           "below 100,000 anchors, hnsw above: a new store's default).")(fn)
    return fn


def index_from_options(index_preset: str | None, quantization: str | None, hnsw: bool | None,
                       base: IndexSettings | None = None) -> IndexSettings | None:
    """Index settings from --index / --quantization / --hnsw over ``base`` (None when none is given)."""
    if index_preset is None and quantization is None and hnsw is None:
        return None
    settings = INDEX_PRESETS[index_preset] if index_preset else (base or IndexSettings())
    update: dict[str, Any] = {}
    if quantization is not None:
        update["quantization"] = quantization
    if hnsw is not None:
        update["hnsw"] = hnsw
    return settings.model_copy(update=update)


def new_store_options(fn: F) -> F:
    """The options a new store is created with (ignored for an existing one, which keeps its own)."""
    fn = click.option("--replicas", type=click.IntRange(min=1), default=None,
                      help="New store on a Qdrant cluster (--url): replicas of each shard.")(fn)
    fn = click.option("--shards", type=click.IntRange(min=1), default=None,
                      help="New store on a Qdrant cluster (--url): shards per collection.")(fn)
    fn = index_options(fn)
    fn = click.option("-p", "p", type=click.FloatRange(min=0, min_open=True), default=None,
                      help="New store only: exponent of the relative vectors (tuned method: 1.5; given k or "
                           "--method plain: 1.0).")(fn)
    fn = click.option("-k", "k", type=click.IntRange(min=1), default=None,
                      help="New store only: non-zeros per relative vector (tuned method: 3200; given p or "
                           "--method plain: 800).")(fn)
    fn = click.option("--method", type=click.Choice(["tuned", "plain"]), default=None, expose_value=False,
                      callback=_remember_method,
                      help="New store only: 'tuned' (default: transforms fitted on the anchors once there are "
                           "enough, hub normalisation) or 'plain' (the paper's ASIF).")(fn)
    fn = click.option("--text-encoder", default=None, help="New store only: sentence-transformers model name or path.")(fn)
    fn = click.option("--image-encoder", default=None, help="New store only: timm model (timm:NAME[@WEIGHTS]).")(fn)
    return fn


def new_store_kwargs(image_encoder: str | None, text_encoder: str | None, k: int | None, p: float | None,
                     index_preset: str | None = None, quantization: str | None = None, hnsw: bool | None = None,
                     shards: int | None = None, replicas: int | None = None) -> dict[str, Any]:
    index = index_from_options(index_preset, quantization, hnsw)
    if shards is not None or replicas is not None:
        index = (index or DEFAULT_INDEX).model_copy(update={"shards": shards or 1, "replication": replicas or 1})
    kwargs: dict[str, Any] = {"image_encoder": image_encoder, "text_encoder": text_encoder, "index": index}
    ctx = click.get_current_context(silent=True)
    method = ctx.meta.get(METHOD_KEY) if ctx is not None else None
    given = {name: v for name, v in (("method", method), ("k", k), ("p", p)) if v is not None}
    if given:
        kwargs["params"] = AsifParams.model_validate(given)
    return kwargs


#: Where ``--method`` leaves its value for ``new_store_kwargs`` (the commands do not take it as a parameter).
METHOD_KEY = "asif_method"


def _remember_method(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.meta[METHOD_KEY] = value


def store_exists(store: Path) -> bool:
    """Whether an embedded store is at ``store``: its config, the config's previous version, or its
    collections (a store whose config was lost is still a store: opening it says how to restore it)."""
    return (store / CONFIG_FILE).is_file() or (store / (CONFIG_FILE + ".bak")).is_file() \
        or (store / "collections").is_dir()


def store_path(store: Path | None) -> Path:
    return store or Path(DEFAULT_STORE)


def open_client(store: Path | None, url: str | None, api_key: str | None, *, create: bool = False,
                **kwargs: Any) -> AsifClient | RemoteClient:
    """The store of --store / --url. Only commands that add anchors (``create``) start a new embedded
    store; the others name the path that holds none instead of leaving an empty store there. An
    embedded store that another process holds and shares (``asif serve``, a running ``asif ingest``)
    is reached through that process's service ($ASIF_SERVE_API_KEY: its key, for changes); one held
    by a process that does not share it is one line naming the holder."""
    if url is not None and store is not None:
        raise click.UsageError("give --store or --url, not both")
    if url is not None:
        return AsifClient(url=url, api_key=api_key, **kwargs)
    path = store_path(store)
    if not create and not store_exists(path):
        raise NotFoundError(f"no store at {path}: create one with `asif ingest INPUT --store {path}` "
                            f"or `asif anchors add TABLE --store {path}`")
    held = holder(path)
    if held is not None and held.serve and held.pid != os.getpid():
        click.echo(f"note: store {path} is open in another process (pid {held.pid}); asking it at {held.serve}",
                   err=True)
        return RemoteClient(held.serve, api_key=os.environ.get("ASIF_SERVE_API_KEY"), device=kwargs.get("device"),
                            precision=kwargs.get("precision"))
    return AsifClient(path, **kwargs)


def friendly(fn: F) -> F:
    """Expected failures become one clear line on stderr and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AsifError as e:
            click.echo(f"error: {one_line(str(e))}", err=True)
            sys.exit(EXIT_INPUT)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]  # same signature as fn


def one_line(text: str) -> str:
    return " ".join(text.split())


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False))


def write_json(out: Path | None, data: Any) -> None:
    """Write a JSON report to ``--out FILE`` (its folder is created)."""
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")


def parse_conditions(items: Iterable[str]) -> dict[str, Any]:
    """``--where KEY=VALUE`` options as payload conditions (integers when they look like one)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.UsageError(f"--where takes KEY=VALUE, got {item!r}")
        out[key.strip()] = int(value) if value.lstrip("-").isdigit() else value
    return out


def parse_list(text: str, kind: type, what: str) -> list[Any]:
    """A comma-separated list of positive numbers (``--k-values 200,800``)."""
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{what}: expected comma-separated numbers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise click.BadParameter(f"{what}: give positive numbers")
    return values


def image_inputs(items: Iterable[str]) -> tuple[list[Path], list[str]]:
    """Image files from arguments that are files, folders (searched recursively for image files) or
    glob patterns; (the files, the arguments that named nothing readable). Checked before any model
    loads."""
    files: list[Path] = []
    missing: list[str] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            files.extend(found) if found else missing.append(f"{item}: no image files in this folder")
        elif path.is_file():
            files.append(path) if os.access(path, os.R_OK) else missing.append(f"{item}: not readable")
        elif glob.has_magic(item):
            found = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            files.extend(found) if found else missing.append(f"{item}: matches no file")
        else:
            missing.append(f"{item}: no such file or folder")
    return files, missing


def skipped_images(inputs: Sequence[Any], errors: Mapping[int, str]) -> list[str]:
    """One line per image the encoder skipped (``errors``: position -> why), naming its input once."""
    return [why if str(inputs[i]) in why else f"{inputs[i]}: {why}" for i, why in errors.items()]


def report_skipped(skipped: Iterable[str]) -> int:
    """Print each skipped input on stderr; returns how many."""
    n = 0
    for line in skipped:
        click.echo(f"skipped: {one_line(line)}", err=True)
        n += 1
    return n
