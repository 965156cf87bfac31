"""Evaluations behind ``asif eval``: zero-shot classification and retrieval through the store, and
dense sweeps over k, p and the number of anchors.

Classification and retrieval run the real query path (label sets, galleries, sparse search). Sweeps
evaluate dozens of settings, so they use the dense path (``relative.relative_vectors`` on
similarities computed in numpy): the same maths, tested equal to the store path.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from asif_vdb.errors import InputError
from asif_vdb.features import galleries, label_sets
from asif_vdb.features.session import Session
from asif_vdb.maths import metrics, relative

CACHE_DIR = Path(os.environ.get("ASIF_CACHE", Path.home() / ".cache" / "asif-vdb"))


# -- embeddings cache ----------------------------------------------------------------------------
def encode_cached(encoder: Any, items: Sequence[Any], kind: str, cache_dir: Path | None,
                  progress: bool = True) -> np.ndarray:
    """Encode ``items`` (image paths or texts), reusing an earlier pass of the same encoder on the
    same items (files keyed by path, size and modification time) in the same precision from
    ``cache_dir``."""
    if cache_dir is None or not items:
        return encoder.encode(list(items), progress=progress)
    key = {**encoder.identity.model_dump(mode="json"), "precision": str(getattr(encoder, "precision", "float32"))}
    h = hashlib.sha256(json.dumps(key, sort_keys=True).encode())  # bfloat16 vectors are other numbers
    for item in items:
        if isinstance(item, (str, os.PathLike)) and kind == "image":
            st = Path(item).stat()
            h.update(f"{Path(item).resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        else:
            h.update(f"{item}\n".encode())
    path = Path(cache_dir) / f"eval-{kind}-{len(items)}-{h.hexdigest()[:16]}.npy"
    if path.exists():
        return np.load(path)
    value = np.asarray(encoder.encode(list(items), progress=progress), np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, value)
    os.replace(tmp, path)
    return value


# -- classification through the store ------------------------------------------------------------
def classify_report(scores: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Top-1/top-5, per-class accuracy and the confusion matrix of (n, n_classes) scores."""
    top = metrics.topk_accuracy(scores, labels, ks=(1, 5))
    pred = metrics.ranked(scores, 1)[:, 0]
    conf = metrics.confusion_matrix(labels, pred, len(classes))
    per_class = metrics.per_class_accuracy(conf)
    return {
        "n_images": int(len(labels)),
        "top1": top[1],
        "top5": top[5],
        "no_answer": int(np.sum(scores.max(axis=1) <= 0)),
        "classes": list(classes),
        "per_class": {c: (None if np.isnan(a) else float(a)) for c, a in zip(classes, per_class)},
        "confusion": conf.tolist(),
    }


def eval_classify(session: Session, paths: Sequence[Any], labels: np.ndarray, classes: Sequence[str],
                  templates: Any, *, label_set: str = "eval", keep: bool = False, batch: int = 256,
                  progress: bool = True) -> dict[str, Any]:
    """Zero-shot classification of labelled images through the store (label set + sparse search).

    ``label_set`` is built for the evaluation (it must not exist) and dropped after unless ``keep``."""
    engine = session.writable()
    if label_set in engine.config.label_sets:
        raise InputError(f"label set {label_set!r} exists in the store; name another for the evaluation")
    info = label_sets.create(session, label_set, list(classes), templates)
    try:
        rows = []
        bar = tqdm(total=len(paths), desc="classify", unit="img", disable=not progress)
        for start in range(0, len(paths), batch):
            vecs = session.encode_images(list(paths[start : start + batch]))
            rows.append(label_sets.image_scores(session, vecs, label_set))
            bar.update(len(vecs))
        bar.close()
    finally:
        if not keep:
            engine.label_sets.drop(label_set)
    report = classify_report(np.concatenate(rows), np.asarray(labels), classes)
    report.update(templates=len(info.templates), anchors=engine.anchors.count(), **engine.config.params.model_dump())
    return report


