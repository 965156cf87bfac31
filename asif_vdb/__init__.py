"""asif-vdb: two frozen unimodal encoders + image-caption anchors = a zero-shot multimodal model on Qdrant.

The public API: ``AsifClient`` and the records it takes and returns; the errors it raises; and the
few input rules the ingestion pipeline shares with it (image decoding, content hashes, payload keys).
"""

from __future__ import annotations

from asif_vdb.client import AsifClient
from asif_vdb.encoders.images import IMAGE_SUFFIXES, MAX_IMAGE_PIXELS, load_image
from asif_vdb.encoders.st_text import check_captions
from asif_vdb.engine.layout import RESERVED_PAYLOAD_KEYS
from asif_vdb.errors import AsifError, EncoderMismatchError, InputError, NotFoundError, StoreError
from asif_vdb.features.anchors import pair_hash
from asif_vdb.schema.encoders import EncoderIdentity, EncoderSpec
from asif_vdb.schema.params import RECOMMENDED, AsifParams, Tuning
from asif_vdb.schema.results import Classification, Explanation, RefreshReport, SearchHit

__version__ = "0.2.0"

__all__ = [
    "IMAGE_SUFFIXES", "MAX_IMAGE_PIXELS", "RECOMMENDED", "RESERVED_PAYLOAD_KEYS", "AsifClient", "AsifError",
    "AsifParams", "Classification", "EncoderIdentity", "EncoderMismatchError", "EncoderSpec", "Explanation", "InputError",
    "NotFoundError", "RefreshReport", "SearchHit", "StoreError", "Tuning", "check_captions", "load_image",
    "pair_hash",
]
