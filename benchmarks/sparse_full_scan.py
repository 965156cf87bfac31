"""When the ranking of a set's candidates walks the sparse inverted index, and when it scores them one by one.

    python benchmarks/sparse_full_scan.py [--thresholds 0,100,300,5000]

Qdrant scores the points of a filtered sparse search one by one when the filter leaves fewer than
the collection's ``full_scan_threshold`` (5,000 by default), and walks the inverted index otherwise.
A pooled 1,000-class label set at k=3200 is 1,000 candidates of 3,200 non-zeros each, under the
default: every prompt merged with every query. The store of benchmarks/updates.py (the Flickr8k train
anchors, the default method, its 1,000-class "imagenet7" label set pooled, a 1,000-image gallery)
plus a CIFAR-10 label set (10 prompts) and the same 1,000 classes with every template (7,000 prompts,
"max"); for each threshold (``Tuning.sparse_full_scan``) every candidate is written into a new
generation of the derived collection made with it, and 300 CIFAR-10 images are classified over each
set in batches of 100, through the public client. The anchor search alone is timed beside them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asif_vdb import AsifClient  # noqa: E402
from benchmarks import datasets  # noqa: E402
from benchmarks.common import Stages, finish  # noqa: E402
from benchmarks.updates import build, class_names  # noqa: E402

SETS = {"pooled_1000": "words", "cifar10_10": "cifar", "max_7000": "words7"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--thresholds", default="0,100,300,5000")
    ap.add_argument("--images", type=int, default=300)
    args = ap.parse_args()
    thresholds = [int(t) for t in args.thresholds.split(",")]
    f8k = datasets.load_flickr8k()
    train, val = f8k.names("train"), f8k.names("val")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        client = AsifClient(Path(tmp) / "store")
        emb = datasets.embeddings(client)
        classes = class_names([c for n in train for c in f8k.captions[n]], 1000)
        build(client, f8k, emb, train, classes, val[:1000], [f8k.images.index(n) for n in val[:1000]], Stages())
        client.create_label_set("cifar", datasets.CIFAR_CLASSES)
        client.create_label_set("words7", classes, "imagenet7", aggregate="max")
        engine = client.engine
        assert engine is not None
        queries = emb["cifar_images"][: args.images]
        for threshold in thresholds:
            engine.state.tuning = engine.state.tuning.model_copy(update={"sparse_full_scan": threshold})
            cache = engine.lists.load()
            ids, lists, sets = [], [], []
            for group in cache.groups.values():
                ids += group.ids.tolist()
                lists += list(group.lists)
                sets += list(group.sets)
            engine.derived.write(ids, lists, sets)  # every candidate: a new generation, made with the threshold
            engine.derived.optimize()
            row: dict = {"sparse_full_scan": threshold, "candidates": len(ids)}
            for key, name in SETS.items():
                t = time.perf_counter()
                for s in range(0, len(queries), 100):
                    client.classify_embeddings(queries[s:s + 100], name, top=5, threshold=None)
                row[f"classify_ms_per_image_{key}"] = round(1000 * (time.perf_counter() - t) / len(queries), 2)
            t = time.perf_counter()
            for s in range(0, len(queries), 100):
                engine.anchors.query(queries[s:s + 100], "image")
            row["anchor_search_ms_per_image"] = round(1000 * (time.perf_counter() - t) / len(queries), 2)
            rows.append(row)
            print(row, flush=True)
        client.close()
    finish("sparse_full_scan", {"store": "Flickr8k train anchors, default method, 1,000-image gallery",
                                "images": args.images, "rows": rows})


if __name__ == "__main__":
    main()
