"""The record every reader yields: one image-caption pair, or why one was skipped."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Sample:
    key: str  # stable unique id within its source, e.g. "shard-00001.tar/000123" or "a/dog.jpg#2"
    image_ref: str  # human-readable reference: a file path, or "shard.tar::member"
    caption: str  # raw caption text (NOT stripped/validated here; the pipeline validates)
    image_path: str | None = None  # a file on disk, or None when the bytes come inline
    image_bytes: bytes | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # .json sidecar, extra table columns
    source: str = ""  # name of the dataset/source (given by the user or derived from the path)


@dataclass(frozen=True)
class Skipped:
    key: str
    reason: str  # machine-readable: "missing_image", "missing_caption", "unsafe_path", "bad_row"...
    detail: str = ""
