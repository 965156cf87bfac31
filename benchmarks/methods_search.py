"""Search for ASIF variants that beat plain ASIF without training on the evaluation data.

Dense maths on cached embeddings (benchmarks.datasets.embeddings). Anchors: Flickr8k train (30,455
caption-level pairs, or 6,091 image-level ones). Every variant is scored on the calibration part
(CIFAR-10: first 100 images per class; Flickr8k: val) and on the report part (CIFAR-10: the other
9,000; Flickr8k: test). Choices are made on the calibration part only.

    python -m benchmarks.methods_search            # table on stdout, JSON in results/
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from asif_vdb import methods
from asif_vdb.relative import relative_vectors, scores
from asif_vdb.templates import fill, load_templates
from benchmarks.datasets import CIFAR_CLASSES, cifar_calibration_mask, embeddings, load_cifar10, load_flickr8k

RESULTS = Path(__file__).resolve().parent / "results"


# -- data -----------------------------------------------------------------------------------------
@dataclass
class Data:
    anchor_img: np.ndarray      # (N, di) caption-level anchors' image side (5 copies per image)
    anchor_txt: np.ndarray      # (N, dt)
    anchor_group: np.ndarray    # (N,) train-image index of each caption-level anchor
    train_img: np.ndarray       # (6091, di) unique train images
    train_caps: np.ndarray      # (6091, 5, dt)
    cifar: np.ndarray           # (10000, di)
    cifar_labels: np.ndarray
    cifar_calib: np.ndarray     # bool mask
    val_img: np.ndarray
    val_cap: np.ndarray         # first caption of each val image
    test_img: np.ndarray
    test_cap: np.ndarray
    encode_texts: object


def load() -> Data:
    from asif_vdb.client import AsifClient

    client = AsifClient(location=":memory:")
    emb = embeddings(client)
    f8k = load_flickr8k()
    split = np.array([f8k.split[n] for n in f8k.images])
    imgs, caps = emb["flickr_images"], emb["flickr_captions"].reshape(len(f8k.images), 5, -1)
    tr, va, te = (np.flatnonzero(split == s) for s in ("train", "val", "test"))
    _, labels = load_cifar10()
    return Data(
        anchor_img=np.repeat(imgs[tr], 5, axis=0), anchor_txt=caps[tr].reshape(-1, caps.shape[2]),
        anchor_group=np.repeat(np.arange(len(tr)), 5), train_img=imgs[tr], train_caps=caps[tr],
        cifar=emb["cifar_images"], cifar_labels=labels, cifar_calib=cifar_calibration_mask(labels),
        val_img=imgs[va], val_cap=caps[va, 0], test_img=imgs[te], test_cap=caps[te, 0],
        encode_texts=client.encode_texts,
    )


# -- fast dense relative vectors ------------------------------------------------------------------
def rel(queries: np.ndarray, anchors: np.ndarray, k: int, p: float, chunk: int = 1024) -> sp.csr_matrix:
    """Plain ASIF relative vectors (argpartition instead of a full sort: same set up to exact ties)."""
    out = []
    a = np.asarray(anchors, np.float32)
    k = min(k, a.shape[0])
    for s in range(0, len(queries), chunk):
        sims = np.asarray(queries[s : s + chunk], np.float32) @ a.T
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(sims, idx, axis=1)
        out.append(relative_vectors(list(idx), list(vals), p, a.shape[0]))
    return sp.vstack(out).tocsr()


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def recall_at(s: np.ndarray, ks=(1, 5, 10)) -> dict[str, float]:
    """Row i's right answer is column i."""
    diag = s[np.arange(len(s)), np.arange(len(s))]
    rank = (s > diag[:, None]).sum(axis=1)
    return {f"R@{k}": float(np.mean(rank < k)) for k in ks}


# -- top-k once, relative vectors for any k <= K and any p ----------------------------------------
@dataclass
class Top:
    idx: np.ndarray   # (n, K) anchor ids, best first
    val: np.ndarray   # (n, K) cosine similarities
    n_coords: int


def top_sorted(queries: np.ndarray, anchors: np.ndarray, K: int, repeat: int = 1, chunk: int = 1024) -> Top:
    """Each query's K best anchors, best first. ``repeat`` > 1: ``anchors`` are unique rows each
    standing for ``repeat`` consecutive anchor ids (caption-level anchors' image side)."""
    a = np.asarray(anchors, np.float32)
    kk = min(-(-K // repeat), a.shape[0])
    idx_out, val_out = [], []
    for s in range(0, len(queries), chunk):
        sims = np.asarray(queries[s : s + chunk], np.float32) @ a.T
        part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        pv = np.take_along_axis(sims, part, axis=1)
        order = np.argsort(-pv, axis=1, kind="stable")
        part, pv = np.take_along_axis(part, order, 1), np.take_along_axis(pv, order, 1)
        if repeat > 1:
            part = (part[:, :, None] * repeat + np.arange(repeat)[None, None, :]).reshape(len(part), -1)
            pv = np.repeat(pv, repeat, axis=1)
        idx_out.append(part[:, :K].astype(np.int32))
        val_out.append(pv[:, :K])
    return Top(np.concatenate(idx_out), np.concatenate(val_out), a.shape[0] * repeat)


def rel_from(top: Top, k: int, p: float, weight: str = "power") -> sp.csr_matrix:
    """Plain ASIF relative vectors from the k best anchors: clamp at 0, ^p, L2-normalise."""
    v = np.maximum(top.val[:, :k].astype(np.float64), 0.0)
    w = np.power(v, p) if weight == "power" else np.where(v > 0, np.exp((v - v[:, :1]) * p), 0.0)
    norm = np.linalg.norm(w, axis=1, keepdims=True)
    w = np.divide(w, norm, out=np.zeros_like(w), where=norm > 1e-12)
    n = len(w)
    kk = w.shape[1]
    m = sp.csr_matrix((w.ravel().astype(np.float32), top.idx[:, :k].ravel(), np.arange(0, n * kk + 1, kk)),
                      shape=(n, top.n_coords))
    m.eliminate_zeros()
    return m


def recall(s: np.ndarray, ks=(1, 5, 10)) -> dict[str, float]:
    """Row i's right answer is column i; ties count against it (an all-zero row ranks last)."""
    diag = s[np.arange(len(s)), np.arange(len(s))]
    rank = (s > diag[:, None]).sum(axis=1) + (s == diag[:, None]).sum(axis=1) - 1
    return {f"R@{k}": round(float(np.mean(rank < k)), 4) for k in ks}
