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
