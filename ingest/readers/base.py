"""The Reader interface and the small helpers the per-format readers share."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any, Protocol, runtime_checkable

from asif_vdb import IMAGE_SUFFIXES

from ..sample import Sample, Skipped

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_PATTERN = re.compile(r"[{*?\[]")


@runtime_checkable
class Reader(Protocol):
    """Yields one Sample per pair, or Skipped for a bad one; never raises on a single sample."""

    def __iter__(self) -> Iterator[Sample | Skipped]: ...

    def estimate(self) -> int | None:
        """Expected number of items for a progress bar, or None when unknown without a full read."""
        ...


def is_remote(ref: str) -> bool:
    """True for URLs (http://, https://, s3://, ...): readers never download, img2dataset does."""
    return bool(_SCHEME.match(ref)) and not ref.lower().startswith("file://")


def is_unsafe_member(name: str) -> bool:
    """Absolute paths and `..` components in an archive are refused (path traversal)."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return True
    return ".." in PurePosixPath(name.replace("\\", "/")).parts


def is_pattern(path: str) -> bool:
    """Brace or glob patterns such as `shards/{00000..00009}.tar` or `shards/*.tar`."""
    return bool(_PATTERN.search(path))


def derive_source(path: str, *, parent: bool = False) -> str:
    """A default source name: the directory name, the file stem, or (`parent`) the folder of it."""
    p = os.path.abspath(path.rstrip("/\\") or path)
    if parent or is_pattern(os.path.basename(p)):
        return os.path.basename(os.path.dirname(p)) or "source"
    if os.path.isdir(p):
        return os.path.basename(p) or "source"
    return os.path.splitext(os.path.basename(p))[0] or "source"


def read_caption_file(path: str, key: str) -> str | Skipped:
    """The raw text of a caption sidecar (a UTF-8 BOM is dropped), or why it cannot be read."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            return f.read()
    except UnicodeDecodeError as e:
        return Skipped(key, "bad_caption", f"{path}: not UTF-8 ({e.reason})")
    except OSError as e:
        return Skipped(key, "unreadable", f"{path}: {e.strerror or e}")


def parse_meta(raw: bytes | str, key: str, where: str) -> dict[str, Any] | Skipped:
    """A .json sidecar must hold one JSON object; anything else skips the sample as bad_meta."""
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        return Skipped(key, "bad_meta", f"{where}: {e}")
    if not isinstance(meta, dict):
        return Skipped(key, "bad_meta", f"{where}: not a JSON object")
    return meta


def read_meta_file(path: str, key: str) -> dict[str, Any] | Skipped:
    try:
        with open(path, "rb") as f:
            return parse_meta(f.read(), key, path)
    except OSError as e:
        return Skipped(key, "unreadable", f"{path}: {e.strerror or e}")


def group_by_stem(root: str) -> Iterator[tuple[str, dict[str, str]]]:
    """Yield (relative path without extension, {lower-case extension: path}) in a stable order.

    Pairing by relative stem means `a/dog.jpg` pairs with `a/dog.txt`, never with `b/dog.txt`.
    Hidden files and folders are ignored.
    """
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        groups: dict[str, dict[str, str]] = {}
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            stem, ext = os.path.splitext(name)
            groups.setdefault(stem, {}).setdefault(ext.lower(), os.path.join(dirpath, name))
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        for stem in sorted(groups):
            yield (stem if rel_dir == "." else f"{rel_dir}/{stem}"), groups[stem]


def images_in(files: dict[str, str]) -> list[str]:
    """The image paths of one stem group, in IMAGE_SUFFIXES order."""
    return [files[e] for e in IMAGE_SUFFIXES if e in files]
