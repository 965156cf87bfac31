"""Pooling a class's templates: the best template's score (the paper), the mean score, or one pooled prompt.

    python benchmarks/template_pooling.py      # table on stdout, one JSON line, results/template_pooling.json

"pool" stores one candidate per class, the normalised mean of its templates' text embeddings (CLIP's
prompt ensembling), so a label set of C classes x T templates ranks C candidates instead of C x T:
the lever that bounds the default method's classification and update cost. Computed densely, on the
Flickr8k train anchors (30,455 caption-level pairs) and CIFAR-10's 9,000 report images (the first 100
per class are the calibration slice), for each template list of the library, with plain ASIF
(k=800, p=1, no transform) and the default method (the tuned parameters of ``AsifParams()``:
transforms fitted on the anchors, k and p, hub normalisation over the reference anchors).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asif_vdb import AsifParams  # noqa: E402
from asif_vdb.features.templates import fill, load_templates  # noqa: E402
from asif_vdb.maths import hub as hubs  # noqa: E402
from asif_vdb.maths import transforms as tf  # noqa: E402
from asif_vdb.maths.relative import scores  # noqa: E402
from benchmarks.common import finish  # noqa: E402
from benchmarks.datasets import CIFAR_CLASSES  # noqa: E402
from benchmarks.default_method_search import z  # noqa: E402
from benchmarks.methods_search import Data, load, rel_from, top_sorted  # noqa: E402

TEMPLATE_LISTS = ("default", "imagenet7", "cifar10", "imagenet")
AGGREGATES = ("max", "mean", "pool")


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def main() -> None:
    t0 = time.perf_counter()
    d: Data = load()
    from asif_vdb.client import AsifClient

    client = AsifClient(location=":memory:")
    prompts = {}
    for name in TEMPLATE_LISTS:
        tmpl = load_templates(name)
        prompts[name] = client.encode_texts([fill(t, c) for c in CIFAR_CLASSES for t in tmpl]).reshape(10, len(tmpl), -1)
    client.close()
    y, report = d.cifar_labels, ~d.cifar_calib
    a_img, repeat = d.train_img, 5
    a_txt = d.train_caps.reshape(-1, d.train_caps.shape[2])
    ref = hubs.reference_sample(np.arange(len(a_img) * repeat))
    tuned = AsifParams()
    methods = {"plain": (None, None, 800, 800, 1.0, False),
               "default": (tf.fit_transform(a_img, tuned.image_fit.power, tuned.image_fit.centre, tuned.image_fit.whiten),
                           tf.fit_transform(a_txt, tuned.text_fit.power, tuned.text_fit.centre, tuned.text_fit.whiten),
                           tuned.k, tuned.stored_k, tuned.p, tuned.hub)}
    rows = []
    for method, (ti, tt, kq, kc, p, hub) in methods.items():
        A_i = ti.apply(a_img) if ti else a_img
        A_t = tt.apply(a_txt) if tt else a_txt
        q = rel_from(top_sorted(ti.apply(d.cifar) if ti else d.cifar, A_i, kq, repeat), kq, p)
        ref_i = rel_from(top_sorted(A_i[ref // repeat], A_i, kq, repeat), kq, p)
        for name, emb in prompts.items():
            n_t = emb.shape[1]
            for agg in AGGREGATES:
                if agg == "pool" and n_t == 1:
                    continue
                cand_emb = unit(emb.mean(axis=1)) if agg == "pool" else emb.reshape(10 * n_t, -1)
                cand = rel_from(top_sorted(tt.apply(cand_emb) if tt else cand_emb, A_t, kc), kc, p)
                s = scores(q, cand)
                if hub:
                    s = z(s, scores(ref_i, cand))
                if agg != "pool":
                    grid = s.reshape(len(s), 10, n_t)
                    s = grid.max(axis=2) if agg == "max" else grid.mean(axis=2)
                pred = s.argmax(axis=1)
                row = {"method": method, "templates": name, "n_templates": n_t, "aggregate": agg,
                       "candidates": 10 * (1 if agg == "pool" else n_t),
                       "cifar10_top1_report": round(float((pred[report] == y[report]).mean()), 4),
                       "cifar10_top1_calib": round(float((pred[~report] == y[~report]).mean()), 4)}
                rows.append(row)
                print(f"{method:8s} {name:10s} x{n_t:<3d} {agg:5s} report {row['cifar10_top1_report']:.4f} "
                      f"calib {row['cifar10_top1_calib']:.4f}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    finish("template_pooling", {
        "anchors": "Flickr8k train, 30,455 caption-level pairs",
        "report": "CIFAR-10 top-1 on the 9,000 images after each class's first 100 (calib: those 1,000)",
        "default_params": tuned.describe(), "rows": rows, "seconds": round(time.perf_counter() - t0, 1)})


if __name__ == "__main__":
    main()
