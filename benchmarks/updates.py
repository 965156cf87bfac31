"""Live anchor updates: add and delete 1,000 anchors in a store with a 1,000-class label set and a
1,000-image gallery, against a full rebuild of every stored candidate measured in the same run.

    python benchmarks/updates.py [--n 1000] [--classes 1000] [--gallery 1000] [--store DIR]

Anchors: the 30,455 Flickr8k train pairs (cached embeddings; 30,447 after de-duplication). Label
set: 1,000 frequent words and bigrams of the train captions x the 7 "imagenet7" templates, pooled
into one prompt per class (the default method's aggregate; the plain store keeps all 7,000). Gallery:
1,000 val images. In order, after reopening the store: add the first caption of 1,000 test images
(the first update of a process also reads every candidate's list: "cold"); then ``--rounds`` times:
delete a random 1,000 train pairs, add the next caption of the same 1,000 test images (image
similarities equal to the earlier batches': ties). Each update is timed from the call to its return
(pairs written and every candidate fresh); the refresh's own stages are reported, and the figures
are the medians over the rounds (the machine is shared and noisy). Compaction of deleted derived
points (once they reach 4x the live ones) lands in whichever update crosses the mark; its seconds
are reported per update and amortised. The rebuild recomputes every candidate's
relative vector from its stored embedding (one top-K search each, no re-encoding) and writes it; its
result is also the reference the updated store must equal (max abs difference asserted <= 1e-5).
``--store DIR`` keeps the built store (3-4 minutes to build) and reuses it on later runs.

The store is made with the default settings (the tuned method: transforms fitted as the anchors
arrive, the label set and gallery hub-normalised), so the updates carry its hub statistics too.
Classification cost: the same CIFAR-10 images are classified over the 1,000-class label set in this
store and in a plain-ASIF store (k=800, p=1) built alike, in interleaved rounds; the median ratio is
``classify_cost_ratio_default_vs_plain``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asif_vdb import AsifClient, AsifParams  # noqa: E402
from asif_vdb.maths.anchor_lists import rel_matrix  # noqa: E402
from benchmarks import datasets  # noqa: E402
from benchmarks.common import Stages, finish  # noqa: E402

STOP = set("a an the of in on at with and is are to his her its their for from by two three four one "
           "while into near through over up down some other as out this that another each".split())


def class_names(captions: list[str], n: int) -> list[str]:
    """``n`` distinct frequent words, then bigrams, of the captions (stop words left out)."""
    words, bigrams = Counter(), Counter()
    for c in captions:
        toks = [t for t in re.findall(r"[a-z]+", c.lower()) if len(t) > 2]
        words.update(t for t in toks if t not in STOP)
        bigrams.update(f"{a} {b}" for a, b in zip(toks, toks[1:]) if a not in STOP and b not in STOP)
    names = [w for w, _ in words.most_common(n)]
    names += [b for b, _ in bigrams.most_common(n) if b not in names][: n - len(names)]
    return names[:n]


pairs = datasets.anchor_pairs


def stored_candidates(client: AsifClient) -> dict[str, tuple[np.ndarray, np.ndarray, list]]:
    """Per modality: candidate ids, embeddings, stored relative vectors (pairs)."""
    out = {}
    empty = (np.zeros(0, np.int64), np.zeros(0, np.float32))
    for m in ("image", "text"):
        assert client.engine is not None
        rows = client.engine.lists.stored(m)
        out[m] = (np.asarray([r[0] for r in rows]), np.stack([r[1] for r in rows]),
                  [r[3] if r[3] is not None else empty for r in rows])
    return out


def rebuild(client: AsifClient) -> tuple[float, float, int]:
    """Recompute and rewrite every candidate from scratch; returns (seconds, max abs difference of the
    stored vectors from the rebuilt ones, candidates). (A tuned store's hub statistics belong to its fit,
    like its transforms: neither an update nor this recomputes them.)"""
    engine = client.engine
    assert engine is not None
    params = engine.config.params
    stored = stored_candidates(client)
    worst, n = 0.0, 0
    t0 = time.perf_counter()
    for m, (ids, vecs, rel) in stored.items():
        lists = engine.lists.search_lists(vecs, m)
        fresh = rel_matrix(lists, params.stored_k, params.p, engine.state.n_coords).tocsr()
        for row, (idx, vals) in enumerate(rel):  # the comparison is not timed
            t_cmp = time.perf_counter()
            want = np.zeros(fresh.shape[1], np.float32)
            want[fresh.indices[fresh.indptr[row]:fresh.indptr[row + 1]]] = fresh.data[fresh.indptr[row]:fresh.indptr[row + 1]]
            want[np.asarray(idx, np.int64)] -= np.asarray(vals, np.float32)
            worst = max(worst, float(np.abs(want).max(initial=0.0)))
            t0 += time.perf_counter() - t_cmp
        engine.derived.write(ids.tolist(), lists)
        n += len(ids)
    return time.perf_counter() - t0, worst, n


def build(client: AsifClient, f8k, emb, train, classes, gallery_names, gal_rows, stages: Stages) -> None:
    """The store before the updates: train anchors, the label set, the gallery."""
    img_rows, cap_rows, payloads = pairs(f8k, train)
    with stages("add_30k_anchors"):
        for s in range(0, len(payloads), 4096):
            client.add_anchor_embeddings(emb["flickr_images"][img_rows[s:s + 4096]],
                                         emb["flickr_captions"][cap_rows[s:s + 4096]], payloads[s:s + 4096])
    with stages("create_label_set"):
        client.create_label_set("words", classes, "imagenet7")
    with stages("create_gallery"):
        payloads = [{"ref": n} for n in gallery_names]
        client.index_gallery_embeddings("bench", emb["flickr_images"][gal_rows], "image", payloads)


def classify_cost(client: AsifClient, plain: AsifClient, images: np.ndarray, rounds: int = 3) -> dict:
    """Seconds to classify ``images`` over label set "words" in each store (medians of interleaved rounds)."""
    times: dict[str, list[float]] = {"default": [], "plain": []}
    for _ in range(rounds):
        for name, c in (("default", client), ("plain", plain)):
            t = time.perf_counter()
            for s in range(0, len(images), 100):
                c.classify_embeddings(images[s:s + 100], "words", top=5, threshold=None)
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"classify_images": len(images), "classify_rounds": rounds,
            "classify_ms_per_image_default": round(1000 * med["default"] / len(images), 2),
            "classify_ms_per_image_plain": round(1000 * med["plain"] / len(images), 2),
            "classify_cost_ratio_default_vs_plain": round(med["default"] / med["plain"], 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="anchors added, then deleted")
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--gallery", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=3, help="warm delete+add rounds (at most 3)")
    ap.add_argument("--small", type=lambda v: [int(x) for x in v.split(",") if x], default=[10, 100],
                    help="sizes of the smaller add-then-delete updates also timed")
    ap.add_argument("--store", type=Path, default=None,
                    help="keep the built store (anchors, label set, gallery) here and reuse it on later runs")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    stages = Stages()
    f8k = datasets.load_flickr8k()
    train, val, test = f8k.names("train"), f8k.names("val"), f8k.names("test")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store"
        built = args.store if args.store is not None else path
        client = AsifClient(built)
        with stages("load_embeddings"):
            emb = datasets.embeddings(client)
        classes = class_names([c for n in train for c in f8k.captions[n]], args.classes)
        gal_rows = [f8k.images.index(n) for n in val[: args.gallery]]
        if client.count() == 0:
            build(client, f8k, emb, train, classes, val[: args.gallery], gal_rows, stages)
        if built != path:  # updates run on a copy; the kept store stays as built
            client.close()
            shutil.copytree(built, path)
            client = AsifClient(path)
        n_candidates = sum(client.label_set(n).n_candidates for n in client.label_sets()) + sum(
            client.gallery(g).size for g in client.galleries())
        anchors_before = client.count()

        # Added anchors: the first caption of n images outside train and outside the gallery.
        pool = val[args.gallery:] + test
        extra = [pool[i] for i in rng.choice(len(pool), min(args.n, len(pool)), replace=False)]
        e_img, e_cap, e_pay = pairs(f8k, extra)
        first = np.asarray([i for i, pl in enumerate(e_pay) if pl["caption"] == f8k.captions[Path(pl["image"]).name][0]])
        add_img = emb["flickr_images"][np.asarray(e_img)[first]]
        add_cap = emb["flickr_captions"][np.asarray(e_cap)[first]]
        add_pay = [e_pay[i] for i in first]

        # First update after opening: reads every candidate's state from the store (cold).
        client.close()
        client = AsifClient(path)
        fit_before = client.transforms()
        t = time.perf_counter()
        client.add_anchor_embeddings(add_img, add_cap, add_pay)
        add_cold_s = time.perf_counter() - t
        # the build's last fit covers the anchors of its earlier batches: this update may cross the
        # quarter that triggers a refit (every anchor re-embedded, every candidate recomputed)
        add_cold_refit = client.transforms() != fit_before
        add_cold_report = client.last_refresh.to_dict()
        print(f"  add {len(add_pay)} (first update after opening): {add_cold_s:.2f} s  {add_cold_report}", flush=True)

        deletes, adds = [], []
        alive = [i for i in range(anchors_before)]
        for r in range(min(args.rounds, 3)):
            victims = [int(i) for i in rng.choice(alive, args.n, replace=False)]
            alive = sorted(set(alive) - set(victims))
            t = time.perf_counter()
            client.delete_anchors(victims)
            deletes.append((time.perf_counter() - t, client.last_refresh.to_dict()))
            print(f"  delete {args.n}: {deletes[-1][0]:.2f} s  {deletes[-1][1]}", flush=True)
            nth = [i for i, pl in enumerate(e_pay) if pl["caption"] == f8k.captions[Path(pl["image"]).name][1 + r]]
            t = time.perf_counter()
            client.add_anchor_embeddings(emb["flickr_images"][np.asarray(e_img)[nth]],
                                         emb["flickr_captions"][np.asarray(e_cap)[nth]], [e_pay[i] for i in nth])
            adds.append((time.perf_counter() - t, client.last_refresh.to_dict()))
            print(f"  add {len(nth)}: {adds[-1][0]:.2f} s  {adds[-1][1]}", flush=True)
        add_s = statistics.median(a for a, _ in adds)
        delete_s = statistics.median(d for d, _ in deletes)
        updates = [r for pair in zip(deletes, adds) for _, r in pair]  # in the order they ran
        compact = [r["seconds"].get("compact", 0.0) for r in updates]
        anchors_after = client.count()

        # Smaller updates touch fewer candidates: add n pairs (third captions), then delete them.
        third = [i for i, pl in enumerate(e_pay) if pl["caption"] == f8k.captions[Path(pl["image"]).name][4]]
        small = []
        for n in args.small:
            rows = np.asarray(third[:n])
            t = time.perf_counter()
            ids = client.add_anchor_embeddings(emb["flickr_images"][np.asarray(e_img)[rows]],
                                               emb["flickr_captions"][np.asarray(e_cap)[rows]],
                                               [e_pay[i] for i in rows])
            a_s, a_rep = time.perf_counter() - t, client.last_refresh
            t = time.perf_counter()
            client.delete_anchors(ids)
            d_s, d_rep = time.perf_counter() - t, client.last_refresh
            small.append({"n": n, "add_seconds": round(a_s, 3), "add_rewritten": a_rep.rewritten,
                          "delete_seconds": round(d_s, 3), "delete_rewritten": d_rep.rewritten,
                          "add_stages_s": a_rep.seconds, "delete_stages_s": d_rep.seconds,
                          "delete_searched": d_rep.searched})
            print(f"  add/delete {n}: {a_s:.2f} s / {d_s:.2f} s, candidates rewritten "
                  f"{a_rep.rewritten} / {d_rep.rewritten}", flush=True)

        with stages("full_rebuild"):
            rebuild_s, max_diff, n_checked = rebuild(client)
        with stages("plain_store"):  # the same anchors and label set under plain ASIF, for the cost ratio
            plain = AsifClient(Path(tmp) / "plain", params=AsifParams(method="plain"))
            img_rows, cap_rows, payloads = pairs(f8k, train)
            for s in range(0, len(payloads), 4096):
                plain.add_anchor_embeddings(emb["flickr_images"][img_rows[s:s + 4096]],
                                            emb["flickr_captions"][cap_rows[s:s + 4096]], payloads[s:s + 4096])
            plain.create_label_set("words", classes, "imagenet7")
        with stages("classify_cost"):
            cost = classify_cost(client, plain, emb["cifar_images"][rng.choice(len(emb["cifar_images"]), 500,
                                                                                replace=False)])
        print(f"  classify: {cost}", flush=True)
        default_params = client.params.model_dump(mode="json")
        default_aggregate, plain_aggregate = client.label_set("words").aggregate, plain.label_set("words").aggregate
        load = os.getloadavg()
        plain.close()
        client.close()
    assert max_diff <= 1e-5, f"updated candidates differ from a rebuild by {max_diff}"
    finish("updates", {
        "params": default_params, **cost,
        "anchors": anchors_before, "anchors_after_updates": anchors_after,
        "candidates": n_candidates, "label_set": f"{len(classes)} classes x 7 templates (imagenet7)",
        "label_set_aggregate": {"default": default_aggregate, "plain": plain_aggregate},
        "gallery_images": len(gal_rows),
        "add_n": len(add_pay), "rounds": len(adds),
        "add_seconds": round(add_s, 3), "add_seconds_by_round": [round(a, 3) for a, _ in adds],
        "delete_n": args.n, "delete_seconds": round(delete_s, 3),
        "delete_seconds_by_round": [round(d, 3) for d, _ in deletes],
        "add_refresh_last": adds[-1][1], "delete_refresh_last": deletes[-1][1],
        "compact_seconds_by_update": [round(c, 3) for c in compact],
        "add_cold_n": len(add_pay), "add_cold_seconds": round(add_cold_s, 3), "add_cold_refresh": add_cold_report,
        "add_cold_refitted": add_cold_refit,
        "smaller_updates": small,
        "full_rebuild_seconds": round(rebuild_s, 3),
        "add_vs_rebuild": round(add_s / rebuild_s, 4), "delete_vs_rebuild": round(delete_s / rebuild_s, 4),
        "add_cold_vs_rebuild": round(add_cold_s / rebuild_s, 4),
        "write_share": round(sum(r["seconds"].get("write", 0) for _, r in [*adds, *deletes])
                             / sum(t for t, _ in [*adds, *deletes]), 3),
        "max_abs_diff_vs_rebuild": max_diff, "candidates_checked": n_checked,
        "goal_seconds": 2.0,
        # The goal is judged on a live store (the process has its candidates' lists in memory); the
        # first update after opening also reads them (add_cold_seconds, reported beside it).
        "met": bool(max(add_s, delete_s) <= 2.0),
        "load_average_1min": round(load[0], 2), "stage_seconds": stages.seconds,
    })


if __name__ == "__main__":
    main()
