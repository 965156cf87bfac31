"""Where the tuned method starts to pay: plain ASIF against the default method by number of anchors.

    python benchmarks/auto_fit_threshold.py

Dense, on cached embeddings. Anchors: the first N Flickr8k train images with their 5 captions each
(N from 50 to 6,091); for each N, plain ASIF (k=800, p=1) and the default method (its k and p,
transforms fitted on those anchors, hub statistics over the reference anchors) are scored on the
calibration data only (CIFAR-10's first 100 images per class, Flickr8k val text->image R@10): the
threshold ``AsifParams.fit_min_anchors`` is set from where the default method stops losing to plain.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asif_vdb import AsifClient, AsifParams  # noqa: E402
from asif_vdb.features.templates import fill, load_templates  # noqa: E402
from asif_vdb.maths import hub as hubs  # noqa: E402
from asif_vdb.maths.relative import dense_relative, scores  # noqa: E402
from asif_vdb.maths.transforms import fit_transform  # noqa: E402
from asif_vdb.maths.tune import recall  # noqa: E402
from benchmarks import datasets  # noqa: E402
from benchmarks.common import finish  # noqa: E402

IMAGES = (50, 100, 200, 400, 800, 1600, 3200, 6091)


def figures(a_img, a_txt, cifar, labels, prompts, v_img, v_txt, params: AsifParams) -> dict:
    tuned = params.tuned
    if tuned:
        ti = fit_transform(a_img, params.image_fit.power, True, params.image_fit.whiten)
        tt = fit_transform(a_txt, params.text_fit.power, True, params.text_fit.whiten)
        fi, ft = ti.apply, tt.apply
    else:
        def fi(x):
            return x
        ft = fi
    A_i, A_t = fi(a_img), ft(a_txt)
    kq, kc, p = params.k, params.stored_k, params.p
    cand = dense_relative(ft(prompts), A_t, kc, p)
    s = scores(dense_relative(fi(cifar), A_i, kq, p), cand)
    gi = dense_relative(fi(v_img), A_i, kc, p)
    t2i = scores(dense_relative(ft(v_txt), A_t, kq, p), gi)
    if tuned:
        ref = hubs.reference_sample(np.arange(len(A_i)))
        for m, r, c in (("s", dense_relative(A_i[ref], A_i, kq, p), cand), ("t", dense_relative(A_t[ref], A_t, kq, p), gi)):
            mean, std = hubs.hub_statistics(scores(r, c))
            if m == "s":
                s = hubs.hub_normalise_rows(s, mean, std)
            else:
                t2i = hubs.hub_normalise_rows(t2i, mean, std)
    return {"cifar10_calibration_top1": round(float((s.argmax(axis=1) == labels).mean()), 4),
            "flickr8k_val_t2i_R@10": recall(t2i)["R@10"]}


def main() -> None:
    t0 = time.perf_counter()
    client = AsifClient(location=":memory:")
    emb = datasets.embeddings(client)
    f8k = datasets.load_flickr8k()
    _, labels = datasets.load_cifar10()
    cal = datasets.cifar_calibration_mask(labels)
    prompts = client.encode_texts([fill(t, c) for c in datasets.CIFAR_CLASSES for t in load_templates("default")])
    row = {n: i for i, n in enumerate(f8k.images)}
    first = np.cumsum([0] + [len(f8k.captions[n]) for n in f8k.images])
    val = f8k.names("val")
    v_img = emb["flickr_images"][[row[n] for n in val]]
    v_txt = emb["flickr_captions"][[first[row[n]] for n in val]]
    rows = []
    for n in IMAGES:
        ir, cr, _ = datasets.anchor_pairs(f8k, f8k.names("train")[:n])
        a_img, a_txt = emb["flickr_images"][ir], emb["flickr_captions"][cr]
        r = {"anchor_images": n, "anchors": len(ir)}
        for name, params in (("plain", AsifParams(method="plain")), ("default", AsifParams())):
            r[name] = figures(a_img, a_txt, emb["cifar_images"][cal], labels[cal], prompts, v_img, v_txt, params)
        rows.append(r)
        print(r, flush=True)
    finish("auto_fit_threshold", {"rows": rows, "params_default": AsifParams().describe(),
                                  "seconds": round(time.perf_counter() - t0, 1)})


if __name__ == "__main__":
    main()
