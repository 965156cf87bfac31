"""Zero-shot CIFAR-10 with Flickr8k-train anchors, through the client and the embedded store.

    python benchmarks/zero_shot.py [--method plain] [--k 800] [--p 1] [--image-encoder lite0] [--fresh]

Anchors: every caption of every train image (30,455 pairs), added to a fresh store made with the
default settings (no options: the tuned method, which fits its transforms as the anchors arrive);
--method / --k / --p build another (saved as zero_shot_methodplain_k800_p1.0.json and the like).
Classes: CIFAR-10 names with the template "a photo of a {}."
(articles agreeing: "an airplane"). ``cifar10_top1`` is the top-1 on the 9,000 images not used for any
choice of the defaults (all but the first 100 of each class, benchmarks/datasets.py:
cifar_calibration_mask); all 10,000 and the calibration slice are reported beside it. Images are
encoded once (an image with five captions is five pairs that share one image vector); with --fresh
nothing is read from the embedding cache.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asif_vdb import (
    AsifClient,  # noqa: E402
    AsifParams,  # noqa: E402
)
from asif_vdb.cli.tune import table as tune_table  # noqa: E402
from asif_vdb.maths.support import spearman  # noqa: E402
from asif_vdb.schema.params import INDEX_PRESETS, IndexSettings  # noqa: E402
from benchmarks import datasets  # noqa: E402
from benchmarks.common import Stages, finish  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", choices=["tuned", "plain"], default=None)
    ap.add_argument("--k", type=int, default=None)
    ap.add_argument("--p", type=float, default=None)
    ap.add_argument("--templates", default="default")
    ap.add_argument("--image-encoder", default=None, help="an image encoder other than the default "
                    "(lite2: results saved as zero_shot_lite2.json)")
    ap.add_argument("--fresh", action="store_true", help="encode everything now instead of using the cache")
    ap.add_argument("--tune", action="store_true", help="also run `asif tune --dry-run` on the store (its table is "
                    "printed and saved under 'tune')")
    ap.add_argument("--index", choices=sorted(INDEX_PRESETS), default=None,
                    help="search the anchors with this preset at any size (exact_below 0); results saved as "
                         "zero_shot_INDEX.json (benchmarks/index_quality.py compares them all in one run)")
    ap.add_argument("--quantization", choices=["none", "int8", "binary", "turbo"], default=None,
                    help="the anchors' quantization (a scan unless --index hnsw), at any size")
    args = ap.parse_args()
    index = None
    if args.index or args.quantization:
        index = (INDEX_PRESETS[args.index] if args.index else IndexSettings()).model_copy(update={"exact_below": 0})
        if args.quantization:
            index = index.model_copy(update={"quantization": args.quantization})
    if args.fresh:
        os.environ["ASIF_CACHE"] = tempfile.mkdtemp()
        datasets.CACHE = Path(os.environ["ASIF_CACHE"])
    stages = Stages()
    f8k = datasets.load_flickr8k()
    cifar_paths, cifar_labels = datasets.load_cifar10()
    given = {k: v for k, v in (("method", args.method), ("k", args.k), ("p", args.p)) if v is not None}
    params = AsifParams(**given) if given else None  # None: the defaults, as a user who gives no option
    with tempfile.TemporaryDirectory() as tmp, AsifClient(Path(tmp) / "store", params=params, index=index,
                                                                  image_encoder=args.image_encoder) as client:
        with stages("encode"):
            emb = datasets.embeddings(client)
        with stages("add_anchors"):
            datasets.add_train_anchors(client, f8k, emb)
        with stages("create_label_set"):
            client.create_label_set("cifar10", datasets.CIFAR_CLASSES, args.templates)
        with stages("classify"):
            scores = np.concatenate([
                client.class_scores(emb["cifar_images"][s : s + 500], "cifar10")
                for s in range(0, len(cifar_labels), 500)
            ])
        pred = scores.argmax(axis=1)
        top5 = np.argsort(-scores, axis=1)[:, :5]
        per_class = {c: round(float((pred[cifar_labels == i] == i).mean()), 4)
                     for i, c in enumerate(datasets.CIFAR_CLASSES)}
        n_anchors = client.count()
        coverage = client.label_coverage("cifar10")
        tuned = None
        if args.tune:
            with stages("tune"):
                tuned = client.tune(apply=False)
            print(tune_table(tuned), flush=True)
        used = client.params
        image_encoder = client.encoder("image").identity.model_dump(mode="json")
        transforms = client.transforms()
        normalise = client.label_set("cifar10").normalise
    held = ~datasets.cifar_calibration_mask(cifar_labels)
    support = {r.name: r for r in coverage.classes}
    acc = np.asarray([per_class[c] for c in datasets.CIFAR_CLASSES])
    suffix = (f"_{(index.quantization if args.quantization else args.index)}" if index else "") + (
        f"_{args.image_encoder}" if args.image_encoder else "") + "".join(f"_{key}{val}" for key, val in given.items())
    finish("zero_shot" + suffix, {
        "index": index.model_dump() if index else "the default (exact at this size)",
        "image_encoder": image_encoder,
        # Does `asif labels coverage` predict where accuracy is low? Spearman over the 10 classes.
        "coverage_vs_accuracy_spearman_anchors": round(spearman(
            np.asarray([support[c].anchors for c in datasets.CIFAR_CLASSES]), acc), 3),
        "coverage_vs_accuracy_spearman_weight": round(spearman(
            np.asarray([support[c].weight for c in datasets.CIFAR_CLASSES]), acc), 3),
        "tune": tuned.to_dict() if tuned is not None else None,
        "coverage_per_class": {r.name: {"anchors": r.anchors, "weight": r.weight, "low": r.low,
                                        "nearest": r.nearest} for r in coverage.classes},
        "cifar10_top1": round(float((pred[held] == cifar_labels[held]).mean()), 4),
        "cifar10_top1_images": int(held.sum()),
        "cifar10_top1_held_out": "every CIFAR-10 test image but the first 100 of each class (the calibration slice "
                                 "the defaults were chosen on)",
        "cifar10_top5": round(float((top5[held] == cifar_labels[held, None]).any(axis=1).mean()), 4),
        "cifar10_all_top1": round(float((pred == cifar_labels).mean()), 4),
        "cifar10_calibration_top1": round(float((pred[~held] == cifar_labels[~held]).mean()), 4),
        "cifar10_per_class_top1": per_class,
        "params": used.model_dump(mode="json"), "defaults": params is None, "transforms": transforms,
        "label_set_normalise": normalise, "templates": args.templates, "anchors": n_anchors,
        "images": int(len(cifar_labels)), "stage_seconds": stages.seconds,
        "classify_ms_per_image": round(1000 * stages.seconds["classify"] / len(cifar_labels), 2),
        "embeddings_from_cache": not args.fresh,
        # the precision the encoders ran in when these embeddings were made (with --fresh: now)
        "precision_when_encoded": encoding_precisions() if args.fresh else "as cached",
    })


def encoding_precisions() -> dict[str, str]:
    """What ``auto`` precision means on this machine, per encoder family (asif_vdb.encoders.precision)."""
    import torch

    from asif_vdb.encoders import precision

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {"image": precision.resolve(None, device=device, family="timm"),
            "text": precision.resolve(None, device=device, family="sentence-transformers")}


if __name__ == "__main__":
    main()
