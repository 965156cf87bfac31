"""``asif demo``: the main job end to end on the embedded store, offline, in seconds."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import click

from asif_vdb import AsifClient, AsifParams
from asif_vdb.cli.common import friendly
from asif_vdb.workflows.demo import SHAPES, make_demo_data
from ingest.config import IngestConfig
from ingest.pipeline import run_ingest


@click.command()
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("asif_demo"), show_default=True,
              help="Where the demo writes its images and its store.")
@friendly
def demo(workdir: Path) -> None:
    """Offline end to end: draw anchors, ingest them, build a label set, classify unseen images."""
    t0 = time.perf_counter()
    store = workdir / "store"
    if store.exists():
        shutil.rmtree(store)
    table, queries = make_demo_data(workdir / "data")
    click.echo(f"[1/4] drew {sum(1 for _ in table.open()) - 1} anchor pairs and {len(queries)} queries in {workdir}")
    with AsifClient(store, params=AsifParams(k=20, p=1.0)) as client:
        summary = run_ingest(client, IngestConfig(input=str(table), source="demo", progress=False,
                                                  report=str(workdir / "ingest-report.jsonl")))
        click.echo(f"[2/4] ingested {summary.ingested} pairs into the embedded store {store} "
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
