"""The tuned method in force: transforms fitted once a store has enough anchors, refitted as they change.

A store whose parameters say ``method="tuned"`` is plain ASIF until it holds ``fit_min_anchors``
visible anchors (below that a fitted whitening is noise: docs/benchmarks.md measures where it starts
to pay). Then it fits ``image_fit`` / ``text_fit`` on its anchors with one journaled refit
(engine/refit.py), the same operation ``set_transform`` runs, so a crash is carried forward on open.
The transform then stays fixed; each anchor update counts the pairs it added or deleted in the
transform records, and once they reach ``refit_share`` of the anchors the transform was fitted on,
the store refits. The check runs after every anchor update and on open (a crash between an update
and its refit leaves the refit due, and the next open runs it).

The hub statistics of its hub-normalised sets are part of the fit too: computed when a set is
created and at every refit, and kept while anchors change in between (recomputing them costs one
top-k search per reference anchor and a references x candidates product at the tuned k: tens of
seconds for a 7,000-prompt label set, against ~2 s for the update itself; docs/benchmarks.md). They
are statistics of a reference sample, and the anchors move by less than ``refit_share`` between two
fits.
"""

from __future__ import annotations

from asif_vdb.engine.anchors import AnchorStore
from asif_vdb.engine.refit import TransformOptions
from asif_vdb.engine.state import StoreState
from asif_vdb.engine.updates import AnchorUpdates
from asif_vdb.schema.params import AsifParams, FitOptions


class TunedMethod:
    """Keeps a tuned store's transforms fitted to its anchors."""

    def __init__(self, state: StoreState, anchors: AnchorStore, updates: AnchorUpdates) -> None:
        self.state = state
        self.anchors = anchors
        self.updates = updates

    def follow(self, changed: int) -> bool:
        """After an anchor update of ``changed`` pairs (0: only check): count them, and fit or refit
        the transforms when the method says so. Returns whether a refit ran."""
        config = self.state.config
        if not config.params.tuned:
            return False
        if changed and config.transforms:
            for info in config.transforms.values():
                info.changed += int(changed)
            self.state.save()
        if config.journal or self.state.bulk or not self.due():
            return False
        self.updates.refit(fit_options(config.params))
        return True

    def due(self) -> bool:
        """Whether the store should (re)fit its transforms now."""
        params, transforms = self.state.config.params, self.state.config.transforms
        if not transforms:
            return self.anchors.count() >= params.fit_min_anchors
        fitted = max(info.anchors for info in transforms.values())
        changed = max(info.changed for info in transforms.values())
        return changed >= params.refit_share * max(fitted, 1)


def params_after(params: AsifParams, options: dict[str, TransformOptions]) -> AsifParams | None:
    """A tuned store's parameters after the user sets transforms by hand: later refits reuse the
    given options; removing a side's transform leaves the tuned method (the store becomes plain, with
    its k and p). None: the parameters stay (a plain store)."""
    if not params.tuned:
        return None
    if any(options.get(m, "kept") is None for m in ("image", "text")):
        return params.model_copy(update={"method": "plain"})
    try:
        update = {f"{m}_fit": FitOptions(**opts) for m, opts in options.items() if opts is not None}
    except (TypeError, ValueError):  # bad options: the refit itself refuses them, naming them
        return None
    return params.model_copy(update=update)


def fit_options(params: AsifParams) -> dict[str, TransformOptions]:
    """The refit options of a tuned store's parameters (``Engine.refit`` / ``Refitter.prepare``)."""
    return {"image": params.image_fit.model_dump(), "text": params.text_fit.model_dump()}
