"""Zero-shot CIFAR-10 and Flickr8k retrieval through the store with the methods chosen by
benchmarks/methods_search.py (asif_vdb.RECOMMENDED), against plain ASIF in the same run.

    python benchmarks/zero_shot_methods.py [--no-baseline]

Anchors: the 30,455 Flickr8k train pairs, inserted with ``add_anchor_embeddings`` from the embedding
cache into an embedded store; then ``set_transform`` fits the transforms on them. CIFAR-10: label set
"a photo of a {}." with hub normalisation; top-1 on the 9,000 report images (all but the first 100
per class, the calibration slice the choice was made on) and on all 10,000. Flickr8k test: galleries
of the 1,000 test images and their 5,000 captions, both hub-normalised; text->image with the first
caption of each image as query, image->text right when any of the image's 5 captions comes back.
Baseline: plain ASIF (k=800, p=1, no methods) in its own store. Timings are ratios to the baseline.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asif_vdb import (
    RECOMMENDED,  # noqa: E402
    AsifClient,  # noqa: E402
    AsifParams,  # noqa: E402
)
from asif_vdb.maths import metrics  # noqa: E402
from benchmarks import datasets  # noqa: E402
from benchmarks.common import finish  # noqa: E402

KS = (1, 5, 10)


def anchor_rows(f8k: datasets.Flickr8k, emb: dict) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    row = {n: i for i, n in enumerate(f8k.images)}
    train = f8k.names("train")
    img = np.repeat(emb["flickr_images"][[row[n] for n in train]], 5, axis=0)
    txt = emb["flickr_captions"][[row[n] * 5 + j for n in train for j in range(5)]]
    payloads = [{"caption": f8k.captions[n][j], "image": n, "source": "flickr8k-train", "hash": f"{n}#{j}"}
                for n in train for j in range(5)]
    return img, txt, payloads


def run(emb: dict, f8k: datasets.Flickr8k, labels: np.ndarray, calib: np.ndarray, params: AsifParams,
        transform: dict | None, hub: bool) -> dict:
    out: dict = {"k": params.k, "p": params.p, "transform": transform, "hub": hub}
    seconds: dict[str, float] = {}
    a_img, a_txt, payloads = anchor_rows(f8k, emb)
    row = {n: i for i, n in enumerate(f8k.images)}
    test = f8k.names("test")
    g_img = emb["flickr_images"][[row[n] for n in test]]
    g_txt = emb["flickr_captions"][[row[n] * 5 + j for n in test for j in range(5)]]
    owner = [i for i in range(len(test)) for _ in range(5)]
    with tempfile.TemporaryDirectory() as tmp, AsifClient(Path(tmp) / "store", params=params) as client:
        t = time.perf_counter()
        client.add_anchor_embeddings(a_img, a_txt, payloads)
        seconds["add_anchors"] = time.perf_counter() - t
        if transform:
            t = time.perf_counter()
            client.set_transform(**transform)
            seconds["set_transform"] = time.perf_counter() - t
        normalise = "hub" if hub else "none"
        t = time.perf_counter()
        client.create_label_set("cifar10", datasets.CIFAR_CLASSES, "default", normalise=normalise)
        seconds["create_label_set"] = time.perf_counter() - t
        t = time.perf_counter()
        scores = np.concatenate([client.class_scores(emb["cifar_images"][s : s + 500], "cifar10")
                                 for s in range(0, len(labels), 500)])
        seconds["classify"] = time.perf_counter() - t
        pred = scores.argmax(axis=1)
        out.update(cifar10_report_top1=round(float((pred[~calib] == labels[~calib]).mean()), 4),
                   cifar10_all_top1=round(float((pred == labels).mean()), 4),
                   cifar10_calibration_top1=round(float((pred[calib] == labels[calib]).mean()), 4),
                   cifar10_per_class_all_top1={c: round(float((pred[labels == i] == i).mean()), 4)
                                               for i, c in enumerate(datasets.CIFAR_CLASSES)})
        t = time.perf_counter()
        img_ids = client.index_gallery_embeddings("test-images", g_img, "image")
        client.index_gallery_embeddings("test-captions", g_txt, "text", [{"image": int(o)} for o in owner])
        if hub:
            client.normalise_gallery("test-images", "hub")
            client.normalise_gallery("test-captions", "hub")
        seconds["index_galleries"] = time.perf_counter() - t
        t = time.perf_counter()
        row_of = {item: r for r, item in enumerate(img_ids)}
        t2i = [[row_of[h.id] for h in hits]
               for hits in client.search_embeddings(g_txt[::5], "text", "test-images", max(KS))]
        i2t = [[h.payload["image"] for h in hits]
               for hits in client.search_embeddings(g_img, "image", "test-captions", max(KS))]
        seconds["search"] = time.perf_counter() - t
        r_t2i = metrics.recall_at_k(t2i, list(range(len(test))), KS)
        r_i2t = metrics.recall_at_k(i2t, list(range(len(test))), KS)
        out.update({f"flickr8k_test_t2i_R@{k}": r_t2i[k] for k in KS})
        out.update({f"flickr8k_test_i2t_R@{k}": r_i2t[k] for k in KS})
        out["anchors"] = client.count()
    out["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    out["classify_ms_per_image"] = round(1000 * seconds["classify"] / len(labels), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-baseline", action="store_true", help="skip the plain-ASIF store")
    args = ap.parse_args()
    rec = RECOMMENDED
    f8k = datasets.load_flickr8k()
    _, labels = datasets.load_cifar10()
    calib = datasets.cifar_calibration_mask(labels)
    with tempfile.TemporaryDirectory() as tmp:
        probe = AsifClient(Path(tmp) / "probe")
        emb = datasets.embeddings(probe)
        probe.close()
    chosen = run(emb, f8k, labels, calib, AsifParams(k=rec["k"], p=rec["p"]), rec["transform"], rec["hub"])
    print(f"methods: CIFAR-10 report {chosen['cifar10_report_top1']:.4f} all {chosen['cifar10_all_top1']:.4f}; "
          f"t2i R@10 {chosen['flickr8k_test_t2i_R@10']:.3f} i2t R@10 {chosen['flickr8k_test_i2t_R@10']:.3f}",
          file=sys.stderr)
    figures: dict = {"recommended": rec, "methods": chosen}
    if not args.no_baseline:
        base = run(emb, f8k, labels, calib, AsifParams(k=800, p=1.0), None, False)
        figures["plain_k800_p1"] = base
        figures["classify_time_vs_plain"] = round(chosen["seconds"]["classify"] / base["seconds"]["classify"], 2)
        figures["search_time_vs_plain"] = round(chosen["seconds"]["search"] / base["seconds"]["search"], 2)
    figures["goals"] = {"cifar10_report_top1>=0.50": chosen["cifar10_report_top1"] >= 0.50,
                        "flickr8k_test_t2i_R@10>=0.56": chosen["flickr8k_test_t2i_R@10"] >= 0.56}
    finish("zero_shot_methods", figures)


if __name__ == "__main__":
    main()
