"""Anchor pairs uploaded to the service: images with their captions, or a table and its images.

Uploaded images are kept in the uploads folder under a name made from their content (anchors refer
to images by path), then the pairs go through the ingestion pipeline as a table that names those
files: the same checks, de-duplication and skip reasons as ``asif ingest``, with encoding outside
the store guard and only the writes under it. A table's image cells are matched to the uploaded
files by file name; a cell naming anything else is skipped, so no path from a request is read.
"""

from __future__ import annotations

import csv
import json
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Any

import asif_vdb.serve.models as models
from asif_vdb import InputError
from asif_vdb.serve.service import Service, Upload
from ingest.config import IngestConfig
from ingest.pipeline import run_ingest
from ingest.readers.table import TABLE_EXTS, read_rows

#: Skip reasons returned per request (the rest are counted).
MAX_REASONS = 50


def add_uploads(service: Service, images: list[Upload], captions: list[str] | None, table: Upload | None,
                source: str, encoding: str = "utf-8-sig") -> models.AnchorChange:
    """Add uploaded pairs; returns the anchor counts before and after and what was skipped."""
    if not images:
        raise InputError("upload at least one image (field 'images')")
    if (captions is None) == (table is None):
        raise InputError("give one caption per image (field 'captions') or a table (field 'table'), one of the two")
    if len(images) > service.settings.max_files:
        raise InputError(f"at most {service.settings.max_files} images per request, got {len(images)}")
    start = time.perf_counter()
    saved: dict[str, Path] = {}
    for up in images:
        saved.setdefault(_basename(up.name), service.save_upload(up))
    skipped: list[str] = []
    with tempfile.TemporaryDirectory(prefix="asif-upload-") as tmp:
        rows = _caption_rows(images, captions, saved) if captions is not None else \
            _table_rows(Path(tmp), table, encoding, saved, skipped)  # type: ignore[arg-type]  # checked above
        if not rows:
            raise InputError("no row of the table names an uploaded image" + (f" ({skipped[0]})" if skipped else ""))
        path = Path(tmp) / "pairs.csv"
        columns = list(dict.fromkeys(k for row in rows for k in row))
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        report = Path(tmp) / "skipped.jsonl"
        config = IngestConfig(input=str(path), format="table", source=source or "upload", report=str(report),
                              progress=False, encoding="utf-8").check()
        with service.guard.reading():
            before = service.client.count()
        summary = run_ingest(service.guarded, config)
        skipped += _reasons(report, saved)
    with service.guard.reading():
        after = service.client.count()
    return models.AnchorChange(anchors_before=before, anchors_after=after, added=summary.ingested,
                               already_stored=summary.already_stored, skipped=skipped[:MAX_REASONS],
                               seconds=round(time.perf_counter() - start, 3))


def _basename(name: str) -> str:
    return PurePosixPath(name.replace("\\", "/")).name


def _caption_rows(images: list[Upload], captions: list[str], saved: dict[str, Path]) -> list[dict[str, Any]]:
    if len(captions) != len(images):
        raise InputError(f"{len(images)} images but {len(captions)} captions: give one caption per image")
    return [{"image": str(saved[_basename(up.name)]), "caption": caption} for up, caption in zip(images, captions)]


def _table_rows(tmp: Path, table: Upload, encoding: str, saved: dict[str, Path], skipped: list[str]) -> list[dict[str, Any]]:
    """The table's rows whose image cell names an uploaded file, that file's kept path in its place."""
    suffix = Path(_basename(table.name)).suffix.lower()
    if suffix not in TABLE_EXTS:
        raise InputError(f"table {table.name!r}: unknown table type {suffix or '(none)'!r} (known: {', '.join(TABLE_EXTS)})")
    path = tmp / f"table{suffix}"
    path.write_bytes(table.data)
    rows: list[dict[str, Any]] = []
    try:
        for number, row in read_rows(str(path), encoding):
            if isinstance(row, str):
                skipped.append(f"{table.name} row {number}: {row}")
                continue
            if "image" not in row or "caption" not in row:
                raise InputError(f"table {table.name!r} needs the columns image and caption; it has {sorted(row)[:10]}")
            cell = row["image"]
            name = _basename(cell) if isinstance(cell, str) else ""
            if name not in saved:
                skipped.append(f"{table.name} row {number}: image {str(cell)[:200]!r} was not uploaded")
                continue
            rows.append({**{k: v for k, v in row.items() if isinstance(k, str)}, "image": str(saved[name])})
    except (ValueError, OSError) as e:  # an unreadable table as a whole
        raise InputError(f"table {table.name!r}: {e}") from e
    return rows


def _reasons(report: Path, saved: dict[str, Path]) -> list[str]:
    """The pipeline's skip report as lines, with kept paths shown as the uploaded names again."""
    names = {str(p): n for n, p in saved.items()}
    out: list[str] = []
    if not report.is_file():
        return out
    for line in report.read_text(encoding="utf-8").splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if item.get("reason") == "already_stored" or item.get("skipped") is False:  # a note, not a skip
            continue
        where = str(item.get("key") or item.get("image") or item.get("path") or "")
        out.append(f"{names.get(where, Path(where).name)}: {item.get('reason')}" + (f" ({item['detail']})" if item.get("detail") else ""))
    return out
