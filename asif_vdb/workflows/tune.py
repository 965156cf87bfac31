"""``tune``: choose the tuned method's k, p and transform strengths from the store's own anchors.

The scoring is ``maths/tune.py`` (held-out anchor pairs retrieved against the rest, no labels); this
reads the anchors, runs it, and stores the choice with one journaled refit that switches the
parameters and the transforms together (engine/refit.py), so a crash is carried forward on open.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np

from asif_vdb.engine.engine import Engine
from asif_vdb.engine.method import fit_options
from asif_vdb.errors import InputError
from asif_vdb.features.session import Session
from asif_vdb.maths.tune import Grid, Row, tune
from asif_vdb.schema.params import AsifParams, FitOptions
from asif_vdb.schema.results import TuneReport, TuneRow


def tune_store(session: Session, *, holdout: int = 1000, seed: int = 0, apply: bool = True, grid: Grid | None = None,
               progress: Callable[[str], None] | None = None) -> TuneReport:
    """Score the grid on held-out anchor pairs; with ``apply``, store the best setting (the store's
    method becomes "tuned" with it). The store's current setting is scored too when it is in the grid."""
    engine = session.writable()
    if engine.config.journal:
        raise InputError(f"store {engine.location} has an unfinished update: reopen it first")
    image, text, groups = anchor_rows(engine)
    params = engine.config.params
    grid = grid or Grid()
    rows = tune(image, text, groups, grid=grid, candidate_k=params.candidate_k if params.tuned else None,
                image_power=params.image_fit.power, hub=params.hub, n_groups=holdout, seed=seed, progress=progress)
    best = rows[0]
    chosen = tuned_params(params, best)
    current = next((r for r in rows if _same(r, params)), None)
    report = TuneReport(anchors=len(image), held_out_groups=holdout, rows=[_row(r) for r in rows],
                        chosen=_row(best), current=_row(current) if current is not None else None,
                        params=chosen.model_dump(mode="json"), applied=False)
    if apply:
        engine.refit(fit_options(chosen), chosen)
        report.applied = True
    return report


def tuned_params(params: AsifParams, row: Row) -> AsifParams:
    """The store's parameters with a tuned row's setting (method "tuned")."""
    candidate_k = min(params.candidate_k, row.k) if params.tuned and params.candidate_k is not None else None
    return params.model_copy(update={
        "method": "tuned", "k": row.k, "p": row.p, "candidate_k": candidate_k,
        "image_fit": FitOptions(power=params.image_fit.power, whiten=row.image_whiten),
        "text_fit": FitOptions(power=params.text_fit.power, whiten=row.text_whiten)})


def anchor_rows(engine: Engine) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every visible pair's raw image and caption vectors (same order) and its group: the pair's
    image reference when it has one, else its image vector (the captions of one image go together)."""
    img_ids: list[int] = []
    img: list[np.ndarray] = []
    groups: list[str] = []
    for points, vecs in engine.anchors.scroll("image"):
        img_ids.extend(p.id for p in points)
        img.append(vecs)
        for p, v in zip(points, vecs):
            ref = p.payload.get("image")
            groups.append(str(ref) if ref else hashlib.sha256(np.round(v, 5).tobytes()).hexdigest())
    txt_ids, txt = engine.anchors.all_vectors("text")
    if not img_ids:
        raise InputError(f"store {engine.location} has no anchors to tune on")
    row = {int(i): r for r, i in enumerate(txt_ids.tolist())}
    keep = [r for r, i in enumerate(img_ids) if i in row]
    image = np.concatenate(img)[keep]
    text = txt[[row[img_ids[r]] for r in keep]]
    return image, text, [groups[r] for r in keep]


def _same(row: Row, params: AsifParams) -> bool:
    return (params.tuned and row.k == params.k and row.p == params.p and row.image_whiten == params.image_fit.whiten
            and row.text_whiten == params.text_fit.whiten)


def _row(r: Row) -> TuneRow:
    return TuneRow(k=r.k, p=r.p, image_whiten=r.image_whiten, text_whiten=r.text_whiten, **r.figures)
