"""Which classes of a label set the anchors barely cover (``asif labels coverage NAME``).

Per class, over its prompts (one per template): the anchors that stand out for them
(maths/support.py: similarity >= median + 3 robust std over all anchors, in the space the anchor
search uses), the share of the prompts' relative vectors carried by those anchors, and the captions of the
nearest anchors. A class with few anchors that stand out is named by whatever generic captions are a
little similar to its prompts: the answers for it are weak (docs/benchmarks.md checks that the count
ranks CIFAR-10's classes like their accuracy does). The fix is data: pairs whose images show the
class and whose captions name it.
"""

from __future__ import annotations

import numpy as np

from asif_vdb.features.session import Session
from asif_vdb.maths.support import STAND_OUT_Z, prompt_support
from asif_vdb.schema.results import ClassCoverage, CoverageReport

#: Fewer anchors than this standing out for a class: flagged as barely covered.
FEW = 10
#: Prompts scored at once (prompts x anchors similarities, float32).
CHUNK = 256


def label_set_coverage(session: Session, name: str, *, few: int = FEW, nearest: int = 3) -> CoverageReport:
    """The anchor support of every class of label set ``name``, least covered first."""
    engine = session.require()
    info = engine.label_sets.get(name)
    ids, raw = engine.anchors.all_vectors("text")
    anchors = engine.space.embed(raw, "text")
    prompts = engine.space.embed(engine.label_sets.prompt_vectors(info), "text")
    params = engine.config.params
    n_t = info.prompts_per_class
    rows = []
    for start in range(0, len(info.classes), max(1, CHUNK // n_t)):
        stop = min(len(info.classes), start + max(1, CHUNK // n_t))
        sims = prompts[start * n_t : stop * n_t].astype(np.float32) @ anchors.T
        sup = prompt_support(sims, params.stored_k, params.p, nearest=nearest)
        for c in range(stop - start):
            rows_t = range(c * n_t, (c + 1) * n_t)
            strong = np.unique(np.concatenate([sup.strong[r] for r in rows_t]))
            best = sims[list(rows_t)].max(axis=0)
            near = np.argsort(-best[np.unique(sup.nearest[list(rows_t)])])[:nearest]
            near_ids = ids[np.unique(sup.nearest[list(rows_t)])[near]]
            rows.append((start + c, len(strong), float(sup.weight[list(rows_t)].mean()),
                         float(sup.top_mean[list(rows_t)].mean()), [int(i) for i in near_ids]))
    captions = engine.anchors.payloads(sorted({i for r in rows for i in r[4]}))
    out = [ClassCoverage(id=info.class_ids[c], name=info.classes[c], anchors=n, weight=round(w, 4),
                         similarity=round(s, 4), nearest=[str(captions.get(i, {}).get("caption", "")) for i in near],
                         low=n < few)
           for c, n, w, s, near in rows]
    out.sort(key=lambda r: (r.anchors, r.weight))
    advice = [f"{r.name} ({r.id}): {r.anchors} anchor(s) stand out; add pairs whose images show {r.name} and whose "
              f"captions name it (its nearest captions now: {'; '.join(r.nearest[:2]) or 'none'})" for r in out if r.low]
    return CoverageReport(label_set=name, anchors=len(ids), stand_out_z=STAND_OUT_Z, few=few, classes=out,
                          low=[r.id for r in out if r.low], advice=advice)
