"""Refitting the embedding transforms: fit on the visible anchors, rewrite them, recompute candidates.

A refit is journaled and always carried forward (never rolled back): the new arrays go to the slot
the config does not use (engine/anchor_space.py); every anchor is rewritten with a mark of this
refit in the same point write, so a crash leaves each anchor under a known transform; then the
config switches, every candidate is recomputed from its stored embedding and the hub statistics
follow. From then on the transform is fixed: anchors added later are transformed with it.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from asif_vdb.engine.anchor_space import AnchorSpace, as_stored
from asif_vdb.engine.anchors import AnchorStore
from asif_vdb.engine.candidates import Candidates
from asif_vdb.engine.hub import HubStatistics
from asif_vdb.engine.layout import ANCHORS, CANDIDATES, MODALITIES, REFIT_MARK, VECTOR, gallery_key, is_anchors_gallery
from asif_vdb.engine.state import StoreState
from asif_vdb.errors import InputError, StoreError
from asif_vdb.maths.transforms import ZERO_NORM, Transform, fit_transform
from asif_vdb.schema.params import AsifParams
from asif_vdb.schema.store import Modality, RefitEntry, TransformInfo
from asif_vdb.store.base import PointData

OPTIONS = ("power", "centre", "whiten")
#: What ``refit`` takes per modality: the options of maths.transforms.fit_transform, or None (plain).
TransformOptions = dict[str, Any] | None


class Refitter:
    """Fits a store's transforms and carries a refit through."""

    def __init__(self, state: StoreState, space: AnchorSpace, anchors: AnchorStore, candidates: Candidates,
                 hub: HubStatistics) -> None:
        self.state = state
        self.space = space
        self.anchors = anchors
        self.candidates = candidates
        self.hub = hub

    def prepare(self, options: dict[str, TransformOptions], params: AsifParams | None = None) -> RefitEntry:
        """Fit (or remove, with None) the transform of each modality named in ``options`` on the
        visible anchors and write its arrays to the free slot; returns the journal entry of the
        refit (which switches the store to ``params`` too, when given). Everything that can be
        refused is refused here, before the journal."""
        if self.state.config.journal:
            raise StoreError(f"store {self.state.location} has an unfinished update: reopen it or run "
                             "`asif doctor --repair` first")
        unknown = set(options) - set(MODALITIES)
        if unknown:
            raise InputError(f"transforms are for 'image' and 'text', not {sorted(unknown)}")
        new: dict[Modality, TransformInfo | None] = {}
        fitted: dict[Modality, Transform] = {}
        for m in MODALITIES:
            if m not in options:
                continue
            opts = options[m]
            if opts is None:
                new[m] = None
                continue
            extra = set(opts) - set(OPTIONS)
            if extra:
                raise InputError(f"unknown transform options {sorted(extra)} (known: {', '.join(OPTIONS)})")
            try:
                info = TransformInfo(**opts)
            except ValueError as e:
                raise InputError(f"{m} transform options: {e}") from e
            ids, vecs = self.anchors.all_vectors(m)
            if len(ids) < 2:
                raise InputError(f"fitting the {m} transform needs at least 2 anchors; the store has {len(ids)}")
            fitted[m] = t = as_stored(fit_transform(vecs, info.power, info.centre, info.whiten))
            flat = ids[np.linalg.norm(t.project(vecs), axis=1) < ZERO_NORM].tolist()
            if flat:  # the journaled rewrite must be able to finish
                raise InputError(f"the fitted {m} transform maps anchor(s) {flat[:5]} to zero (they equal the "
                                 "anchors' mean): delete them or fit without centring")
            current = self.state.config.transforms.get(m)
            slot = 1 - current.slot if current is not None else 0
            new[m] = info.model_copy(update={"anchors": len(ids), "checksum": t.checksum(), "slot": slot})
        for m, t in fitted.items():
            record = new[m]
            assert record is not None
            self.space.save(m, t, record.slot)
        return RefitEntry(gen=time.time_ns(), phase="anchors", new=new, params=params)

    def finish(self, entry: RefitEntry) -> None:
        """Carry a journaled refit to its end: anchors not yet marked with its ``gen`` are rewritten
        under the new transforms, the config switches to them, every candidate is recomputed."""
        if entry.phase == "anchors":
            for m, info in entry.new.items():
                after = self.space.load(m, info) if info is not None else None
                self._rewrite_anchors(m, self.space.transforms.get(m), after, entry.gen)
            for m, info in entry.new.items():
                if info is not None:
                    self.state.config.transforms[m] = info
                else:
                    self.state.config.transforms.pop(m, None)
            if entry.params is not None:
                self.state.config.params = entry.params
            entry.phase = "candidates"
            self.state.save()
            self.space.reload()
        self.recompute_candidates()
        self.state.end(entry)

    def _rewrite_anchors(self, modality: Modality, before: Transform | None, after: Transform | None, gen: int) -> None:
        """Every anchor of ``modality`` (visible or not) not marked ``gen``: its stored vector taken
        back to the raw embedding and written under ``after``, with the mark, in one point write."""
        backend, name = self.state.backend, ANCHORS[modality]
        for batch in backend.scroll(name, None, with_payload=True, vectors=(VECTOR,), batch=self.state.tuning.rewrite_batch):
            todo = [p for p in batch if p.payload.get(REFIT_MARK) != gen]
            if not todo:
                continue
            vecs = np.stack([p.dense[VECTOR] for p in todo])
            vecs = before.invert(vecs) if before is not None else vecs
            vecs = after.apply(vecs) if after is not None else vecs
            backend.upsert(name, [PointData(p.id, payload={**p.payload, REFIT_MARK: gen}, dense={VECTOR: v})
                                  for p, v in zip(todo, vecs)])

    def recompute_candidates(self) -> None:
        """Every stored candidate's relative vector again from its stored embedding (after the anchor
        space changed as a whole); the anchors' own galleries are dropped and rebuilt on next use."""
        groups: dict[tuple[str, Modality], tuple[list[int], list[np.ndarray], list[dict[str, Any]]]] = {}
        for batch in self.state.backend.scroll(CANDIDATES, None, with_payload=True, vectors=MODALITIES):
            for p in batch:
                m = next((v for v in MODALITIES if v in p.dense), None)
                if m is None:
                    continue
                ids, vecs, payloads = groups.setdefault((str(p.payload.get("set", "")), m), ([], [], []))
                ids.append(p.id)
                vecs.append(p.dense[m])
                payloads.append({k: v for k, v in p.payload.items() if k != "set"})
        for name in [g for g in self.state.config.galleries if is_anchors_gallery(g)]:
            self.candidates.drop_set(gallery_key(name))
            del self.state.config.galleries[name]
        batch_size = self.state.tuning.rewrite_batch
        with self.candidates.lists.saved_once(every_candidate=True):
            for (key, m), (ids, vecs, payloads) in groups.items():
                if key.startswith(gallery_key("anchors:")):
                    continue
                for start in range(0, len(ids), batch_size):
                    sl = slice(start, start + batch_size)
                    self.candidates.put(key, ids[sl], np.stack(vecs[sl]), m, payloads[sl])
        self.hub.refresh_all()
        self.state.save()
