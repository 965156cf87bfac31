"""Hash stage: load a sample's image bytes, check its caption, and compute the pair's content hash.

Hashing bytes is cheap next to decoding and encoding, so resuming a run looks pairs up by hash
and skips the stored ones before any image is decoded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from asif_vdb import pair_hash

from .sample import Sample, Skipped


@dataclass(frozen=True)
class Pair:
    """A well-formed sample with its bytes in hand, ready for de-duplication and decoding."""

    sample: Sample
    caption: str  # stripped; what is encoded, stored and hashed
    image_digest: str  # sha256 of the image bytes: pairs sharing an image share its vector
    hash: str  # content hash of image digest + caption, as AsifClient.add_anchors computes it
    image_bytes: bytes


class Preparer:
    """Turns samples into pairs; remembers the last file read (folder captions share an image)."""

    def __init__(self) -> None:
        self._last: tuple[str, bytes, str] | None = None

    def _load(self, sample: Sample) -> tuple[bytes, str] | Skipped:
        if sample.image_bytes is not None:
            return sample.image_bytes, hashlib.sha256(sample.image_bytes).hexdigest()
        path = sample.image_path
        if path is None:
            return Skipped(sample.key, "missing_image", "sample has neither a path nor bytes")
        if self._last is not None and self._last[0] == path:
            return self._last[1], self._last[2]
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return Skipped(sample.key, "missing_image", path)
        except IsADirectoryError:
            return Skipped(sample.key, "missing_image", f"{path} is a directory")
        except OSError as e:
            return Skipped(sample.key, "unreadable", f"{path}: {e.strerror or e}")
        digest = hashlib.sha256(data).hexdigest()
        self._last = (path, data, digest)
        return data, digest

    def __call__(self, sample: Sample) -> Pair | Skipped:
        caption = sample.caption.strip() if isinstance(sample.caption, str) else ""
        if not caption:
            return Skipped(sample.key, "empty_caption", repr(sample.caption)[:80])
        loaded = self._load(sample)
        if isinstance(loaded, Skipped):
            return loaded
        data, digest = loaded
        if not data:
            return Skipped(sample.key, "corrupt_image", f"{sample.image_ref}: empty file")
        return Pair(sample, caption, digest, pair_hash(digest, caption), data)
