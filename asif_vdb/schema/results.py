"""What operations return: typed records with one serialisation (``to_dict``, JSON-ready)."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field


class Result(BaseModel):
    """Base of every returned record: ``to_dict()`` is its JSON form (the CLI's ``--json`` prints it)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class Prediction(Result):
    """One class's score: ``label`` is its display name, ``id`` its class id (the name unless the label
    set gives ids)."""

    label: str
    score: float
    id: str = ""


class Classification(Result):
    """Top classes for one image, best first. ``unknown`` when no class reaches the threshold."""

    predictions: list[Prediction]
    unknown: bool = False
    threshold: float | None = None

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented way to dump a property
    @property
    def label(self) -> str | None:
        """The answer: the best class, or None when unknown."""
        if self.unknown or not self.predictions:
            return None
        return self.predictions[0].label

    @property
    def score(self) -> float:
        return self.predictions[0].score if self.predictions else 0.0


class SearchHit(Result):
    id: int
    score: float
    payload: dict[str, Any] = Field(default_factory=dict)


class Breakdown(Result):
    """Fractions of all images: right, unknown, wrong (they sum to 1), as the paper reports them."""

    n: int
    right: float
    unknown: float
    wrong: float

    @computed_field  # type: ignore[prop-decorator]
    @property
    def answered_accuracy(self) -> float:
        """Right among answered (1.0 when nothing is answered)."""
        answered = self.right + self.wrong
        return self.right / answered if answered > 0 else 1.0


class CalibrationReport(Result):
    """What ``calibrate`` chose and the breakdown without and with the threshold."""

    label_set: str
    criterion: str
    threshold: float
    target: dict[str, float]
    without: Breakdown
    with_threshold: Breakdown
    saved: bool

    def format(self) -> str:
        rows = [f"label set {self.label_set}: {self.criterion} threshold {self.threshold:.6g} "
                f"({', '.join(f'{k} {v:g}' for k, v in self.target.items())}; {self.without.n} images)",
                f"{'':16s} {'right':>7s} {'unknown':>8s} {'wrong':>7s} {'acc. answered':>14s}"]
        for name, b in (("no threshold", self.without), ("with threshold", self.with_threshold)):
            rows.append(f"{name:16s} {100 * b.right:6.1f}% {100 * b.unknown:7.1f}% {100 * b.wrong:6.1f}% "
                        f"{100 * b.answered_accuracy:13.1f}%")
        return "\n".join(rows)


class AnchorShare(Result):
    """One anchor pair's part of a score. ``share`` is query entry x candidate entry; the shares of
    every shared anchor sum to the score. Cosines are with the pair's image and caption."""

    anchor_id: int
    caption: str
    image: str | None
    image_similarity: float
    text_similarity: float
    share: float
    fraction: float


class Neighbour(Result):
    """An anchor pair close to the query in the query's own modality."""

    anchor_id: int
    caption: str
    image: str | None
    similarity: float


class AnswerExplanation(Result):
    """One answer (a class, or a gallery item) and the anchors that contributed most to its score."""

    label: str
    score: float
    texts: list[str]
    anchors: list[AnchorShare]
    shared: int
    rest: float
    item_id: int | None = None
    image: str | None = None


class Explanation(Result):
    """A query's top answers with their anchors, and the query's own nearest anchors."""

    query: str
    modality: str
    answers: list[AnswerExplanation]
    neighbours: list[Neighbour]
    unknown: bool = False
    threshold: float | None = None
    coverage: float | None = None
    coverage_threshold: float | None = None
    missing_images: list[str] = Field(default_factory=list, exclude=True)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def label(self) -> str | None:
        return None if self.unknown or not self.answers else self.answers[0].label


class Check(Result):
    """One invariant ``asif doctor`` checked: whether it holds, and what a repair did."""

    name: str
    ok: bool
    detail: str
    repaired: str = ""

    @property
    def healthy(self) -> bool:
        return self.ok or bool(self.repaired)

    def line(self) -> str:
        state = "ok" if self.ok else ("REPAIRED" if self.repaired else "PROBLEM")
        return f"[{state}] {self.name}: {self.detail}" + (f" -> {self.repaired}" if self.repaired else "")


class RefreshReport(Result):
    """What bringing the stored candidates up to date after an anchor update did."""

    candidates: int = 0
    rewritten: int = 0
    searched: int = 0
    resolved: int = 0
    galleries_behind: list[str] = Field(default_factory=list)
    seconds: dict[str, float] = Field(default_factory=dict)

    def timed(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] = round(self.seconds.get(stage, 0.0) + now - since, 4)
        return now


class RecoveryReport(Result):
    """What opening a store carried forward or rolled back after a crash."""

    completed: list[int] = Field(default_factory=list)
    rolled_back: list[int] = Field(default_factory=list)
    deleted: list[int] = Field(default_factory=list)
    refreshed: int = 0
    searched: int = 0
    transform_finished: list[str] = Field(default_factory=list)
    #: Label sets and galleries whose interrupted creation, replacement or deletion was finished /
    #: rolled back (``label set NAME``, ``gallery NAME``).
    sets_finished: list[str] = Field(default_factory=list)
    sets_rolled_back: list[str] = Field(default_factory=list)
    #: Journal entries that could not be carried out (each with the reason): they stay, queries
    #: refuse, and ``asif doctor --repair --drop-journal`` drops them.
    failed: list[str] = Field(default_factory=list)

    @property
    def anything(self) -> bool:
        return any((self.completed, self.rolled_back, self.deleted, self.refreshed, self.searched,
                    self.transform_finished, self.sets_finished, self.sets_rolled_back, self.failed))

    def describe(self) -> str:
        parts = []
        for value, what in ((self.completed, "completed {} pair(s)"),
                            (self.rolled_back, "rolled back {} half-written pair(s)"),
                            (self.deleted, "finished deleting {} pair(s)"), (self.refreshed, "refreshed {} candidate(s)"),
                            (self.searched, "searched {} candidate(s) missing their relative vector or state again"),
                            (self.transform_finished, "finished refitting the transform of {} modality(ies)")):
            if value:
                parts.append(what.format(len(value) if isinstance(value, list) else value))
        parts += [f"finished {what}" for what in self.sets_finished]
        parts += [f"rolled back the unfinished write of {what}" for what in self.sets_rolled_back]
        parts += [f"could not carry out {what}" for what in self.failed]
        return "; ".join(parts)


class TuneRow(Result):
    """One setting ``asif tune`` scored: held-out anchor retrieval both ways (maths/tune.py)."""

    k: int
    p: float
    image_whiten: float
    text_whiten: float
    score: float
    t2i_R1: float = Field(alias="t2i_R@1")
    t2i_R5: float = Field(alias="t2i_R@5")
    t2i_R10: float = Field(alias="t2i_R@10")
    i2t_R1: float = Field(alias="i2t_R@1")
    i2t_R5: float = Field(alias="i2t_R@5")
    i2t_R10: float = Field(alias="i2t_R@10")

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class TuneReport(Result):
    """What ``asif tune`` compared, what it chose and whether the store took it."""

    anchors: int
    held_out_groups: int
    rows: list[TuneRow]
    chosen: TuneRow
    #: The store's setting before tuning, when the grid holds it.
    current: TuneRow | None = None
    #: The parameters chosen (``AsifParams``, as stored).
    params: dict[str, Any]
    applied: bool = False


class ClassCoverage(Result):
    """One class's anchor support (features/coverage.py)."""

    id: str
    name: str
    #: Anchors that stand out for the class's prompts (similarity >= median + z robust std over all anchors).
    anchors: int
    #: Share of the prompts' relative vectors (squared mass, mean over templates) on those anchors.
    weight: float
    #: Mean similarity of the prompts' k anchors.
    similarity: float
    #: Captions of the anchors nearest to the class's prompts.
    nearest: list[str]
    #: Barely covered: fewer anchors stand out than the report's ``few``.
    low: bool


class CoverageReport(Result):
    """Anchor support of every class of a label set, least covered first."""

    label_set: str
    anchors: int
    stand_out_z: float
    few: int
    classes: list[ClassCoverage]
    low: list[str]
    advice: list[str]
