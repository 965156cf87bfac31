"""Anchor lists kept beside the collections, as blobs (one per anchors gallery, one for the rest).

Each saved list carries the generation of the relative vector it was saved with; on open, a list
whose generation differs from its stored vector's (a crash between the two writes) is not used and
that candidate is searched again. An anchors gallery's lists (as many as the anchors) live in a
blob of their own, rewritten only when they change (``signature``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from asif_vdb.engine.derived import DerivedVectors
from asif_vdb.engine.state import StoreState
from asif_vdb.maths.anchor_lists import AnchorList

#: The blob holding the lists of every candidate outside the anchors galleries, and its layout's
#: version (8,000 candidates with k=800 make about 60 MB).
LISTS_BLOB = "candidate_lists"
LISTS_VERSION = 2

SavedLists = dict[int, tuple[int, AnchorList]]


def blob_name(set_key: str | None) -> str:
    """The blob of an anchors gallery's lists, or (None) of every other candidate's."""
    return LISTS_BLOB if set_key is None else f"{LISTS_BLOB}.{set_key.replace(':', '.')}"


class ListStore:
    """Reads and writes the saved lists; remembers what each anchors gallery's blob holds."""

    def __init__(self, state: StoreState, derived: DerivedVectors) -> None:
        self.state = state
        self.derived = derived
        #: Set key of an anchors gallery -> signature of what its blob holds.
        self.saved_as: dict[str, tuple[Any, ...]] = {}

    def read(self, set_key: str | None) -> SavedLists | None:
        """id -> (generation, list) of one blob; None when there is none (or it is unreadable)."""
        blob = self.state.backend.read_blob(blob_name(set_key))
        if blob is None or int(blob.get("version", np.zeros(1))[0]) != LISTS_VERSION:
            return None
        ids, gens, full, ptr = blob["ids"].tolist(), blob["gens"].tolist(), blob["full"].tolist(), blob["indptr"].tolist()
        l_ids = blob["list_ids"].astype(np.int64)
        l_sims = blob["list_sims"].astype(np.float64)
        l_exact = np.unpackbits(blob["list_exact"], count=len(l_ids)).astype(bool)
        out: SavedLists = {}
        for cid, gen, f, a, b in zip(ids, gens, full, ptr[:-1], ptr[1:]):
            ex = l_exact[a:b]
            out[cid] = (gen, AnchorList(l_ids[a:b], l_sims[a:b], bool(f), None if ex.all() else ex))
        return out

    def read_all(self, lazy_keys: set[str]) -> SavedLists:
        """Every saved list (empty when none)."""
        out = self.read(None) or {}
        for key in sorted(lazy_keys):
            out.update(self.read(key) or {})
        return out

    def write(self, set_key: str | None, ids: Sequence[int], lists: Sequence[AnchorList]) -> None:
        """Replace one blob with these candidates' lists (tagged with their vectors' generations)."""
        gens = self.derived.gens
        ptr = np.zeros(len(lists) + 1, np.int64)
        np.cumsum([len(lst) for lst in lists], out=ptr[1:])
        arrays = {
            "version": np.asarray([LISTS_VERSION]), "ids": np.asarray(ids, np.int64),
            "gens": np.asarray([gens.get(int(i), -1) for i in ids], np.int64),
            "full": np.asarray([lst.full for lst in lists], bool), "indptr": ptr,
            "list_ids": np.concatenate([lst.ids for lst in lists]).astype(np.int32) if lists else np.zeros(0, np.int32),
            # The store's scores are float32: an exact similarity survives the cast; an inexact one stays inexact.
            "list_sims": (np.concatenate([lst.sims for lst in lists]).astype(np.float32) if lists
                          else np.zeros(0, np.float32)),
            "list_exact": (np.packbits(np.concatenate([lst.exact_mask() for lst in lists])) if lists
                           else np.zeros(0, np.uint8)),
        }
        self.state.backend.write_blob(blob_name(set_key), arrays)

    def merge(self, set_key: str | None, ids: Sequence[int], lists: Sequence[AnchorList]) -> None:
        """Merge these candidates' lists into one blob (when the rest are not in memory)."""
        saved = self.read(set_key) or {}
        gens = self.derived.gens
        for cid, (gen, _) in saved.items():
            gens.setdefault(cid, gen)
        for cid, lst in zip((int(i) for i in ids), lists):
            saved[cid] = (gens.get(cid, -1), lst)
        order = sorted(saved)
        self.write(set_key, order, [saved[i][1] for i in order])

    def signature(self, ids: Sequence[int], lists: Sequence[AnchorList]) -> tuple[Any, ...]:
        """What an anchors gallery's saved blob holds: its ids, their lists (the objects: a changed
        list is a new one, made while the old one is still held) and the generations of their vectors."""
        gens = self.derived.gens
        return tuple(ids), tuple(map(id, lists)), tuple(gens.get(i, -1) for i in ids)
