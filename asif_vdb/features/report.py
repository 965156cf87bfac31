"""Explanations rendered for people: a plain-text table and a self-contained HTML report.

The HTML report embeds the query's and the anchors' thumbnails (data URIs), captions and shares in one
file; an anchor image that cannot be read is shown as a visible note and listed, never fatal.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Any

from asif_vdb.encoders.images import load_image
from asif_vdb.errors import InputError
from asif_vdb.schema.results import Explanation

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
        top = max((s.share for s in a.anchors), default=0.0)
        for s in a.anchors:
            width = int(round(160 * s.share / top)) if top > 0 else 0
            parts.append(
                f'<div class="card">{_figure(s.image, s.caption, missing, base)}'
                f'<div class="bar" style="width:{width}px"></div>'
                f'<p class="share">share {s.share:.4f} ({100 * s.fraction:.1f}%)</p>'
                f"<p>{esc(s.caption)}</p>"
                f"<p>image cos {s.image_similarity:.3f} &middot; text cos {s.text_similarity:.3f} "
                f"&middot; #{s.anchor_id}</p></div>"
            )
        parts.append("</div>")
    parts.append("<h2>Nearest anchor pairs of the query</h2>")
    parts.append('<div class="row">')
    for n in e.neighbours:
        parts.append(f'<div class="card">{_figure(n.image, n.caption, missing, base)}'
                     f"<p>cos {n.similarity:.3f} &middot; #{n.anchor_id}</p><p>{esc(n.caption)}</p></div>")
    parts += ["</div>", "</body>", "</html>"]
    e.missing_images = sorted(set(missing))
    return "\n".join(parts)


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
