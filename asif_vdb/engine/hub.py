"""Hub statistics of hub-normalised label sets and galleries, computed through the store.

A hub-normalised candidate keeps the mean and spread of its scores against a reference sample of
anchors of the query modality (images for a label set's prompts), each queried like any
embedding (maths/hub.py). Both the reference queries and the candidates' relative vectors move when
anchors change or a transform is refitted, so the engine recomputes them as part of those updates.
"""

from __future__ import annotations

import scipy.sparse as sp

from asif_vdb.engine.anchors import AnchorStore
from asif_vdb.engine.candidates import Candidates
from asif_vdb.engine.layout import gallery_key
from asif_vdb.engine.state import StoreState
from asif_vdb.errors import InputError, StoreError
from asif_vdb.maths import hub, relative
from asif_vdb.schema.store import GalleryInfo, LabelSetInfo, Modality

BATCH = 512


class HubStatistics:
    """Computes and stores the statistics of a store's hub-normalised sets."""

    def __init__(self, state: StoreState, anchors: AnchorStore, candidates: Candidates) -> None:
        self.state = state
        self.anchors = anchors
        self.candidates = candidates

    def reference(self, modality: Modality) -> sp.csr_matrix:
        """Relative vectors of the reference sample: up to ``hub.HUB_REFERENCE`` visible anchors of
        ``modality``, evenly spaced by id, each queried through the store like any embedding."""
        ids = hub.reference_sample(self.anchors.visible_ids())
        if not len(ids):
            raise InputError("hub normalisation needs anchors: the store has none")
        found, vecs = self.anchors.vectors(ids.tolist(), modality)
        row = {int(i): r for r, i in enumerate(found.tolist())}
        return self.anchors.relative(vecs[[row[int(i)] for i in ids if int(i) in row]], modality)

    def label_set(self, info: LabelSetInfo, reference: sp.csr_matrix | None = None) -> None:
        """Fill ``info.hub_mean`` / ``info.hub_std`` from the set's stored prompt relative vectors."""
        ids = list(range(info.first_id, info.first_id + info.n_candidates))
        rels = self.candidates.relatives(ids)
        if len(rels) != len(ids):
            raise StoreError(f"label set {info.name!r}: {len(ids) - len(rels)} prompts are missing from the store")
        rel = relative.from_pairs([rels[i] for i in ids], self.state.n_coords)
        ref = self.reference("image") if reference is None else reference
        mean, std = hub.hub_statistics(relative.scores(ref, rel))
        info.hub_mean, info.hub_std = [float(x) for x in mean], [float(x) for x in std]

    def gallery(self, info: GalleryInfo, reference: sp.csr_matrix | None = None) -> int:
        """Store each item's (mean, std) in its payload (``hub``); returns how many items."""
        ids = self.candidates.ids(gallery_key(info.name))
        if not ids:
            return 0
        ref = self.reference(other_modality(info.modality)) if reference is None else reference
        for start in range(0, len(ids), BATCH):
            chunk = ids[start : start + BATCH]
            mean, std = hub.hub_statistics(relative.scores(ref, self.candidates.relative_matrix(chunk)))
            for i, mu, sd in zip(chunk, mean, std):
                self.candidates.set_payload([int(i)], {"hub": [float(mu), float(sd)]})
        return len(ids)

    def refresh_all(self) -> None:
        """Recompute the statistics of every hub-normalised label set and gallery."""
        config = self.state.config
        sets = [i for i in config.label_sets.values() if config.hub_on(i.normalise)]
        galleries = [g for g in config.galleries.values() if config.hub_on(g.normalise)]
        if not (sets or galleries) or self.anchors.count() == 0:
            return
        references: dict[Modality, sp.csr_matrix] = {}

        def ref(modality: Modality) -> sp.csr_matrix:
            if modality not in references:
                references[modality] = self.reference(modality)
            return references[modality]

        for info in sets:
            self.label_set(info, ref("image"))
        for g in galleries:
            self.gallery(g, ref(other_modality(g.modality)))
        self.state.save()


def other_modality(modality: Modality) -> Modality:
    """The query modality of a set of ``modality`` items (a gallery of images is searched by texts)."""
    return "text" if modality == "image" else "image"

