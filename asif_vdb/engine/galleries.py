"""Stored galleries: named sets of image or text candidates, and the anchors' own two galleries.

A gallery item is a candidate (set key ``gallery:NAME``) with a payload holding its reference ``ref``
and the user's fields. User galleries are kept exact by the incremental refresh like label sets.

The anchors themselves form a gallery on request: ``anchors:image`` and ``anchors:text`` index each
anchor by the relative vector of its own stored embedding (one search per anchor, so they are built
on first use). They are as large as the anchor set, so an anchor update leaves them out: it records
the change (``record``; a deleted pair's own item goes at once) and their next search applies it
(``catch_up``: the incremental refresh on that gallery alone, then one search per new anchor).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np

from asif_vdb.engine.anchors import AnchorStore
from asif_vdb.engine.candidates import Candidates
from asif_vdb.engine.layout import RESERVED_PAYLOAD_KEYS, anchors_gallery_name, gallery_key, is_anchors_gallery
from asif_vdb.engine.refresh import Refresher
from asif_vdb.engine.set_journal import journaled
from asif_vdb.engine.state import StoreState
from asif_vdb.errors import InputError, NotFoundError
from asif_vdb.schema.store import DropEntry, GalleryEntry, GalleryInfo, Modality


class GalleryStore:
    """The galleries of one store."""

    def __init__(self, state: StoreState, anchors: AnchorStore, candidates: Candidates, refresher: Refresher) -> None:
        self.state = state
        self.anchors = anchors
        self.candidates = candidates
        self.refresher = refresher

    def get(self, name: str) -> GalleryInfo:
        galleries = self.state.config.galleries
        if name not in galleries:
            known = ", ".join(sorted(g for g in galleries if not is_anchors_gallery(g))) or "none"
            raise NotFoundError(f"no gallery {name!r} in store {self.state.location} (known: {known})")
        return galleries[name]

    def add_items(self, name: str, vectors: np.ndarray, modality: Modality,
                  payloads: Sequence[dict[str, Any]], journal: bool = True) -> list[int]:
        """Append items to gallery ``name`` (created if new); returns their ids. Each payload holds
        ``ref``. The ids are saved as allocated before anything is written, so they are never reused.
        The add is journaled (all of it or none of it after a crash), unless ``journal`` is False
        because the caller journals a larger operation."""
        info = self.state.config.galleries.get(name)
        if info is not None and info.modality != modality:
            raise InputError(f"gallery {name!r} holds {info.modality}s; cannot add {modality}s to it")
        vecs = self.anchors.check_vectors(vectors, modality, f"gallery {name!r} items")
        if len(vecs) != len(payloads):
            raise InputError(f"gallery {name!r}: {len(vecs)} vectors but {len(payloads)} payloads")
        created = info is None
        if info is None:
            info = self.state.config.galleries[name] = GalleryInfo(
                name=name, modality=modality, normalise="none" if is_anchors_gallery(name) else "auto")
        first = self.candidates.allocate(len(vecs))
        ids = list(range(first, first + len(vecs)))
        entry = GalleryEntry(name=name, first=first, created=created)
        with journaled(self.state, self.candidates, entry) if journal else nullcontext():
            self.state.save()
            batch = self.state.tuning.rewrite_batch
            with self.candidates.lists.saved_once():
                for start in range(0, len(ids), batch):
                    stop = start + batch
                    self.candidates.put(gallery_key(name), ids[start:stop], vecs[start:stop], modality,
                                        payloads[start:stop])
            info.size = self.candidates.count_set(gallery_key(name))
            self.state.save()
        return ids

    def delete_items(self, name: str, ids: Sequence[int]) -> int:
        """Delete items of gallery ``name`` by id; ids of other sets or unknown ids are ignored."""
        info = self.get(name)
        if is_anchors_gallery(name):
            raise InputError("the anchors gallery follows the anchors: delete anchors instead")
        key = gallery_key(name)
        found = [p.id for p in self.candidates.read(sorted({int(i) for i in ids})) if p.payload.get("set") == key]
        self.candidates.delete(found)
        info.size = self.candidates.count_set(key)
        self.state.save()
        return len(found)

    def drop(self, name: str) -> None:
        """Gone from the config first (in the journal's first write), then its items."""
        self.get(name)
        del self.state.config.galleries[name]
        entry = DropEntry(key=gallery_key(name))
        with journaled(self.state, self.candidates, entry):
            self.candidates.drop_set(entry.key)

    # -- the anchors galleries ---------------------------------------------------------------------
    def anchors_gallery(self, modality: Modality) -> GalleryInfo:
        """The gallery of the anchors' ``modality`` side, built or brought up to date first."""
        name = anchors_gallery_name(modality)
        info = self.state.config.galleries.get(name)
        if info is None:
            return self.build_anchors_gallery(modality)
        if info.behind_added or info.behind_deleted:
            self.catch_up(info)
        return self.state.config.galleries[name]

    def build_anchors_gallery(self, modality: Modality) -> GalleryInfo:
        """Index the visible anchors' ``modality`` side as a gallery (one item per anchor pair)."""
        name = anchors_gallery_name(modality)
        self.state.config.galleries.pop(name, None)
        # One journaled operation: a crash leaves no gallery (built again at the next search), never
        # a part of one.
        entry = GalleryEntry(name=name, first=self.state.config.next_candidate_id, created=True)
        with journaled(self.state, self.candidates, entry), self.candidates.lists.saved_once():
            self.candidates.drop_set(gallery_key(name))
            for points, vecs in self.anchors.scroll(modality):
                self.add_items(name, vecs, modality, [anchor_item_payload(p.id, p.payload, modality) for p in points],
                               journal=False)
            if name not in self.state.config.galleries:  # no anchors: an empty gallery, still recorded
                self.state.config.galleries[name] = GalleryInfo(name=name, modality=modality)
                self.state.save()
        return self.state.config.galleries[name]

    def record(self, added: Sequence[int], deleted: Sequence[int]) -> list[str]:
        """An anchor update's part for the anchors galleries: they record the change (their next
        search applies it) and lose a deleted pair's own item now. Returns their names."""
        behind = []
        for name, info in self.state.config.galleries.items():
            if is_anchors_gallery(name):
                info.behind_added = sorted(set(info.behind_added) | {int(i) for i in added})
                info.behind_deleted = sorted(set(info.behind_deleted) | {int(i) for i in deleted})
                if len(deleted):
                    self._delete_anchor_items(info, deleted)
                behind.append(name)
        if behind:
            self.state.save()
        return behind

    def catch_up(self, info: GalleryInfo) -> None:
        """Apply to an anchors gallery the anchor changes it is behind: the items of deleted anchors
        go, the other items' lists take the changes in (the incremental refresh, on this gallery
        alone), and each new anchor becomes an item (one search each). Every step can run again after
        a crash: the changes stay recorded until the end."""
        key, modality = gallery_key(info.name), info.modality
        added, deleted = set(info.behind_added), set(info.behind_deleted)
        if len(added) > info.size // 4:  # one search per new anchor, and a merge for every item:
            self.build_anchors_gallery(modality)  # building anew costs less
            return
        with self.candidates.lists.saved_once():
            self._delete_anchor_items(info, sorted(deleted))
            # Merging holds an items x new anchors matrix of similarities: a bounded one at a time (a
            # list that already holds an anchor takes it again unchanged, so the chunks compose).
            chunk = max(1, self.state.tuning.catch_up_cells // max(info.size, 1))
            ordered = sorted(added)
            self.refresher.apply(added=ordered[:chunk], deleted=sorted(deleted), only=key)
            for start in range(chunk, len(ordered), chunk):
                self.refresher.apply(added=ordered[start : start + chunk], only=key)
            present = {int(p.payload["anchor"]) for batch in self.candidates.points(key, ["anchor"], anchor=sorted(added))
                       for p in batch} if added else set()
            new = sorted(added - deleted - present)
            batch = self.state.tuning.rewrite_batch
            for start in range(0, len(new), batch):
                points, vecs = self.anchors.points(new[start : start + batch], modality)
                if points:
                    self.add_items(info.name, vecs, modality,
                                   [anchor_item_payload(p.id, p.payload, modality) for p in points])
        info.behind_added, info.behind_deleted = [], []
        info.size = self.candidates.count_set(key)
        self.state.save()

    def _delete_anchor_items(self, info: GalleryInfo, anchors: Sequence[int]) -> None:
        if not len(anchors):
            return
        key = gallery_key(info.name)
        ids = self.candidates.ids(key, anchor=[int(a) for a in anchors])
        if ids:
            self.candidates.delete(ids, key)
            info.size = self.candidates.count_set(key)


def anchor_item_payload(anchor_id: int, payload: dict[str, Any], modality: Modality) -> dict[str, Any]:
    """An anchors gallery item's payload: the pair's own fields, its ``ref`` and its anchor id."""
    keep = {k: v for k, v in payload.items() if k not in RESERVED_PAYLOAD_KEYS}
    ref = keep.get("image", "") if modality == "image" else keep.get("caption", "")
    return {**keep, "ref": ref, "anchor": int(anchor_id)}
