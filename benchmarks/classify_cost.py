"""The cost of classifying over 1,000 classes x 7 templates, by method, and the levers that bound it.

    python benchmarks/classify_cost.py [--images 300] [--configs plain,default,...]

Each configuration is its own embedded store of the 30,455 Flickr8k train pairs (cached embeddings)
with the label set of benchmarks/updates.py (1,000 frequent caption words and bigrams x the 7
"imagenet7" templates, by the configuration's aggregate: 1,000 pooled prompts or 7,000); the same
CIFAR-10 images are classified in each, in batches of 100, and the time is split into the query's
anchor search + relative vector, the sparse ranking of the prompts, and pooling. Timings are ratios
to plain ASIF (k=800, p=1) measured in the same run, repeated (``--rounds``) and taken as medians
since the 2 cores are shared.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asif_vdb import AsifClient, AsifParams  # noqa: E402
from asif_vdb.engine.layout import labels_key  # noqa: E402
from asif_vdb.features.label_sets import class_scores  # noqa: E402
from asif_vdb.schema.params import Aggregate  # noqa: E402
from benchmarks import datasets  # noqa: E402
from benchmarks.common import finish  # noqa: E402
from benchmarks.updates import class_names  # noqa: E402

#: name -> (store parameters, the label set's aggregate; None: the method's default).
CONFIGS: dict[str, tuple[AsifParams, Aggregate | None]] = {
    "plain": (AsifParams(method="plain"), None),
    "default": (AsifParams(), None),
    "default_max": (AsifParams(), "max"),
    "default_mean": (AsifParams(), "mean"),
    "tuned_k3200_ck1600": (AsifParams(k=3200, candidate_k=1600, p=1.5), "max"),
    "tuned_k3200_ck800": (AsifParams(k=3200, candidate_k=800, p=1.5), "max"),
    "tuned_k1600_ck800": (AsifParams(k=1600, candidate_k=800, p=1.5), "max"),
}


def build(path: Path, params: AsifParams, aggregate: Aggregate | None, emb: dict, f8k, classes: list[str]) -> AsifClient:
    client = AsifClient(path, params=params)
    img_rows, cap_rows, payloads = datasets.anchor_pairs(f8k, f8k.names("train"))
    for s in range(0, len(payloads), 8192):
        client.add_anchor_embeddings(emb["flickr_images"][img_rows[s:s + 8192]],
                                     emb["flickr_captions"][cap_rows[s:s + 8192]], payloads[s:s + 8192])
    if params.tuned and not client.transforms():  # the benchmark's store is past the auto-fit threshold
        raise SystemExit("the tuned store did not fit its transforms")
    client.create_label_set("words", classes, "imagenet7", aggregate=aggregate)
    return client


def timed(client: AsifClient, queries: np.ndarray, batch: int) -> dict[str, float]:
    """Seconds of each stage of classifying ``queries`` (the path of AsifClient.class_scores)."""
    engine = client.engine
    assert engine is not None
    info = engine.label_sets.get("words")
    hub = engine.config.hub_on(info.normalise)
    out = {"query": 0.0, "rank": 0.0, "pool": 0.0}
    for s in range(0, len(queries), batch):
        t0 = time.perf_counter()
        q = engine.anchors.query(queries[s:s + batch], "image")
        t1 = time.perf_counter()
        ranked = engine.candidates.rank(q.rel, labels_key(info), info.n_candidates)
        if not any(len(h.ids) for h in ranked):
            raise SystemExit("the ranking found none of the label set's prompts")
        t2 = time.perf_counter()
        class_scores(ranked, info, hub)
        t3 = time.perf_counter()
        out["query"] += t1 - t0
        out["rank"] += t2 - t1
        out["pool"] += t3 - t2
    out["total"] = sum(out.values())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    args = ap.parse_args()
    names = [c for c in args.configs.split(",") if c]
    f8k = datasets.load_flickr8k()
    _, labels = datasets.load_cifar10()
    with tempfile.TemporaryDirectory() as tmp:
        probe = AsifClient(Path(tmp) / "probe")
        emb = datasets.embeddings(probe)
        probe.close()
        classes = class_names([c for n in f8k.names("train") for c in f8k.captions[n]], 1000)
        rng = np.random.default_rng(0)
        queries = emb["cifar_images"][rng.choice(len(labels), args.images, replace=False)]
        clients = {}
        build_s: dict[str, float] = {}
        hub_s: dict[str, float] = {}
        for name in names:
            t = time.perf_counter()
            clients[name] = build(Path(tmp) / name, *CONFIGS[name], emb, f8k, classes)
            build_s[name] = round(time.perf_counter() - t, 1)
            engine = clients[name].engine
            assert engine is not None
            t = time.perf_counter()
            engine.hub.refresh_all()  # what every anchor update of a hub-normalised store recomputes
            hub_s[name] = round(time.perf_counter() - t, 2)
            print(f"  built {name}: {build_s[name]} s; hub statistics {hub_s[name]} s", flush=True)
        rounds: dict[str, list[dict[str, float]]] = {n: [] for n in names}
        for _ in range(args.rounds):  # interleaved, so that load drifts hit every configuration alike
            for name in names:
                rounds[name].append(timed(clients[name], queries, args.batch))
        for c in clients.values():
            c.close()
    med = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in rounds.items()}
    base = med.get("plain")
    out: dict = {"images": args.images, "batch": args.batch, "rounds": args.rounds,
                 "label_set": "1000 classes x 7 templates (imagenet7)", "build_seconds": build_s,
                 "hub_refresh_seconds": hub_s}
    for name in names:
        m = med[name]
        params, aggregate = CONFIGS[name]
        out[name] = {"params": params.describe(), "aggregate": aggregate or params.aggregate,
                     "ms_per_image": round(1000 * m["total"] / args.images, 2),
                     **{f"{k}_ms_per_image": round(1000 * v / args.images, 2) for k, v in m.items() if k != "total"}}
        if base:
            out[name]["cost_vs_plain"] = round(m["total"] / base["total"], 3)
        print(f"{name:22s} {out[name]}", flush=True)
    finish("classify_cost", out)


if __name__ == "__main__":
    main()
