"""``Engine``: one store's state and every operation that changes it, each finished before it returns.

The engine is built from parts that each own one concern (see the modules they come from); it wires
them once, here, and declares them all as attributes. Features read through ``anchors``,
``candidates``, ``label_sets`` and ``galleries``, and change anything through the methods below.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from asif_vdb.engine import integrity
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
from asif_vdb.engine.method import TunedMethod
from asif_vdb.engine.refit import Refitter, TransformOptions
from asif_vdb.engine.refresh import Refresher
from asif_vdb.engine.state import StoreState
from asif_vdb.engine.updates import AnchorUpdates
from asif_vdb.errors import InputError
from asif_vdb.schema.params import AsifParams, IndexSettings, Tuning
from asif_vdb.schema.results import RecoveryReport, RefreshReport
from asif_vdb.schema.store import GalleryInfo, Modality, Normalise, StoreConfig, TransformInfo
from asif_vdb.store.base import Backend


class Engine:
    """The ASIF engine over one backend."""

    def __init__(self, backend: Backend, config: StoreConfig, tuning: Tuning | None = None,
                 exact_search: bool = False) -> None:
        self.state = StoreState(backend, config, tuning or Tuning(), exact_search)
        for m in MODALITIES:
            backend.ensure_collection(anchors_spec(m, self.state.dims[m], config.index))
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
        self.method = TunedMethod(self.state, self.anchors, self.updates)

    @classmethod
    def create(cls, backend: Backend, config: StoreConfig, tuning: Tuning | None = None,
               exact_search: bool = False) -> Engine:
        """A new store: its collections and its config."""
        engine = cls(backend, config, tuning, exact_search)
        engine.state.save()
        return engine

    @classmethod
    def open(cls, backend: Backend, config: StoreConfig, tuning: Tuning | None = None,
             exact_search: bool = False) -> tuple[Engine, RecoveryReport]:
        """An existing store, with whatever a crash left unfinished carried forward or rolled back."""
        engine = cls(backend, config, tuning, exact_search)
        report = engine.updates.recover()
        engine.method.follow(0)  # a fit that came due just before a crash
        engine.state.damage = integrity.damage(engine.state)
        return engine, report

    @property
    def config(self) -> StoreConfig:
        return self.state.config

    @property
    def location(self) -> str:
        return self.state.location

    # -- anchors -------------------------------------------------------------------------------------
    def add_pairs(self, image: np.ndarray, text: np.ndarray,
                  payloads: Sequence[dict[str, Any]]) -> tuple[list[int], list[int], RefreshReport]:
        """Add pairs; every label set, gallery and hub statistic is exact when this returns (and the
        tuned method's transforms are fitted or refitted when due)."""
        ids, new, report = self.updates.add_pairs(image, text, payloads)
        self.method.follow(len(new))
        return ids, new, report

    def delete_pairs(self, ids: Sequence[int]) -> tuple[list[int], RefreshReport]:
        """Delete pairs; every label set, gallery and hub statistic is exact when this returns (and the
        tuned method refits when due)."""
        removed, report = self.updates.delete_pairs(ids)
        self.method.follow(len(removed))
        return removed, report

    def refit(self, options: dict[str, TransformOptions],
              params: AsifParams | None = None) -> dict[Modality, TransformInfo]:
        """Fit transforms on the anchors and rewrite the store under them (engine/refit.py), switching
        to ``params`` too when given."""
        return self.updates.refit(options, params)

    def recover(self) -> RecoveryReport:
        return self.updates.recover()

    # -- the anchor index ------------------------------------------------------------------------------
    def set_index(self, settings: IndexSettings) -> dict[str, float]:
        """Search the anchors with new index settings: the collections take them (their segments are
        rebuilt by the optimisation that follows, which this runs) and the config records them."""
        self.state.config.index = settings
        for m in MODALITIES:
            self.state.backend.ensure_collection(anchors_spec(m, self.state.dims[m], settings))
        self.state.save()
        return self.optimize()

    @contextmanager
    def bulk_load(self) -> Iterator[None]:
        """Load many batches of pairs: the anchor index and the tuned method's refits, which would run
        after every batch, run once at the end (a refit rewrites every anchor; an index build takes
        minutes per million)."""
        with self.state.bulk_load():
            yield
        if not self.state.bulk:
            self.method.follow(0)
            self.optimize()

    def optimize(self) -> dict[str, float]:
        """Build the anchor index over the anchors written since the last time (only where the settings
        ask for one and the store has passed ``exact_below``) and compact the derived vectors; returns the
        seconds per collection that had work to do."""
        out = self.anchors.keep_indexed()
        t = time.perf_counter()
        if self.state.backend.optimize(self.derived.live):
            out[self.derived.live] = round(time.perf_counter() - t, 3)
        self.derived.garbage = self.derived.fresh = 0
        return out

    # -- galleries -----------------------------------------------------------------------------------
    def set_gallery_normalise(self, name: str, normalise: Normalise) -> GalleryInfo:
        """Turn hub normalisation of a user gallery on (computing its statistics) or off."""
        check_normalise(normalise)
        if is_anchors_gallery(name):
            raise InputError("the anchors gallery cannot be hub-normalised; index the items as a gallery of your own")
        info = self.galleries.get(name)
        info.normalise = normalise
        if self.config.hub_on(normalise):
            self.hub.gallery(info)
        self.state.save()
        return info
