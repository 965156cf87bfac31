"""The state every part of the engine shares: the backend, the config, the tuning, and the journal.

The config is saved with ``save()`` (one atomic write of the whole document). The journal records an
update before it touches anything (``begin``) and forgets it when everything it changes is
consistent (``end``); while an entry is pending that this process is not carrying out (a crash left
it), queries refuse to run until the store is reopened, which carries it forward or rolls it back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from asif_vdb.errors import StoreError
from asif_vdb.schema.params import Tuning
from asif_vdb.schema.store import JournalEntry, Modality, StoreConfig
from asif_vdb.store.base import Backend


class StoreState:
    """A store's backend, config and tuning, and the journal of its unfinished updates."""

    def __init__(self, backend: Backend, config: StoreConfig, tuning: Tuning, exact_search: bool = False) -> None:
        self.backend = backend
        self.config = config
        self.tuning = tuning
        #: Every anchor search exact, whatever the store's index settings (a baseline to compare with).
        self.exact_search = exact_search
        self.dims: dict[Modality, int] = {"image": config.image_encoder.dim, "text": config.text_encoder.dim}
        #: > 0 while this process carries out a journaled update (nested calls count).
        self._updating = 0
        #: > 0 inside a bulk load: index builds and the tuned method's refits wait for its end.
        self.bulk = 0
        #: Why the stored data cannot be trusted (engine/integrity.py; set on open): queries refuse.
        self.damage: str | None = None

    @property
    def location(self) -> str:
        return self.backend.location

    @property
    def n_coords(self) -> int:
        """Width of relative vectors: every anchor id ever allocated is a coordinate."""
        return max(self.config.next_anchor_id, 1)

    def save(self) -> None:
        self.backend.write_config(self.config.dump())

    # -- the journal -------------------------------------------------------------------------------
    @contextmanager
    def updating(self) -> Iterator[None]:
        """Marks this process as carrying out the journaled update(s) inside the block."""
        self._updating += 1
        try:
            yield
        finally:
            self._updating -= 1

    @contextmanager
    def bulk_load(self) -> Iterator[None]:
        """Marks a bulk load: the work that pays once per load, not per batch, waits for its end."""
        self.bulk += 1
        try:
            yield
        finally:
            self.bulk -= 1

    def begin(self, entry: JournalEntry) -> None:
        self.config.journal.append(entry)
        self.save()

    def end(self, entry: JournalEntry) -> None:
        if entry in self.config.journal:
            self.config.journal.remove(entry)
        self.save()

    def require_consistent(self) -> None:
        """Refuse to read while an update a crash left unfinished is pending, or the store is damaged."""
        if self.damage and not self._updating:
            raise StoreError(f"{self.damage}: run `asif doctor` to see what is lost and `asif doctor --repair` "
                             "to restore what can be restored")
        if self.config.blocked and not self._updating:
            raise StoreError(
                f"store {self.location} has {len(self.config.blocked)} unfinished update(s) that cannot be carried "
                "out: run `asif doctor` to see them and `asif doctor --repair --drop-journal` to drop them")
        if self.config.journal and not self._updating:
            raise StoreError(
                f"store {self.location} has an unfinished update: reopen it (or run `asif doctor --repair`) "
                "to complete or roll it back before querying; one that cannot be completed is dropped by "
                "`asif doctor --repair --drop-journal`"
            )
