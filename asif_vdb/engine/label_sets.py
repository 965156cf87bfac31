"""Stored label sets: class names x prompt templates, each prompt a candidate ranked for an image.

Prompt i*T + t is template t filled with class i, stored as candidate ``first_id + i*T + t`` of the
set key ``labels_key(info)``. Building a label set from prompt embeddings is one function (``store``),
used by creation, by a rebuild and by pruning alike.
"""

from __future__ import annotations

from typing import cast

import numpy as np

from asif_vdb.engine.candidates import Candidates
from asif_vdb.engine.hub import HubStatistics
from asif_vdb.engine.layout import labels_key, new_labels_key
from asif_vdb.engine.set_journal import journaled
from asif_vdb.engine.state import StoreState
from asif_vdb.errors import InputError, NotFoundError, StoreError
from asif_vdb.schema.store import DropEntry, LabelSetEntry, LabelSetInfo, Normalise


class LabelSetStore:
    """The label sets of one store."""

    def __init__(self, state: StoreState, candidates: Candidates, hub: HubStatistics) -> None:
        self.state = state
        self.candidates = candidates
        self.hub = hub

    def get(self, name: str) -> LabelSetInfo:
        sets = self.state.config.label_sets
        if name not in sets:
            known = ", ".join(sorted(sets)) or "none"
            raise NotFoundError(f"no label set {name!r} in store {self.state.location} (known: {known})")
        return sets[name]

    def names(self) -> list[str]:
        return sorted(self.state.config.label_sets)

    def store(self, info: LabelSetInfo, prompts: list[str], vectors: np.ndarray) -> LabelSetInfo:
        """Store a label set from its prompts' embeddings (in prompt order), replacing one of the same
        name; ``info.first_id`` is allocated here. Returns the stored record."""
        if len(prompts) != info.n_candidates or len(vectors) != info.n_candidates:
            raise StoreError(f"label set {info.name!r}: {len(vectors)} prompt vectors for {info.n_candidates} prompts")
        old = self.state.config.label_sets.get(info.name)
        info.first_id = self.candidates.allocate(info.n_candidates)
        info.key = new_labels_key(info.first_id)
        ids = list(range(info.first_id, info.first_id + info.n_candidates))
        n_t = info.prompts_per_class
        payloads = [{"class": i // n_t, "text": t} for i, t in enumerate(prompts)]
        # Written beside the set it replaces, then switched to in one config write (set_journal.py).
        entry = LabelSetEntry(name=info.name, key=info.key, old=labels_key(old) if old is not None else None)
        with journaled(self.state, self.candidates, entry):
            self.candidates.put(info.key, ids, vectors, "text", payloads)
            if self.state.config.hub_on(info.normalise):
                self.hub.label_set(info)
            self.state.config.label_sets[info.name] = info
            self.state.save()
            if entry.old is not None:
                self.candidates.drop_set(entry.old)
        return info

    def prompt_vectors(self, info: LabelSetInfo) -> np.ndarray:
        """The stored prompt embeddings of a label set, in prompt order."""
        ids = list(range(info.first_id, info.first_id + info.n_candidates))
        got = self.candidates.embeddings(ids, "text")
        if len(got) != len(ids):
            raise StoreError(f"label set {info.name!r}: {len(ids) - len(got)} prompt(s) missing; run `asif doctor`")
        return np.stack([got[i] for i in ids])

    def drop(self, name: str) -> None:
        """Gone from the config first (in the journal's first write), then its prompts."""
        info = self.get(name)
        del self.state.config.label_sets[name]
        entry = DropEntry(key=labels_key(info))
        with journaled(self.state, self.candidates, entry):
            self.candidates.drop_set(entry.key)

    def set_normalise(self, name: str, normalise: Normalise) -> LabelSetInfo:
        """Turn hub normalisation of a label set on (computing its statistics) or off."""
        check_normalise(normalise)
        info = self.get(name)
        info.normalise = normalise
        if self.state.config.hub_on(normalise):
            self.hub.label_set(info)
        else:
            info.hub_mean = info.hub_std = None
        self.state.save()
        return info


def check_normalise(normalise: str) -> Normalise:
    if normalise in ("none", "hub", "auto"):
        return cast(Normalise, normalise)
    raise InputError(f"normalise must be 'none', 'hub' or 'auto', got {normalise!r}")
