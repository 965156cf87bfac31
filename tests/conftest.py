"""Shared fixtures: real small models loaded once per session, small data made by the tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    if not (SHARED / "flickr8k" / "captions.csv").exists():
        pytest.skip(f"../shared/datasets not found at {SHARED}: real-data tests need it")
    return SHARED


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory):
    """The demo's drawn anchors (162 pairs) and 9 held-out queries, made once."""
    from asif_vdb.demo import make_demo_data

    folder = tmp_path_factory.mktemp("demo")
    table, queries = make_demo_data(folder)
    return table, queries


def build_shapes_store(folder: Path, k: int = 10):
    """A tiny embedded store of the demo's drawn shapes (54 real pairs) with a 'shapes' label set.
    Returns (store path, held-out (query, shape) pairs, anchor (image, caption) pairs)."""
    from asif_vdb.client import AsifClient
    from asif_vdb.config import AsifParams
    from asif_vdb.demo import SHAPES, make_demo_data
    from asif_vdb.minimal_ingest import read_pairs

    table, queries = make_demo_data(folder / "data", per_combo=1)
    pairs = read_pairs(table)
    store = folder / "store"
    with AsifClient(store, params=AsifParams(k=k, p=1.0)) as client:
        client.add_anchors([p for p, _ in pairs], [c for _, c in pairs], source="shapes")
        client.create_label_set("shapes", list(SHAPES), templates=["a {} on a background."])
    return store, queries, pairs
