"""Hub statistics: the exact statistics against cheaper ones that updates can keep current.

    python benchmarks/hub_cost.py

Dense, on cached embeddings, with the default method's parameters (transforms fitted on the 30,455
Flickr8k-train anchors, query k, candidate k, p): a candidate's hub statistics are the mean and
spread of its scores against reference queries (1,000 anchors). Compared, by CIFAR-10 top-1 on the
9,000 held-out images and Flickr8k test R@10 both ways, and by the seconds to compute the statistics
of 7,000 prompts (the updates benchmark's label set):

- ``exact``: mean and std over the 1,000 reference queries (one sparse product: refs x candidates);
- ``ref250``: the same over every 4th reference (a quarter of the product);
- ``diagonal``: the mean exactly (the mean reference vector . the candidate) and the variance with the
  reference coordinates taken as independent (sum over anchors of candidate^2 x the references'
  variance at that anchor): two dense vectors per modality, O(k) per candidate.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asif_vdb import AsifClient, AsifParams  # noqa: E402
from asif_vdb.features.templates import fill, load_templates  # noqa: E402
from asif_vdb.maths import hub as hubs  # noqa: E402
from asif_vdb.maths.relative import dense_relative, scores  # noqa: E402
from asif_vdb.maths.transforms import fit_transform  # noqa: E402
from asif_vdb.maths.tune import recall  # noqa: E402
from benchmarks import datasets  # noqa: E402
from benchmarks.common import finish  # noqa: E402
from benchmarks.updates import class_names  # noqa: E402


def stats(kind: str, ref: sp.csr_matrix, cand: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    if kind == "exact":
        return hubs.hub_statistics(scores(ref, cand))
    if kind == "ref250":
        return hubs.hub_statistics(scores(ref[::4], cand))
    mean_ref = np.asarray(ref.mean(axis=0)).ravel()
    var_ref = np.asarray(ref.multiply(ref).mean(axis=0)).ravel() - mean_ref ** 2
    mean = cand @ mean_ref
    var = cand.multiply(cand) @ var_ref
    return np.asarray(mean).ravel(), np.maximum(np.sqrt(np.asarray(var).ravel()), hubs.MIN_STD)


def main() -> None:
    t0 = time.perf_counter()
    params = AsifParams()
    client = AsifClient(location=":memory:")
    emb = datasets.embeddings(client)
    f8k = datasets.load_flickr8k()
    _, labels = datasets.load_cifar10()
    row = {n: i for i, n in enumerate(f8k.images)}
    img_rows, cap_rows, _ = datasets.anchor_pairs(f8k, f8k.names("train"))
    a_img, a_txt = emb["flickr_images"][img_rows], emb["flickr_captions"][cap_rows]
    ti = fit_transform(a_img, params.image_fit.power, True, params.image_fit.whiten)
    tt = fit_transform(a_txt, params.text_fit.power, True, params.text_fit.whiten)
    A_i, A_t = ti.apply(a_img), tt.apply(a_txt)
    kq, kc, p = params.k, params.stored_k, params.p
    ref = hubs.reference_sample(np.arange(len(A_i)))
    ref_i, ref_t = dense_relative(A_i[ref], A_i, kq, p), dense_relative(A_t[ref], A_t, kq, p)
    tmpl = load_templates("default")
    prompts = client.encode_texts([fill(t, c) for c in datasets.CIFAR_CLASSES for t in tmpl])
    cand = dense_relative(tt.apply(prompts), A_t, kc, p)
    s_cifar = scores(dense_relative(ti.apply(emb["cifar_images"]), A_i, kq, p), cand)
    test = f8k.names("test")
    first = np.cumsum([0] + [len(f8k.captions[n]) for n in f8k.images])
    g_img = ti.apply(emb["flickr_images"][[row[n] for n in test]])
    g_txt = tt.apply(emb["flickr_captions"][[first[row[n]] for n in test]])
    gi, gt = dense_relative(g_img, A_i, kc, p), dense_relative(g_txt, A_t, kc, p)
    t2i, i2t = scores(dense_relative(g_txt, A_t, kq, p), gi), scores(dense_relative(g_img, A_i, kq, p), gt)
    words = class_names([c for n in f8k.names("train") for c in f8k.captions[n]], 1000)
    big = dense_relative(tt.apply(client.encode_texts([fill(t, w) for w in words for t in load_templates("imagenet7")])),
                         A_t, kc, p)
    held = ~datasets.cifar_calibration_mask(labels)
    out: dict = {"params": params.describe(), "prompts_timed": big.shape[0]}
    for kind in ("exact", "ref250", "diagonal"):
        z = {}
        for name, s, r, c in (("cifar", s_cifar, ref_i, cand), ("t2i", t2i, ref_t, gi), ("i2t", i2t, ref_i, gt)):
            mean, std = stats(kind, r, c)
            z[name] = hubs.hub_normalise_rows(s, mean, std)
        t = time.perf_counter()
        stats(kind, ref_i, big)
        seconds = time.perf_counter() - t
        pred = z["cifar"].argmax(axis=1)
        out[kind] = {"cifar10_top1": round(float((pred[held] == labels[held]).mean()), 4),
                     "flickr8k_test_t2i_R@10": recall(z["t2i"])["R@10"],
                     "flickr8k_test_i2t_R@10": recall(z["i2t"])["R@10"],
                     "seconds_7000_prompts": round(seconds, 3)}
        print(kind, out[kind], flush=True)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    finish("hub_cost", out)


if __name__ == "__main__":
    main()
