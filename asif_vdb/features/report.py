"""Explanations rendered for people: a plain-text table and a self-contained HTML report.

The HTML report embeds the query's and the anchors' thumbnails (data URIs), captions and shares in one
file; an anchor image that cannot be read is shown as a visible note and listed, never fatal. Anchor
pairs that share an image are shown once, with every caption (``group_by_image``: the web page of
``asif serve`` groups the same way).
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from asif_vdb.encoders.images import load_image
from asif_vdb.errors import InputError
from asif_vdb.schema.results import AnchorShare, Explanation, Neighbour

#: What can be grouped by image: an anchor's share of a score, or a nearest anchor.
T = TypeVar("T", AnchorShare, Neighbour)

THUMBNAIL = 160


def thumbnail_uri(image: Any, size: int = THUMBNAIL) -> str:
    """A JPEG thumbnail as a data URI (so the report is one self-contained file)."""
    img = load_image(image).copy()
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(image: Any, alt: str, missing: list[str], base: Path | None) -> str:
    """An <img> with the embedded thumbnail, or a visible note when the image cannot be read."""
    if image is None:
        return '<div class="missing">no image reference</div>'
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_absolute() and base is not None and not path.exists():
            path = base / path
        if not path.is_file():
            missing.append(str(image))
            return f'<div class="missing">image file not found:<br>{html.escape(str(image))}</div>'
        image = path
    try:
        uri = thumbnail_uri(image)
    except InputError as e:
        missing.append(str(image) if isinstance(image, (str, Path)) else alt)
        return f'<div class="missing">image unreadable:<br>{html.escape(str(e))}</div>'
    return f'<img class="thumb" src="{uri}" alt="{html.escape(alt, quote=True)}">'


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 12px} h2{font-size:17px;margin:22px 0 8px}
.query{display:flex;gap:18px;align-items:flex-start}
.thumb{width:160px;height:160px;object-fit:contain;background:#eee;border:1px solid #ccc;display:block}
.missing{width:160px;height:160px;background:#fbe9e7;border:1px dashed #c62828;color:#c62828;
 font-size:11px;display:flex;align-items:center;justify-content:center;text-align:center;overflow:hidden;
 word-break:break-all}
.row{display:flex;gap:12px;flex-wrap:wrap}
.card{width:170px;font-size:12px}
.card p{margin:4px 0}
.card ul{margin:4px 0;padding-left:16px} .card li{margin:2px 0} .meta{color:#666}
.share{font-weight:bold}
.bar{height:6px;background:#1565c0}
.unknown{color:#c62828;font-weight:bold}
table{border-collapse:collapse;font-size:13px} td,th{padding:2px 8px;text-align:left}
"""


def render_html(explanation: Explanation, query_image: Any = None, *, base: Path | None = None) -> str:
    """A self-contained HTML report: the query, each answer with its anchor pairs (image, caption,
    share), and the query's nearest anchors. Missing anchor images are reported, not fatal; their
    references are collected in ``explanation.missing_images``."""
    e = explanation
    missing: list[str] = []
    esc = html.escape
    verdict = f'<span class="unknown">unknown</span> ({esc(_why_unknown(e))})' if e.unknown \
        else f"<b>{esc(str(e.label))}</b>"
    cover = "" if e.coverage is None else (
        f"<p>anchor coverage {e.coverage:.3f}"
        + (f" (threshold {e.coverage_threshold:.3f})" if e.coverage_threshold is not None else "") + "</p>")
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>ASIF explanation: {esc(e.query)}</title>", f"<style>{_STYLE}</style>", "</head>", "<body>",
        f"<h1>ASIF explanation of {esc(e.query)}</h1>",
        '<div class="query">',
        _figure(query_image if query_image is not None else e.query, "query", missing, None)
        if e.modality == "image" else f"<p>{esc(e.query)}</p>",
        f"<div><p>answer: {verdict}</p>{cover}<table><tr><th>answer</th><th>score</th><th>shared anchors</th></tr>",
        *[f"<tr><td>{esc(a.label)}</td><td>{a.score:.4f}</td><td>{a.shared}</td></tr>" for a in e.answers],
        "</table></div></div>",
    ]
    for a in e.answers:
        parts.append(f"<h2>{esc(a.label)}: score {a.score:.4f} from {a.shared} shared anchor pairs "
                     f"(top {len(a.anchors)} shown; the rest add {a.rest:.4f})</h2>")
        if a.texts:
            parts.append(f"<p>{'prompts' if a.item_id is None else 'text'}: {esc('; '.join(a.texts))}</p>")
        parts.append('<div class="row">')
        if a.image is not None:
            parts.append(f'<div class="card">{_figure(a.image, a.label, missing, base)}<p><b>the answer</b></p></div>')
        groups = group_by_image(a.anchors)
        top = max((g.share for g in groups), default=0.0)
        for g in groups:
            width = int(round(160 * g.share / top)) if top > 0 else 0
            rows = "".join(
                f'<li><span class="share">{s.share:.4f} ({100 * s.fraction:.1f}%)</span> {esc(s.caption)} '
                f'<span class="meta">text cos {s.text_similarity:.3f} &middot; #{s.anchor_id}</span></li>'
                for s in g.anchors)
            parts.append(
                f'<div class="card">{_figure(g.image, "; ".join(s.caption for s in g.anchors), missing, base)}'
                f'<div class="bar" style="width:{width}px"></div>'
                f'<p class="share">share {g.share:.4f} ({100 * g.fraction:.1f}%)'
                f"{f' from {len(g.anchors)} captions' if len(g.anchors) > 1 else ''}</p>"
                f"<p>image cos {g.anchors[0].image_similarity:.3f}</p><ul>{rows}</ul></div>"
            )
        parts.append("</div>")
    parts.append("<h2>Nearest anchor pairs of the query</h2>")
    parts.append('<div class="row">')
    for ng in group_by_image(e.neighbours):
        rows = "".join(f"<li>cos {n.similarity:.3f} &middot; #{n.anchor_id} {esc(n.caption)}</li>" for n in ng.anchors)
        parts.append(f'<div class="card">{_figure(ng.image, "; ".join(n.caption for n in ng.anchors), missing, base)}'
                     f"<ul>{rows}</ul></div>")
    parts += ["</div>", "</body>", "</html>"]
    e.missing_images = sorted(set(missing))
    return "\n".join(parts)


