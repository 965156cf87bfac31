"""Embedding transforms fitted on the anchors, as pure functions (no I/O); the engine stores them.

Plain ASIF builds relative vectors from raw cosines, which with these encoders all share a large
common component. A transform per modality, fitted on the anchors and then fixed, removes it: a
signed power of each component (``power``; 0.5 tames the few large activations of a CNN's pooled
features), centring by the anchors' mean, and whitening by their covariance with shrinkage
(``whiten``: a multiple of the mean eigenvalue added to every eigenvalue; large = close to plain
centring). Anchors are stored transformed; queries and candidates are transformed before every
anchor search (benchmarks/methods_search.py measured the choice).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from asif_vdb.errors import InputError

#: Below this norm a transformed vector has no direction left (the input equals the mean).
ZERO_NORM = 1e-6


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    arr = np.asarray(vectors, dtype=np.float64)
    return arr / np.linalg.norm(arr, axis=-1, keepdims=True)


def signed_power(vectors: np.ndarray, power: float) -> np.ndarray:
    """Unit rows of ``sign(x) * |x| ** power`` (power 1 only normalises)."""
    arr = np.asarray(vectors, dtype=np.float64)
    if power != 1.0:
        arr = np.sign(arr) * np.abs(arr) ** power
    return unit_rows(arr)


@dataclass
class Transform:
    """A fitted embedding transform: ``unit((signed_power(x) - mean) @ matrix)``."""

    power: float
    mean: np.ndarray     # (d,); zeros when not centring
    matrix: np.ndarray   # (d, d); the identity when not whitening

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        out = self.project(vectors)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        if (norms < ZERO_NORM).any():
            raise InputError(f"vector #{int(np.argmin(norms))} equals the anchors' mean: it has no direction")
        return (out / norms).astype(np.float32)

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """``(signed_power(x) - mean) @ matrix`` before normalising (a zero row has no direction)."""
        arr = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
        return (signed_power(arr, self.power) - self.mean) @ self.matrix

    def invert(self, transformed: np.ndarray) -> np.ndarray:
        """The unit input vectors that ``apply`` maps to these rows (the transform is invertible:
        whitening with shrinkage is full rank). Lets a store refit without keeping raw copies."""
        t = np.atleast_2d(np.asarray(transformed, dtype=np.float64))
        u = np.linalg.solve(self.matrix.T, t.T).T  # direction of signed_power(x) - mean
        # signed_power(x) = mean + s * u with |.| = 1 and s > 0: the positive root of a quadratic.
        mu, uu, mm = u @ self.mean, np.sum(u * u, axis=1), float(self.mean @ self.mean)
        s = (-mu + np.sqrt(np.maximum(mu * mu - uu * (mm - 1.0), 0.0))) / uu
        y = self.mean + s[:, None] * u
        if self.power != 1.0:
            y = np.sign(y) * np.abs(y) ** (1.0 / self.power)
        return unit_rows(y).astype(np.float32)

    def checksum(self) -> str:
        h = hashlib.sha256(np.float64(self.power).tobytes())
        h.update(np.asarray(self.mean, np.float32).tobytes())
        h.update(np.asarray(self.matrix, np.float32).tobytes())
        return h.hexdigest()[:16]


def fit_transform(vectors: np.ndarray, power: float = 1.0, centre: bool = True,
                  whiten: float | None = None) -> Transform:
    """Fit a transform on anchor embeddings (one row per anchor).

    ``whiten`` None: no whitening; else the shrinkage s in ``(eigenvalue + s * mean eigenvalue)^-1/2``.
    Whitening implies centring."""
    if power <= 0:
        raise InputError(f"power must be positive, got {power}")
    if whiten is not None and whiten <= 0:
        raise InputError(f"whiten (the shrinkage) must be positive, got {whiten}")
    x = signed_power(np.atleast_2d(vectors), power)
    if len(x) < 2:
        raise InputError(f"fitting a transform needs at least 2 anchors, got {len(x)}")
    d = x.shape[1]
    centre = centre or whiten is not None
    mean = x.mean(axis=0) if centre else np.zeros(d)
    matrix = np.eye(d)
    if whiten is not None:
        xc = x - mean
        cov = xc.T @ xc / len(x)
        vals, vecs = np.linalg.eigh(cov)
        vals = np.maximum(vals, 0.0)
        # Symmetric (ZCA) whitening: V diag(.) V^T keeps the axes, so similarities stay comparable.
        matrix = (vecs / np.sqrt(vals + whiten * max(vals.mean(), 1e-12))) @ vecs.T
    return Transform(power=float(power), mean=mean, matrix=matrix)
