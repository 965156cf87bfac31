"""Helpers shared by the tests (the one module they share; no test module imports another).

Stores with tiny made-up dimensions are created through the public client with declared encoder
identities, so no model is loaded; stores of real small data use the offline default encoders.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from asif_vdb import AsifClient, AsifParams, EncoderIdentity, Tuning
from asif_vdb.cli import main
from asif_vdb.engine.layout import ANCHORS, VECTOR, VISIBLE
from asif_vdb.maths.anchor_lists import EPS, depth, from_hits
from asif_vdb.store.base import CollectionSpec, PointData
from asif_vdb.store.disk import copy_tree, not_store_file
from asif_vdb.store.edge import EdgeBackend
from asif_vdb.workflows.demo import SHAPES, make_demo_data

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
DATA = Path(__file__).resolve().parent / "data"
#: Dimensions of the made-up encoders of synthetic stores.
DI, DT = 8, 6
FAKE_IMAGE = EncoderIdentity(family="timm", name="fake", weights="test", dim=DI)
FAKE_TEXT = EncoderIdentity(family="sentence-transformers", name="fake", weights="test", dim=DT)


# -- random data ----------------------------------------------------------------------------------------
def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """n random unit vectors of dimension d."""
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def structured(rng: np.random.Generator, n: int, d: int, offset: float = 2.0) -> np.ndarray:
    """Unit rows sharing a common direction (as real embeddings do), non-negative like pooled CNN
    features when ``offset`` is large, so that centring and whitening change neighbours."""
    common = np.abs(rng.standard_normal(d))
    x = np.abs(rng.standard_normal((n, d)) * rng.uniform(0.2, 3.0, d)) + offset * common / np.linalg.norm(common)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def image_bytes(fmt: str = "JPEG", color: tuple[int, int, int] = (200, 30, 30), size: int = 4) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format=fmt)
    return buf.getvalue()


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def make_tar(path: Path, members: list[tuple[str, bytes]], links: tuple[str, ...] = ()) -> Path:
    """A tar whose member names are written verbatim (absolute and `..` names included)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name in links:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    return path


# -- synthetic stores (no model loaded) -------------------------------------------------------------------
def make_store(path: Path | None, k: int, p: float = 1.0, tuning: Tuning | None = None,
               image_dim: int = DI, text_dim: int = DT) -> AsifClient:
    """A store of made-up encoders (declared identities), created now; ``path`` None: local mode."""
    image = FAKE_IMAGE.model_copy(update={"dim": image_dim})
    text = FAKE_TEXT.model_copy(update={"dim": text_dim})
    kwargs: dict[str, Any] = {"params": AsifParams(k=k, p=p), "tuning": tuning, "image_identity": image,
                              "text_identity": text}
    client = AsifClient(path, **kwargs) if path is not None else AsifClient(location=":memory:", **kwargs)
    client.create_store()
    return client


def reopen(client: AsifClient, path: Path, tuning: Tuning | None = None) -> AsifClient:
    client.close()
    return AsifClient(path, tuning=tuning)


def add(client: AsifClient, rng: np.random.Generator, n: int, source: str = "s",
        image: np.ndarray | None = None) -> list[int]:
    """n random pairs; with ``image`` they all share that image vector (one image, many captions:
    equal similarities on the image side, as in Flickr8k)."""
    engine = client.engine
    di, dt = (engine.state.dims["image"], engine.state.dims["text"]) if engine else (DI, DT)
    tag = rng.integers(1 << 62)
    payloads = [{"caption": f"{tag}-{i}", "source": source} for i in range(n)]
    images = unit_rows(rng, n, di) if image is None else np.repeat(image[None, :], n, axis=0)
    return client.add_anchor_embeddings(images, unit_rows(rng, n, dt), payloads)


def anchor_image(client: AsifClient, rng: np.random.Generator) -> np.ndarray | None:
    """The image vector of a random stored anchor (None when there is none)."""
    ids = client.anchor_ids()
    if not ids or client.engine is None:
        return None
    return client.engine.anchors.vectors([int(rng.choice(ids))], "image")[1][0]


def put_sets(client: AsifClient, rng: np.random.Generator, n_text: int, n_image: int) -> None:
    """A text gallery and an image gallery of random embeddings, through the public client."""
    engine = client.engine
    assert engine is not None
    if n_text:
        client.index_gallery_embeddings("t", unit_rows(rng, n_text, engine.state.dims["text"]), "text",
                                        [{"class": i} for i in range(n_text)])
    if n_image:
        client.index_gallery_embeddings("g", unit_rows(rng, n_image, engine.state.dims["image"]), "image",
                                        [{"ref": str(i)} for i in range(n_image)])


