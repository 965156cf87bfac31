"""asif serve under load: 8 concurrent clients search and classify for 30 s over loopback while
1,000 anchors are added and then deleted, against the same queries through the Python client.

    python benchmarks/serve.py [--seconds 30] [--clients 8] [--store DIR]

Store: the 30,455 Flickr8k train pairs (cached embeddings), a CIFAR-10 label set ("a photo of a
{}."), and a 1,000-image gallery (the Flickr8k test images); made with the default settings.
``--store DIR`` keeps it and reuses it on later runs (building takes a few minutes).

1. Baseline, in this process (AsifClient): 60 text searches (first captions of 60 test images,
   top 10 of the gallery) and 60 classifications (CIFAR-10 test images, top 5), one at a time:
   ``client_search_p50_ms``, ``client_classify_p50_ms``; these answers are the store's before the
   update (version 0).
2. The same store is served by ``asif serve`` in another process on 127.0.0.1. One client sends
   the same requests one at a time (``http_search_p50_ms``): ``overhead_ratio`` is that over the
   in-process p50 (what the service adds: HTTP, multipart, JSON).
3. Load: ``--clients`` threads each send search and classify requests in turn for ``--seconds``; 3 s
   in, a writer adds 1,000 pairs (the val images with their first captions) in one request, then
   deletes them (``DELETE /anchors`` by source). Requests/s and p50/p95 per kind, ``errors`` (any
   answer that is not 200).
4. Consistency: every answer carries the updates completed when it ran (X-Asif-Updates). The store's
   own answers after 1 update (the addition applied in-process to a copy made before step 2) and
   after 2 (the served store once stopped) are computed; a sample of the load's answers (all of
   them up to ``--check``) is compared with the version each names: ``consistency_checked``,
   ``consistency_mismatches``.
Also reported: searches/s with one client and with ``--clients`` and no update (what concurrency
buys while the engine holds the GIL), the alternative to a service for a reader (a consistent copy
of the store and opening it), and backup/restore time and size on disk.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asif_vdb import AsifClient  # noqa: E402
from asif_vdb.store.disk import copy_tree, not_store_file, usage  # noqa: E402
from benchmarks import datasets  # noqa: E402
from benchmarks.common import Stages, finish  # noqa: E402

N_QUERIES = 60
GALLERY = "test"
LABELS = "cifar10"


def build(path: Path, stages: Stages) -> None:
    f8k = datasets.load_flickr8k()
    with AsifClient(path) as client:
        emb = datasets.embeddings(client)
        with stages("build_anchors"):
            rows_i, rows_c, payloads = datasets.anchor_pairs(f8k, f8k.names("train"))
            client.add_anchor_embeddings(emb["flickr_images"][rows_i], emb["flickr_captions"][rows_c], payloads)
        with stages("build_label_set_gallery"):
            client.create_label_set(LABELS, datasets.CIFAR_CLASSES, ["a photo of a {}."])
            row = {n: i for i, n in enumerate(f8k.images)}
            test = f8k.names("test")
            client.index_gallery_embeddings(GALLERY, emb["flickr_images"][[row[n] for n in test]], "image",
                                            [{"ref": str(f8k.image_path(n))} for n in test])


def queries() -> tuple[list[str], list[Path]]:
    f8k = datasets.load_flickr8k()
    texts = [f8k.captions[n][0] for n in f8k.names("test")[:N_QUERIES]]
    paths, _ = datasets.load_cifar10()
    images = [paths[i] for i in np.linspace(0, len(paths) - 1, N_QUERIES).astype(int)]
    return texts, images


def added_pairs(client: AsifClient) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """1,000 new pairs: the val images with their first captions (not anchors yet)."""
    f8k = datasets.load_flickr8k()
    emb = datasets.embeddings(client)
    row = {n: i for i, n in enumerate(f8k.images)}
    start = np.cumsum([0] + [len(f8k.captions[n]) for n in f8k.images])
    names = f8k.names("val")[:1000]
    return (emb["flickr_images"][[row[n] for n in names]], emb["flickr_captions"][[start[row[n]] for n in names]],
            [{"caption": f8k.captions[n][0], "image": str(f8k.image_path(n)), "source": "bench-added",
              "hash": f"bench-{n}"} for n in names])


def key_search(hits: list) -> list[tuple[int, float]]:
    return [(int(h["id"] if isinstance(h, dict) else h.id), float(h["score"] if isinstance(h, dict) else h.score))
            for h in hits]


def key_classes(result: dict | object) -> list[tuple[str, float]]:
    preds = result["predictions"] if isinstance(result, dict) else result.predictions  # type: ignore[union-attr]
    return [(p["label"] if isinstance(p, dict) else p.label, float(p["score"] if isinstance(p, dict) else p.score))
            for p in preds]


def answers(client: AsifClient, texts: list[str], images: list[Path]) -> dict[tuple[str, int], list]:
    out: dict[tuple[str, int], list] = {}
    for i, t in enumerate(texts):
        out[("search", i)] = key_search(client.search(t, GALLERY, 10))
    for i, p in enumerate(images):
        out[("classify", i)] = key_classes(client.classify([p], LABELS, 5)[0])
    return out


def p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


class Load:
    """Clients sending search and classify requests in turn; every answer is kept with its version."""

    def __init__(self, url: str, texts: list[str], images: list[Path], clients: int) -> None:
        self.url, self.texts, self.images, self.clients = url, texts, images, clients
        self.bytes = [path.read_bytes() for path in images]
        self.latency: dict[str, list[float]] = {"search": [], "classify": []}
        self.seen: list[tuple[str, int, int, list]] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def one(self, http: httpx.Client, kind: str, i: int) -> None:
        t0 = time.perf_counter()
        if kind == "search":
            r = http.post("/search", data={"text": self.texts[i], "gallery": GALLERY, "top": "10"})
        else:
            r = http.post("/classify", data={"labels": LABELS, "top": "5"},
                          files={"images": (self.images[i].name, self.bytes[i], "image/jpeg")})
        dt = time.perf_counter() - t0
        with self.lock:
            if r.status_code != 200:
                self.errors.append(f"{kind} {r.status_code} {r.text[:200]}")
                return
            self.latency[kind].append(dt)
            body = r.json()["results"][0]
            self.seen.append((kind, i, int(r.headers["X-Asif-Updates"]),
                              key_search(body) if kind == "search" else key_classes(body)))

    def client(self, seed: int, kinds: tuple[str, ...]) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=self.url, timeout=300) as http:
            while not self.stop.is_set():
                for kind in kinds:
                    self.one(http, kind, rng.randrange(len(self.texts)))

    def run(self, seconds: float, kinds: tuple[str, ...] = ("search", "classify"),
            during: threading.Thread | None = None) -> float:
        threads = [threading.Thread(target=self.client, args=(n, kinds)) for n in range(self.clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        if during is not None:
            time.sleep(3)
            during.start()
        time.sleep(max(0.0, seconds - (time.perf_counter() - t0)))
        if during is not None:
            during.join(timeout=600)
        self.stop.set()
        for t in threads:
            t.join()
        return time.perf_counter() - t0


def start_service(store: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "asif_vdb.cli", "serve", "--store", str(store), "--port", "0",
                             "--log-level", "warning", "--host", "127.0.0.1"], stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "serving" in line:
            return proc, line.split(" at ")[1].split(": the page")[0]
    raise SystemExit("asif serve did not start")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--store", type=Path, default=None)
    ap.add_argument("--check", type=int, default=400, help="answers compared with the store's own")
    args = ap.parse_args()
    datasets.require_datasets()
    stages = Stages()
    work = Path(tempfile.mkdtemp(prefix="asif-serve-bench-"))
    store = args.store or work / "store"
    if not (store / "asif_config.json").exists():
        build(store, stages)
    texts, images = queries()
    figures: dict = {}

    # 1. the baseline and the answers before the update; a copy for the answers after it
    with AsifClient(store) as client:
        anchors_before = client.count()
        answers(client, texts[:3], images[:3])  # warm: encoders loaded, store files read
        t_search, t_classify = [], []
        for t in texts:
            t0 = time.perf_counter()
            client.search(t, GALLERY, 10)
            t_search.append(time.perf_counter() - t0)
        for path in images:
            t0 = time.perf_counter()
            client.classify([path], LABELS, 5)
            t_classify.append(time.perf_counter() - t0)
        expected = {0: answers(client, texts, images)}
        new = added_pairs(client)
    size = usage(store)
    # the other way for a reader beside a writer: a consistent copy of the store, opened
    with stages("snapshot_copy"):
        copy_tree(store, work / "v1", skip=not_store_file, digests=False)
    t0 = time.perf_counter()
    with AsifClient(work / "v1") as copy:
        opened = time.perf_counter() - t0
        t1 = time.perf_counter()
        copy.search(texts[0], GALLERY, 10)
        first_query = time.perf_counter() - t1
        copy.add_anchor_embeddings(*new)
        expected[1] = answers(copy, texts, images)
    # backup and restore of the store (closed here; served, a backup runs under the service's guard)
    with AsifClient(store) as client:
        with stages("backup"):
            report = client.backup(work / "backup")
    with stages("restore"):
        AsifClient.restore(work / "backup", work / "restored")

    # 2. the service: one client at a time, then concurrency without updates
    proc, url = start_service(store)
    try:
        with httpx.Client(base_url=url, timeout=300) as http:
            for t in texts[:3]:
                http.post("/search", data={"text": t, "gallery": GALLERY, "top": "10"})
            t_http = []
            for t in texts:
                t0 = time.perf_counter()
                r = http.post("/search", data={"text": t, "gallery": GALLERY, "top": "10"})
                t_http.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text
        single = Load(url, texts, images, 1)
        single_s = single.run(8, kinds=("search",))
        many = Load(url, texts, images, args.clients)
        many_s = many.run(8, kinds=("search",))

        # 3. the load, with 1,000 anchors added then deleted
        load = Load(url, texts, images, args.clients)
        updates: dict[str, float] = {}

        def writer() -> None:
            with httpx.Client(base_url=url, timeout=900) as http:
                t0 = time.perf_counter()
                r = http.post("/anchors/embeddings", json={"image_vectors": new[0].astype(float).tolist(),
                                                           "text_vectors": new[1].astype(float).tolist(),
                                                           "payloads": new[2]})
                updates["add_1000_s"] = round(time.perf_counter() - t0, 2)
                if r.status_code != 200:
                    load.errors.append(f"add {r.status_code} {r.text[:200]}")
                t0 = time.perf_counter()
                r = http.request("DELETE", "/anchors", json={"where": {"source": "bench-added"}})
                updates["delete_1000_s"] = round(time.perf_counter() - t0, 2)
                if r.status_code != 200 or r.json()["deleted"] != 1000:
                    load.errors.append(f"delete {r.status_code} {r.text[:200]}")

        load_s = load.run(args.seconds, during=threading.Thread(target=writer))
    finally:
        proc.terminate()
        proc.wait(timeout=120)

    # 4. the answers after both updates, and the comparison
    with AsifClient(store) as client:
        expected[2] = answers(client, texts, images)
        anchors_after = client.count()
    rng = random.Random(0)
    sample = rng.sample(load.seen, min(args.check, len(load.seen)))
    mismatches = 0
    for kind, i, version, got in sample:
        want = expected[version][(kind, i)]
        same = [k for k, _ in got] == [k for k, _ in want] and \
            np.allclose([s for _, s in got], [s for _, s in want], atol=1e-5)
        mismatches += not same
    versions = sorted({v for _, _, v, _ in load.seen})
    search_p50 = p(load.latency["search"], 50) * 1000
    figures.update({
        "errors": len(load.errors),
        "search_rps": round(len(load.latency["search"]) / load_s, 2),
        "search_p50_ms": round(search_p50, 1),
        "search_p95_ms": round(p(load.latency["search"], 95) * 1000, 1),
        "classify_rps": round(len(load.latency["classify"]) / load_s, 2),
        "classify_p50_ms": round(p(load.latency["classify"], 50) * 1000, 1),
        "classify_p95_ms": round(p(load.latency["classify"], 95) * 1000, 1),
        "client_search_p50_ms": round(statistics.median(t_search) * 1000, 1),
        "client_classify_p50_ms": round(statistics.median(t_classify) * 1000, 1),
        "http_search_p50_ms": round(statistics.median(t_http) * 1000, 1),
        "overhead_ratio": round(statistics.median(t_http) / statistics.median(t_search), 2),
        "consistency_checked": len(sample),
        "consistency_mismatches": mismatches,
        "versions_seen": versions,
        "clients": args.clients, "load_s": round(load_s, 1), **updates,
        "search_rps_1_client_no_updates": round(len(single.latency["search"]) / single_s, 2),
        f"search_rps_{args.clients}_clients_no_updates": round(len(many.latency["search"]) / many_s, 2),
        "anchors": anchors_before, "anchors_after": anchors_after,
        "store_size_on_disk_mib": round(size.allocated_bytes / 2**20, 1),
        "store_apparent_mib": round(size.apparent_bytes / 2**20, 1),
        "store_wal_reserved_mib": round(size.wal_reserved_bytes / 2**20, 1),
        "snapshot_copy_s": stages.seconds["snapshot_copy"], "snapshot_open_s": round(opened, 2),
        "snapshot_first_search_ms": round(first_query * 1000, 1),
        "backup_s": stages.seconds["backup"], "restore_s": stages.seconds["restore"],
        "backup_size_on_disk_mib": round(report["size_on_disk_bytes"] / 2**20, 1),
        "backup_apparent_mib": round(report["bytes"] / 2**20, 1), "backup_files": report["files"],
        "error_samples": load.errors[:3],
    })
    finish("serve", figures)


if __name__ == "__main__":
    main()
