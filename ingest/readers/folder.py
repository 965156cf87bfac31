"""A folder of images with `.txt` sidecar captions, paired by relative path without extension.

`a/dog.jpg` pairs with `a/dog.txt` (never `b/dog.txt`). Each non-empty line of a sidecar is one
caption, so one image can give several samples, keyed `a/dog.jpg#0`, `a/dog.jpg#1`, ...
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from ..sample import Sample, Skipped
from .base import derive_source, group_by_stem, images_in, read_caption_file


def split_captions(text: str) -> list[str]:
    """Non-empty lines are captions; with none, the raw text is kept (the pipeline rejects it)."""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines or [text]


class FolderReader:
    """Images (jpg jpeg png webp bmp gif tif tiff) under a root with captions in `.txt` sidecars."""

    def __init__(self, root: str, *, source: str | None = None) -> None:
        if not os.path.isdir(root):
            raise ValueError(f"not a directory: {root}")
        self.root = root
        self.source = source or derive_source(root)

    def estimate(self) -> int | None:
        """The number of images: a lower bound when sidecars hold several captions."""
        return sum(len(images_in(files)) for _, files in group_by_stem(self.root))

    def _rel(self, path: str) -> str:
        return os.path.relpath(path, self.root).replace(os.sep, "/")

    def __iter__(self) -> Iterator[Sample | Skipped]:
        for _stem, files in group_by_stem(self.root):
            images, txt = images_in(files), files.get(".txt")
            if txt is None:
                for path in images:
                    yield Skipped(self._rel(path), "missing_caption", f"{path} has no .txt")
                continue
            if not images:
                yield Skipped(self._rel(txt), "missing_image", f"{txt} has no image")
                continue
            text = read_caption_file(txt, self._rel(images[0]))
            if isinstance(text, Skipped):
                yield text
                continue
            captions = split_captions(text)
            for path in images:
                for i, caption in enumerate(captions):
                    yield Sample(key=f"{self._rel(path)}#{i}", image_ref=path, caption=caption,
                                 image_path=path, source=self.source)
