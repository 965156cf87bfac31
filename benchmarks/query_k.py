"""A smaller k for queries than for stored candidates: accuracy against the default (3200 / 3200).

    python benchmarks/query_k.py      # table on stdout, one JSON line, results/query_k.json

A query's anchor search fetches its k anchors: at 30k anchors, k=3200 costs about twice k=800 (the
engine returns and the client converts 4x the points), and that search is most of the default
method's classification time (results/classify_cost.json). The stored candidates' k is paid once,
when they are written. Densely, with the default method's transforms, p and hub normalisation, on
the Flickr8k train anchors: CIFAR-10 top-1 (report / calibration split, "a photo of a {}.") and
Flickr8k val/test text->image and image->text R@10, for query k in QUERY_K against candidate k 3200.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asif_vdb import AsifParams  # noqa: E402
from asif_vdb.maths import hub as hubs  # noqa: E402
from asif_vdb.maths import transforms as tf  # noqa: E402
from asif_vdb.maths.relative import scores  # noqa: E402
from benchmarks.common import finish  # noqa: E402
from benchmarks.default_method_search import z  # noqa: E402
from benchmarks.methods_search import Data, load, recall, rel_from, top_sorted  # noqa: E402

QUERY_K = (800, 1200, 1600, 2400, 3200)


def main() -> None:
    t0 = time.perf_counter()
    d: Data = load()
    params = AsifParams()
    kc, p = params.stored_k, params.p
    a_img, repeat = d.train_img, 5
    a_txt = d.train_caps.reshape(-1, d.train_caps.shape[2])
    ti = tf.fit_transform(a_img, params.image_fit.power, params.image_fit.centre, params.image_fit.whiten)
    tt = tf.fit_transform(a_txt, params.text_fit.power, params.text_fit.centre, params.text_fit.whiten)
    A_i, A_t = ti.apply(a_img), tt.apply(a_txt)
    ref = hubs.reference_sample(np.arange(len(a_img) * repeat))
    K = max(max(QUERY_K), kc)
    img = {"cifar": top_sorted(ti.apply(d.cifar), A_i, K, repeat), "ref": top_sorted(A_i[ref // repeat], A_i, K, repeat),
           **{s: top_sorted(ti.apply(im), A_i, K, repeat) for s, (im, _) in d.flickr.items()}}
    txt = {"prompts": top_sorted(tt.apply(d.prompts["default"].reshape(10, -1)), A_t, K),
           "ref": top_sorted(A_t[ref], A_t, K),
           **{s: top_sorted(tt.apply(cap), A_t, K) for s, (_, cap) in d.flickr.items()}}
    cand = rel_from(txt["prompts"], kc, p)
    rows = []
    y, cal = d.cifar_labels, d.cifar_calib
    for kq in QUERY_K:
        ref_i, ref_t = rel_from(img["ref"], kq, p), rel_from(txt["ref"], kq, p)
        s = scores(rel_from(img["cifar"], kq, p), cand)
        pred = z(s, scores(ref_i, cand)).argmax(axis=1)
        row: dict = {"query_k": kq, "candidate_k": kc, "p": p,
                     "cifar10_top1_report": round(float((pred[~cal] == y[~cal]).mean()), 4),
                     "cifar10_top1_calib": round(float((pred[cal] == y[cal]).mean()), 4)}
        for split in ("val", "test"):
            gi, gt = rel_from(img[split], kc, p), rel_from(txt[split], kc, p)
            t2i = scores(rel_from(txt[split], kq, p), gi)
            i2t = scores(rel_from(img[split], kq, p), gt)
            t2i, i2t = z(t2i, scores(ref_t, gi)), z(i2t, scores(ref_i, gt))
            row[f"{split}_t2i_R@10"], row[f"{split}_i2t_R@10"] = recall(t2i)["R@10"], recall(i2t)["R@10"]
        rows.append(row)
        print(row, f"({time.perf_counter() - t0:.0f} s)", flush=True)
    finish("query_k", {"anchors": "Flickr8k train, 30,455 caption-level pairs", "default_params": params.describe(),
                       "rows": rows, "seconds": round(time.perf_counter() - t0, 1)})


if __name__ == "__main__":
    main()
