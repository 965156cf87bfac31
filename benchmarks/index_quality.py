"""What the anchor index costs in answers, on real data: the Flickr8k-train anchors (30,455 pairs),
zero-shot CIFAR-10 (10,000 test images) and Flickr8k-test retrieval, searched exactly and with each
index preset, in one store whose index is switched (``set_search_index``), as a user would.

    python benchmarks/index_quality.py [--method tuned|plain] [--presets exact,int8,hnsw]

The presets run with ``exact_below=0`` so that this 30k store is searched approximately (by default a
store this size is scanned exactly). Per preset: CIFAR-10 top-1 (held-out 9,000 and all), top-1
agreement with exact search, the largest change of any class score, recall@k of the query images'
anchor searches, t2i/i2t R@1/5/10, and classify ms/image as a ratio to exact in the same run. The
last line is one JSON object, saved as benchmarks/results/index_quality.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asif_vdb import AsifClient, AsifParams  # noqa: E402
from asif_vdb.schema.params import INDEX_PRESETS  # noqa: E402
from benchmarks import datasets  # noqa: E402
from benchmarks.common import finish  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", choices=["tuned", "plain"], default=None, help="default: the store's default")
    ap.add_argument("--presets", default="exact,int8,hnsw")
    ap.add_argument("--recall-queries", type=int, default=500)
    ap.add_argument("--hnsw-oversampling", default="",
                    help="also run the hnsw preset at these oversamplings (comma-separated; the graph walks k x it)")
    args = ap.parse_args()
    presets = ["exact"] + [p for p in args.presets.split(",") if p != "exact"]  # the reference first
    variants = {name: INDEX_PRESETS[name] for name in presets}
    for x in (float(v) for v in args.hnsw_oversampling.split(",") if v):
        variants[f"hnsw_oversampling_{x:g}"] = INDEX_PRESETS["hnsw"].model_copy(update={"oversampling": x})
    f8k = datasets.load_flickr8k()
    _, cifar_labels = datasets.load_cifar10()
    held = ~datasets.cifar_calibration_mask(cifar_labels)
    params = AsifParams(method=args.method) if args.method else None
    out: dict = {"presets": {}}
    with tempfile.TemporaryDirectory() as tmp, AsifClient(Path(tmp) / "store", params=params) as client:
        emb = datasets.embeddings(client)
        with client.bulk_load():
            datasets.add_train_anchors(client, f8k, emb)
        client.create_label_set("cifar10", datasets.CIFAR_CLASSES)
        row = {n: i for i, n in enumerate(f8k.images)}
        test = f8k.names("test")
        g_img = emb["flickr_images"][[row[n] for n in test]]
        g_txt = emb["flickr_captions"][[row[n] * 5 + j for n in test for j in range(5)]]
        owner = [i for i in range(len(test)) for _ in range(5)]
        cifar = emb["cifar_images"]
        probe = cifar[:: max(1, len(cifar) // args.recall_queries)][: args.recall_queries]
        exact: dict = {}
        for name, preset in variants.items():
            settings = preset.model_copy(update={"exact_below": 0})
            t = time.perf_counter()
            client.set_search_index(settings)
            build_s = time.perf_counter() - t
            client.class_scores(cifar[:200], "cifar10")  # first touch of the new index
            t = time.perf_counter()
            scores = np.concatenate([client.class_scores(cifar[s:s + 500], "cifar10") for s in range(0, len(cifar), 500)])
            classify_s = time.perf_counter() - t
            hits = [set(h.ids.tolist()) for h in client.engine.anchors.topk(probe, "image")]
            retrieval = client.evaluate_retrieval_embeddings(g_img, g_txt, owner, g_txt[::5], list(range(len(test))))
            pred = scores.argmax(axis=1)
            fig = {"cifar10_top1": round(float((pred[held] == cifar_labels[held]).mean()), 4),
                   "cifar10_all_top1": round(float((pred == cifar_labels).mean()), 4),
                   **{k: round(v, 4) for k, v in retrieval.items() if "R@" in k},
                   "classify_ms_per_image": round(1000 * classify_s / len(cifar), 3), "index_build_s": round(build_s, 2)}
            if not exact:
                exact = {"scores": scores, "pred": pred, "hits": hits, "classify_s": classify_s, "fig": fig}
            else:
                k = len(exact["hits"][0])
                fig.update(
                    top1_agreement=round(float((pred == exact["pred"]).mean()), 4),
                    max_score_change=round(float(np.abs(scores - exact["scores"]).max()), 6),
                    recall_at_k=round(float(np.mean([len(a & b) / k for a, b in zip(hits, exact["hits"])])), 4),
                    recall_at_k_worst_query=round(float(min(len(a & b) / k for a, b in zip(hits, exact["hits"]))), 4),
                    cifar10_top1_change=round(fig["cifar10_top1"] - exact["fig"]["cifar10_top1"], 4),
                    retrieval_max_change=round(max(abs(fig[m] - exact["fig"][m]) for m in fig if "R@" in m), 4),
                    classify_time_vs_exact=round(classify_s / exact["classify_s"], 3))
            out["presets"][name] = {**fig, "settings": settings.model_dump()}
            print(name, fig, flush=True)
        out.update(anchors=client.count(), params=client.params.model_dump(mode="json"), query_k=client.params.k)
    finish("index_quality", out)


if __name__ == "__main__":
    main()
