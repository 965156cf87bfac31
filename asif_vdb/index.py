"""ASIF on a vector store: paired anchor collections, relative vectors, and stored candidate sets.

Anchor pair i is point i in both ``anchor_image`` and ``anchor_text``; i is also the coordinate of
every relative vector. Candidates (label-set prompts, gallery items) keep their dense embedding in
``candidates`` and their relative vector (a Qdrant sparse vector) in ``candidate_rel`` (or the later
generation of it that the config names, ``relatives``) under the same id, so ranking them for a
query is one sparse dot-product query.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from asif_vdb import relative
from asif_vdb.config import IndexConfig
from asif_vdb.errors import InputError, StoreError
from asif_vdb.store.base import Backend, CollectionSpec, Filter, Hits, PointData

Modality = Literal["image", "text"]

ANCHORS: dict[str, str] = {"image": "anchor_image", "text": "anchor_text"}
CANDIDATES = "candidates"
#: Each candidate's relative vector (sparse "rel") and set key, derived from the anchors (refresh.py).
RELATIVES = "candidate_rel"
#: Payload flag: 1 once both halves of a pair are written. Queries only see complete pairs.
VISIBLE = Filter.where(ok=1)
WRITE_BATCH = 512
#: Extra hits fetched beyond a top-k so that ties at the k-th score can be broken by id.
TIE_MARGIN = 8


def relatives_spec(name: str) -> CollectionSpec:
    """A collection of derived relative vectors (``RELATIVES`` or one of its generations)."""
    return CollectionSpec(name, sparse=("rel",), indexes={"set": "keyword"})


class AsifIndex:
    """The ASIF engine over one backend. Holds the config; the caller saves it with ``save()``."""

    def __init__(self, backend: Backend, config: IndexConfig) -> None:
        self.backend = backend
        self.config = config
        dims = {"image": config.image_encoder.dim, "text": config.text_encoder.dim}
        for modality, name in ANCHORS.items():
            backend.ensure_collection(CollectionSpec(
                name, dense={"v": dims[modality]}, indexes={"ok": "integer", "hash": "keyword", "source": "keyword"},
            ))
        # A candidate's source data (embedding, payload) and its derived relative vector live in two
        # collections under the same id: a refresh replaces the derived points wholesale (a fresh
        # point is written twice as fast as one updated in place) and never touches the source.
        backend.ensure_collection(CollectionSpec(
            CANDIDATES, dense={"image": dims["image"], "text": dims["text"]}, indexes={"set": "keyword"},
        ))
        backend.ensure_collection(relatives_spec(config.relatives))
        for name in backend.list_collections():  # a generation a crash left behind (refresh.py)
            if name != config.relatives and (name == RELATIVES or name.startswith(RELATIVES + "_g")):
                backend.drop_collection(name)
        self.dims = dims
        #: >0 while an anchor update (journaled in the config) is being carried out by this process.
        self.updating = 0
        # Embedding transforms (issue 4B, methods_index.py): with one, ``self.backend`` becomes a view
        # that stores anchors transformed; ``self.raw_backend`` is the backend itself.
        from asif_vdb import methods_index

        methods_index.install(self)

    def save(self) -> None:
        self.backend.write_config(self.config.model_dump(mode="json"))

    @property
    def relatives(self) -> str:
        """The live collection of the candidates' relative vectors."""
        return self.config.relatives

    # -- anchors ---------------------------------------------------------------------------------
    @property
    def n_coords(self) -> int:
        """Width of relative vectors: every anchor id ever allocated is a coordinate."""
        return max(self.config.next_anchor_id, 1)

    def anchor_count(self) -> int:
        return self.backend.count(ANCHORS["text"], VISIBLE)

    def check_vectors(self, vectors: np.ndarray, modality: Modality, what: str) -> np.ndarray:
        arr = np.asarray(vectors, dtype=np.float32)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != self.dims[modality]:
            raise InputError(
                f"{what}: expected {modality} vectors of dimension {self.dims[modality]}, got shape {arr.shape}"
            )
        if not np.isfinite(arr).all():
            raise InputError(f"{what}: vectors hold NaN or infinite values")
        norms = np.linalg.norm(arr, axis=1, keepdims=True)
        if (norms < 1e-12).any():
            raise InputError(f"{what}: a vector is all zeros")
        return arr / norms

    def existing_hashes(self, hashes: Sequence[str]) -> dict[str, int]:
        """Hash -> id of the complete pairs that already hold these contents."""
        found: dict[str, int] = {}
        unique = sorted(set(hashes))
        for start in range(0, len(unique), 1024):
            chunk = unique[start : start + 1024]
            where = Filter(must=(VISIBLE.must[0], *Filter.where(hash=list(chunk)).must))
            for batch in self.backend.scroll(ANCHORS["text"], where, with_payload=["hash"]):
                for p in batch:
                    found[p.payload["hash"]] = p.id
        return found

    def add_anchors(
        self, image_vectors: np.ndarray, text_vectors: np.ndarray, payloads: Sequence[dict[str, Any]]
    ) -> tuple[list[int], list[int]]:
        """Write new pairs; returns (id of every input row, ids that are new). Duplicates (same
        ``hash`` in the payload) map to the stored pair's id and are not written again."""
        img = self.check_vectors(image_vectors, "image", "anchor images")
        txt = self.check_vectors(text_vectors, "text", "anchor captions")
        if not (len(img) == len(txt) == len(payloads)):
            raise InputError(
                f"anchors: {len(img)} image vectors, {len(txt)} caption vectors and {len(payloads)} payloads differ"
            )
        hashes = [str(p["hash"]) for p in payloads]
        known = self.existing_hashes(hashes)
        ids: list[int] = []
        new_rows: list[int] = []
        for row, h in enumerate(hashes):
            if h not in known:
                known[h] = self.config.next_anchor_id
                self.config.next_anchor_id += 1
                new_rows.append(row)
            ids.append(known[h])
        if not new_rows:
            return ids, []
        self.save()  # ids are allocated durably before any point is written, so never reused
        new_ids = [ids[r] for r in new_rows]
        for start in range(0, len(new_rows), WRITE_BATCH):
            rows = new_rows[start : start + WRITE_BATCH]
            for modality, vecs in (("text", txt), ("image", img)):
                self.backend.upsert(ANCHORS[modality], [
                    PointData(ids[r], payload={**payloads[r], "ok": 0}, dense={"v": vecs[r]}) for r in rows
                ])
        self._commit(new_ids)
        return ids, new_ids

    def _commit(self, ids: Sequence[int]) -> None:
        for modality in ("image", "text"):
            self.backend.set_payload(ANCHORS[modality], ids, {"ok": 1})

    def delete_anchors(self, ids: Sequence[int]) -> list[int]:
        """Delete pairs by id; returns the ids that existed. The caption side goes first, then the
        image side: a pair without its caption is invisible to queries either way."""
        ids = sorted({int(i) for i in ids})
        existing = [p.id for p in self.backend.retrieve(ANCHORS["text"], ids, with_payload=False)]
        existing_img = [p.id for p in self.backend.retrieve(ANCHORS["image"], ids, with_payload=False)]
        for modality in ("image", "text"):
            self.backend.set_payload(ANCHORS[modality], existing_img if modality == "image" else existing, {"ok": 0})
        self.backend.delete(ANCHORS["text"], existing)
        self.backend.delete(ANCHORS["image"], existing_img)
        return sorted(set(existing) | set(existing_img))

    def anchor_ids_where(self, **conditions: Any) -> list[int]:
        ids: list[int] = []
        for batch in self.backend.scroll(ANCHORS["text"], Filter.where(**conditions), with_payload=False):
            ids.extend(p.id for p in batch)
        return ids

    def anchor_payloads(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        return {p.id: p.payload for p in self.backend.retrieve(ANCHORS["text"], list(ids))}

    def repair_incomplete(self) -> dict[str, list[int]]:
        """Finish or roll back pairs left half-written by a crash: a pair whose two halves both exist is
        completed; a lone half is deleted. Returns what was done."""
        hidden: dict[str, set[int]] = {}
        for modality, name in ANCHORS.items():
            hidden[modality] = {
                p.id for batch in self.backend.scroll(name, Filter.where(ok=0), with_payload=False) for p in batch
            }
        suspects = sorted(hidden["image"] | hidden["text"])
        if not suspects:
            return {"completed": [], "rolled_back": []}
        present = {m: {p.id for p in self.backend.retrieve(n, suspects, with_payload=False)} for m, n in ANCHORS.items()}
        complete = [i for i in suspects if i in present["image"] and i in present["text"]]
        lone = [i for i in suspects if i not in complete]
        # A half-deleted pair (one side gone) is finished as a delete; a fully written one is committed.
        self._commit(complete)
        for name in ANCHORS.values():
            self.backend.delete(name, lone)
        return {"completed": complete, "rolled_back": lone}

    # -- relative vectors ------------------------------------------------------------------------
    def anchor_topk(self, vectors: np.ndarray, modality: Modality, limit: int | None = None) -> list[Hits]:
        """Each vector's ``limit`` (default k) most similar visible anchors, best first, equal
        similarities in id order. Qdrant's own order among equal scores is arbitrary, and equal
        scores are common (an image with five captions is five anchors with one image vector): this
        rule makes a relative vector one well-defined thing, the same in every rebuild."""
        if self.config.journal and not self.updating:
            raise StoreError(
                f"store {self.backend.location} has an unfinished anchor update: reopen it (or run "
                "`asif doctor --repair`) to complete or roll it back before querying"
            )
        limit = self.config.params.k if limit is None else int(limit)
        vectors = np.asarray(vectors, np.float32)
        out: list[Hits | None] = [None] * len(vectors)
        todo, extra = list(range(len(vectors))), TIE_MARGIN
        while todo:
            again = []
            for i, h in zip(todo, self.backend.search_dense(ANCHORS[modality], "v", vectors[todo], limit + extra, VISIBLE)):
                if len(h.ids) == limit + extra and h.scores[-1] == h.scores[limit - 1]:
                    again.append(i)  # the tie at the cut may go on past what was fetched
                    continue
                order = np.lexsort((h.ids, -h.scores))[:limit]
                out[i] = Hits(h.ids[order], h.scores[order])
            todo, extra = again, extra * 8
        return out  # type: ignore[return-value]

    def relative(self, vectors: np.ndarray, modality: Modality) -> sp.csr_matrix:
        """Relative vectors of embeddings against the visible anchors of their own modality."""
        vecs = self.check_vectors(vectors, modality, f"{modality} queries")
        hits = self.anchor_topk(vecs, modality)
        return relative.relative_vectors(
            [h.ids for h in hits], [h.scores for h in hits], self.config.params.p, self.n_coords
        )

    # -- candidates ------------------------------------------------------------------------------
    def allocate_candidates(self, n: int) -> int:
        first = self.config.next_candidate_id
        self.config.next_candidate_id += n
        return first

    def put_candidates(
        self, set_key: str, ids: Sequence[int], vectors: np.ndarray, modality: Modality,
        payloads: Sequence[dict[str, Any]],
    ) -> None:
        """Store candidates with their embedding, relative vector and anchor list (refresh.py)."""
        from asif_vdb import refresh

        vecs = self.check_vectors(vectors, modality, f"{set_key} items")
        if self.config.journal and not self.updating:
            self.anchor_topk(vecs[:0], modality)  # refuses, with the reason
        lists = refresh.search_lists(self, vecs, modality)
        for start in range(0, len(ids), WRITE_BATCH):
            self.backend.upsert(CANDIDATES, [
                PointData(int(ids[i]), payload={**payloads[i], "set": set_key}, dense={modality: vecs[i]})
                for i in range(start, min(len(ids), start + WRITE_BATCH))
            ])
        refresh.write(self, ids, lists, [set_key] * len(ids))
        refresh.note_put(self, set_key, ids, vecs, modality, lists)

    def rank_candidates(self, queries: sp.csr_matrix, set_key: str, limit: int, with_payload: bool = False) -> list[Hits]:
        """Sparse dot-product ranking of a set's candidates for each query relative vector (with the
        candidates' payloads, read in one call, when asked)."""
        hits = self.backend.search_sparse(self.relatives, "rel", relative.to_pairs(queries), limit, Filter.where(set=set_key))
        if with_payload:
            wanted = sorted({int(i) for h in hits for i in h.ids})
            payloads = {p.id: p.payload for p in self.backend.retrieve(CANDIDATES, wanted, True)} if wanted else {}
            for h in hits:
                h.payloads = [dict(payloads.get(int(i), {})) for i in h.ids]
        return hits

    def candidate_relatives(self, ids: Sequence[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        return {p.id: p.sparse["rel"] for p in self.backend.retrieve(self.relatives, list(ids), False, ("rel",))
                if "rel" in p.sparse}

    def delete_candidates(self, ids: Sequence[int], set_key: str | None = None) -> None:
        """Delete candidates (source and derived) by id (all of set ``set_key``, when given)."""
        from asif_vdb import refresh

        self.backend.delete(self.relatives, ids)
        self.backend.delete(CANDIDATES, ids)
        refresh.note_delete(self, ids, set_key)

    def drop_set(self, set_key: str) -> None:
        from asif_vdb import refresh

        self.backend.delete_where(self.relatives, Filter.where(set=set_key))
        self.backend.delete_where(CANDIDATES, Filter.where(set=set_key))
        refresh.note_drop(self, set_key)

    def count_set(self, set_key: str) -> int:
        return self.backend.count(CANDIDATES, Filter.where(set=set_key))
