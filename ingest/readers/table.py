"""CSV / TSV / JSONL / parquet tables: one row per pair, an image column and a caption column.

The image cell is a path (relative to `images_dir`, default the table's folder) or raw bytes
(a parquet binary column, or a `{"bytes", "path"}` struct as Hugging Face datasets write).
URLs are not downloaded (run img2dataset first); other columns become the sample's meta.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

from ..sample import Sample, Skipped
from .base import derive_source, is_remote

TABLE_EXTS = (".csv", ".tsv", ".jsonl", ".parquet")
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long captions must not abort a whole CSV


class TableReader:
    """Rows of a table as samples; the named columns must exist (else ValueError)."""

    def __init__(self, path: str, *, image_column: str = "image", caption_column: str = "caption",
                 images_dir: str | None = None, source: str | None = None) -> None:
        if not os.path.isfile(path):
            raise ValueError(f"table not found: {path}")
        self.kind = os.path.splitext(path)[1].lower()
        if self.kind not in TABLE_EXTS:
            raise ValueError(f"unknown table type {self.kind!r} (known: {', '.join(TABLE_EXTS)})")
        self.path, self.image_column, self.caption_column = path, image_column, caption_column
        self.images_dir = images_dir or os.path.dirname(os.path.abspath(path))
        self.source = source or derive_source(path)
        self.name = os.path.basename(path)
        columns = self._columns()
        missing = [c for c in (image_column, caption_column) if c not in columns]
        if missing:
            raise ValueError(f"{path}: no column {', '.join(map(repr, missing))} "
                             f"(columns: {', '.join(map(str, columns))})")

    def _columns(self) -> list[str]:
        if self.kind == ".parquet":
            import pyarrow.parquet as pq

            return list(pq.ParquetFile(self.path).schema_arrow.names)
        if self.kind == ".jsonl":
            first = next((r for r in self._rows() if isinstance(r, dict)), None)
            return list(first) if first else []
        with open(self.path, newline="", encoding="utf-8-sig") as f:
            return next(csv.reader(f, delimiter="\t" if self.kind == ".tsv" else ","), [])

    def estimate(self) -> int | None:
        if self.kind == ".parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(self.path).metadata.num_rows
        return None

    def _rows(self) -> Iterator[dict[str, Any] | str]:
        """Each data row as a dict, or an error text for a row that cannot be parsed."""
        if self.kind == ".parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(self.path).iter_batches(batch_size=1024):
                yield from batch.to_pylist()
        elif self.kind == ".jsonl":
            with open(self.path, encoding="utf-8-sig") as f:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except ValueError as e:
                        yield f"line {n}: {e}"
                        continue
                    yield row if isinstance(row, dict) else f"line {n}: not a JSON object"
        else:
            with open(self.path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f, delimiter="\t" if self.kind == ".tsv" else ",")
                while True:
                    try:
                        row = next(reader)
                    except StopIteration:
                        return
                    except csv.Error as e:
                        yield f"line {reader.line_num}: {e}"
                        continue
                    extra = row.pop(None, None)  # type: ignore[call-overload]
                    yield row if extra is None else f"line {reader.line_num}: too many fields"

    def __iter__(self) -> Iterator[Sample | Skipped]:
        for i, row in enumerate(self._rows()):
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
        common = {"key": key, "caption": caption, "meta": meta, "source": self.source}
        if isinstance(cell, dict):  # {"bytes": ..., "path": ...}
            cell = cell.get("bytes") or cell.get("path")
        if isinstance(cell, (bytes, bytearray)) and cell:
            return Sample(image_ref=ref, image_bytes=bytes(cell), **common)
        if not isinstance(cell, str) or not cell.strip():
            return Skipped(key, "missing_image", f"{self.image_column!r} is empty")
        if is_remote(cell):
            return Skipped(key, "remote_url", cell)
        ref = cell[len("file://"):] if cell.lower().startswith("file://") else cell
        path = os.path.join(self.images_dir, os.path.expanduser(ref))
        if not os.path.isfile(path):
            return Skipped(key, "missing_image", path)
        return Sample(image_ref=path, image_path=path, **common)
