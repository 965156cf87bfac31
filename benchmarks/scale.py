"""Millions of anchors: stores of 30k, 300k and 1M clustered synthetic pairs (1280-d images, 384-d
captions) built through the public API with the anchor index, against three baselines in the same run
on the same vectors: exact search through the store, torch brute force float32 (dense ASIF), and FAISS
(faiss-cpu) HNSW at the same recall@800.

    python benchmarks/scale.py [--sizes 30000,300000,1000000] [--n 2000000] [--index hnsw] [--queries 200]

Each store is built and measured in child processes, so that their memory figures are the store's own
(RssAnon: the process's anonymous memory; VmRSS: also the page cache of memory-mapped files). The
measuring child opens the store on a cold page cache (where the kernel lets it drop the cache) and
times the first classification before anything warms it (`first_query_s`, then the next ten), then
`warm_up()` (`warm_up_s`), then the rest. The
vectors live in memory-mapped .npy files under --work. The last line is one JSON object
{"sizes": {"1000000": {...}, ...}}, saved as benchmarks/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import finish  # noqa: E402

DI, DT, CLUSTERS, PROMPTS, K = 1280, 384, 2000, 1000, 800
GALLERY, UPDATE = 2000, 1000
#: Each point is its cluster's centre plus this times a random unit vector (the data of the issue's
#: Qdrant Edge measurements: within a cluster cosines near 0.9, between clusters near 0).
NOISE = 0.3


# -- data -------------------------------------------------------------------------------------------
def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_data(work: Path, n: int, queries: int, seed: int = 0) -> Path:
    """Clustered pairs: pair i's image and caption come from the same cluster (an image centre and a
    caption centre); 1,000 prompts, one per cluster's caption centre; query images drawn the same way."""
    folder = work / "data"
    done = folder / f"done_{n}_{queries}_{NOISE}"
    if done.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    ci, ct = unit(rng.standard_normal((CLUSTERS, DI))), unit(rng.standard_normal((CLUSTERS, DT)))
    img = np.lib.format.open_memmap(folder / "img.npy", "w+", np.float32, (n, DI))
    txt = np.lib.format.open_memmap(folder / "txt.npy", "w+", np.float32, (n, DT))
    for s in range(0, n, 50_000):
        m = min(50_000, n - s)
        c = rng.integers(0, CLUSTERS, m)
        img[s:s + m] = unit(ci[c] + NOISE * unit(rng.standard_normal((m, DI))))
        txt[s:s + m] = unit(ct[c] + NOISE * unit(rng.standard_normal((m, DT))))
    img.flush()
    txt.flush()
    np.save(folder / "prompts.npy", unit(ct[:PROMPTS] + 0.3 * unit(rng.standard_normal((PROMPTS, DT)))))
    qc = rng.integers(0, PROMPTS, queries + GALLERY + UPDATE)
    q = unit(ci[qc] + NOISE * unit(rng.standard_normal((len(qc), DI))))
    np.save(folder / "queries.npy", q[:queries])
    np.save(folder / "gallery.npy", q[queries:queries + GALLERY])
    extra_t = unit(ct[qc[queries + GALLERY:]] + NOISE * unit(rng.standard_normal((UPDATE, DT))))
    np.save(folder / "update_img.npy", q[queries + GALLERY:])
    np.save(folder / "update_txt.npy", extra_t)
    done.touch()
    return folder


# -- child processes --------------------------------------------------------------------------------
def memory() -> dict[str, float]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "VmRSS", "VmHWM"):
            fields[key] = round(int(value.split()[0]) / 2**20, 3)  # kB -> GB
    return fields


def disk_gb(path: Path) -> float:
    """Allocated bytes (sparse preallocated files count what they use)."""
    return round(sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file()) / 2**30, 3)


