"""Evaluation and gallery inputs: labelled image folders, caption tables with splits, item tables.

They are read with the same table reader as anchor pairs (``table.read_rows``); a bad row or an
unreadable file is reported, never silently dropped: the functions here either skip it and say so
(``skipped``) or fail naming the file and line.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asif_vdb import IMAGE_SUFFIXES, InputError

from .table import read_rows, table_columns


@dataclass
class LabelledImages:
    """Images with class labels: an ImageFolder (``root/CLASS/*.jpg``)."""

    paths: list[Path]
    labels: np.ndarray
    classes: list[str]


@dataclass
class CaptionTable:
    """Images with their captions (file order), e.g. one split of Flickr8k."""

    images: list[Path]
    captions: list[list[str]]
    skipped: list[str] = field(default_factory=list)


@dataclass
class ItemTable:
    """Gallery items: image paths or texts (one of the two), and each row's other columns."""

    images: list[Path] | None
    texts: list[str] | None
    payloads: list[dict[str, Any]]
    skipped: list[str] = field(default_factory=list)


def read_class_map(class_map: str | os.PathLike[str] | dict[str, str] | None) -> dict[str, str]:
    """A {folder: class} map given as a dict or a JSON file (None: no renaming)."""
    if class_map is None or isinstance(class_map, dict):
        return dict(class_map or {})
    try:
        data = json.loads(Path(class_map).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{class_map}: cannot read the class map as JSON: {e}") from e
    if not isinstance(data, dict):
        raise InputError(f"{class_map}: a class map is a JSON object {{folder: class}}")
    return {str(k): str(v) for k, v in data.items()}


def labelled_folder(root: str | os.PathLike[str], classes: list[str] | None = None,
                    class_map: str | os.PathLike[str] | dict[str, str] | None = None,
                    limit_per_class: int | None = None) -> LabelledImages:
    """The images of an ImageFolder and their class indices. A class is its folder's name, or what
    ``class_map`` maps it to; with ``classes`` given (a label set's), every folder must name one of
    them and labels index that list."""
    folder = Path(root)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder (expected an ImageFolder: one sub-folder per class)")
    mapping = read_class_map(class_map)
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir())
    if not subfolders:
        raise InputError(f"{folder}: no class sub-folders")
    names = list(classes) if classes is not None else \
        list(dict.fromkeys(mapping.get(f.name, f.name) for f in subfolders))
    index = {c: i for i, c in enumerate(names)}
    unknown = [f.name for f in subfolders if mapping.get(f.name, f.name) not in index]
    if unknown:
        raise InputError(f"{folder}: folder(s) {', '.join(unknown)} match no class of the label set "
                         f"({', '.join(names)}); rename them or give a class map")
    paths: list[Path] = []
    labels: list[int] = []
    for sub in subfolders:
        files = sorted(p for p in sub.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        files = files[:limit_per_class] if limit_per_class is not None else files
        paths.extend(files)
        labels.extend([index[mapping.get(sub.name, sub.name)]] * len(files))
    if not paths:
        raise InputError(f"{folder}: no images found in its class folders")
    return LabelledImages(paths, np.asarray(labels, dtype=np.int64), names)


def _rows(path: Path, columns: tuple[str, ...], encoding: str) -> tuple[list[dict[str, Any]], list[str]]:
    if not path.is_file():
        raise InputError(f"{path}: table not found")
    try:
        found = table_columns(str(path), encoding)
    except (ValueError, OSError) as e:
        raise InputError(f"{path}: {e}") from e
    missing = [c for c in columns if c not in found]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; found {found}")
    rows, skipped = [], []
    for _, row in read_rows(str(path), encoding):
        if isinstance(row, str):
            skipped.append(f"{path}: {row}")
        else:
            rows.append(row)
    return rows, skipped


def _image_root(table: Path, images_dir: str | os.PathLike[str] | None, first: str) -> Path:
    """Where a table's relative image paths point: ``images_dir``, else the table's folder (or its
    ``images/`` sub-folder when the paths are found there)."""
    if images_dir is not None:
        return Path(images_dir)
    if (table.parent / first).exists() or not (table.parent / "images" / first).exists():
        return table.parent
    return table.parent / "images"


def caption_table(table: str | os.PathLike[str], images_dir: str | os.PathLike[str] | None = None,
                  splits: str | os.PathLike[str] | None = None, split: str | None = None,
                  limit: int | None = None, encoding: str = "utf-8-sig") -> CaptionTable:
    """A table ``image,caption`` (several rows per image allowed), optionally the images that
    ``splits`` (a table ``image,split``) puts in ``split``. Rows with an empty caption are skipped."""
    path = Path(table)
    rows, skipped = _rows(path, ("image", "caption"), encoding)
    root = _image_root(path, images_dir, str(rows[0]["image"]) if rows else "")
    grouped: dict[str, list[str]] = {}
    for r in rows:
        caption = r.get("caption")
        if not isinstance(caption, str) or not caption.strip():
            skipped.append(f"{path}: image {r.get('image')}: empty caption")
            continue
        grouped.setdefault(str(r["image"]), []).append(caption)
    names = list(grouped)
    if split is not None:
        if splits is None:
            raise InputError("a split needs a splits table (image,split)")
        split_rows, bad = _rows(Path(splits), ("image", "split"), encoding)
        skipped += bad
        which = {str(r["image"]): r["split"] for r in split_rows}
        names = [n for n in names if which.get(n) == split]
        if not names:
            found = sorted({str(v) for v in which.values()})
            raise InputError(f"{splits}: no image of {path} is in split {split!r} (splits: {', '.join(found)})")
    names = names[:limit]
    return CaptionTable([root / n for n in names], [grouped[n] for n in names], skipped)


def item_table(table: str | os.PathLike[str], images_dir: str | os.PathLike[str] | None = None,
               encoding: str = "utf-8-sig") -> ItemTable:
    """A table with a column ``image`` (paths, relative to ``images_dir`` or the table's folder) or
    ``text``; the other columns become each item's payload. Rows with an empty cell are skipped."""
    path = Path(table)
    try:
        columns = table_columns(str(path), encoding) if path.is_file() else []
    except (ValueError, OSError) as e:
        raise InputError(f"{path}: {e}") from e
    if ("image" in columns) == ("text" in columns):
        if not path.is_file():
            raise InputError(f"{path}: table not found")
        raise InputError(f"{path}: needs exactly one of the columns 'image' and 'text'; found {columns}")
    key = "image" if "image" in columns else "text"
    rows, skipped = _rows(path, (key,), encoding)
    kept, payloads = [], []
    for n, r in enumerate(rows, 1):
        cell = r.get(key)
        if not isinstance(cell, str) or not cell.strip():
            skipped.append(f"{path}: row {n}: empty {key}")
            continue
        kept.append(cell)
        payloads.append({c: v for c, v in r.items() if c != key and c is not None})
    if key == "text":
        return ItemTable(None, kept, payloads, skipped)
    root = Path(images_dir) if images_dir is not None else path.parent
    return ItemTable([(root / c).resolve() for c in kept], None, payloads, skipped)
