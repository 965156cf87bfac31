"""What queries return: small typed records, easy to print and to serialise."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float


@dataclass
class Classification:
    """Top classes for one image, best first. ``unknown`` when no class reaches the threshold."""

    predictions: list[Prediction]
    unknown: bool = False
    threshold: float | None = None

    @property
    def label(self) -> str | None:
        """The answer: the best class, or None when unknown."""
        if self.unknown or not self.predictions:
            return None
        return self.predictions[0].label

    @property
    def score(self) -> float:
        return self.predictions[0].score if self.predictions else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "unknown": self.unknown, "threshold": self.threshold,
                "predictions": [asdict(p) for p in self.predictions]}


@dataclass(frozen=True)
class SearchHit:
    id: int
    score: float
    payload: dict[str, Any] = field(default_factory=dict)