def seeded_store(path: Path, k: int, seed: int, n_anchors: int, n_text: int, n_image: int,
                 tuning: Tuning | None = None) -> tuple[AsifClient, np.random.Generator]:
    """A store with ``n_anchors`` random pairs, a text gallery and an image gallery."""
    rng = np.random.default_rng(seed)
    client = make_store(path, k=k, tuning=tuning)
    add(client, rng, n_anchors)
    put_sets(client, rng, n_text, n_image)
    return client, rng


def assert_fresh(client: AsifClient, tol: float = 1e-5, sims_tol: float = 1e-6) -> None:
    """Every candidate's stored relative vector equals a rebuild's (the query recipe on its stored
    embedding), and its stored list is the true top of its anchors (ids, completeness, similarities
    to ``sims_tol``); an anchors gallery behind the anchors is not checked (it catches up at its next
    search)."""
    engine = client.engine
    assert engine is not None
    k = engine.config.params.k
    K = depth(k)
    behind = {f"gallery:{n}" for n, i in engine.config.galleries.items() if i.behind_added or i.behind_deleted}
    for m in ("image", "text"):
        points = [pt for pt in engine.lists.stored(m) if pt[2] not in behind]
        if not points:
            continue
        vecs = np.stack([pt[1] for pt in points])
        want = engine.anchors.relative(vecs, m).toarray()
        got = np.zeros_like(want)
        for row, pt in enumerate(points):
            assert pt[3] is not None, f"candidate {pt[0]} has no stored relative vector"
            idx, vals = pt[3]
            got[row, idx] = vals
        assert np.abs(want - got).max(initial=0.0) <= tol
        every = engine.anchors.count() + 1  # search every anchor: the whole positive ranking
        queries = engine.space.embed(vecs, m)
        truth = [from_hits(h.ids, h.scores, every)
                 for h in engine.state.backend.search_dense(ANCHORS[m], VECTOR, queries, every, VISIBLE)]
        for pt, true in zip(points, truth):
            lst = pt[4]
            assert lst is not None, f"candidate {pt[0]} has no usable saved state"
            assert min(k, len(true)) <= len(lst) <= K
            # the same anchors as the true ranking's head, with the same similarities; their order
            # inside the list may differ only between near-equal values (settled when it matters)
            assert sorted(lst.ids.tolist()) == sorted(true.ids[: len(lst)].tolist())
            truth_sims = dict(zip(true.ids.tolist(), true.sims.tolist()))
            np.testing.assert_allclose(lst.sims, [truth_sims[i] for i in lst.ids.tolist()], atol=sims_tol)
            assert np.all(np.diff(lst.sims) <= EPS)
            assert not lst.full or len(lst) == len(true)  # complete means nothing positive is missing


# -- real small data (the offline default encoders) ----------------------------------------------------
def build_shapes_store(folder: Path, k: int = 10) -> tuple[Path, list[tuple[Path, str]], list[tuple[Path, str]]]:
    """A tiny embedded store of the demo's drawn shapes (54 real pairs) with a 'shapes' label set.
    Returns (store path, held-out (query, shape) pairs, anchor (image, caption) pairs)."""
    table, queries = make_demo_data(folder / "data", per_combo=1)
    pairs = demo_pairs(table)
    store = folder / "store"
    with AsifClient(store, params=AsifParams(k=k, p=1.0)) as client:
        client.add_anchors([p for p, _ in pairs], [c for _, c in pairs], source="shapes")
        client.create_label_set("shapes", list(SHAPES), templates=["a {} on a background."])
    return store, queries, pairs


def demo_pairs(table: Path) -> list[tuple[Path, str]]:
    """The (image path, caption) rows of the demo's captions.csv."""
    import csv

    with table.open(newline="", encoding="utf-8") as f:
        return [(table.parent / row["image"], row["caption"]) for row in csv.DictReader(f)]


