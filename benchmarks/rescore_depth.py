"""How many of the graph's candidates to rescore: Qdrant Edge's int8 + HNSW anchor search, walking
ef = 3 x k candidates, rescoring all of them (what the presets did) against fewer.

    python benchmarks/rescore_depth.py [--n 300000] [--work /tmp/asif-rescore]

Data: the clustered synthetic anchor images of benchmarks/scale.py (1280-d, 2,000 clusters), one
collection built as the ``hnsw`` preset builds it (int8, m=16, ef_construct 100, memory-mapped) and
kept under --work for later runs; 300 query images of the same clusters. For each setting, a query's
top-800 (limit 800, as a query's relative vector) or top-1,000 (a candidate's list with its reserve)
against the exact top-800: recall@800 (mean and worst query) and top-1 agreement, and the search
time per query in batches of 50, the median of interleaved rounds (the time is a ratio between
settings: the machine is shared).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asif_vdb.store.base import EXACT, CollectionSpec, SearchMode, VectorIndex  # noqa: E402
from asif_vdb.store.edge import EdgeBackend  # noqa: E402
from asif_vdb.store.edge_settings import edge  # noqa: E402
from benchmarks.common import finish  # noqa: E402
from benchmarks.scale import DI, K, make_data  # noqa: E402

#: (limit, ef, oversampling): ef 2,400 is 3 x k; oversampling x limit of the walked candidates are rescored.
SETTINGS = ((800, 2400, 3.0), (800, 2400, 1.25), (800, 2400, 1.0), (1000, 2400, 2.4), (1000, 2400, 1.0))
QUERIES, BATCH, ROUNDS = 300, 50, 3


def build(backend: EdgeBackend, img: np.ndarray, root: Path) -> float | None:
    """Load and optimise the collection unless a previous run did; the seconds it took."""
    if (root / "built").exists():
        return None
    qe = edge()
    t = time.perf_counter()
    for s in range(0, len(img), 20_000):
        rows = range(s, min(len(img), s + 20_000))
        backend._shard("a").update(qe.UpdateOperation.upsert_points(
            [qe.Point(id=int(i), vector={"image": img[i].tolist()}, payload={}) for i in rows]))
    backend.optimize("a")
    (root / "built").touch()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300_000)
    ap.add_argument("--work", default="/tmp/asif-rescore")
    args = ap.parse_args()
    work = Path(args.work)
    data = make_data(work, args.n, 200)  # scale.py's data at its default query count
    img = np.load(data / "img.npy", mmap_mode="r")
    queries = np.load(data / "gallery.npy")[:QUERIES]
    root = work / f"store_{args.n}"
    backend = EdgeBackend(root)
    backend.ensure_collection(CollectionSpec("a", dense={"image": DI}, index=VectorIndex(
        quantization="int8", hnsw_m=16, ef_construct=100, on_disk=True)))
    build_s = build(backend, img, root)
    truth = [h.ids[:K] for h in backend.search_dense("a", "image", queries, K, mode=EXACT)]
    modes = {f"limit{lim}_ef{ef}_rescore{round(lim * o)}": (lim, SearchMode(exact=False, hnsw_ef=ef, oversampling=o))
             for lim, ef, o in SETTINGS}
    out: dict[str, dict] = {}
    for name, (limit, mode) in modes.items():
        hits = backend.search_dense("a", "image", queries, limit, mode=mode)
        recall = [len(set(h.ids[:K].tolist()) & set(t.tolist())) / K for h, t in zip(hits, truth)]
        out[name] = {"recall800_mean": round(float(np.mean(recall)), 4), "recall800_worst": round(float(np.min(recall)), 4),
                     "top1_agreement": round(float(np.mean([h.ids[0] == t[0] for h, t in zip(hits, truth)])), 4)}
    times: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(ROUNDS):
        for name, (limit, mode) in modes.items():
            t = time.perf_counter()
            for s in range(0, len(queries), BATCH):
                backend.search_dense("a", "image", queries[s:s + BATCH], limit, mode=mode)
            times[name].append(1000 * (time.perf_counter() - t) / len(queries))
    for name in modes:
        out[name]["ms_per_query"] = round(statistics.median(times[name]), 2)
    backend.close()
    base = {800: "limit800_ef2400_rescore2400", 1000: "limit1000_ef2400_rescore2400"}
    for name, (limit, _) in modes.items():
        out[name]["time_vs_rescoring_all"] = round(out[name]["ms_per_query"] / out[base[limit]]["ms_per_query"], 3)
    finish("rescore_depth", {"anchors": args.n, "queries": len(queries), "k": K, "build_s": build_s, "settings": out})


if __name__ == "__main__":
    main()
