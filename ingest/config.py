"""One typed configuration for a pipeline run: what to read, how hard to work, where to report."""

from __future__ import annotations

import os
from dataclasses import dataclass

from asif_vdb import MAX_IMAGE_PIXELS, InputError


@dataclass(frozen=True)
class IngestConfig:
    """Everything `run_ingest` needs besides the client. `check()` rejects nonsense up front."""

    input: str  # a table, a folder, a COCO JSON, a .tar or a brace pattern of shards
    format: str | None = None  # None: detected from the input's shape
    image_column: str = "image"
    caption_column: str = "caption"
    images_dir: str | None = None  # tables and COCO: where relative image paths point
    source: str | None = None  # stored with every pair; default: the reader's (from the path)
    limit: int | None = None  # only the first N pairs of the input (a prefix: reruns resume)
    dry_run: bool = False  # read, check, decode and count; encode and write nothing
    report: str | None = None  # JSONL of skipped samples; None: no report file
    batch: int = 256  # pairs looked up, encoded (text) and written per store call (the first
    # batches are smaller: 32, 64, ... so that the encoders start early)
    image_batch: int | None = None  # images per forward pass; None: the encoder's own batch size
    workers: int = 2  # decode + preprocess threads
    streams: int | None = None  # CPU: None or 1 runs the encoders on the pipeline's own thread
    # with torch's threads; N > 1: N parallel single-threaded streams (a GPU: always 1 stream)
    prefetch_batches: int = 4  # image batches decoded ahead of the encoder (bounds memory)
    min_side: int = 8  # smaller images (1x1 tracking pixels, placeholders) carry no content
    max_pixels: int = MAX_IMAGE_PIXELS  # larger images are refused as decompression bombs
    progress: bool = True
    encoding: str = "utf-8-sig"  # of CSV/TSV/JSONL tables; an undecodable row is skipped and reported
    embeddings: bool = False  # input is precomputed embeddings (ingest/embeddings.py), not images

    def check(self) -> IngestConfig:
        """Raise InputError naming the first bad setting; returns self for chaining."""
        positive = {"batch": self.batch, "workers": self.workers,
                    "prefetch_batches": self.prefetch_batches, "min_side": self.min_side,
                    "max_pixels": self.max_pixels}
        if self.image_batch is not None:
            positive["image_batch"] = self.image_batch
        if self.streams is not None:
            positive["streams"] = self.streams
        for name, value in positive.items():
            if value < 1:
                raise InputError(f"ingest: {name} must be at least 1, got {value}")
        if self.limit is not None and self.limit < 0:
            raise InputError(f"ingest: limit must be >= 0, got {self.limit}")
        if self.max_pixels > MAX_IMAGE_PIXELS:
            raise InputError(
                f"ingest: max_pixels cannot exceed the decoder's limit {MAX_IMAGE_PIXELS}")
        try:
            "".encode(self.encoding)
        except LookupError:
            raise InputError(f"ingest: unknown text encoding {self.encoding!r}") from None
        if self.report is not None:
            folder = os.path.dirname(os.path.abspath(self.report))
            if not os.path.isdir(folder):
                raise InputError(f"ingest: report folder {folder} does not exist")
            if os.path.isdir(self.report):
                raise InputError(f"ingest: report path {self.report} is a directory")
        return self