def child_build(args: argparse.Namespace) -> dict:
    from asif_vdb import AsifClient, AsifParams, EncoderIdentity
    from asif_vdb.schema.params import INDEX_PRESETS
    from asif_vdb.schema.store import LabelSetInfo

    data = Path(args.data)
    img, txt = np.load(data / "img.npy", mmap_mode="r"), np.load(data / "txt.npy", mmap_mode="r")
    n = args.size
    client = AsifClient(args.store, params=AsifParams(k=K, method=args.method), index=INDEX_PRESETS[args.index],
                        image_identity=EncoderIdentity(family="timm", name="synthetic", weights="scale", dim=DI),
                        text_identity=EncoderIdentity(family="sentence-transformers", name="synthetic",
                                                      weights="scale", dim=DT))
    t = time.perf_counter()
    bulk = client.bulk_load()  # as `asif ingest --embeddings` loads: the index is built once, at the end
    bulk.__enter__()
    for s in range(0, n, 20_000):
        m = min(20_000, n - s)
        client.add_anchor_embeddings(np.asarray(img[s:s + m]), np.asarray(txt[s:s + m]),
                                     [{"caption": f"pair {i}", "hash": f"p{i}"} for i in range(s, s + m)])
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    bulk.__exit__(None, None, None)
    build_s = time.perf_counter() - t
    names = [f"class {i}" for i in range(PROMPTS)]
    t = time.perf_counter()
    client.engine.label_sets.store(LabelSetInfo(name="classes", classes=names, templates=["{}"]), names,
                                   np.load(data / "prompts.npy"))
    label_set_s = time.perf_counter() - t
    client.close()
    return {"load_pairs_per_s": round(n / load_s, 1), "load_s": round(load_s, 1), "index_build_s": round(build_s, 1),
            "label_set_s": round(label_set_s, 1), "build_peak_rss_gb": memory()["VmHWM"]}


