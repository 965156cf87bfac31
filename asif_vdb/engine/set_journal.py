"""Label sets and galleries written as journaled operations: a crash never leaves half of one visible.

A label set (new or replacing one of the same name) is written under a set key of its own, then one
config write switches the name to it, then the replaced set's prompts are dropped. Items added to a
gallery are rolled back on open when the add did not finish (a new gallery goes with them). Deleting
a label set or a gallery removes it from the config first, then its candidates. ``carry`` finishes
or rolls back each of these entries when a store is opened.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from asif_vdb.engine.candidates import Candidates
from asif_vdb.engine.layout import gallery_key, labels_key
from asif_vdb.engine.state import StoreState
from asif_vdb.schema.results import RecoveryReport
from asif_vdb.schema.store import DropEntry, GalleryEntry, LabelSetEntry

SetEntry = LabelSetEntry | GalleryEntry | DropEntry


@contextmanager
def journaled(state: StoreState, candidates: Candidates, entry: SetEntry) -> Iterator[None]:
    """Run the block as the journaled operation ``entry``: begun (saved) before it, cleared after it.
    A failure inside is finished or rolled back at once, as a reopening would; if even that fails,
    the entry stays for the next open (and queries refuse until then)."""
    with state.updating():
        state.begin(entry)
        try:
            yield
        except BaseException:
            try:
                carry(state, candidates, entry, RecoveryReport())
            except Exception:  # the original error is the one to report; the journal keeps the entry
                pass
            raise
        state.end(entry)


def carry(state: StoreState, candidates: Candidates, entry: SetEntry, done: RecoveryReport) -> None:
    """Finish or roll back one entry a crash left (see the module's docstring), and clear it."""
    if isinstance(entry, LabelSetEntry):
        info = state.config.label_sets.get(entry.name)
        if info is not None and labels_key(info) == entry.key:  # switched: the replaced prompts go
            if entry.old:
                candidates.drop_set(entry.old)
            done.sets_finished.append(f"label set {entry.name}")
        else:  # not switched: the half-written prompts go, the label set stays as it was
            candidates.drop_set(entry.key)
            done.sets_rolled_back.append(f"label set {entry.name}")
    elif isinstance(entry, GalleryEntry):
        roll_back_gallery(state, candidates, entry)
        done.sets_rolled_back.append(f"gallery {entry.name}")
    else:
        candidates.drop_set(entry.key)
        done.sets_finished.append(f"deletion of {entry.key}")
    state.end(entry)


def roll_back_gallery(state: StoreState, candidates: Candidates, entry: GalleryEntry) -> None:
    """Delete the items an unfinished add wrote (ids from ``entry.first`` on), and the gallery when
    the add created it."""
    key = gallery_key(entry.name)
    if entry.created:
        state.config.galleries.pop(entry.name, None)
        state.save()
        candidates.drop_set(key)
        return
    added = [i for i in candidates.ids(key) if i >= entry.first]
    if added:
        candidates.delete(added, key)
    info = state.config.galleries.get(entry.name)
    if info is not None:
        info.size = candidates.count_set(key)
