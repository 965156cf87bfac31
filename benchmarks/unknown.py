"""ASIF's "unknown": calibrated abstention on CIFAR-10 and out-of-distribution detection.

    python benchmarks/unknown.py [--k 800] [--p 1] [--ood 200] [--no-screenshot]

Anchors: every caption of every Flickr8k train image (30,455 pairs), in an embedded store. Label
set: the CIFAR-10 classes with "a photo of a {}.". The threshold is calibrated on the first 100
images of each class and the right / unknown / wrong table is reported on the other 9,000.
Out-of-distribution inputs are made here (uniform noise, flat colours, rendered text) and each
"unknown" criterion is scored as an in/out detector by AUROC (CIFAR-10 = in). Also writes
benchmarks/results/explain_report.png (an explanation report rendered by headless Chromium) where
/usr/bin/chromium exists.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asif_vdb import (
    AsifClient,  # noqa: E402
    AsifParams,  # noqa: E402
)
from asif_vdb.features.label_sets import scores_and_coverage  # noqa: E402
from asif_vdb.features.report import render_html  # noqa: E402
from asif_vdb.maths import calibration as cal  # noqa: E402
from asif_vdb.schema.results import Breakdown  # noqa: E402
from benchmarks import datasets  # noqa: E402
from benchmarks.common import RESULTS, Stages, finish  # noqa: E402

WORDS = ("invoice total amount due paid receipt order number customer account balance date name address "
         "street city phone email price tax discount shipping item quantity note signed approved page chapter "
         "section figure table summary report meeting agenda minutes budget").split()
TARGETS = {"max_wrong_0.1": {"max_wrong": 0.1}, "max_wrong_0.2": {"max_wrong": 0.2},
           "max_wrong_0.3": {"max_wrong": 0.3}, "max_unknown_0.297": {"max_unknown": 0.297}}


def ood_images(n: int, seed: int = 0) -> dict[str, list[Image.Image]]:
    """Inputs no caption of a photo describes: noise, flat colours, typed text (CIFAR-sized where it
    makes sense, so resolution alone does not give them away)."""
    rng = np.random.default_rng(seed)
    noise = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]
    flat = [Image.new("RGB", (32, 32), tuple(int(c) for c in rng.integers(0, 256, 3))) for _ in range(n)]
    text = []
    for _ in range(n):
        bg = tuple(int(c) for c in rng.integers(180, 256, 3))
        fg = tuple(int(c) for c in rng.integers(0, 90, 3))
        img = Image.new("RGB", (64, 64), bg)
        draw = ImageDraw.Draw(img)
        font = ImageFont.load_default(size=int(rng.integers(11, 17)))
        y = int(rng.integers(0, 8))
        while y < 56:
            line = " ".join(rng.choice(WORDS, size=3))
            draw.text((int(rng.integers(-6, 4)), y), line, fill=fg, font=font)
            y += int(rng.integers(13, 19))
        text.append(img)
    return {"noise": noise, "flat": flat, "text": text}


def criteria(client: AsifClient, vectors: np.ndarray, batch: int = 500) -> dict[str, np.ndarray]:
    """Per query: the class scores and query-only "anchor coverage" statistics, from the same top-k
    anchor search the store does for classification."""
    engine = client.engine
    assert engine is not None
    info = client.label_set("cifar10")
    k = engine.config.params.k
    out: dict[str, list[np.ndarray]] = {n: [] for n in ("scores", "coverage", "mean_topk", "mean_top10", "top1")}
    for s in range(0, len(vectors), batch):
        scores, cover = scores_and_coverage(engine, info, vectors[s : s + batch])  # classify's own path
        out["scores"].append(scores)
        out["coverage"].append(cover)  # the library's criterion
        hits = engine.anchors.topk(vectors[s : s + batch], "image")
        sims = np.stack([np.pad(np.maximum(h.scores, 0), (0, k - len(h.scores))) for h in hits])
        out["mean_topk"].append(sims.mean(axis=1))
        out["mean_top10"].append(sims[:, :10].mean(axis=1))
        out["top1"].append(sims[:, 0])
    res = {n: np.concatenate(v) for n, v in out.items()}
    res["best"] = res["scores"].max(axis=1)
    # The score of the query's relative vector left unnormalised (= best x its norm before normalising).
    res["best_x_norm"] = res["best"] * res["coverage"] * np.sqrt(k)
    return res


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.ones(len(inside)), np.zeros(len(outside))]
    return float(roc_auc_score(y, np.r_[inside, outside]))


def table_row(b: Breakdown) -> dict[str, float]:
    return {"right": round(b.right, 4), "unknown": round(b.unknown, 4), "wrong": round(b.wrong, 4),
            "answered_accuracy": round(b.answered_accuracy, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=AsifParams().k)
    ap.add_argument("--p", type=float, default=AsifParams().p)
    ap.add_argument("--ood", type=int, default=200, help="images per out-of-distribution kind")
    ap.add_argument("--no-screenshot", action="store_true")
    args = ap.parse_args()
    stages = Stages()
    f8k = datasets.load_flickr8k()
    cifar_paths, cifar_labels = datasets.load_cifar10()
    calib = datasets.cifar_calibration_mask(cifar_labels)
    with tempfile.TemporaryDirectory() as tmp, \
            AsifClient(Path(tmp) / "store", params=AsifParams(k=args.k, p=args.p)) as client:
        with stages("load_embeddings"):
            emb = datasets.embeddings(client)
        with stages("add_anchors"):
            datasets.add_train_anchors(client, f8k, emb)
        client.create_label_set("cifar10", datasets.CIFAR_CLASSES, ["a photo of a {}."])
        with stages("make_and_encode_ood"):
            ood = ood_images(args.ood)
            ood_vecs = {kind: client.encode_images(imgs) for kind, imgs in ood.items()}
        with stages("score_cifar"):
            c = criteria(client, emb["cifar_images"])
        with stages("score_ood"):
            o = {kind: criteria(client, v) for kind, v in ood_vecs.items()}
        pred = c["scores"].argmax(axis=1)
        correct = pred == cifar_labels

        # Calibrated abstention on CIFAR-10 (raw best score, as in the paper).
        held = ~calib
        tables: dict[str, dict] = {"no_threshold": table_row(cal.breakdown(c["best"][held], correct[held], None))}
        thresholds: dict[str, float] = {}
        for name, target in TARGETS.items():
            t = cal.pick_threshold(c["best"][calib], correct[calib], **target)
            thresholds[name] = t
            tables[name] = {"threshold": round(t, 6), "calibration": table_row(
                cal.breakdown(c["best"][calib], correct[calib], t)),
                **table_row(cal.breakdown(c["best"][held], correct[held], t))}
        # The stored path: calibrate through the client on the calibration images' embeddings.
        stored = client.calibrate("cifar10", embeddings=emb["cifar_images"][calib],
                               truth=cifar_labels[calib], max_wrong=0.3)
        assert abs(stored.threshold - thresholds["max_wrong_0.3"]) < 1e-6
        res = client.classify_embeddings(emb["cifar_images"][held], "cifar10", top=1)
        applied_unknown = float(np.mean([r.unknown for r in res]))

        # Out-of-distribution: each criterion as an in/out detector (AUROC, CIFAR held-out = in), and
        # the unknown rates when each is thresholded to reject 5% of the CIFAR *calibration* images
        # (no OOD image is used to choose a threshold).
        variants = ("best", "best_x_norm", "coverage", "mean_topk", "mean_top10", "top1")
        detect: dict[str, dict[str, float]] = {}
        at_5pct: dict[str, dict[str, float]] = {}
        answered_half: dict[str, float] = {}
        for v in variants:
            inside = c[v][held]
            all_out = np.concatenate([o[kind][v] for kind in ood])
            detect[v] = {"all": round(auroc(inside, all_out), 4),
                         **{kind: round(auroc(inside, o[kind][v]), 4) for kind in ood}}
            t = cal.pick_threshold(c[v][calib], correct[calib], max_unknown=0.05)
            at_5pct[v] = {"threshold": round(t, 6),
                          "cifar_heldout_unknown": round(float(np.mean(~cal.answered(inside, t))), 4),
                          **{f"{kind}_unknown": round(float(np.mean(~cal.answered(o[kind][v], t))), 4)
                             for kind in ood}}
            # Does the criterion predict right vs wrong? Accuracy of the answered half of held-out CIFAR.
            t_half = cal.pick_threshold(c[v][calib], correct[calib], max_unknown=0.5)
            answered_half[v] = round(cal.breakdown(inside, correct[held], t_half).answered_accuracy, 4)

        # The product path: both criteria calibrated and stored, applied by classify.
        cov_report = client.calibrate("cifar10", embeddings=emb["cifar_images"][calib],
                                   truth=cifar_labels[calib], criterion="coverage", max_unknown=0.05)
        both = client.classify_embeddings(emb["cifar_images"][held], "cifar10", top=1)
        both_unknown = np.array([r.unknown for r in both])
        both_right = np.array([r.label == datasets.CIFAR_CLASSES[t] for r, t in zip(both, cifar_labels[held])])
        combined = {
            "score_threshold": round(stored.threshold, 6), "coverage_threshold": round(cov_report.threshold, 6),
            "cifar_heldout": {"right": round(float(both_right.mean()), 4),
                              "unknown": round(float(both_unknown.mean()), 4),
                              "wrong": round(float((~both_unknown & ~both_right).mean()), 4)},
            **{f"{kind}_unknown": round(float(np.mean([r.unknown for r in client.classify_embeddings(
                ood_vecs[kind], "cifar10", top=1)])), 4) for kind in ood},
        }
        score_only_ood = {f"{kind}_unknown": round(float(np.mean(~cal.answered(o[kind]["best"], stored.threshold))), 4)
                          for kind in ood}

        # Timing: one explanation against one classification of the same image (ratio).
        sample = emb["cifar_images"][held][:50]
        t0 = time.perf_counter()
        for v in sample:
            client.classify_embeddings(v[None], "cifar10", top=3)
        t_classify = time.perf_counter() - t0
        t0 = time.perf_counter()
        for v in sample:
            client.explain_embedding(v, "cifar10", top=3, anchors=5)
        t_explain = time.perf_counter() - t0

        screenshot = None
        if not args.no_screenshot and shutil.which("chromium"):
            screenshot = write_screenshot(client, cifar_paths, cifar_labels, held, tmp)
        n_anchors = client.count()

    best_variant = max(detect, key=lambda v: detect[v]["all"])
    finish("unknown", {
        "anchors": n_anchors, "k": args.k, "p": args.p, "template": "a photo of a {}.",
        "cifar_calibration_images": int(calib.sum()), "cifar_heldout_images": int(held.sum()),
        "cifar_top1_heldout": round(float(correct[held].mean()), 4),
        "table_heldout": tables,
        "stored_threshold_max_wrong_0.3": round(stored.threshold, 6),
        "classify_applies_stored_threshold_unknown": round(applied_unknown, 4),
        "ood_images_per_kind": args.ood,
        "auroc_in_vs_out": detect,
        "auroc_goal_0.90_met_by": sorted(v for v in detect if detect[v]["all"] >= 0.90),
        "best_criterion": best_variant,
        "unknown_rates_rejecting_5pct_of_cifar_calibration": at_5pct,
        "answered_accuracy_when_half_unknown": answered_half,
        "ood_unknown_score_threshold_only": score_only_ood,
        "score_and_coverage_stored_classify": combined,
        "explain_over_classify_time_ratio": round(t_explain / t_classify, 2),
        "explain_ms_per_image": round(1000 * t_explain / len(sample), 1),
        "stage_seconds": stages.seconds,
        "screenshot": screenshot,
    })


def write_screenshot(client: AsifClient, paths, labels_, held, tmp: str) -> str | None:
    """Render the explanation of a correctly classified held-out image in headless Chromium."""
    for i in np.flatnonzero(held)[::97]:
        ex = client.explain(paths[i], "cifar10", top=2, anchors=5, threshold=None)
        if ex.label == datasets.CIFAR_CLASSES[labels_[i]]:
            break
    page = Path(tmp) / "explain_report.html"
    page.write_text(render_html(ex, paths[i]), encoding="utf-8")
    out = RESULTS / "explain_report.png"
    RESULTS.mkdir(exist_ok=True)
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={out}", "--window-size=1100,1250", page.as_uri()],
                   capture_output=True, timeout=120)
    return str(out.relative_to(RESULTS.parents[1])) if out.exists() else None


if __name__ == "__main__":
    main()
