"""How long Qdrant Edge itself takes to rewrite N sparse relative vectors: the floor under any
refresh after an anchor update (with k=800 over ~31k anchors, 1,000 new anchors change every
candidate, so all of them are rewritten).

    python benchmarks/edge_write_floor.py [--candidates 8000] [--k 800]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import finish  # noqa: E402


def rewrite_seconds(n: int, k: int, reserve: int, batch: int, rounds: int = 2) -> float:
    import qdrant_edge as qe

    rng = np.random.default_rng(0)
    rel = [(np.sort(rng.choice(31_000, k, replace=False)).tolist(), rng.random(k).tolist()) for _ in range(n)]
    res = [(np.sort(rng.choice(31_000, reserve, replace=False)).tolist(), rng.random(reserve).tolist())
           for _ in range(n)] if reserve else None

    def vector(j: int) -> dict:
        v = {"rel": qe.SparseVector(indices=rel[j][0], values=rel[j][1])}
        if res:
            v["state"] = qe.SparseVector(indices=res[j][0], values=res[j][1])
        return v

    sparse = {"rel": qe.EdgeSparseVectorParams()}
    if res:
        sparse["state"] = qe.EdgeSparseVectorParams()
    with tempfile.TemporaryDirectory() as tmp:
        shard = qe.EdgeShard.create(tmp, qe.EdgeConfig(
            vectors={"text": qe.EdgeVectorParams(size=384, distance=qe.Distance.Dot)}, sparse_vectors=sparse))
        shard.update(qe.UpdateOperation.upsert_points([qe.Point(id=j, vector=vector(j), payload={}) for j in range(n)]))
        best = float("inf")
        for _ in range(rounds):
            points = [qe.PointVectors(id=j, vector=vector(j)) for j in range(n)]
            start = time.perf_counter()
            for a in range(0, n, batch):
                shard.update(qe.UpdateOperation.update_vectors(points[a : a + batch]))
            best = min(best, time.perf_counter() - start)
        shard.close()
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=8000)
    ap.add_argument("--k", type=int, default=800)
    args = ap.parse_args()
    reserve = args.k // 4 + 1
    rel_only = rewrite_seconds(args.candidates, args.k, 0, 1000)
    with_reserve = rewrite_seconds(args.candidates, args.k, reserve, 1000)
    batches = {b: round(rewrite_seconds(args.candidates, args.k, 0, b, rounds=1), 3) for b in (500, 8000)}
    finish("edge_write_floor", {
        "candidates": args.candidates, "k": args.k, "reserve_entries": reserve,
        "rewrite_rel_only_s": round(rel_only, 3), "rewrite_rel_and_reserve_s": round(with_reserve, 3),
        "reserve_over_rel_only": round(with_reserve / rel_only, 3),
        "rel_only_s_by_batch": {1000: round(rel_only, 3), **batches},
        "load_average_1min": round(os.getloadavg()[0], 2),
    })


if __name__ == "__main__":
    main()
