"""How long Qdrant Edge itself takes to rewrite N sparse relative vectors: the floor under any
refresh after an anchor update (with k=800 over ~31k anchors, 1,000 new anchors change every
candidate, so all of them are rewritten). Two ways, measured in the same run:

- in place: ``update_vectors`` on the existing points (what the refresh did first);
- delete + insert: delete each batch of points and insert them anew with their set payload (what
  a refresh that changes some candidates does: the engine appends a new point's postings, but must
  find and remove an updated one's from every posting list it was in). A refresh that changes
  (nearly) all of them inserts them into a new, empty collection instead, which costs about the
  same and leaves no deleted points behind (refresh.SWAP_MIN).

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


def rewrite_seconds(n: int, k: int, batch: int, how: str, rounds: int = 3) -> float:
    """Best of ``rounds`` full rewrites of ``n`` points' ``k``-entry sparse vectors."""
    import qdrant_edge as qe

    rng = np.random.default_rng(0)
    rel = [(np.sort(rng.choice(31_000, k, replace=False)).tolist(), rng.random(k).astype(np.float32).tolist())
           for _ in range(n)]

    def sparse(j: int) -> dict:
        return {"rel": qe.SparseVector(indices=rel[j][0], values=rel[j][1])}

    def payload(j: int, gen: int) -> dict:
        return {"set": "labels:words" if j < 7 * n // 8 else "gallery:bench", "gen": gen}

    with tempfile.TemporaryDirectory() as tmp:
        shard = qe.EdgeShard.create(tmp, qe.EdgeConfig(sparse_vectors={"rel": qe.EdgeSparseVectorParams()}))
        shard.update(qe.UpdateOperation.create_field_index("set", qe.PayloadSchemaType.Keyword))
        shard.update(qe.UpdateOperation.upsert_points([qe.Point(id=j, vector=sparse(j), payload=payload(j, 0))
                                                       for j in range(n)]))
        best = float("inf")
        for r in range(rounds):
            if how == "in_place":
                ops = [qe.UpdateOperation.update_vectors([qe.PointVectors(id=j, vector=sparse(j))
                                                          for j in range(a, min(n, a + batch))])
                       for a in range(0, n, batch)]
            else:
                ops = []
                for a in range(0, n, batch):
                    ids = list(range(a, min(n, a + batch)))
                    ops.append(qe.UpdateOperation.delete_points(ids))
                    ops.append(qe.UpdateOperation.upsert_points([qe.Point(id=j, vector=sparse(j), payload=payload(j, r + 1))
                                                                 for j in ids]))
            start = time.perf_counter()
            for op in ops:
                shard.update(op)
            best = min(best, time.perf_counter() - start)
        shard.close()
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=8000)
    ap.add_argument("--k", type=int, default=800)
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args()
    in_place = rewrite_seconds(args.candidates, args.k, args.batch, "in_place")
    reinsert = rewrite_seconds(args.candidates, args.k, args.batch, "delete_insert")
    finish("edge_write_floor", {
        "candidates": args.candidates, "k": args.k, "batch": args.batch,
        "rewrite_in_place_s": round(in_place, 3), "rewrite_delete_insert_s": round(reinsert, 3),
        "delete_insert_speedup": round(in_place / reinsert, 2),
        "load_average_1min": round(os.getloadavg()[0], 2),
    })


if __name__ == "__main__":
    main()