def format_classify(report: dict[str, Any]) -> str:
    """The report as text: accuracies, per-class accuracy, then the confusion matrix."""
    classes = report["classes"]
    lines = [f"{report['n_images']} images, {len(classes)} classes: top-1 {report['top1']:.4f}  "
             f"top-5 {report['top5']:.4f}" + (f"  ({report['no_answer']} with no answer)" if report["no_answer"] else "")]
    width = max(len(c) for c in classes)
    lines.append("per-class accuracy:")
    for c in classes:
        a = report["per_class"][c]
        lines.append(f"  {c:<{width}}  {'-' if a is None else f'{a:.3f}'}")
    lines.append("confusion (rows: true, columns: predicted):")
    short = [c[:6] for c in classes]
    lines.append(" " * (width + 2) + " ".join(f"{s:>6}" for s in short))
    for c, row in zip(classes, report["confusion"]):
        lines.append(f"  {c:<{width}}" + " ".join(f"{v:>6d}" for v in row))
    return "\n".join(lines)


# -- retrieval through the store -----------------------------------------------------------------
def store_retrieval(session: Session, image_vecs: np.ndarray, caption_vecs: np.ndarray, caption_owner: Sequence[int],
                    query_vecs: np.ndarray, query_owner: Sequence[int], *, ks: Sequence[int] = (1, 5, 10),
                    name: str = "eval", keep: bool = False) -> dict[str, Any]:
    """R@k both ways through galleries: the images are a gallery for the text queries, all captions
    a gallery for the image queries (an image query is right if any of its captions comes back)."""
    top = max(ks)
    images, captions = f"{name}-images", f"{name}-captions"
    engine = session.writable()
    taken = [g for g in (images, captions) if g in engine.config.galleries]
    if taken:
        raise InputError(f"gallery {taken[0]!r} exists in the store; name another for the evaluation")
    try:
        img_ids = galleries.index_embeddings(session, images, image_vecs, "image",
                                             [{"ref": str(i), "row": i} for i in range(len(image_vecs))])
        galleries.index_embeddings(session, captions, caption_vecs, "text",
                                   [{"ref": str(i), "image": int(o)} for i, o in enumerate(caption_owner)])
        row_of = {item: row for row, item in enumerate(img_ids)}
        t2i = [[row_of[h.id] for h in hits] for hits in galleries.search_embeddings(session, query_vecs, "text", images, top)]
        i2t = [[h.payload["image"] for h in hits]
               for hits in galleries.search_embeddings(session, image_vecs, "image", captions, top)]
    finally:
        if not keep:
            for g in (images, captions):
                if g in engine.config.galleries:
                    engine.galleries.drop(g)
    r_t2i = metrics.recall_at_k(t2i, list(query_owner), ks)
    r_i2t = metrics.recall_at_k(i2t, list(range(len(image_vecs))), ks)
    return {
        "n_images": int(len(image_vecs)), "n_captions": int(len(caption_vecs)), "n_queries": int(len(query_vecs)),
        **{f"t2i_R@{k}": r_t2i[k] for k in ks}, **{f"i2t_R@{k}": r_i2t[k] for k in ks},
    }


def eval_retrieval(session: Session, images: Sequence[Any], captions: Sequence[Sequence[str]], *,
                   ks: Sequence[int] = (1, 5, 10), name: str = "eval", keep: bool = False,
                   progress: bool = True) -> dict[str, Any]:
    """Encode images with their captions and measure R@k both ways (queries: the first caption of
    each image)."""
    if not len(images):
        raise InputError("the retrieval set holds no images")
    if len(images) != len(captions) or any(not caps for caps in captions):
        raise InputError("the retrieval set needs at least one caption per image")
    owner = [i for i, caps in enumerate(captions) for _ in caps]
    flat = [c for caps in captions for c in caps]
    image_vecs = session.encode_images(list(images), progress=progress)
    caption_vecs = session.encode_texts(flat, progress=progress)
    first = np.cumsum([0] + [len(c) for c in captions[:-1]])
    report = store_retrieval(session, image_vecs, caption_vecs, owner, caption_vecs[first], list(range(len(images))),
                             ks=ks, name=name, keep=keep)
    engine = session.require()
    report.update(anchors=engine.anchors.count(), **engine.config.params.model_dump())
    return report