def restore_v1_store(target: Path) -> dict[str, Any]:
    """Write the store the first release wrote (tests/data/store_v1: its config, blobs and every
    collection's points, dumped from a store that release built) at ``target``; returns the answers
    that release gave on it."""
    fixture = DATA / "store_v1"
    meta = json.loads(gzip.open(fixture / "collections.json.gz", "rt").read())
    arrays = np.load(fixture / "collections.npz")
    backend = EdgeBackend(target)
    try:
        for name, m in meta.items():
            dense = {k.split("/")[2]: arrays[k] for k in arrays.files if k.startswith(name + "/dense/")}
            sparse = sorted({k.split("/")[2] for k in arrays.files if k.startswith(name + "/sparse/")})
            backend.ensure_collection(CollectionSpec(name, dense={k: v.shape[1] for k, v in dense.items()},
                                                     sparse=tuple(sparse)))
            points = []
            for i, (pid, payload) in enumerate(zip(m["ids"], m["payloads"])):
                vectors = {k: v[i] for k, v in dense.items() if not np.isnan(v[i]).any()}
                rows = {}
                for s in sparse:
                    ptr = arrays[f"{name}/sparse/{s}/indptr"]
                    rows[s] = (arrays[f"{name}/sparse/{s}/indices"][ptr[i]:ptr[i + 1]],
                               arrays[f"{name}/sparse/{s}/values"][ptr[i]:ptr[i + 1]])
                points.append(PointData(pid, payload, vectors, rows))
            for start in range(0, len(points), 256):
                backend.upsert(name, points[start : start + 256])
        backend.write_config(json.loads((fixture / "asif_config.json").read_text()))
    finally:
        backend.close()
    shutil.copytree(fixture / "blobs", target / "blobs", dirs_exist_ok=True)
    return dict(json.loads((fixture / "expected.json").read_text()))


# -- store backends ------------------------------------------------------------------------------------
_SERVER_URL: str | None = None


def qdrant_server_url() -> str:
    """Start one Qdrant container per session with testcontainers; skip with the reason if impossible."""
    global _SERVER_URL
    if _SERVER_URL is not None:
        return _SERVER_URL
    if shutil.which("docker") is None:
        pytest.skip("server tests need Docker (no docker binary on this machine)")
    try:
        import docker

        docker.from_env().ping()
    except Exception as e:  # no engine, no socket, no permission
        pytest.skip(f"server tests need a running Docker engine: {e}")
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    container = DockerContainer("qdrant/qdrant:latest").with_exposed_ports(6333)
    container.start()
    wait_for_logs(container, "Qdrant gRPC listening", timeout=60)
    _SERVER_URL = f"http://{container.get_container_host_ip()}:{container.get_exposed_port(6333)}"
    return _SERVER_URL


@contextmanager
def open_store(kind: str, tmp_path: Path, **kwargs: Any) -> Iterator[AsifClient]:
    """The same client on an embedded Edge store, qdrant-client's local mode, or a real server."""
    if kind == "edge":
        client = AsifClient(tmp_path / "store", **kwargs)
    elif kind == "memory":
        client = AsifClient(location=":memory:", **kwargs)
    elif kind == "server":
        client = AsifClient(url=qdrant_server_url(), prefix=f"t{uuid.uuid4().hex[:8]}", **kwargs)
    else:
        raise ValueError(kind)
    try:
        yield client
    finally:
        client.close()


BACKENDS = ["edge", "memory", pytest.param("server", marks=pytest.mark.server)]


# -- the command line ------------------------------------------------------------------------------------
def run_cli(*args: str, input: str | None = None) -> Result:
    """``asif ARGS`` in this process (click's runner; stderr apart from stdout)."""
    return CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)


def run_asif(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``asif ARGS`` in a fresh process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "asif_vdb.cli", *[str(a) for a in args]], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def error_lines(result: Result) -> list[str]:
    """The ``error: ...`` lines a command printed on stderr (an input error prints exactly one)."""
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


# -- random anchors of the default encoders' dimensions (test_client, test_persistence) --------------------
#: Classes and templates of the label set built over random anchors (its prompts are real texts).
THING_CLASSES = ["dog", "cat", "car", "tree", "boat"]
THING_TEMPLATES = ["a photo of a {}.", "a drawing of a {}."]
#: Dimensions of the offline default encoders (tf_efficientnet_lite2, all-MiniLM-L6-v2).
DEFAULT_DI, DEFAULT_DT = 1280, 384


