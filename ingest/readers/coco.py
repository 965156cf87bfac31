"""COCO captions JSON: `images[].{id,file_name}` + `annotations[].{image_id,caption}`.

Images live under `images_dir` (default: the JSON's folder). Each annotation is one sample,
keyed `file_name#i` where i counts that image's captions in file order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from ..sample import Sample, Skipped
from .base import derive_source


def load_json(path: str) -> Any:
    """The parsed file; an unreadable or unparsable file makes the whole input unusable."""
    if not os.path.isfile(path):
        raise ValueError(f"JSON file not found: {path}")
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e


class CocoReader:
    """One sample per caption annotation; unknown image ids and absent images are skipped."""

    def __init__(self, path: str, *, images_dir: str | None = None, source: str | None = None,
                 data: Any = None) -> None:
        data = load_json(path) if data is None else data
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), list) \
                or not isinstance(data.get("images"), list):
            raise ValueError(f"{path}: not a COCO captions file (needs 'images' and 'annotations')")
        self.path = path
        self.images_dir = images_dir or os.path.dirname(os.path.abspath(path))
        self.source = source or derive_source(path)
        self.images: dict[Any, dict[str, Any]] = {
            im["id"]: im for im in data["images"]
            if isinstance(im, dict) and "id" in im and isinstance(im.get("file_name"), str)
        }
        self.annotations: list[Any] = data["annotations"]

    def estimate(self) -> int | None:
        return len(self.annotations)

    def __iter__(self) -> Iterator[Sample | Skipped]:
        counts: dict[Any, int] = {}
        exists: dict[str, bool] = {}
        for n, ann in enumerate(self.annotations):
            if not isinstance(ann, dict):
                yield Skipped(f"annotation[{n}]", "bad_row", "not a JSON object")
                continue
            ann_key = f"annotation:{ann.get('id', n)}"
            image = self.images.get(ann.get("image_id"))
            if image is None:
                yield Skipped(ann_key, "unknown_image_id", f"image_id={ann.get('image_id')!r}")
                continue
            name = image["file_name"]
            i = counts.get(image["id"], 0)
            counts[image["id"]] = i + 1
            key = f"{name}#{i}"
            caption = ann.get("caption")
            if not isinstance(caption, str):
                yield Skipped(key, "missing_caption", f"{ann_key} has no caption text")
                continue
            path = os.path.join(self.images_dir, name)
            if path not in exists:
                exists[path] = os.path.isfile(path)
            if not exists[path]:
                yield Skipped(key, "missing_image", path)
                continue
            meta = {("image_id" if k == "id" else k): v
                    for k, v in image.items() if k != "file_name"}
            meta["annotation_id"] = ann.get("id")
            yield Sample(key=key, image_ref=path, caption=caption, image_path=path,
                         meta=meta, source=self.source)
