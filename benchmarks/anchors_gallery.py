"""Anchors galleries under anchor updates: catching up against building anew, in the same run.

    python benchmarks/anchors_gallery.py [--n 1000] [--check 500]

The store holds the 30,455 Flickr8k train pairs (cached embeddings; 30,447 after de-duplication) and
both anchors galleries (`anchors:image`, `anchors:text`: one item per anchor, each ranked by the
relative vector of its own embedding). Timed, in order:

- building each gallery (one top-k search per anchor): the baseline, since before catch-up existed
  every anchor update dropped the galleries and their next search built them again;
- after reopening the store, deleting ``n`` random anchors, then adding ``n`` new pairs (the first
  caption of ``n`` val/test images): these updates leave the galleries out and read none of them;
- the next search of each gallery, which applies both changes to it (``gallery.catch_up``).

Then ``--check`` random items per gallery are recomputed (one search each) and compared with what
is stored (max abs difference), and the item count must equal the anchor count.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asif_vdb import AsifClient  # noqa: E402
from benchmarks import datasets  # noqa: E402
from benchmarks.common import finish  # noqa: E402


def timed(fn, *args, **kwargs) -> float:
    t = time.perf_counter()
    fn(*args, **kwargs)
    return round(time.perf_counter() - t, 2)


def max_difference(client: AsifClient, side: str, sample: int, rng: np.random.Generator) -> float:
    """Largest difference between stored and recomputed relative vectors of ``sample`` items."""
    assert client.engine is not None
    rows = [r for r in client.engine.lists.stored(side) if r[2] == f"gallery:anchors:{side}"]
    rows = [rows[i] for i in sorted(rng.choice(len(rows), min(sample, len(rows)), replace=False))]
    want = client.engine.anchors.relative(np.stack([r[1] for r in rows]), side).toarray()
    got = np.zeros_like(want)
    for i, r in enumerate(rows):
        got[i, np.asarray(r[3][0], np.int64)] = r[3][1]
    return float(np.abs(want - got).max(initial=0.0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="anchors deleted, then pairs added")
    ap.add_argument("--check", type=int, default=500, help="items per gallery recomputed to compare")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    f8k = datasets.load_flickr8k()
    train = f8k.names("train")
    pool = f8k.names("val") + f8k.names("test")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store"
        client = AsifClient(path)
        emb = datasets.embeddings(client)
        img_rows, cap_rows, payloads = datasets.anchor_pairs(f8k, train)
        for s in range(0, len(payloads), 4096):
            client.add_anchor_embeddings(emb["flickr_images"][img_rows[s:s + 4096]],
                                         emb["flickr_captions"][cap_rows[s:s + 4096]], payloads[s:s + 4096])
        anchors = client.count()
        build_s = {side: timed(client.index_anchors_gallery, side) for side in ("image", "text")}
        print(f"  built: {build_s}", flush=True)
        client.close()

        client = AsifClient(path)  # updates after opening: the galleries are not read
        victims = sorted(int(i) for i in rng.choice(anchors, args.n, replace=False))
        delete_s = timed(client.delete_anchors, victims)
        delete_report = client.last_refresh.to_dict()
        extra = [pool[i] for i in rng.choice(len(pool), args.n, replace=False)]
        e_img, e_cap, e_pay = datasets.anchor_pairs(f8k, extra)
        first = [i for i, pl in enumerate(e_pay) if pl["caption"] == f8k.captions[Path(pl["image"]).name][0]]
        add_s = timed(client.add_anchor_embeddings, emb["flickr_images"][np.asarray(e_img)[first]],
                      emb["flickr_captions"][np.asarray(e_cap)[first]], [e_pay[i] for i in first])
        add_report = client.last_refresh.to_dict()
        print(f"  delete {args.n}: {delete_s} s, add {len(first)}: {add_s} s", flush=True)
        behind = {side: len(client.gallery(f"anchors:{side}").behind_added)
                  + len(client.gallery(f"anchors:{side}").behind_deleted) for side in ("image", "text")}
        text_query, image_query = emb["flickr_captions"][:1], emb["flickr_images"][:1]
        catch_up_s = {"image": timed(client.search_embeddings, text_query, "text", "anchors", top=10),
                      "text": timed(client.search_embeddings, image_query, "image", "anchors", top=10)}
        print(f"  caught up: {catch_up_s}", flush=True)
        search_s = timed(client.search_embeddings, text_query, "text", "anchors", top=10)
        items = {side: client.gallery(f"anchors:{side}").size for side in ("image", "text")}
        diff = {side: max_difference(client, side, args.check, rng) for side in ("image", "text")}
        anchors_after = client.count()
        client.close()

    assert all(n == anchors_after for n in items.values()), (items, anchors_after)
    assert max(diff.values()) <= 1e-5, diff
    finish("anchors_gallery", {
        "anchors": anchors, "anchors_after": anchors_after, "deleted": args.n, "added": len(first),
        "build_anchors_image_s": build_s["image"], "build_anchors_text_s": build_s["text"],
        "first_delete_after_opening_s": delete_s, "add_s": add_s,
        "delete_refresh": delete_report, "add_refresh": add_report,
        "changes_behind": behind,
        "catch_up_anchors_image_s": catch_up_s["image"], "catch_up_anchors_text_s": catch_up_s["text"],
        # catch-up over a full build of the same gallery (what every update cost it before)
        "catch_up_vs_build_image": round(catch_up_s["image"] / build_s["image"], 3),
        "catch_up_vs_build_text": round(catch_up_s["text"] / build_s["text"], 3),
        "search_after_catch_up_s": search_s,
        "items_checked_per_gallery": args.check, "max_abs_diff_vs_recomputed": diff,
    })


if __name__ == "__main__":
    main()
