"""What opening a store checks before it answers queries: that no collection lost what the config
says it holds (a damaged or deleted collection is created again empty when the store opens, and an
empty one would answer every query wrongly without a word).

The check costs three exact counts. When it fails, queries refuse with one line naming the problem
and ``asif doctor``, which reports and repairs it.
"""

from __future__ import annotations

from asif_vdb.engine.layout import ANCHORS, CANDIDATES
from asif_vdb.engine.state import StoreState


def damage(state: StoreState) -> str | None:
    """Why the store cannot be trusted to answer (None: nothing found). Run after recovery, when both
    halves of every pair exist and every label set and gallery holds what the config says."""
    backend = state.backend
    images, texts = backend.count(ANCHORS["image"]), backend.count(ANCHORS["text"])
    if images != texts:
        return (f"store {state.location} is damaged: its anchor collections hold {images} image and {texts} "
                "caption halves")
    config = state.config
    expected = sum(i.n_candidates for i in config.label_sets.values()) + sum(g.size for g in config.galleries.values())
    have = backend.count(CANDIDATES)
    if have < expected:
        return (f"store {state.location} is damaged: {expected - have} of the {expected} label-set prompts and "
                "gallery items its config records are missing")
    return None
