"""Hub reference size: 1,000 reference anchors (the library's) against 2,000 and 4,000, dense.

    python benchmarks/hub_reference_size.py

Transforms fitted on the 30,455 Flickr8k-train anchors (image power 0.5 + whiten, text whiten), hub
statistics over every n-th anchor (maths/hub.py: reference_sample with n = 1,000 / 2,000 / 4,000);
CIFAR-10 top-1 on the calibration slice and on the 9,000 report images, Flickr8k val and test
text->image R@10. Prints one line per setting. The saved results/hub_reference_size.json holds the
lines of the one run made (interrupted after the first image/caption strengths: the CPU was needed).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asif_vdb import AsifClient  # noqa: E402
from asif_vdb.features.templates import fill, load_templates  # noqa: E402
from asif_vdb.maths import hub as hubs  # noqa: E402
from asif_vdb.maths.relative import relative_vectors, scores, top_k_rows  # noqa: E402
from asif_vdb.maths.transforms import fit_transform  # noqa: E402
from asif_vdb.maths.tune import recall  # noqa: E402
from benchmarks import datasets  # noqa: E402

SIZES = (1000, 2000, 4000)
SETTINGS = ((3200, 3200, 1.5), (3200, 3200, 1.0), (1600, 800, 1.5), (1600, 800, 1.0))


def rel(top: tuple[np.ndarray, np.ndarray], k: int, p: float, n: int):
    return relative_vectors(list(top[0][:, :k]), list(top[1][:, :k]), p, n)


def main() -> None:
    t0 = time.perf_counter()
    client = AsifClient(location=":memory:")
    emb = datasets.embeddings(client)
    f8k = datasets.load_flickr8k()
    _, labels = datasets.load_cifar10()
    row = {n: i for i, n in enumerate(f8k.images)}
    ir, cr, _ = datasets.anchor_pairs(f8k, f8k.names("train"))
    a_img, a_txt = emb["flickr_images"][ir], emb["flickr_captions"][cr]
    held = ~datasets.cifar_calibration_mask(labels)
    cal = ~held
    prompts = client.encode_texts([fill(t, c) for c in datasets.CIFAR_CLASSES for t in load_templates("default")])
    first = np.cumsum([0] + [len(f8k.captions[n]) for n in f8k.images])
    for iw, tw in ((10.0, 3.0), (3.0, 3.0)):
        ti, tt = fit_transform(a_img, 0.5, True, iw), fit_transform(a_txt, 1.0, True, tw)
        A_i, A_t = ti.apply(a_img), tt.apply(a_txt)
        n_anchors, K = len(A_i), 3200
        ci = top_k_rows(ti.apply(emb["cifar_images"]), A_i, K)
        pr = top_k_rows(tt.apply(prompts), A_t, K)
        refs = {n: hubs.reference_sample(np.arange(n_anchors), n) for n in SIZES}
        ri, rt = top_k_rows(A_i[refs[max(SIZES)]], A_i, K), top_k_rows(A_t[refs[max(SIZES)]], A_t, K)
        pos = {n: np.searchsorted(refs[max(SIZES)], refs[n]) for n in refs}
        splits = {}
        for split in ("val", "test"):
            names = f8k.names(split)
            splits[split] = (top_k_rows(ti.apply(emb["flickr_images"][[row[n] for n in names]]), A_i, K),
                             top_k_rows(tt.apply(emb["flickr_captions"][[first[row[n]] for n in names]]), A_t, K))
        print("tops", iw, tw, round(time.perf_counter() - t0), flush=True)
        for kq, kc, p in SETTINGS:
            cand = rel(pr, kc, p, n_anchors)
            s = scores(rel(ci, kq, p, n_anchors), cand)
            out: dict = {}
            for n in refs:
                r_i = rel((ri[0][pos[n]], ri[1][pos[n]]), kq, p, n_anchors)
                mean, std = hubs.hub_statistics(scores(r_i, cand))
                pred = hubs.hub_normalise_rows(s, mean, std).argmax(1)
                out[n] = (round(float((pred[cal] == labels[cal]).mean()), 3),
                          round(float((pred[held] == labels[held]).mean()), 3))
                r_t = rel((rt[0][pos[n]], rt[1][pos[n]]), kq, p, n_anchors)
                for split in ("val", "test"):
                    gi, qt = rel(splits[split][0], kc, p, n_anchors), rel(splits[split][1], kq, p, n_anchors)
                    mean, std = hubs.hub_statistics(scores(r_t, gi))
                    out[n] += (recall(hubs.hub_normalise_rows(scores(qt, gi), mean, std))["R@10"],)
            print(f"iw{iw} tw{tw} kq{kq} kc{kc} p{p}: refs -> (cal, report, val t2i, test t2i) {out}", flush=True)


if __name__ == "__main__":
    main()