def child_measure(args: argparse.Namespace) -> dict:
    from asif_vdb import AsifClient

    data = Path(args.data)
    queries = np.load(data / "queries.npy")
    out: dict = {}
    t = time.perf_counter()
    client = AsifClient(args.store, exact_search=args.exact)
    out["open_s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    client.classify_embeddings(queries[:1], "classes", top=5, threshold=None)  # on a cold page cache
    out["first_query_s"] = round(time.perf_counter() - t, 3)
    out["memory_after_open"] = memory()
    t = time.perf_counter()
    client.classify_embeddings(queries[1:11], "classes", top=5, threshold=None)
    out["next_10_queries_cold_ms"] = round(100 * (time.perf_counter() - t), 1)
    out["warm_up_s"] = round(client.warm_up(), 3)  # reads the anchor collections ahead, as asif serve does
    n_single = min(len(queries), args.single)
    singles, searches = [], []
    for q in queries[:n_single]:
        t = time.perf_counter()
        client.classify_embeddings(q[None, :], "classes", top=5, threshold=None)
        singles.append(time.perf_counter() - t)
    for q in queries[:n_single]:
        t = time.perf_counter()
        client.engine.anchors.topk(q[None, :], "image")
        searches.append(time.perf_counter() - t)
    batches = []
    for s in range(0, min(len(queries), 128), 64):
        t = time.perf_counter()
        client.classify_embeddings(queries[s:s + 64], "classes", top=5, threshold=None)
        batches.append((time.perf_counter() - t) / len(queries[s:s + 64]))
    out.update(classify_p50_ms=round(1000 * float(np.median(singles)), 2),
               classify_p95_ms=round(1000 * float(np.percentile(singles, 95)), 2),
               classify_batch64_ms_per_query=round(1000 * float(np.median(batches)), 2),
               search_p50_ms=round(1000 * float(np.median(searches)), 2))
    results = client.classify_embeddings(queries, "classes", top=1, threshold=None)
    hits = client.engine.anchors.topk(queries, "image")
    np.save(Path(args.out).with_suffix(".labels.npy"), np.array([r.label for r in results]))
    np.save(Path(args.out).with_suffix(".scores.npy"), np.array([r.score for r in results]))
    np.save(Path(args.out).with_suffix(".hits.npy"), np.stack([np.pad(h.ids, (0, K - len(h.ids)), constant_values=-1)
                                                             for h in hits]))
    out["memory_after_queries"] = memory()
    if not args.exact:
        t = time.perf_counter()
        client.index_gallery_embeddings("gallery", np.load(data / "gallery.npy"), "image")
        out["gallery_items_per_s"] = round(GALLERY / (time.perf_counter() - t), 1)
        payloads = [{"caption": f"update {i}", "hash": f"u{i}"} for i in range(UPDATE)]
        t = time.perf_counter()
        ids = client.add_anchor_embeddings(np.load(data / "update_img.npy"), np.load(data / "update_txt.npy"), payloads)
        out["add_1000_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        client.delete_anchors(ids)
        out["delete_1000_s"] = round(time.perf_counter() - t, 2)
        out["memory_after_updates"] = memory()
    client.close()
    return out


def run_child(kind: str, **kwargs: object) -> dict:
    out = Path(str(kwargs["out"]))
    cmd = [sys.executable, __file__, "--child", kind] + [f"--{k.replace('_', '-')}={v}" for k, v in kwargs.items()]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} child failed:\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


# -- baselines --------------------------------------------------------------------------------------
def exact_topk(anchors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    import torch

    sims = torch.from_numpy(queries) @ torch.from_numpy(anchors).T
    vals, idx = torch.topk(sims, k, dim=1)
    return idx.numpy(), vals.numpy()


def torch_batch(img: np.ndarray, txt: np.ndarray, prompts: np.ndarray, queries: np.ndarray) -> tuple[float, np.ndarray]:
    """ms/query of a batch of 64 through dense ASIF (prompt vectors computed once, as a store keeps
    them), and the top-1 class of every query."""
    import torch

    vals, idx = torch.topk(torch.from_numpy(prompts) @ torch.from_numpy(np.ascontiguousarray(txt)).T, K, dim=1)
    w = vals.clamp(min=0)
    w = w / w.norm(dim=1, keepdim=True)
    rows = torch.arange(len(prompts)).repeat_interleave(K)
    cand = torch.sparse_coo_tensor(torch.stack([rows, idx.reshape(-1)]), w.reshape(-1), (len(prompts), len(txt)))
    anchors = torch.from_numpy(img)
    times, labels = [], []
    for s in range(0, len(queries), 64):
        t = time.perf_counter()
        q = torch.from_numpy(queries[s:s + 64])
        vals, idx = torch.topk(q @ anchors.T, K, dim=1)
        w = vals.clamp(min=0)
        rel = torch.zeros(len(q), len(img)).scatter_(1, idx, w / w.norm(dim=1, keepdim=True))
        scores = torch.sparse.mm(cand, rel.T).T
        times.append((time.perf_counter() - t) / len(q))
        labels.append(scores.argmax(dim=1).numpy())
    return 1000 * float(np.median(times)), np.concatenate(labels)


def faiss_hnsw(img: np.ndarray, queries: np.ndarray, truth: np.ndarray, target: float, m: int = 16) -> dict:
    import faiss

    index = faiss.IndexHNSWFlat(DI, m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 100
    t = time.perf_counter()
    for s in range(0, len(img), 100_000):
        index.add(np.ascontiguousarray(img[s:s + 100_000]))
    build = time.perf_counter() - t
    chosen: dict = {}
    for ef in (800, 1200, 1600, 2400, 3200, 4800):
        index.hnsw.efSearch = ef
        _, ids = index.search(queries, K)
        recall = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(ids, truth)]))
        singles = []
        for q in queries[:50]:
            t = time.perf_counter()
            index.search(q[None, :], K)
            singles.append(time.perf_counter() - t)
        chosen = {"faiss_search_p50_ms": round(1000 * float(np.median(singles)), 2),
                  "faiss_recall_at_800": round(recall, 4), "faiss_ef_search": ef, "faiss_build_s": round(build, 1)}
        if recall >= target:
            break
    return chosen