# -- dense sweeps --------------------------------------------------------------------------------
def sweep_classification(
    anchor_images: np.ndarray, anchor_texts: np.ndarray, images: np.ndarray, labels: np.ndarray,
    prompt_vecs: np.ndarray, n_classes: int, *, counts: Sequence[int], ks: Sequence[int],
    ps: Sequence[float], seed: int = 0, aggregate: str = "max", progress: bool = True,
) -> list[dict[str, Any]]:
    """Zero-shot accuracy for every (number of anchors, k, p), dense ASIF.

    ``count`` anchors are the first ``count`` of one fixed random permutation (``seed``) of the
    pairs, so larger sets contain smaller ones; the full count is every pair. ``prompt_vecs`` hold
    class c's templates at rows c*T .. c*T+T-1 (``labels.prompts`` order); templates are pooled
    per class by ``aggregate``."""
    total = len(anchor_images)
    if len(anchor_texts) != total:
        raise InputError(f"{total} anchor images but {len(anchor_texts)} anchor captions")
    bad = [c for c in counts if c < 1 or c > total]
    if bad:
        raise InputError(f"anchor counts {bad} are outside 1..{total} (the pairs available)")
    n_templates = len(prompt_vecs) // n_classes
    perm = np.random.default_rng(seed).permutation(total)
    out = []
    steps = [(c, k, p) for c in counts for k in ks for p in ps]
    bar = tqdm(total=len(steps), desc="sweep", unit="setting", disable=not progress)
    for count in counts:
        chosen = np.sort(perm[:count]) if count < total else np.arange(total)
        kmax = min(max(ks), count)
        q_idx, q_val = relative.top_k_rows(images, anchor_images[chosen], kmax)
        c_idx, c_val = relative.top_k_rows(prompt_vecs, anchor_texts[chosen], kmax)
        for k in ks:
            for p in ps:
                kk = min(k, count)
                q = relative.relative_vectors(list(q_idx[:, :kk]), list(q_val[:, :kk]), p, count)
                c = relative.relative_vectors(list(c_idx[:, :kk]), list(c_val[:, :kk]), p, count)
                grid = relative.scores(q, c).reshape(len(images), n_classes, n_templates)
                scores = grid.max(axis=2) if aggregate == "max" else grid.mean(axis=2)
                acc = metrics.topk_accuracy(scores, labels, ks=(1, 5))
                out.append({"anchors": int(count), "k": int(k), "k_used": int(min(k, count)), "p": float(p),
                            "top1": acc[1], "top5": acc[5]})
                bar.update(1)
    bar.close()
    return out


def plot_sweep(results: Sequence[dict[str, Any]], out_dir: Path, title: str = "",
               kinds: Sequence[str] = ("anchors", "k", "p")) -> list[Path]:
    """PNG plots of a sweep: accuracy vs anchors (one line per k, p), and vs k / vs p at the largest
    anchor count when several were swept (``kinds`` picks among the three)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    counts = sorted({r["anchors"] for r in results})
    ks = sorted({r["k"] for r in results})
    ps = sorted({r["p"] for r in results})

    def save(fig: Any, name: str) -> None:
        path = out_dir / name
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)

    if "anchors" in kinds:
        plot_anchors(plt, results, ks, ps, title, save)
    biggest = counts[-1]
    for axis, values, other, other_values in (("k", ks, "p", ps), ("p", ps, "k", ks)):
        if len(values) < 2 or axis not in kinds:
            continue
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for o in other_values:
            rows = sorted((r for r in results if r["anchors"] == biggest and r[other] == o), key=lambda r: r[axis])
            ax.plot([r[axis] for r in rows], [r["top1"] for r in rows], marker="o", label=f"{other}={o:g}")
        if axis == "k":
            ax.set_xscale("log")
        ax.set_xlabel(axis)
        ax.set_ylabel("top-1 accuracy")
        ax.set_title(f"accuracy vs {axis} ({biggest} anchors)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        save(fig, f"accuracy_vs_{axis}.png")
    return written


def plot_anchors(plt: Any, results: Sequence[dict[str, Any]], ks: Sequence[int], ps: Sequence[float],
                 title: str, save: Any) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for k in ks:
        for p in ps:
            rows = sorted((r for r in results if r["k"] == k and r["p"] == p), key=lambda r: r["anchors"])
            ax.plot([r["anchors"] for r in rows], [r["top1"] for r in rows], marker="o", label=f"k={k}, p={p:g}")
    ax.set_xscale("log")
    ax.set_xlabel("number of anchors")
    ax.set_ylabel("top-1 accuracy")
    ax.set_title(title or "zero-shot accuracy vs anchors")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, "accuracy_vs_anchors.png")
