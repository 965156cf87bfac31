"""CSV / TSV / JSONL / parquet tables: one row per pair, an image column and a caption column.

The image cell is a path (relative to `images_dir`, default the table's folder) or raw bytes
(a parquet binary column, or a `{"bytes", "path"}` struct as Hugging Face datasets write).
URLs are not downloaded (run img2dataset first); other columns become the sample's meta.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from collections.abc import Iterator
from typing import Any

from ..sample import Sample, Skipped
from .base import derive_source, is_remote

TABLE_EXTS = (".csv", ".tsv", ".jsonl", ".parquet")
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long captions must not abort a whole CSV
#: Characters that stand for undecodable bytes (``errors="surrogateescape"``).
_UNDECODED = re.compile("[\udc80-\udcff]")

#: One row of a table: its position for messages, and its cells or why it cannot be read.
Row = tuple[int, "dict[str, Any] | str"]


def table_kind(path: str) -> str:
    """The table's type from its suffix; ValueError naming the known ones."""
    kind = os.path.splitext(path)[1].lower()
    if kind not in TABLE_EXTS:
        raise ValueError(f"{path}: unknown table type {kind!r} (known: {', '.join(TABLE_EXTS)})")
    return kind


def table_columns(path: str, encoding: str = "utf-8-sig") -> list[str]:
    """The column names of a table (of its first row, for JSONL)."""
    kind = table_kind(path)
    if kind == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.ParquetFile(path).schema_arrow.names)
    if kind == ".jsonl":
        first = next((r for _, r in read_rows(path, encoding) if isinstance(r, dict)), None)
        return list(first) if first else []
    with open(path, newline="", encoding=encoding, errors="surrogateescape") as f:
        return next(csv.reader(f, delimiter="\t" if kind == ".tsv" else ","), [])


def read_rows(path: str, encoding: str = "utf-8-sig") -> Iterator[Row]:
    """Every data row of a CSV/TSV/JSONL/parquet table as (line or row number, cells), or (number,
    why it cannot be read) for a row that does not parse or is not valid ``encoding`` text: one bad
    row never hides the rows after it. This is the one table reader of the project."""
    kind = table_kind(path)
    if kind == ".parquet":
        import pyarrow.parquet as pq

        n = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                n += 1
                yield n, row
        return
    with open(path, newline="", encoding=encoding, errors="surrogateescape") as f:
        if kind == ".jsonl":
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                if _UNDECODED.search(line):
                    yield n, f"line {n}: not valid {encoding} text"
                    continue
                try:
                    row = json.loads(line)
                except ValueError as e:
                    yield n, f"line {n}: {e}"
                    continue
                yield n, row if isinstance(row, dict) else f"line {n}: not a JSON object"
            return
        reader = csv.DictReader(f, delimiter="\t" if kind == ".tsv" else ",")
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                yield reader.line_num, f"line {reader.line_num}: {e}"
                continue
            extra = row.pop(None, None)  # type: ignore[call-overload, unused-ignore]  # csv puts surplus cells under None
            if extra is not None:
                yield reader.line_num, f"line {reader.line_num}: too many fields"
            elif any(isinstance(v, str) and _UNDECODED.search(v) for v in row.values()):
                yield reader.line_num, f"line {reader.line_num}: not valid {encoding} text"
            else:
                yield reader.line_num, row




class TableReader:
    """Rows of a table as samples; the named columns must exist (else ValueError)."""

    def __init__(self, path: str, *, image_column: str = "image", caption_column: str = "caption",
                 images_dir: str | None = None, source: str | None = None, encoding: str = "utf-8-sig") -> None:
        if not os.path.isfile(path):
            raise ValueError(f"table not found: {path}")
        self.kind = table_kind(path)
        self.path, self.image_column, self.caption_column = path, image_column, caption_column
        self.encoding = encoding
        self.images_dir = images_dir or os.path.dirname(os.path.abspath(path))
        self.source = source or derive_source(path)
        self.name = os.path.basename(path)
        columns = table_columns(path, encoding)
        missing = [c for c in (image_column, caption_column) if c not in columns]
        if missing:
            raise ValueError(f"{path}: no column {', '.join(map(repr, missing))} "
                             f"(columns: {', '.join(map(str, columns))})")

    def estimate(self) -> int | None:
        if self.kind == ".parquet":
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(self.path).metadata.num_rows)
        return None

    def __iter__(self) -> Iterator[Sample | Skipped]:
        for i, (_, row) in enumerate(read_rows(self.path, self.encoding)):
            key = f"{self.name}/{i}"
            if isinstance(row, str):
                yield Skipped(key, "bad_row", row)
                continue
            yield self._sample(key, f"{self.path}::row{i}", row)

    def _sample(self, key: str, ref: str, row: dict[str, Any]) -> Sample | Skipped:
        cell, caption = row.get(self.image_column), row.get(self.caption_column)
        if caption is None:
            return Skipped(key, "missing_caption", f"{self.caption_column!r} is empty")
        if not isinstance(caption, str):
            return Skipped(key, "bad_row", f"{self.caption_column!r} is not text")
        meta = {k: v for k, v in row.items()
                if k not in (self.image_column, self.caption_column)
                and not isinstance(v, (bytes, bytearray))}
        if isinstance(cell, dict):  # {"bytes": ..., "path": ...}
            cell = cell.get("bytes") or cell.get("path")
        if isinstance(cell, (bytes, bytearray)) and cell:
            return Sample(key=key, image_ref=ref, caption=caption, image_bytes=bytes(cell), meta=meta, source=self.source)
        if not isinstance(cell, str) or not cell.strip():
            return Skipped(key, "missing_image", f"{self.image_column!r} is empty")
        if is_remote(cell):
            return Skipped(key, "remote_url", cell)
        ref = cell[len("file://"):] if cell.lower().startswith("file://") else cell
        path = os.path.join(self.images_dir, os.path.expanduser(ref))
        if not os.path.isfile(path):
            return Skipped(key, "missing_image", path)
        return Sample(key=key, image_ref=path, caption=caption, image_path=path, meta=meta, source=self.source)
