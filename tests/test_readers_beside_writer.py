"""Readers beside a writer: while one process adds anchors batch after batch (sharing the store it
holds), another classifies and searches in a loop through it, without an error, and every answer
equals the store's own answer after exactly the batches completed when it ran. A backup taken
meanwhile restores to a store that doctor finds healthy."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, growing_store, run_asif, update_batches

from asif_vdb import AsifClient, AsifParams
from asif_vdb.errors import StoreError
from asif_vdb.remote import RemoteClient
from asif_vdb.store.lock import holder

SEED, BATCHES, BATCH = 7, 12, 50


def start_writer(store: Path, pause: float) -> subprocess.Popen[str]:
    """A process that builds the store, shares it, and adds the batches one update each."""
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO / "tests")!r})
        from pathlib import Path
        from helpers import growing_store, update_batches
        from asif_vdb.serve.runner import shared
        data = update_batches({SEED}, {BATCHES}, {BATCH})
        client = growing_store(Path({str(store)!r}), data, 0)
        with shared(client) as working:
            print("shared", flush=True)
            for img, txt, payloads in data["batches"]:
                time.sleep({pause})
                working.add_anchor_embeddings(img, txt, payloads)
            time.sleep({pause})
        client.close()
        print("done", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "shared"
    return proc


def answers(client: AsifClient | RemoteClient, queries: np.ndarray) -> tuple[list, list]:
    classes = client.classify_embeddings(queries, "things", 3, threshold=None)
    hits = client.search_embeddings(queries, "image", "g", 5)
    return ([[(p.label, p.score) for p in c.predictions] for c in classes], [[(h.id, h.score) for h in row] for row in hits])


def remote_answers(reader: RemoteClient, queries: np.ndarray) -> tuple[int | None, tuple[list, list]]:
    """Both answers and the update count they ran at; None when an update landed between the two
    requests (each is consistent on its own, the pair is not)."""
    classes = reader.classify_embeddings(queries, "things", 3, threshold=None)
    first = reader.last_updates
    hits = reader.search_embeddings(queries, "image", "g", 5)
    assert first is not None and reader.last_updates is not None and reader.last_updates >= first
    got = ([[(p.label, p.score) for p in c.predictions] for c in classes], [[(h.id, h.score) for h in row] for row in hits])
    return (first if reader.last_updates == first else None), got


def same(a: tuple[list, list], b: tuple[list, list]) -> None:
    for x, y in zip(a, b):
        assert [[k for k, _ in row] for row in x] == [[k for k, _ in row] for row in y]
        np.testing.assert_allclose([s for row in x for _, s in row], [s for row in y for _, s in row], atol=1e-5)


def test_readers_get_answers_before_or_after_each_batch(tmp_path: Path) -> None:
    store = tmp_path / "store"
    data = update_batches(SEED, BATCHES, BATCH)
    writer = start_writer(store, pause=0.15)
    seen: list[tuple[int, tuple[list, list]]] = []
    backup: dict = {}
    try:
        with RemoteClient.for_store(store) as reader:
            while writer.poll() is None:
                try:
                    version, got = remote_answers(reader, data["queries"])
                except StoreError:
                    held = holder(store)
                    if held is None or not held.serve:  # the writer stopped sharing: it is done
                        break
                    raise
                if version is not None:
                    seen.append((version, got))
                if len(seen) == 5:
                    backup = reader.backup(tmp_path / "backup")
    finally:
        writer.wait(timeout=120)
    assert writer.returncode == 0
    versions = sorted({v for v, _ in seen})
    assert len(seen) >= 10 and len(versions) >= 3, versions
    # the store's own answers after exactly v batches, for a sample of the versions seen
    sample = sorted({versions[0], versions[len(versions) // 2], versions[-1]})
    for v in sample:
        with growing_store(tmp_path / f"ref{v}", data, v) as reference:
            want = answers(reference, data["queries"])
        for version, got in seen:
            if version == v:
                same(got, want)
    # the backup taken meanwhile holds a whole number of batches and is healthy
    restored = tmp_path / "restored"
    AsifClient.restore(tmp_path / "backup", restored)
    with AsifClient(restored) as client:
        assert (client.count() - 100) % BATCH == 0 and client.count() == backup["anchors"]
        assert all(c.healthy for c in client.doctor())
    assert holder(store) is None  # the writer closed the store: the lock is free


@pytest.mark.slow
def test_readers_beside_a_2000_pair_ingest(shared_datasets, tmp_path: Path) -> None:
    """`asif ingest` of 2,000 Flickr8k pairs (400 images x 5 captions) in one process; this one
    classifies and searches through it the whole time, and backs it up once. Answers are checked
    against stores rebuilt from the final store's own vectors of the pairs present at the time."""
    flickr = shared_datasets / "flickr8k"
    with (flickr / "captions.csv").open(encoding="utf-8") as f:
        lines = f.readlines()[:2001]
    table = tmp_path / "pairs.csv"
    table.write_text("".join(lines), encoding="utf-8")
    store, params = tmp_path / "store", AsifParams(method="plain", k=200, p=1.0)
    classes, templates = ["dog", "child", "bicycle", "water", "grass"], ["a photo of a {}."]
    photos = sorted((flickr / "images").glob("*.jpg"))
    with AsifClient(store, params=params) as client:
        client.create_store()
        client.create_label_set("things", classes, templates)
        queries, gallery = client.encode_images(photos[-3:]), client.encode_images(photos[-40:])
        client.index_gallery_embeddings("g", gallery, "image")
    ingest = subprocess.Popen([sys.executable, "-m", "asif_vdb.cli", "ingest", str(table), "--store", str(store),
                               "--images", str(flickr / "images"), "--no-progress", "--batch", "200"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (holder(store) and holder(store).serve) and ingest.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    counts: dict[int, int] = {}  # updates -> anchors, as /health saw them together
    seen: list[tuple[int, tuple[list, list]]] = []
    with RemoteClient.for_store(store) as reader:
        while ingest.poll() is None:
            try:
                health = reader._call("GET", "/health")
                counts[int(health["updates"])] = int(health["anchors"])
                version, got = remote_answers(reader, queries)
                if version is not None:
                    seen.append((version, got))
            except StoreError:
                held = holder(store)
                if held is None or not held.serve:
                    break
                raise
            if len(seen) == 3:
                reader.backup(tmp_path / "backup")
    _, err = ingest.communicate(timeout=900)
    assert ingest.returncode == 0, err[-2000:]
    checked = [(v, got) for v, got in seen if v in counts]
    sizes = sorted({counts[v] for v, _ in checked})
    assert len(seen) >= 5 and len(sizes) >= 2, (len(seen), sizes)
    with AsifClient(store) as final:
        ids = sorted(final.anchor_ids())
        assert len(ids) == 2000
        vectors = {m: final.engine.anchors.vectors(ids, m)[1] for m in ("image", "text")}
    for size in (sizes[0], sizes[len(sizes) // 2], sizes[-1]):
        with AsifClient(tmp_path / f"ref{size}", params=params) as ref:
            ref.create_store()
            ref.create_label_set("things", classes, templates)
            ref.index_gallery_embeddings("g", gallery, "image")
            if size:
                ref.add_anchor_embeddings(vectors["image"][:size], vectors["text"][:size],
                                          [{"caption": f"pair {i}"} for i in ids[:size]])
            want = answers(ref, queries)
        for version, got in checked:
            if counts[version] == size:
                same(got, want)
    restored = tmp_path / "restored"
    AsifClient.restore(tmp_path / "backup", restored)
    doctor = run_asif("doctor", "--store", str(restored))
    assert doctor.returncode == 0 and doctor.stdout.strip().endswith("healthy"), doctor.stdout[-2000:]
