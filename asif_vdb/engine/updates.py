"""Anchor updates and refits as whole operations: journaled, and finished before they return.

Adding or deleting pairs is one journal entry: the pairs are written (or deleted), every label set
and gallery is refreshed, the anchors galleries record the change, and the hub statistics are
recomputed; only then is the entry cleared. ``recover`` (run on open) carries forward or rolls back
what a crash left in the journal, through the same steps, then finishes any pair a crash left half
written outside it. A failed update is recovered at once, so nothing half done stays visible.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import ValidationError

from asif_vdb.engine import set_journal
from asif_vdb.engine.anchors import AnchorStore, PairStates
from asif_vdb.engine.galleries import GalleryStore
from asif_vdb.engine.hub import HubStatistics
from asif_vdb.engine.list_cache import ListCache
from asif_vdb.engine.refit import Refitter, TransformOptions
from asif_vdb.engine.refresh import AddedVectors, Refresher
from asif_vdb.engine.state import StoreState
from asif_vdb.errors import InputError
from asif_vdb.schema.params import AsifParams
from asif_vdb.schema.results import RecoveryReport, RefreshReport
from asif_vdb.schema.store import (
    AddEntry,
    DeleteEntry,
    DropEntry,
    GalleryEntry,
    JournalEntry,
    LabelSetEntry,
    Modality,
    RefitEntry,
    TransformInfo,
)


class AnchorUpdates:
    """The operations that change the anchors (or the space they live in) and everything derived."""

    def __init__(self, state: StoreState, anchors: AnchorStore, lists: ListCache, refresher: Refresher,
                 galleries: GalleryStore, hub: HubStatistics, refitter: Refitter) -> None:
        self.state = state
        self.anchors = anchors
        self.lists = lists
        self.refresher = refresher
        self.galleries = galleries
        self.hub = hub
        self.refitter = refitter

    def add_pairs(self, image: np.ndarray, text: np.ndarray,
                  payloads: Sequence[dict[str, Any]]) -> tuple[list[int], list[int], RefreshReport]:
        """Add pairs (unit vectors; payloads with ``hash``) and bring everything derived up to date;
        returns (id of every row, new ids, what the refresh did)."""
        img = self.anchors.check_vectors(image, "image", "anchor images")
        txt = self.anchors.check_vectors(text, "text", "anchor captions")
        if not len(img) == len(txt) == len(payloads):
            raise InputError(f"anchors: {len(img)} image vectors, {len(txt)} caption vectors and "
                             f"{len(payloads)} payloads differ")
        entry = AddEntry.model_validate({"from": self.state.config.next_anchor_id})
        with self.state.updating():
            self.state.begin(entry)
            try:
                ids, new = self.anchors.write(img, txt, payloads)
                first_row: dict[int, int] = {}
                for row, i in enumerate(ids):
                    first_row.setdefault(i, row)
                rows = [first_row[i] for i in new]
                new_arr = np.asarray(new, np.int64)
                report = self._follow(added=new, vectors={"image": (new_arr, img[rows]), "text": (new_arr, txt[rows])})
            except BaseException:
                self._abort()
                raise
            self.state.end(entry)
        report.seconds.update({f"index {k}": v for k, v in self.anchors.keep_indexed().items()})
        return ids, new, report

    def delete_pairs(self, ids: Sequence[int]) -> tuple[list[int], RefreshReport]:
        """Delete pairs by id and bring everything derived up to date; returns (ids that existed, report)."""
        wanted = sorted({int(i) for i in ids})
        if not wanted:
            return [], RefreshReport()
        try:  # an entry the engine could not carry out is never journaled
            entry = DeleteEntry(ids=wanted)
        except ValidationError as e:
            raise InputError(f"anchor ids are integers in 0 .. 2**63-1, got {wanted[0]} .. {wanted[-1]}") from e
        with self.state.updating():
            self.state.begin(entry)
            try:
                removed = self.anchors.delete(wanted)
                report = self._follow(deleted=removed)
            except BaseException:
                self._abort()
                raise
            self.state.end(entry)
        report.seconds.update({f"index {k}": v for k, v in self.anchors.keep_indexed().items()})
        return removed, report

    def refit(self, options: dict[str, TransformOptions],
              params: AsifParams | None = None) -> dict[Modality, TransformInfo]:
        """Fit, rewrite and recompute (engine/refit.py), switching to ``params`` when given; returns
        the store's transform records."""
        entry = self.refitter.prepare(options, params)
        with self.state.updating():
            self.state.begin(entry)
            try:
                self.refitter.finish(entry)
            except BaseException:
                self._abort()
                raise
        return dict(self.state.config.transforms)

    def _follow(self, added: Sequence[int] = (), deleted: Sequence[int] = (),
                vectors: AddedVectors | None = None) -> RefreshReport:
        """Everything an anchor change entails, in order: the anchors galleries record it, every other
        candidate is refreshed, the hub statistics are recomputed (plain stores; a tuned store keeps
        them with its transforms once fitted, recomputed at each refit: engine/method.py)."""
        if not len(added) and not len(deleted):
            return RefreshReport()
        behind = self.galleries.record(added, deleted)
        report = self.refresher.apply(added=added, deleted=deleted, vectors=vectors)
        report.galleries_behind = behind
        if not (self.state.config.params.tuned and self.state.config.transforms):
            self.hub.refresh_all()
        return report

    def _abort(self) -> None:
        """After a failed update: finish or roll it back now, so that nothing half done stays visible;
        if even that fails, the journal keeps it for the next open and queries refuse to run."""
        try:
            self.recover()
        except Exception:  # the original error is the one to report; the journal still holds the work
            pass

    def recover(self) -> RecoveryReport:
        """Complete or roll back whatever a crash left: journaled updates first (a pair whose two halves
        were written is completed, a lone half rolled back, then everything derived follows), then any
        other pair not marked complete. Returns what was done."""
        done = RecoveryReport()
        with self.state.updating():
            done.searched = self.lists.check_derived()
            for entry in list(self.state.config.journal):
                try:
                    self._carry(entry, done)
                except Exception as e:  # reported, and kept: it must not lock the store out
                    done.failed.append(f"the {entry.op} update ({' '.join(str(e).split())[:300]})")
            stray = self.anchors.pair_states()
            if stray.complete or stray.lone:
                self._finish(stray, done)
        return done

    def _carry(self, entry: JournalEntry, done: RecoveryReport) -> None:
        if isinstance(entry, (LabelSetEntry, GalleryEntry, DropEntry)):
            set_journal.carry(self.state, self.galleries.candidates, entry, done)
            return
        if isinstance(entry, RefitEntry):  # always carried forward; it clears its own entry
            self.refitter.finish(entry)
            done.transform_finished = sorted(entry.new)
            return
        if isinstance(entry, AddEntry):
            self._finish(self.anchors.pair_states(list(range(entry.first, self.state.config.next_anchor_id))), done)
        else:
            removed = list(entry.ids)
            self.anchors.delete(removed)
            done.deleted += removed
            done.refreshed += self._follow(deleted=removed).rewritten
        self.state.end(entry)

    def _finish(self, states: PairStates, done: RecoveryReport) -> None:
        self.anchors.finish_pairs(states)
        done.completed += states.complete
        done.rolled_back += states.lone
        done.refreshed += self._follow(added=states.complete, deleted=states.lone).rewritten
