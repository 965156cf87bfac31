"""Write stage: full payloads for new pairs, one batched `add_anchor_embeddings` call per batch."""

from __future__ import annotations

import datetime
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from asif_vdb import RESERVED_PAYLOAD_KEYS

from .prepare import Pair

#: Payload fields the pipeline sets; a meta key of the same name is kept as `meta_<key>`.
CORE_FIELDS = frozenset({"image", "caption", "source", "key"}) | RESERVED_PAYLOAD_KEYS


def json_safe(value: Any) -> Any:
    """Payload values Qdrant can store: NaN/inf become None, dates and other objects become text."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return None
    if isinstance(value, (datetime.date, datetime.datetime, datetime.time)):
        return value.isoformat()
    return str(value)


def payload(pair: Pair, source: str) -> dict[str, Any]:
    """{meta..., image, caption, source, key, hash}: the image reference is absolute for files."""
    s = pair.sample
    out: dict[str, Any] = {}
    for k, v in s.meta.items():
        k = str(k)
        out[f"meta_{k}" if k in CORE_FIELDS else k] = json_safe(v)
    ref = os.path.abspath(s.image_path) if s.image_path else s.image_ref
    out.update(image=ref, caption=pair.caption, source=source, key=s.key, hash=pair.hash)
    return out


def write_pairs(client: Any, pairs: Sequence[Pair], image_vectors: np.ndarray,
                text_vectors: np.ndarray, source: str) -> int:
    """Add the pairs (already de-duplicated against the store); returns how many were given."""
    if not pairs:
        return 0
    client.add_anchor_embeddings(image_vectors, text_vectors, [payload(p, source) for p in pairs])
    return len(pairs)
