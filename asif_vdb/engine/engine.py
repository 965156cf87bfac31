"""``Engine``: one store's state and every operation that changes it, each finished before it returns.

The engine is built from parts that each own one concern (see the modules they come from); it wires
them once, here, and declares them all as attributes. Features read through ``anchors``,
``candidates``, ``label_sets`` and ``galleries``, and change anything through the methods below.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from asif_vdb.engine.anchor_space import AnchorSpace
from asif_vdb.engine.anchors import AnchorStore
from asif_vdb.engine.candidates import Candidates
from asif_vdb.engine.derived import DerivedVectors
from asif_vdb.engine.galleries import GalleryStore
from asif_vdb.engine.hub import HubStatistics
from asif_vdb.engine.label_sets import LabelSetStore, check_normalise
from asif_vdb.engine.layout import MODALITIES, anchors_spec, candidates_spec, is_anchors_gallery
from asif_vdb.engine.list_cache import ListCache
from asif_vdb.engine.list_store import ListStore
from asif_vdb.engine.refit import Refitter, TransformOptions
from asif_vdb.engine.refresh import Refresher
from asif_vdb.engine.state import StoreState
from asif_vdb.engine.updates import AnchorUpdates
from asif_vdb.errors import InputError
from asif_vdb.schema.params import Tuning
from asif_vdb.schema.results import RecoveryReport, RefreshReport
from asif_vdb.schema.store import GalleryInfo, Modality, Normalise, StoreConfig, TransformInfo
from asif_vdb.store.base import Backend


class Engine:
    """The ASIF engine over one backend."""

    def __init__(self, backend: Backend, config: StoreConfig, tuning: Tuning | None = None) -> None:
        self.state = StoreState(backend, config, tuning or Tuning())
        for m in MODALITIES:
            backend.ensure_collection(anchors_spec(m, self.state.dims[m]))
        backend.ensure_collection(candidates_spec(self.state.dims))
        self.space = AnchorSpace(self.state)
        self.anchors = AnchorStore(self.state, self.space)
        self.derived = DerivedVectors(self.state)
        self.lists = ListCache(self.state, self.anchors, self.derived, ListStore(self.state, self.derived))
        self.candidates = Candidates(self.state, self.anchors, self.derived, self.lists)
        self.refresher = Refresher(self.state, self.anchors, self.lists, self.derived)
        self.galleries = GalleryStore(self.state, self.anchors, self.candidates, self.refresher)
        self.hub = HubStatistics(self.state, self.anchors, self.candidates)
        self.label_sets = LabelSetStore(self.state, self.candidates, self.hub)
        self.refitter = Refitter(self.state, self.space, self.anchors, self.candidates, self.hub)
        self.updates = AnchorUpdates(self.state, self.anchors, self.lists, self.refresher, self.galleries, self.hub,
                                     self.refitter)

    @classmethod
    def create(cls, backend: Backend, config: StoreConfig, tuning: Tuning | None = None) -> Engine:
        """A new store: its collections and its config."""
        engine = cls(backend, config, tuning)
        engine.state.save()
        return engine

    @classmethod
    def open(cls, backend: Backend, config: StoreConfig, tuning: Tuning | None = None) -> tuple[Engine, RecoveryReport]:
        """An existing store, with whatever a crash left unfinished carried forward or rolled back."""
        engine = cls(backend, config, tuning)
        return engine, engine.updates.recover()

    @property
    def config(self) -> StoreConfig:
        return self.state.config

    @property
    def location(self) -> str:
        return self.state.location

    # -- anchors -------------------------------------------------------------------------------------
    def add_pairs(self, image: np.ndarray, text: np.ndarray,
                  payloads: Sequence[dict[str, Any]]) -> tuple[list[int], list[int], RefreshReport]:
        """Add pairs; every label set, gallery and hub statistic is exact when this returns."""
        return self.updates.add_pairs(image, text, payloads)

    def delete_pairs(self, ids: Sequence[int]) -> tuple[list[int], RefreshReport]:
        """Delete pairs; every label set, gallery and hub statistic is exact when this returns."""
        return self.updates.delete_pairs(ids)

    def refit(self, options: dict[str, TransformOptions]) -> dict[Modality, TransformInfo]:
        """Fit transforms on the anchors and rewrite the store under them (engine/refit.py)."""
        return self.updates.refit(options)

    def recover(self) -> RecoveryReport:
        return self.updates.recover()

    # -- galleries -----------------------------------------------------------------------------------
    def set_gallery_normalise(self, name: str, normalise: Normalise) -> GalleryInfo:
        """Turn hub normalisation of a user gallery on (computing its statistics) or off."""
        check_normalise(normalise)
        if is_anchors_gallery(name):
            raise InputError("the anchors gallery cannot be hub-normalised; index the items as a gallery of your own")
        info = self.galleries.get(name)
        info.normalise = normalise
        if normalise == "hub":
            self.hub.gallery(info)
        self.state.save()
        return info
