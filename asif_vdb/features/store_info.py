"""What a store holds, as plain data: encoders, parameters, sizes, label sets, galleries, transforms."""

from __future__ import annotations

from typing import Any

from asif_vdb.features.session import Session
from asif_vdb.store.readonly import ReadOnlyEdgeBackend


def describe(session: Session) -> dict[str, Any]:
    """The store's configuration and sizes (a new store: what it will be created with)."""
    engine = session.engine
    if engine is None:
        return {"location": session.location, "anchors": 0, "new": True,
                "image_encoder": session.spec("image").model_dump(), "text_encoder": session.spec("text").model_dump(),
                "params": session.params.model_dump()}
    c = engine.config
    disk = session.backend.usage()
    return {
        "location": session.location,
        **({"read_only": True} if isinstance(session.backend, ReadOnlyEdgeBackend) else {}),
        **({"disk": disk} if disk is not None else {}),
        "anchors": engine.anchors.count(),
        "image_encoder": c.image_encoder.model_dump(),
        "text_encoder": c.text_encoder.model_dump(),
        "params": c.params.model_dump(),
        "schema_version": c.schema_version,
        "transforms": {m: t.model_dump() for m, t in c.transforms.items()},
        "label_sets": {n: {"classes": len(i.classes), "templates": len(i.templates), "aggregate": i.aggregate,
                           "normalise": i.normalise, "threshold": i.threshold,
                           "coverage_threshold": i.coverage_threshold}
                       for n, i in c.label_sets.items()},
        "galleries": {n: {**g.model_dump(exclude={"behind_added", "behind_deleted"}),
                          # anchors galleries: anchor changes their next search applies
                          **({"behind": len(g.behind_added) + len(g.behind_deleted)}
                             if g.behind_added or g.behind_deleted else {})}
                      for n, g in c.galleries.items()},
    }
