"""img2dataset `files` output: `00000/000000001.jpg` + `.txt` + optional `.json`, recursively.

Each .txt holds one caption (taken whole, unvalidated); the .json sidecar becomes the meta.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from ..sample import Sample, Skipped
from .base import derive_source, group_by_stem, images_in, read_caption_file, read_meta_file


class FilesReader:
    """Pairs `DIR/KEY.<image>` with `DIR/KEY.txt`; the key is the relative path sans extension."""

    def __init__(self, root: str, *, source: str | None = None) -> None:
        if not os.path.isdir(root):
            raise ValueError(f"not a directory: {root}")
        self.root = root
        self.source = source or derive_source(root)

    def estimate(self) -> int | None:
        return sum(1 for _, files in group_by_stem(self.root) if images_in(files))

    def __iter__(self) -> Iterator[Sample | Skipped]:
        for key, files in group_by_stem(self.root):
            images, txt = images_in(files), files.get(".txt")
            if not images and txt is None:
                continue  # parquet/stats files of img2dataset, etc.
            if not images:
                yield Skipped(key, "missing_image", f"{txt} has no image")
                continue
            if txt is None:
                yield Skipped(key, "missing_caption", f"{images[0]} has no .txt")
                continue
            caption = read_caption_file(txt, key)
            if isinstance(caption, Skipped):
                yield caption
                continue
            meta = read_meta_file(files[".json"], key) if ".json" in files else {}
            if isinstance(meta, Skipped):
                yield meta
                continue
            yield Sample(key=key, image_ref=images[0], caption=caption, image_path=images[0],
                         meta=meta, source=self.source)
