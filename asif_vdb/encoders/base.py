"""The encoder interface: inputs in, L2-normalised float32 rows out, with a recorded identity."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

from asif_vdb.errors import InputError
from asif_vdb.schema.encoders import EncoderIdentity

T = TypeVar("T")


def batched(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def resolve_device(device: str | None) -> str:
    """``None`` or ``"auto"`` picks cuda when present, else cpu."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class Encoder(ABC):
    """A frozen unimodal encoder. ``encode`` returns an (n, dim) L2-normalised float32 array."""

    modality: str

    @property
    @abstractmethod
    def identity(self) -> EncoderIdentity: ...

    @property
    def dim(self) -> int:
        return self.identity.dim

    @abstractmethod
    def encode(self, items: Sequence[Any], *, progress: bool = False) -> np.ndarray: ...

    def encode_skipping(self, items: Sequence[Any], *, progress: bool = False,
                        batch: int = 256) -> tuple[np.ndarray, list[int], dict[int, str]]:
        """Encode what can be read: (vectors of the good items, their positions, position -> why each
        other one failed). A batch that fails is encoded again item by item."""
        vectors: list[np.ndarray] = []
        kept: list[int] = []
        errors: dict[int, str] = {}
        for start in range(0, len(items), batch):
            chunk = list(items[start : start + batch])
            try:
                vectors.append(self.encode(chunk, progress=progress))
                kept.extend(range(start, start + len(chunk)))
                continue
            except InputError:
                pass
            for i, item in enumerate(chunk, start):
                try:
                    vectors.append(self.encode([item]))
                    kept.append(i)
                except InputError as e:
                    errors[i] = str(e)
        return (np.concatenate(vectors) if vectors else np.zeros((0, self.dim), np.float32)), kept, errors
