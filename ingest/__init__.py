"""Ingestion pipeline: read image-caption pairs from common dataset layouts into anchors."""
