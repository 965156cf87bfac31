"""Fine pruning on CIFAR-10: accuracy against the number of kept anchors, through real pruned stores.

    python benchmarks/prune.py [--keep 300,600,1000,2000,3045,6000,15000] [--random 1000,3045,15000]

Full store: the 30,455 Flickr8k train pairs (cached embeddings), k=800, p=1, label set "cifar10"
with the template "a photo of a {}.". Anchors are chosen with the calibration slice only (the first
100 test images per class, ``cifar_calibration_mask``) as the labelled query sample (method
"margin"); accuracy is reported on the other 9,000 images, for each pruned store written by
``prune_store`` (k = kept / 10) and for the full store. The same sizes chosen at random are the
baseline. Writes benchmarks/results/prune.json and prune.png.
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
    AsifClient,  # noqa: E402
    AsifParams,  # noqa: E402
)
from asif_vdb.workflows import prune  # noqa: E402
from benchmarks import datasets  # noqa: E402
from benchmarks.common import RESULTS, Stages, finish  # noqa: E402

TEMPLATE = "a photo of a {}."


def accuracy(client: AsifClient, vecs: np.ndarray, labels: np.ndarray) -> float:
    scores = np.concatenate([client.class_scores(vecs[s : s + 500], "cifar10") for s in range(0, len(vecs), 500)])
    return float((scores.argmax(axis=1) == labels).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", default="300,600,1000,2000,3045,6000,15000")
    ap.add_argument("--random", default="1000,3045,15000", help="sizes for the random baseline")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    keeps = [int(x) for x in args.keep.split(",")]
    randoms = [int(x) for x in args.random.split(",") if x]
    stages = Stages()
    f8k = datasets.load_flickr8k()
    _, cifar_labels = datasets.load_cifar10()
    cal = datasets.cifar_calibration_mask(cifar_labels)
    with tempfile.TemporaryDirectory() as tmp, AsifClient(Path(tmp) / "full", params=AsifParams(k=800, p=1.0)) as client:
        with stages("load_embeddings"):
            emb = datasets.embeddings(client)
        img_rows, cap_rows, payloads = datasets.anchor_pairs(f8k, f8k.names("train"))
        with stages("build_full_store"):
            for s in range(0, len(payloads), 4096):
                client.add_anchor_embeddings(emb["flickr_images"][img_rows[s : s + 4096]],
                                             emb["flickr_captions"][cap_rows[s : s + 4096]], payloads[s : s + 4096])
            client.create_label_set("cifar10", datasets.CIFAR_CLASSES, [TEMPLATE])
        total = client.count()
        queries = emb["cifar_images"]
        eval_vecs, eval_labels = queries[~cal], cifar_labels[~cal]
        with stages("full_store_accuracy"):
            full_eval = accuracy(client, eval_vecs, eval_labels)
            full_cal = accuracy(client, queries[cal], cifar_labels[cal])
        print(f"  full store: {total} anchors, accuracy {full_eval:.4f} (eval), {full_cal:.4f} (calibration)")
        with stages("importance"):
            importance = prune.anchor_importance(client.engine, client.label_set("cifar10"), queries[cal],
                                                 cifar_labels[cal], method="margin")
        rng = np.random.default_rng(args.seed)
        random_importance = rng.random(len(importance))
        curve: dict[str, list[dict]] = {"margin": [], "random": []}
        for name, sizes, imp in (("margin", keeps, importance), ("random", randoms, random_importance)):
            for keep in sizes:
                t = time.perf_counter()
                out = Path(tmp) / f"{name}-{keep}"
                report = client.prune("cifar10", keep, out, importance=imp)
                prune_s = time.perf_counter() - t
                with AsifClient(out) as small:
                    acc = accuracy(small, eval_vecs, eval_labels)
                point = {"kept": keep, "fraction": round(keep / total, 4), "k": report["k"],
                         "accuracy": round(acc, 4), "vs_full": round(acc / full_eval, 4),
                         "prune_seconds": round(prune_s, 2)}
                curve[name].append(point)
                print(f"  {name:6s} keep {keep:6d} ({point['fraction']:.1%}) k={report['k']}: "
                      f"accuracy {acc:.4f} = {point['vs_full']:.1%} of the full store", flush=True)
    goal = [p for p in curve["margin"] if p["fraction"] <= 0.10 and p["vs_full"] >= 0.95]
    plot(curve, full_eval, total)
    finish("prune", {
        "anchors_full": total, "k_full": 800, "p": 1.0, "template": TEMPLATE,
        "selection": "margin importance on the calibration slice (100 images/class); accuracy on the other 9,000",
        "accuracy_full_eval": round(full_eval, 4), "accuracy_full_calibration": round(full_cal, 4),
        "curve": curve,
        "goal": ">= 95% of the full store's accuracy with <= 10% of the anchors",
        "smallest_meeting_goal": min(goal, key=lambda p: p["kept"]) if goal else None,
        "met": bool(goal), "plot": "benchmarks/results/prune.png", "stage_seconds": stages.seconds,
    })


def plot(curve: dict[str, list[dict]], full: float, total: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, style in (("margin", "o-"), ("random", "s--")):
        pts = curve[name]
        if pts:
            label = "chosen for cifar10 (margin)" if name == "margin" else "chosen at random"
            ax.plot([p["kept"] for p in pts], [p["accuracy"] for p in pts], style, label=label)
    ax.axhline(full, color="k", lw=1, label=f"full store ({total} anchors)")
    ax.axhline(0.95 * full, color="k", lw=1, ls=":", label="95% of full")
    ax.axvline(0.10 * total, color="grey", lw=1, ls=":", label="10% of the anchors")
    ax.set_xscale("log")
    ax.set_xlabel("anchors kept")
    ax.set_ylabel("CIFAR-10 top-1 (9,000 test images)")
    ax.set_title("Fine pruning: Flickr8k anchors specialised to CIFAR-10")
    ax.legend(fontsize=8)
    fig.tight_layout()
    RESULTS.mkdir(exist_ok=True)
    fig.savefig(RESULTS / "prune.png", dpi=120)


if __name__ == "__main__":
    main()
