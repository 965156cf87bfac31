"""``asif tune``: choose k, p and the transforms' strengths from the store's own anchors."""

from __future__ import annotations

from pathlib import Path

import click

from asif_vdb.cli.common import echo_json, friendly, json_option, open_client, store_options, write_json
from asif_vdb.schema.results import TuneReport, TuneRow

#: Rows of the table shown (the JSON report holds them all).
SHOWN = 12


@click.command("tune")
@store_options
@click.option("--holdout", type=click.IntRange(min=10), default=1000, show_default=True,
              help="Groups of anchor pairs (an image and its captions) held out and retrieved against the rest.")
@click.option("--seed", type=int, default=0, show_default=True, help="Which groups are held out.")
@click.option("--dry-run", is_flag=True, help="Print the table and the choice; change nothing.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the JSON report here.")
@json_option
@friendly
def tune(store: Path | None, url: str | None, api_key: str | None, holdout: int, seed: int, dry_run: bool,
         out: Path | None, as_json: bool) -> None:
    """Score settings (query k, p, image and caption whitening) by retrieval of held-out anchor pairs
    against the rest, caption->image and image->caption, with no labels; store the best with a
    journaled refit (the store's method becomes "tuned")."""
    with open_client(store, url, api_key) as client:
        report = client.tune(holdout=holdout, seed=seed, apply=not dry_run)
    write_json(out, report.to_dict())
    if as_json:
        echo_json(report.to_dict())
        return
    click.echo(table(report))


def table(report: TuneReport) -> str:
    """The best rows, the store's previous setting and the choice, as text."""
    head = (f"{'k':>5} {'p':>4} {'img wh':>6} {'txt wh':>6} | {'t2i R@1':>7} {'R@5':>5} {'R@10':>5} | "
            f"{'i2t R@1':>7} {'R@5':>5} {'R@10':>5} | {'score':>6}")
    lines = [f"{report.anchors} anchors; {report.held_out_groups} groups held out", head, "-" * len(head)]
    shown = report.rows[:SHOWN]
    if report.current is not None and report.current not in shown:
        shown.append(report.current)
    for r in shown:
        mark = "  <- chosen" if r == report.chosen else ("  <- before" if r == report.current else "")
        lines.append(_line(r) + mark)
    if len(report.rows) > len(shown):
        lines.append(f"... {len(report.rows) - len(shown)} more settings (--json or --out for all)")
    p = report.params
    verb = "stored" if report.applied else "not stored (--dry-run)"
    lines.append(f"chosen: k={p['k']} candidate k={p['candidate_k'] or p['k']} p={p['p']:g} image whiten="
                 f"{p['image_fit']['whiten']:g} caption whiten={p['text_fit']['whiten']:g}: {verb}")
    return "\n".join(lines)


def _line(r: TuneRow) -> str:
    return (f"{r.k:>5} {r.p:>4g} {r.image_whiten:>6g} {r.text_whiten:>6g} | {r.t2i_R1:>7.3f} {r.t2i_R5:>5.3f} "
            f"{r.t2i_R10:>5.3f} | {r.i2t_R1:>7.3f} {r.i2t_R5:>5.3f} {r.i2t_R10:>5.3f} | {r.score:>6.4f}")
