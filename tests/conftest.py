"""Fixtures: real small data made by the tests, loaded once per session (helpers live in helpers.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # so that tests import helpers.py

from helpers import SHARED, build_shapes_store, copy_store  # noqa: E402

from asif_vdb import AsifClient  # noqa: E402
from asif_vdb.workflows.demo import make_demo_data  # noqa: E402


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    if not (SHARED / "flickr8k" / "captions.csv").exists():
        pytest.skip(f"../shared/datasets not found at {SHARED}: real-data tests need it")
    return SHARED


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory):
    """The demo's drawn anchors (162 pairs) and 9 held-out queries, made once."""
    folder = tmp_path_factory.mktemp("demo")
    return make_demo_data(folder)


@pytest.fixture(scope="session")
def shapes_store(tmp_path_factory: pytest.TempPathFactory):
    """A tiny store of 54 drawn shape pairs with a 'shapes' label set, built once: copy it before
    changing it (``store_copy``)."""
    return build_shapes_store(tmp_path_factory.mktemp("shapes"))


@pytest.fixture
def store_copy(shapes_store, tmp_path: Path):
    """A private copy of the shapes store: (store path, queries, anchor pairs)."""
    store, queries, pairs = shapes_store
    return copy_store(store, tmp_path / "store"), queries, pairs


@pytest.fixture(scope="session")
def served_shapes(shapes_store, tmp_path_factory: pytest.TempPathFactory):
    """The shapes store with an image gallery 'pics' of the held-out queries and a text gallery
    'words', built once: (store path, queries, anchor pairs). Copy it before changing it."""
    store, queries, pairs = shapes_store
    folder = tmp_path_factory.mktemp("served")
    copy = copy_store(store, folder / "store")
    with AsifClient(copy) as client:
        client.index_gallery("pics", images=[q for q, _ in queries], payloads=[{"shape": s} for _, s in queries])
        client.index_gallery("words", texts=["a red circle", "a blue square", "a green triangle"])
    return copy, queries, pairs


@pytest.fixture
def serve_copy(served_shapes, tmp_path: Path):
    """A private copy of ``served_shapes``: (store path, queries, anchor pairs)."""
    store, queries, pairs = served_shapes
    return copy_store(store, tmp_path / "store"), queries, pairs