class ImageGroup(Generic[T]):
    """Anchor pairs that share one image (Flickr-style data has five captions per photo): shown once,
    with each caption and its share; ``share`` and ``fraction`` add up the group's."""

    def __init__(self, image: str | None, anchors: list[T]) -> None:
        self.image = image
        self.anchors: list[T] = anchors

    @property
    def share(self) -> float:
        return float(sum(getattr(a, "share", 0.0) for a in self.anchors))

    @property
    def fraction(self) -> float:
        return float(sum(getattr(a, "fraction", 0.0) for a in self.anchors))

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "share": self.share, "fraction": self.fraction,
                "anchors": [a.to_dict() for a in self.anchors]}


def group_by_image(pairs: Sequence[T]) -> list[ImageGroup[T]]:
    """Anchor pairs (shares or neighbours) grouped by their image reference, in the order each image
    first appears (so by best share); a pair without an image reference stands alone."""
    groups: list[ImageGroup[T]] = []
    by_image: dict[str, ImageGroup[T]] = {}
    for pair in pairs:
        image = pair.image
        if image is None:
            groups.append(ImageGroup(None, [pair]))
        elif image in by_image:
            by_image[image].anchors.append(pair)
        else:
            by_image[image] = ImageGroup(image, [pair])
            groups.append(by_image[image])
    return groups


def _why_unknown(e: Explanation) -> str:
    best = e.answers[0].score if e.answers else 0.0
    if best <= 0:
        return "the query shares no anchor with any answer"
    if e.coverage_threshold is not None and e.coverage is not None and e.coverage < e.coverage_threshold:
        return f"anchor coverage {e.coverage:.3f} below {e.coverage_threshold:.3f}"
    return f"best score {best:.4f} below threshold {e.threshold}"


def format_table(explanation: Explanation) -> str:
    """The explanation as plain text, for the terminal."""
    e = explanation
    head = f"{e.query}: " + (f"unknown ({_why_unknown(e)})" if e.unknown else str(e.label))
    if e.coverage is not None:
        head += f"  [anchor coverage {e.coverage:.3f}]"
    lines = [head]
    for a in e.answers:
        lines.append(f"  {a.label}  score {a.score:.4f}  ({a.shared} shared anchors)")
        lines.append(f"    {'anchor':>7} {'share':>8} {'%':>6} {'img cos':>8} {'txt cos':>8}  caption")
        for s in a.anchors:
            lines.append(f"    {s.anchor_id:>7} {s.share:>8.4f} {100 * s.fraction:>5.1f}% "
                         f"{s.image_similarity:>8.3f} {s.text_similarity:>8.3f}  {s.caption}")
        lines.append(f"    {'rest':>7} {a.rest:>8.4f}")
    lines.append("  nearest anchors of the query:")
    for n in e.neighbours:
        lines.append(f"    {n.anchor_id:>7} cos {n.similarity:.3f}  {n.caption}")
    return "\n".join(lines)
