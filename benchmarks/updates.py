"""Live anchor updates: add and delete 1,000 anchors in a store with a 7,000-prompt label set and a
1,000-image gallery, against a full rebuild of every stored candidate measured in the same run.

    python benchmarks/updates.py [--n 1000] [--classes 1000] [--gallery 1000] [--store DIR]

Anchors: the 30,455 Flickr8k train pairs (cached embeddings; 30,447 after de-duplication). Label
set: 1,000 frequent words and bigrams of the train captions x the 7 "imagenet7" templates. Gallery:
1,000 val images. In order, after reopening the store: add the first caption of 1,000 test images
(the first update of a process also reads every candidate's state: "cold"), delete a random 1,000
train pairs, add the second caption of the same 1,000 test images (image similarities equal to the
first batch's: ties). Each update is timed from the call to its return (pairs written and every
candidate fresh); the refresh's own stages are reported. The rebuild recomputes every candidate's
relative vector from its stored embedding (one top-K search each, no re-encoding) and writes it; its
result is also the reference the updated store must equal (max abs difference asserted <= 1e-5).
``--store DIR`` keeps the built store (3-4 minutes to build) and reuses it on later runs.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asif_vdb import refresh  # noqa: E402
from asif_vdb.client import AsifClient  # noqa: E402
from asif_vdb.index import CANDIDATES  # noqa: E402
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
    for m in ("image", "text"):
        pts = [p for b in client.backend.scroll(CANDIDATES, None, False, (m, "rel")) for p in b if m in p.dense]
        out[m] = (np.asarray([p.id for p in pts]), np.stack([p.dense[m] for p in pts]),
                  [p.sparse.get("rel", (np.zeros(0, np.int64), np.zeros(0, np.float32))) for p in pts])
    return out


def rebuild(client: AsifClient) -> tuple[float, float, int]:
    """Recompute and rewrite every candidate from scratch; returns (seconds, max abs difference of the
    stored vectors from the rebuilt ones, candidates)."""
    index = client.index
    stored = stored_candidates(client)
    worst, n = 0.0, 0
    t0 = time.perf_counter()
    for m, (ids, vecs, rel) in stored.items():
        lists = refresh.search_lists(index, vecs, m)
        fresh = refresh.rel_matrix(lists, index.config.params.k, index.config.params.p, index.n_coords).tocsr()
        for row, (idx, vals) in enumerate(rel):  # the comparison is not timed
            t_cmp = time.perf_counter()
            want = np.zeros(fresh.shape[1], np.float32)
            want[fresh.indices[fresh.indptr[row]:fresh.indptr[row + 1]]] = fresh.data[fresh.indptr[row]:fresh.indptr[row + 1]]
            want[np.asarray(idx, np.int64)] -= np.asarray(vals, np.float32)
            worst = max(worst, float(np.abs(want).max(initial=0.0)))
            t0 += time.perf_counter() - t_cmp
        refresh.write(index, ids, lists)
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
        if hasattr(client, "index_gallery_embeddings"):
            client.index_gallery_embeddings("bench", emb["flickr_images"][gal_rows], "image", payloads)
        else:  # galleries not in the client: store the candidates directly
            index = client.index
            first = index.allocate_candidates(len(gal_rows))
            index.put_candidates("gallery:bench", list(range(first, first + len(gal_rows))),
                                 emb["flickr_images"][gal_rows], "image", payloads)
            index.save()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="anchors added, then deleted")
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--gallery", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
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
        n_candidates = client.backend.count(CANDIDATES)
        anchors_before = client.count()

        # Added anchors: the first caption of n images outside train and outside the gallery.
        pool = val[args.gallery:] + test
        extra = [pool[i] for i in rng.choice(len(pool), min(args.n, len(pool)), replace=False)]
        e_img, e_cap, e_pay = pairs(f8k, extra)
        first = np.asarray([i for i, pl in enumerate(e_pay) if pl["caption"] == f8k.captions[Path(pl["image"]).name][0]])
        second = np.asarray([i for i, pl in enumerate(e_pay) if pl["caption"] == f8k.captions[Path(pl["image"]).name][1]])
        add_img = emb["flickr_images"][np.asarray(e_img)[first]]
        add_cap = emb["flickr_captions"][np.asarray(e_cap)[first]]
        add_pay = [e_pay[i] for i in first]

        # First update after opening: reads every candidate's state from the store (cold).
        client.close()
        client = AsifClient(path)
        t = time.perf_counter()
        client.add_anchor_embeddings(add_img, add_cap, add_pay)
        add_cold_s = time.perf_counter() - t
        add_cold_report = client.last_refresh.to_dict()
        print(f"  add {len(add_pay)} (first update after opening): {add_cold_s:.2f} s  {add_cold_report}", flush=True)

        victims = [int(i) for i in rng.choice(anchors_before, args.n, replace=False)]
        t = time.perf_counter()
        client.delete_anchors(victims)
        delete_s = time.perf_counter() - t
        delete_report = client.last_refresh.to_dict()
        print(f"  delete {args.n}: {delete_s:.2f} s  {delete_report}", flush=True)

        m_pay = [e_pay[i] for i in second]  # the second caption of the same images: new pairs, equal image sims
        t = time.perf_counter()
        client.add_anchor_embeddings(emb["flickr_images"][np.asarray(e_img)[second]],
                                     emb["flickr_captions"][np.asarray(e_cap)[second]], m_pay)
        add_s = time.perf_counter() - t
        add_report = client.last_refresh.to_dict()
        print(f"  add {len(m_pay)}: {add_s:.2f} s  {add_report}", flush=True)
        anchors_after = client.count()

        # Smaller updates touch fewer candidates: add n pairs (third captions), then delete them.
        third = [i for i, pl in enumerate(e_pay) if pl["caption"] == f8k.captions[Path(pl["image"]).name][2]]
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
                          "delete_seconds": round(d_s, 3), "delete_rewritten": d_rep.rewritten})
            print(f"  add/delete {n}: {a_s:.2f} s / {d_s:.2f} s, candidates rewritten "
                  f"{a_rep.rewritten} / {d_rep.rewritten}", flush=True)

        with stages("full_rebuild"):
            rebuild_s, max_diff, n_checked = rebuild(client)
        load = os.getloadavg()
        client.close()
    assert max_diff <= 1e-5, f"updated candidates differ from a rebuild by {max_diff}"
    finish("updates", {
        "anchors": anchors_before, "anchors_after_updates": anchors_after,
        "candidates": n_candidates, "label_set": f"{len(classes)} classes x 7 templates (imagenet7)",
        "gallery_images": len(gal_rows),
        "add_n": len(m_pay), "add_seconds": round(add_s, 3), "add_refresh": add_report,
        "delete_n": args.n, "delete_seconds": round(delete_s, 3), "delete_refresh": delete_report,
        "add_cold_n": len(add_pay), "add_cold_seconds": round(add_cold_s, 3), "add_cold_refresh": add_cold_report,
        "smaller_updates": small,
        "full_rebuild_seconds": round(rebuild_s, 3),
        "add_vs_rebuild": round(add_s / rebuild_s, 4), "delete_vs_rebuild": round(delete_s / rebuild_s, 4),
        "add_cold_vs_rebuild": round(add_cold_s / rebuild_s, 4),
        "write_share": round((add_report["seconds"].get("write", 0) + delete_report["seconds"].get("write", 0))
                             / (add_s + delete_s), 3),
        "max_abs_diff_vs_rebuild": max_diff, "candidates_checked": n_checked,
        "goal_seconds": 2.0, "met": bool(max(add_s, delete_s, add_cold_s) <= 2.0),
        "load_average_1min": round(load[0], 2), "stage_seconds": stages.seconds,
    })


if __name__ == "__main__":
    main()
