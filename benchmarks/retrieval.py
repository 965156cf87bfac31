"""Flickr8k test retrieval through the store: text->image and image->text R@1/5/10.

Anchors: the 30,455 Flickr8k train pairs (6,091 images x 5 captions), inserted with
``add_anchor_embeddings`` from the embedding cache; gallery: the 1,000 test images
(``index_gallery_embeddings``); queries: the first caption of each test image (text->image) and each
test image against all 5,000 test captions (image->text: right if any of its captions is retrieved).
Plain ASIF (``method="plain"``), k=800, p=1 and p=8, each in its own embedded store; the same
figures computed densely in the same run are reported alongside (they agree up to float32 near-ties
at the k-th anchor). Then ``store_default_*``: a store made with no options at all (the tuned method:
it fits its transforms as the anchors arrive, and its galleries are hub-normalised). Timings are
ratios to the dense computation.

Usage: python benchmarks/retrieval.py [--image-encoder lite2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file or with -m

from asif_vdb import (
    AsifClient,  # noqa: E402
    AsifParams,  # noqa: E402
)
from asif_vdb.maths import metrics, relative  # noqa: E402
from benchmarks.common import finish  # noqa: E402
from benchmarks.datasets import embeddings, load_flickr8k  # noqa: E402

K = 800
PS = (1.0, 8.0)
KS = (1, 5, 10)


def dense_retrieval(a_img, a_txt, g_img, g_txt, owner, queries, p: float) -> dict[str, float]:
    r_gimg = relative.dense_relative(g_img, a_img, K, p)
    t2i = metrics.ranked(relative.scores(relative.dense_relative(queries, a_txt, K, p), r_gimg), max(KS))
    i2t = metrics.ranked(relative.scores(r_gimg, relative.dense_relative(g_txt, a_txt, K, p)), max(KS))
    r_t2i = metrics.recall_at_k(t2i, range(len(g_img)), KS)
    r_i2t = metrics.recall_at_k([[owner[j] for j in row] for row in i2t], range(len(g_img)), KS)
    return {**{f"t2i_R@{k}": r_t2i[k] for k in KS}, **{f"i2t_R@{k}": r_i2t[k] for k in KS}}


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image-encoder", default=None, help="an image encoder other than the default "
                    "(lite2: results saved as retrieval_lite2.json)")
    encoder = ap.parse_args().image_encoder
    f8k = load_flickr8k()
    with tempfile.TemporaryDirectory() as tmp:
        probe = AsifClient(Path(tmp) / "probe", image_encoder=encoder)
        emb = embeddings(probe)
        probe.close()
    row = {n: i for i, n in enumerate(f8k.images)}
    train, test = f8k.names("train"), f8k.names("test")
    a_img = np.repeat(emb["flickr_images"][[row[n] for n in train]], 5, axis=0)
    a_txt = emb["flickr_captions"][[row[n] * 5 + j for n in train for j in range(5)]]
    payloads = [{"caption": f8k.captions[n][j], "image": n, "source": "flickr8k-train", "hash": f"{n}#{j}"}
                for n in train for j in range(5)]
    g_img = emb["flickr_images"][[row[n] for n in test]]
    g_txt = emb["flickr_captions"][[row[n] * 5 + j for n in test for j in range(5)]]
    owner = [i for i in range(len(test)) for _ in range(5)]
    queries = g_txt[::5]
    print(f"anchors {len(a_img)} pairs, gallery {len(g_img)} images / {len(g_txt)} captions, "
          f"{len(queries)} text queries, k={K}", file=sys.stderr)

    out: dict = {"anchors": len(a_img), "gallery_images": len(g_img), "gallery_captions": len(g_txt),
                 "queries": len(queries), "k": K, "reference_dense_p8_t2i_R@1": 0.146,
                 "reference_dense_p8_t2i_R@10": 0.511}
    for p in PS:
        t0 = time.perf_counter()
        dense = dense_retrieval(a_img, a_txt, g_img, g_txt, owner, queries, p)
        t_dense = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp, AsifClient(Path(tmp) / "store", params=AsifParams(k=K, p=p, method="plain"),
                                                              image_encoder=encoder) as client:
            t0 = time.perf_counter()
            client.add_anchor_embeddings(a_img, a_txt, payloads)
            t_insert = time.perf_counter() - t0
            assert client.count() == len(a_img)
            t0 = time.perf_counter()
            store = client.evaluate_retrieval_embeddings(g_img, g_txt, owner, queries, list(range(len(g_img))),
                                                         ks=KS, name="flickr8k-test")
            t_store = time.perf_counter() - t0
        tag = f"p{p:g}"
        for key in dense:
            out[f"store_{tag}_{key}"] = store[key]
            out[f"dense_{tag}_{key}"] = dense[key]
        # Not always 0: where a candidate's k-th and (k+1)-th anchor similarities are ~1e-7 apart,
        # Qdrant's float32 dot products and numpy's can keep different anchors (both valid top-k).
        out[f"store_{tag}_max_abs_recall_diff_vs_dense"] = round(max(abs(store[k] - dense[k]) for k in dense), 4)
        out[f"store_{tag}_index_and_query_time_vs_dense"] = round(t_store / t_dense, 2)
        out[f"store_{tag}_anchor_insert_time_vs_dense"] = round(t_insert / t_dense, 2)
        print(f"p={p:g}: store t2i R@1/5/10 {store['t2i_R@1']:.3f}/{store['t2i_R@5']:.3f}/{store['t2i_R@10']:.3f}"
              f"  i2t {store['i2t_R@1']:.3f}/{store['i2t_R@5']:.3f}/{store['i2t_R@10']:.3f}"
              f"  (dense t2i {dense['t2i_R@1']:.3f}/{dense['t2i_R@10']:.3f}; store {t_store:.1f} s, "
              f"dense {t_dense:.1f} s, insert {t_insert:.1f} s)", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp, AsifClient(Path(tmp) / "store", image_encoder=encoder) as client:
        t0 = time.perf_counter()
        for s in range(0, len(payloads), 4096):  # in batches, as an ingestion adds them
            client.add_anchor_embeddings(a_img[s:s + 4096], a_txt[s:s + 4096], payloads[s:s + 4096])
        t_insert = time.perf_counter() - t0
        t0 = time.perf_counter()
        store = client.evaluate_retrieval_embeddings(g_img, g_txt, owner, queries, list(range(len(g_img))),
                                                     ks=KS, name="flickr8k-test")
        t_store = time.perf_counter() - t0
        out["store_default_params"] = client.params.model_dump(mode="json")
        out["store_default_transforms"] = client.transforms()
        out["image_encoder"] = client.encoder("image").identity.model_dump(mode="json")
    out.update({f"store_default_{key}": v for key, v in store.items() if key in dense})
    out["store_default_index_and_query_seconds"] = round(t_store, 1)
    out["store_default_anchor_insert_seconds"] = round(t_insert, 1)
    print(f"default: store t2i R@1/5/10 {store['t2i_R@1']:.3f}/{store['t2i_R@5']:.3f}/{store['t2i_R@10']:.3f}"
          f"  i2t {store['i2t_R@1']:.3f}/{store['i2t_R@5']:.3f}/{store['i2t_R@10']:.3f}", file=sys.stderr)
    finish("retrieval" + (f"_{encoder}" if encoder else ""), out)
    return out


if __name__ == "__main__":
    main()