def random_anchors(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """n random pairs in the default encoders' dimensions: (image rows, caption rows, payloads
    with captions ``pair <i>``)."""
    rng = np.random.default_rng(seed)
    return (unit_rows(rng, n, DEFAULT_DI), unit_rows(rng, n, DEFAULT_DT),
            [{"caption": f"pair {i}"} for i in range(n)])


def anchor_data(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """n structured pairs of the default encoders' dimensions (1280-d images, 384-d captions)."""
    rng = np.random.default_rng(seed)
    return structured(rng, n, 1280), structured(rng, n, 384), [{"caption": f"pair {i}"} for i in range(n)]


# -- fault injection (test_fault_injection.py) --------------------------------------------------------
#: Backend calls that write: a kill -9 may fall before or after any of them.
WRITE_CALLS = ("upsert", "insert_sparse", "replace_sparse", "update_vectors", "set_payload", "delete", "delete_where",
               "write_config", "write_blob", "drop_collection", "ensure_collection")


def kill_at_write(backend: Any, nth: int | None, when: str = "after") -> list[str]:
    """Count the backend's write calls; with ``nth``, SIGKILL this process before or after the nth
    (the closest thing to pulling the plug: nothing is flushed or cleaned up). Returns the list the
    calls are recorded in."""
    import os
    import signal

    calls: list[str] = []
    for method in WRITE_CALLS:
        real = getattr(backend, method)

        def wrapper(*args: Any, _real: Any = real, _method: str = method, **kwargs: Any) -> Any:
            calls.append(_method)
            mine = len(calls)  # a call may make others (counted too) before it returns
            if mine == nth and when == "before":
                os.kill(os.getpid(), signal.SIGKILL)
            out = _real(*args, **kwargs)
            if mine == nth:
                os.kill(os.getpid(), signal.SIGKILL)
            return out

        setattr(backend, method, wrapper)
    return calls


# -- the service (test_serve_*.py, test_browser.py, test_readers_beside_writer.py) ----------------------
def copy_store(src: Path, dst: Path) -> Path:
    """A private copy of a closed store, sparse: an embedded store preallocates about 0.5 GB of sparse
    files, which a plain copy writes out in full (copies of the shapes store made 25 GB in one run)."""
    copy_tree(src, dst, skip=not_store_file, digests=False)
    return dst


def synthetic_labels(client: AsifClient, rng: np.random.Generator, name: str, n_classes: int) -> list[str]:
    """A label set of random prompt embeddings (one template), written through the engine (no model)."""
    from asif_vdb.schema.store import LabelSetInfo

    classes = [f"class{i}" for i in range(n_classes)]
    assert client.engine is not None
    client.engine.label_sets.store(LabelSetInfo(name=name, classes=classes, templates=["{}"]), classes,
                                   unit_rows(rng, n_classes, client.engine.state.dims["text"]))
    return classes


@contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1") -> Iterator[str]:
    """A live uvicorn server for ``app`` on a free loopback port (bound before it starts: no race for
    the port), in a thread; yields its URL and stops it cleanly."""
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


def find_chromium() -> str | None:
    """Debian's chromium (the real binary first; $CHROMIUM_PATH wins), or None."""
    import os

    candidates = [os.environ["CHROMIUM_PATH"]] if "CHROMIUM_PATH" in os.environ else \
        ["/usr/lib/chromium/chromium", shutil.which("chromium") or ""]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def update_batches(seed: int, n_batches: int, batch: int) -> dict[str, Any]:
    """The data of a store that grows by batches (test_readers_beside_writer.py): its first anchors,
    a label set's prompt vectors, a gallery, the batches and the queries, the same in every process."""
    rng = np.random.default_rng(seed)
    pairs = lambda n, tag: (unit_rows(rng, n, DI), unit_rows(rng, n, DT),  # noqa: E731
                            [{"caption": f"{tag}-{i}", "source": tag} for i in range(n)])
    return {"first": pairs(100, "first"), "prompts": unit_rows(rng, 6, DT), "gallery": unit_rows(rng, 40, DI),
            "batches": [pairs(batch, f"b{b}") for b in range(n_batches)], "queries": unit_rows(rng, 4, DI)}


def growing_store(path: Path, data: dict[str, Any], batches: int) -> AsifClient:
    """The store of ``update_batches`` data after its first ``batches`` batches."""
    from asif_vdb.schema.store import LabelSetInfo

    client = make_store(path, k=8)
    client.add_anchor_embeddings(*data["first"])
    classes = [f"class{i}" for i in range(len(data["prompts"]))]
    assert client.engine is not None
    client.engine.label_sets.store(LabelSetInfo(name="things", classes=classes, templates=["{}"]), classes,
                                   data["prompts"])
    client.index_gallery_embeddings("g", data["gallery"], "image")
    for img, txt, payloads in data["batches"][:batches]:
        client.add_anchor_embeddings(img, txt, payloads)
    return client
