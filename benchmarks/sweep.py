"""CIFAR-10 zero-shot accuracy vs the number of anchors, k and p (the paper's "zero-shot
capabilities emerge early" curve), dense ASIF on cached embeddings.

Anchors: Flickr8k train pairs (6,091 images x 5 captions = 30,455), subsets = the first N of one
fixed random permutation (seed 0). Queries: the 10,000 CIFAR-10 test images; template
"a photo of a {}." (the reference figures'). Also the reference's "6,091 pairs (first caption)"
rows, to check the engine against the published table. Writes benchmarks/results/sweep.json and
the PNGs under benchmarks/results/sweep/.

Usage: python benchmarks/sweep.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file or with -m

from asif_vdb import AsifClient  # noqa: E402
from asif_vdb.features.label_sets import prompts  # noqa: E402
from asif_vdb.workflows.evaluate import plot_sweep, sweep_classification  # noqa: E402
from benchmarks.common import RESULTS, finish  # noqa: E402
from benchmarks.datasets import CIFAR_CLASSES, embeddings, load_cifar10, load_flickr8k  # noqa: E402

COUNTS = (1000, 2000, 5000, 10000, 20000, 30455)
TEMPLATES = ["a photo of a {}."]
REFERENCE = {  # shared/datasets/README.md, CIFAR-10 top-1
    "first_caption_6091_k200_p1": 0.449, "first_caption_6091_k800_p8": 0.355,
    "all_30455_k800_p1": 0.465, "all_30455_k800_p4": 0.458, "all_30455_k800_p8": 0.398,
}


def main() -> dict:
    f8k = load_flickr8k()
    _, labels = load_cifar10()
    with tempfile.TemporaryDirectory() as tmp:
        client = AsifClient(Path(tmp) / "probe")
        emb = embeddings(client)
        prompt_vecs = client.encode_texts(prompts(CIFAR_CLASSES, TEMPLATES))
        client.close()
    row = {n: i for i, n in enumerate(f8k.images)}
    train = f8k.names("train")
    a_img = np.repeat(emb["flickr_images"][[row[n] for n in train]], 5, axis=0)
    a_txt = emb["flickr_captions"][[row[n] * 5 + j for n in train for j in range(5)]]
    cifar = emb["cifar_images"]
    common = dict(images=cifar, labels=labels, prompt_vecs=prompt_vecs, n_classes=len(CIFAR_CLASSES))

    anchors_curve = sweep_classification(a_img, a_txt, counts=COUNTS, ks=(800,), ps=(1.0, 4.0, 8.0), **common)
    kp_grid = sweep_classification(a_img, a_txt, counts=(len(a_img),), ks=(50, 100, 200, 400, 800, 1600, 3200),
                                   ps=(1.0, 2.0, 4.0, 8.0), **common)
    first = [i * 5 for i in range(len(train))]
    first_caption = sweep_classification(a_img[first], a_txt[first], counts=(len(first),), ks=(200, 800),
                                         ps=(1.0, 8.0), **common)

    plot_sweep(anchors_curve, RESULTS / "sweep", "CIFAR-10 top-1 vs Flickr8k anchors", kinds=("anchors",))
    plot_sweep(kp_grid, RESULTS / "sweep", kinds=("k", "p"))

    def pick(rows, k, p):
        return next(r["top1"] for r in rows if r["k"] == k and r["p"] == p)

    out = {
        "dataset": "cifar10-test", "n_images": int(len(labels)), "templates": TEMPLATES,
        "anchor_pool": "flickr8k-train", "seed": 0,
        "accuracy_vs_anchors_k800": {f"p{p:g}": {str(r["anchors"]): r["top1"] for r in anchors_curve if r["p"] == p}
                                     for p in (1.0, 4.0, 8.0)},
        "top5_vs_anchors_k800_p1": {str(r["anchors"]): r["top5"] for r in anchors_curve if r["p"] == 1.0},
        "accuracy_k_p_grid_30455": {f"k{r['k']}_p{r['p']:g}": r["top1"] for r in kp_grid},
        "measured": {
            "first_caption_6091_k200_p1": pick(first_caption, 200, 1.0),
            "first_caption_6091_k800_p8": pick(first_caption, 800, 8.0),
            "all_30455_k800_p1": pick(kp_grid, 800, 1.0),
            "all_30455_k800_p4": pick(kp_grid, 800, 4.0),
            "all_30455_k800_p8": pick(kp_grid, 800, 8.0),
        },
        "reference": REFERENCE,
        "plots": sorted(str(p.relative_to(RESULTS.parent)) for p in (RESULTS / "sweep").glob("*.png")),
    }
    finish("sweep", out)
    return out


if __name__ == "__main__":
    main()
