"""Readers for ../shared/datasets (Flickr8k, CIFAR-10 test) and a cache of their embeddings.

The cache (``$ASIF_CACHE``, default ``~/.cache/asif-vdb``) lets evaluations and sweeps reuse one
encoding pass; it is keyed by the encoder identities so a different encoder never reads stale rows.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("ASIF_DATASETS", REPO.parent / "shared" / "datasets"))
CACHE = Path(os.environ.get("ASIF_CACHE", Path.home() / ".cache" / "asif-vdb"))
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def require_datasets() -> Path:
    if not (DATASETS / "flickr8k" / "captions.csv").exists():
        raise SystemExit(f"datasets not found at {DATASETS} (set ASIF_DATASETS); see shared/datasets/README.md")
    return DATASETS


@dataclass
class Flickr8k:
    images: list[str]                 # image file names, in a fixed order
    captions: dict[str, list[str]]    # image -> its five captions, in file order
    split: dict[str, str]             # image -> train/val/test

    def image_path(self, name: str) -> Path:
        return DATASETS / "flickr8k" / "images" / name

    def names(self, split: str) -> list[str]:
        return [n for n in self.images if self.split[n] == split]


def load_flickr8k() -> Flickr8k:
    root = require_datasets() / "flickr8k"
    captions: dict[str, list[str]] = defaultdict(list)
    with (root / "captions.csv").open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            captions[row["image"]].append(row["caption"])
    with (root / "splits.csv").open(newline="", encoding="utf-8") as f:
        split = {row["image"]: row["split"] for row in csv.DictReader(f)}
    images = sorted(split)
    return Flickr8k(images=images, captions=dict(captions), split=split)


def load_cifar10() -> tuple[list[Path], np.ndarray]:
    """CIFAR-10 test: (paths, labels) in class then file order."""
    root = require_datasets() / "cifar10-test"
    paths, labels = [], []
    for label, name in enumerate(CIFAR_CLASSES):
        files = sorted((root / name).glob("*.jpg"))
        paths.extend(files)
        labels.extend([label] * len(files))
    return paths, np.asarray(labels)


def cifar_calibration_mask(labels: np.ndarray, per_class: int = 100) -> np.ndarray:
    """The fixed slice for choosing defaults: the first ``per_class`` images of each class."""
    mask = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        mask[np.flatnonzero(labels == c)[:per_class]] = True
    return mask


def cached(name: str, identity: dict, compute) -> np.ndarray:
    """Load ``name`` from the cache if it was made by the same encoder identity, else compute it."""
    import fcntl

    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    path = CACHE / f"{name}-{key}.npy"
    if path.exists():
        return np.load(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:  # concurrent runs wait for one computation
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return np.load(path)
        value = np.asarray(compute(), dtype=np.float32)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, value)
        os.replace(tmp, path)
    return value


def embeddings(client) -> dict[str, np.ndarray]:
    """Embeddings of every Flickr8k image and caption and every CIFAR-10 test image (cached)."""
    f8k = load_flickr8k()
    cifar_paths, _ = load_cifar10()
    # the cache key is the encoder identity plus the precision it ran in (bfloat16 captions differ
    # from float32 ones by up to 3e-5 in cosine: not the same numbers)
    img, txt = client.encoder("image"), client.encoder("text")
    img_id = {**img.identity.model_dump(), "precision": str(getattr(img, "precision", "float32"))}
    txt_id = {**txt.identity.model_dump(), "precision": str(getattr(txt, "precision", "float32"))}
    flat_caps = [c for n in f8k.images for c in f8k.captions[n]]
    return {
        "flickr_images": cached("flickr8k-images", img_id, lambda: client.encode_images(
            [f8k.image_path(n) for n in f8k.images], progress=True)),
        "flickr_captions": cached("flickr8k-captions", txt_id, lambda: client.encode_texts(flat_caps, progress=True)),
        "cifar_images": cached("cifar10-test-images", img_id, lambda: client.encode_images(cifar_paths, progress=True)),
    }


def anchor_pairs(f8k: Flickr8k, names: list[str]) -> tuple[list[int], list[int], list[dict]]:
    """One anchor pair per caption of each named image: (rows of ``flickr_images``, rows of
    ``flickr_captions``, payloads with the image path, caption, split as source, and a content hash)."""
    import hashlib

    row = {n: i for i, n in enumerate(f8k.images)}
    start = np.cumsum([0] + [len(f8k.captions[n]) for n in f8k.images])
    img_rows, cap_rows, payloads = [], [], []
    for name in names:
        for j, caption in enumerate(f8k.captions[name]):
            img_rows.append(row[name])
            cap_rows.append(int(start[row[name]] + j))
            payloads.append({"image": str(f8k.image_path(name)), "caption": caption,
                             "source": f"flickr8k-{f8k.split[name]}",
                             "hash": hashlib.sha256(f"{name}\n{caption}".encode()).hexdigest()})
    return img_rows, cap_rows, payloads


def add_train_anchors(client, f8k: Flickr8k, emb: dict[str, np.ndarray], batch: int = 4096) -> int:
    """Add the Flickr8k-train pairs (``anchor_pairs``) to ``client`` from the cached embeddings, in
    batches as a user's script would; returns the pairs given."""
    img_rows, cap_rows, payloads = anchor_pairs(f8k, f8k.names("train"))
    for start in range(0, len(payloads), batch):
        sl = slice(start, start + batch)
        client.add_anchor_embeddings(emb["flickr_images"][img_rows[sl]], emb["flickr_captions"][cap_rows[sl]],
                                     payloads[sl])
    return len(payloads)