# -- the run ----------------------------------------------------------------------------------------
def measure_size(args: argparse.Namespace, data: Path, n: int) -> dict:
    work = Path(args.work)
    store = work / f"store_{n}"
    shutil.rmtree(store, ignore_errors=True)
    common = {"data": data, "store": store, "size": n, "index": args.index, "single": args.single,
              "method": args.method}
    print(f"[{n}] building", flush=True)
    row = run_child("build", out=work / f"build_{n}.json", **common)
    subprocess.run(["sync"])
    Path("/proc/sys/vm/drop_caches").write_text("3") if os.access("/proc/sys/vm/drop_caches", os.W_OK) else None
    print(f"[{n}] measuring", flush=True)
    measured = run_child("measure", out=work / f"measure_{n}.json", exact=False, **common)
    row.update(measured)
    exact = run_child("measure", out=work / f"exact_{n}.json", exact=True, **{**common, "single": min(args.single, 30)})
    row.update({f"exact_{k}": v for k, v in exact.items() if k.startswith(("classify", "search"))})
    row.update(rss_anon_gb=max(measured[m]["RssAnon"] for m in measured if m.startswith("memory")),
               vmrss_gb=max(measured[m]["VmRSS"] for m in measured if m.startswith("memory")),
               disk_gb=disk_gb(store))
    print(f"[{n}] baselines", flush=True)
    img = np.ascontiguousarray(np.load(data / "img.npy", mmap_mode="r")[:n])  # in RAM once, for every baseline
    txt = np.load(data / "txt.npy", mmap_mode="r")[:n]
    queries, prompts = np.load(data / "queries.npy"), np.load(data / "prompts.npy")
    truth, _ = exact_topk(img, queries, K)
    hits = np.load((work / f"measure_{n}.json").with_suffix(".hits.npy"))
    row["recall_at_800"] = round(float(np.mean([len(set(h[h >= 0]) & set(t)) / K for h, t in zip(hits, truth)])), 4)
    row["recall_at_800_worst_query"] = round(float(min(len(set(h[h >= 0]) & set(t)) / K for h, t in zip(hits, truth))), 4)
    row["torch_batch64_ms_per_query"], torch_labels = torch_batch(img, txt, prompts, queries)
    labels = np.load((work / f"measure_{n}.json").with_suffix(".labels.npy"))
    exact_labels = np.load((work / f"exact_{n}.json").with_suffix(".labels.npy"))
    row["top1_agreement"] = round(float(np.mean(labels == exact_labels)), 4)
    row["top1_agreement_vs_torch_dense"] = round(float(np.mean(labels == np.array([f"class {i}" for i in torch_labels]))), 4)
    scores, exact_scores = (np.load((work / f"{w}_{n}.json").with_suffix(".scores.npy")) for w in ("measure", "exact"))
    row["max_top_score_change"] = round(float(np.abs(scores - exact_scores).max()), 6)
    row.update(faiss_hnsw(img, queries, truth, row["recall_at_800"]))
    row["batch_vs_torch"] = round(row["torch_batch64_ms_per_query"] / row["classify_batch64_ms_per_query"], 2)
    row["search_vs_faiss"] = round(row["search_p50_ms"] / row["faiss_search_p50_ms"], 2)
    if not args.keep:
        shutil.rmtree(store, ignore_errors=True)
    print(json.dumps({n: row}), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="30000,300000,1000000")
    ap.add_argument("--n", type=int, default=None, help="also a store of this many pairs (e.g. 2000000)")
    ap.add_argument("--index", default="hnsw", help="index preset of the stores (exact, int8, hnsw)")
    ap.add_argument("--method", default="plain", help="plain (the paper's ASIF, what the dense baseline computes) or tuned")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--single", type=int, default=200, help="single queries timed per size")
    ap.add_argument("--work", default="/tmp/asif-scale")
    ap.add_argument("--keep", action="store_true", help="keep the stores under --work")
    ap.add_argument("--child", default=None)
    ap.add_argument("--data", default=None)
    ap.add_argument("--store", default=None)
    ap.add_argument("--size", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--exact", type=lambda v: v == "True", default=False)
    args = ap.parse_args()
    if args.child:
        result = child_build(args) if args.child == "build" else child_measure(args)
        Path(args.out).write_text(json.dumps(result))
        return
    sizes = [int(s) for s in args.sizes.split(",") if s] + ([args.n] if args.n else [])
    data = make_data(Path(args.work), max(sizes), args.queries)
    setup = {"index": args.index, "method": args.method, "noise": NOISE, "k": K, "prompts": PROMPTS,
             "queries": args.queries}
    out = earlier_sizes(setup)
    for n in sizes:
        try:
            out[str(n)] = measure_size(args, data, n)
        except (RuntimeError, MemoryError, OSError) as e:  # a size that cannot be built here is reported
            out[str(n)] = {"failed": str(e)[-2000:]}
        out[str(n)]["measured_at"] = time.strftime("%Y-%m-%d %H:%M")
    finish("scale", {**setup, "sizes": dict(sorted(out.items(), key=lambda kv: int(kv[0])))})


def earlier_sizes(setup: dict) -> dict:
    """The sizes of the saved results made with the same setup (each size's row holds its own
    baselines, measured beside it), so that a run of one size adds to them instead of replacing them."""
    saved = Path(__file__).resolve().parent / "results" / "scale.json"
    if not saved.exists():
        return {}
    earlier = json.loads(saved.read_text())
    return dict(earlier.get("sizes", {})) if all(earlier.get(k) == v for k, v in setup.items()) else {}


if __name__ == "__main__":
    main()
