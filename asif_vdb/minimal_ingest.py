"""The library's own small reader: a CSV ``image,caption`` table, in batches, bad rows rejected loudly.
(The full pipeline with every format, resumable and reporting skips, is the ``ingest`` package.)"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from asif_vdb.errors import InputError


def read_pairs(table: Path, images_dir: Path | None = None) -> list[tuple[Path, str]]:
    if not table.is_file():
        raise InputError(f"{table}: table not found")
    root = images_dir or table.parent
    with table.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"image", "caption"} - set(reader.fieldnames or [])
        if missing:
            raise InputError(f"{table}: missing column(s) {sorted(missing)}; found {reader.fieldnames}")
        return [(root / row["image"], row["caption"]) for row in reader]


def ingest_csv(
    client: Any, table: Path, *, images_dir: Path | None = None, source: str | None = None,
    limit: int | None = None, batch: int = 256,
) -> dict[str, Any]:
    pairs = read_pairs(Path(table), images_dir)[:limit]
    source = source or Path(table).stem
    before = client.count()
    for start in tqdm(range(0, len(pairs), batch), desc="ingest", unit="batch", disable=len(pairs) <= batch):
        chunk = pairs[start : start + batch]
        client.add_anchors([p for p, _ in chunk], [c for _, c in chunk], source=source)
    after = client.count()
    return {"read": len(pairs), "ingested": after - before, "duplicates": len(pairs) - (after - before),
            "anchors": after}
