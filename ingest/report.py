"""What a run did: the JSONL report of skipped samples, per-stage timings, and the summary table."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

from .sample import Skipped

#: Stages in pipeline order; thread-pool stages add up worker time (can exceed the wall time);
#: "index" builds the anchor index over the new pairs at the end (where the store has one).
STAGES = ("setup", "read", "hash", "lookup", "decode", "decode_wait", "encode_image", "encode_text",
          "encode_wait", "write", "index")


class StageTimes:
    """Seconds spent per stage; safe to add to from worker threads."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {s: 0.0 for s in STAGES}
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    @contextmanager
    def time(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t0)


class SkipReport:
    """Counts skipped samples by reason and writes one JSON line per skip (and per note).

    Notes are samples that were ingested but changed, e.g. a caption the text encoder truncates:
    their lines carry ``"skipped": false``.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.skipped: Counter[str] = Counter()
        self.notes: Counter[str] = Counter()
        self._file: IO[str] | None = open(path, "w", encoding="utf-8") if path else None  # noqa: SIM115

    def skip(self, item: Skipped, stage: str) -> None:
        self.skipped[item.reason] += 1
        self._write({"key": item.key, "reason": item.reason, "detail": item.detail,
                     "stage": stage, "skipped": True})

    def note(self, key: str, reason: str, detail: str = "") -> None:
        self.notes[reason] += 1
        self._write({"key": key, "reason": reason, "detail": detail, "skipped": False})

    def _write(self, record: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record, ensure_ascii=False) + "\n")

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass
class IngestSummary:
    """The figures of one run, as printed at the end and returned by `run_ingest`."""

    input: str
    format: str
    source: str
    dry_run: bool = False
    read: int = 0  # items the reader yielded (pairs and reader-level skips), within --limit
    pairs: int = 0  # pairs among them (samples with an image and a caption, before checks)
    ingested: int = 0  # new pairs written (or, in a dry run, that would be)
    already_stored: int = 0  # pairs the store held before this run
    images_encoded: int = 0  # distinct images encoded (a pair reuses its image's vector)
    skipped: dict[str, int] = field(default_factory=dict)  # by reason, already_stored included
    notes: dict[str, int] = field(default_factory=dict)  # e.g. caption_truncated
    seconds: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    anchors: int = 0  # complete pairs in the store after the run
    report: str | None = None

    @property
    def usable(self) -> int:
        """Pairs that are now in the store (new or already there)."""
        return self.ingested + self.already_stored

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input, "format": self.format, "source": self.source,
            "dry_run": self.dry_run, "read": self.read, "pairs": self.pairs,
            "ingested": self.ingested, "already_stored": self.already_stored,
            "images_encoded": self.images_encoded, "skipped": dict(sorted(self.skipped.items())),
            "notes": dict(sorted(self.notes.items())),
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "wall_s": round(self.wall_s, 3), "pairs_per_s": round(self.pairs_per_s, 2),
            "anchors": self.anchors, "report": self.report,
        }

    def table(self) -> str:
        """A plain-text summary: counts, skips by reason, seconds per stage."""
        verb = "would ingest" if self.dry_run else "ingested"
        rows: list[tuple[str, str]] = [
            ("input", f"{self.input} ({self.format}, source {self.source!r})"),
            ("read", str(self.read)),
            ("pairs", str(self.pairs)),
            (verb, str(self.ingested)),
            ("images encoded", str(self.images_encoded)),
            ("skipped", str(sum(self.skipped.values()))),
        ]
        rows += [(f"  {reason}", str(n)) for reason, n in sorted(self.skipped.items())]
        rows += [(f"note: {reason}", str(n)) for reason, n in sorted(self.notes.items())]
        rows += [(f"s {stage}", f"{s:.2f}") for stage, s in self.seconds.items() if s > 0]
        rows += [("s wall", f"{self.wall_s:.2f}"), ("pairs/s", f"{self.pairs_per_s:.1f}"),
                 ("anchors in store", str(self.anchors))]
        if self.report:
            rows.append(("report", self.report))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
