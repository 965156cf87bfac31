"""Readers turn a dataset on disk into a stream of `Sample | Skipped`; `open_reader` picks one."""

from __future__ import annotations

import os
import re

from .base import Reader, is_pattern
from .coco import CocoReader, load_json
from .files import FilesReader
from .folder import FolderReader
from .table import TABLE_EXTS, TableReader
from .webdataset import WebDatasetReader, expand_braces, expand_shards

FORMATS = ("webdataset", "files", "folder", "table", "coco")
_NUMBERED_TXT = re.compile(r"^\d+\.txt$")

__all__ = [
    "FORMATS", "CocoReader", "FilesReader", "FolderReader", "Reader", "TableReader",
    "WebDatasetReader", "detect_format", "expand_braces", "expand_shards", "open_reader",
]


def _is_img2dataset_files(root: str) -> bool:
    """img2dataset's `files` layout: numbered subfolders holding numbered `.txt` sidecars."""
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir() and entry.name.isdigit():
            if any(_NUMBERED_TXT.match(f.name) for f in os.scandir(entry.path) if f.is_file()):
                return True
    return False


def detect_format(path: str) -> str:
    """The format of `path` from its shape; ValueError naming the known formats when unknown."""
    lower = path.lower()
    if lower.endswith(".tar") or (is_pattern(path) and not os.path.exists(path)):
        return "webdataset"
    if not os.path.exists(path):
        raise ValueError(f"input not found: {path}")
    if os.path.isdir(path):
        if any(e.is_file() and e.name.endswith(".tar") for e in os.scandir(path)):
            return "webdataset"
        return "files" if _is_img2dataset_files(path) else "folder"
    ext = os.path.splitext(lower)[1]
    if ext in TABLE_EXTS:
        return "table"
    if ext == ".json":
        data = load_json(path)
        if isinstance(data, dict) and "annotations" in data:
            return "coco"
        raise ValueError(f"{path}: JSON without 'annotations' is not a known format "
                         f"(known formats: {', '.join(FORMATS)})")
    raise ValueError(f"cannot tell the format of {path} (known formats: {', '.join(FORMATS)}; "
                     f"tables: {', '.join(TABLE_EXTS)}, webdataset: .tar or brace patterns)")


def open_reader(path: str, *, format: str | None = None, image_column: str = "image",
                caption_column: str = "caption", images_dir: str | None = None,
                source: str | None = None, encoding: str = "utf-8-sig") -> Reader:
    """A reader for `path`, its format given or detected (see `detect_format`)."""
    fmt = format or detect_format(path)
    if fmt == "webdataset":
        return WebDatasetReader(path, source=source)
    if fmt == "files":
        return FilesReader(path, source=source)
    if fmt == "folder":
        return FolderReader(path, source=source)
    if fmt == "table":
        return TableReader(path, image_column=image_column, caption_column=caption_column,
                           images_dir=images_dir, source=source, encoding=encoding)
    if fmt == "coco":
        return CocoReader(path, images_dir=images_dir, source=source)
    raise ValueError(f"unknown format {fmt!r} (known formats: {', '.join(FORMATS)})")
