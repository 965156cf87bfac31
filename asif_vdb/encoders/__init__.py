"""Frozen unimodal encoders behind one interface: timm image models and sentence-transformers text models."""

from __future__ import annotations

from asif_vdb.encoders.base import Encoder
from asif_vdb.encoders.registry import build_encoder, get_encoder, parse_spec

__all__ = ["Encoder", "build_encoder", "get_encoder", "parse_spec"]
