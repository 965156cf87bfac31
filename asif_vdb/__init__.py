"""asif-vdb: two frozen unimodal encoders + image-caption anchors = a zero-shot multimodal model on Qdrant."""

from __future__ import annotations

from asif_vdb.config import AsifParams, EncoderSpec
from asif_vdb.errors import AsifError, EncoderMismatchError, InputError, NotFoundError, StoreError

__version__ = "0.1.0"


def __getattr__(name: str):  # the client pulls in torch lazily, only when asked for
    if name == "AsifClient":
        from asif_vdb.client import AsifClient

        return AsifClient
    raise AttributeError(name)


__all__ = ["AsifClient", "AsifError", "AsifParams", "EncoderMismatchError", "EncoderSpec", "InputError",
           "NotFoundError", "StoreError"]
