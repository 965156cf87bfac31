"""Anchor pairs whose embeddings were computed elsewhere (a GPU cluster, clip-retrieval's inference).

Two layouts are read, row-aligned part by part:

- clip-retrieval's output: ``img_emb/img_emb_N.npy``, ``text_emb/text_emb_N.npy`` and
  ``metadata/metadata_N.parquet`` (a ``caption`` column; ``image_path`` or ``url`` is kept as the
  image reference, the other columns as payload);
- plain: ``image_emb.npy`` (or ``img_emb.npy``) and ``text_emb.npy`` beside one table
  ``metadata.{parquet,csv,tsv,jsonl}``.

Arrays are memory-mapped and written in batches, so memory stays bounded whatever the size. Each
pair is keyed by a hash of its image vector and its caption: a rerun skips the stored pairs, so an
interrupted import resumes. A row with a non-finite or all-zero vector or an empty caption is
skipped and reported like any bad sample; a part whose files disagree (dimension, row count) is
refused naming them. The store must be made by the encoders the embeddings come from (declared with
``--image-encoder``/``--text-encoder``; an existing store's are checked).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from asif_vdb import InputError, pair_hash

from .config import IngestConfig
from .readers.base import derive_source
from .readers.table import TABLE_EXTS, read_rows
from .report import IngestSummary, SkipReport, StageTimes
from .sample import Skipped
from .write import CORE_FIELDS, json_safe

REFERENCE_COLUMNS = ("image_path", "image", "url", "key")
_PART = re.compile(r"_(\d+)\.(npy|parquet)$")


@dataclass(frozen=True)
class Part:
    """One row-aligned group of files."""

    name: str
    image: str
    text: str
    metadata: str


def find_parts(root: str) -> list[Part]:
    """The parts of an embeddings folder, in order; InputError naming the expected layouts."""
    if not os.path.isdir(root):
        raise InputError(f"ingest --embeddings: {root} is not a folder")
    if os.path.isdir(os.path.join(root, "img_emb")):
        def numbered(sub: str) -> dict[int, str]:
            folder = os.path.join(root, sub)
            found = {}
            for name in os.listdir(folder) if os.path.isdir(folder) else []:
                m = _PART.search(name)
                if m:
                    found[int(m.group(1))] = os.path.join(folder, name)
            return found

        img, txt, meta = numbered("img_emb"), numbered("text_emb"), numbered("metadata")
        missing = [f"part {i}" for i in sorted(img) if i not in txt or i not in meta]
        if missing or not img:
            raise InputError(f"ingest --embeddings: {root} (clip-retrieval layout) needs img_emb_N.npy, text_emb_N.npy "
                             f"and metadata_N.parquet for every N; incomplete: {', '.join(missing) or 'no parts'}")
        return [Part(f"part {i}", img[i], txt[i], meta[i]) for i in sorted(img)]
    image = next((os.path.join(root, n) for n in ("image_emb.npy", "img_emb.npy") if os.path.isfile(os.path.join(root, n))),
                 None)
    text = os.path.join(root, "text_emb.npy")
    tables = [os.path.join(root, f"metadata{ext}") for ext in TABLE_EXTS if os.path.isfile(os.path.join(root, f"metadata{ext}"))]
    if image is None or not os.path.isfile(text) or len(tables) != 1:
        raise InputError(f"ingest --embeddings: {root} holds neither clip-retrieval's output (img_emb/, text_emb/, "
                         "metadata/) nor image_emb.npy + text_emb.npy + one metadata table (.parquet/.csv/.tsv/.jsonl)")
    return [Part("all", image, text, tables[0])]


def _matrix(path: str) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable .npy array ({e})") from e
    if arr.ndim != 2 or arr.dtype.kind not in "fiu":
        raise InputError(f"{path}: expected a 2-D array of real numbers, got shape {arr.shape} dtype {arr.dtype}")
    return arr


def _rows(part: Part, encoding: str) -> Iterator[dict[str, Any] | str]:
    for _, row in read_rows(part.metadata, encoding):
        yield row


class EmbeddingImport:
    """One run of ``config`` (``config.embeddings``) against ``client``."""

    def __init__(self, client: Any, config: IngestConfig) -> None:
        self.client, self.config = client, config
        self.parts = find_parts(config.input)
        self.source = config.source or derive_source(config.input)
        self.summary = IngestSummary(input=config.input, format="embeddings", source=self.source,
                                     dry_run=config.dry_run, report=config.report)
        self.report = SkipReport(config.report)
        self.times = StageTimes()

    def _check(self) -> list[tuple[Part, np.ndarray, np.ndarray]]:
        """Every part's arrays, checked against each other and the store before anything is written."""
        out, dims = [], None
        for part in self.parts:
            img, txt = _matrix(part.image), _matrix(part.text)
            if len(img) != len(txt):
                raise InputError(f"ingest --embeddings: {part.image} has {len(img)} rows but {part.text} {len(txt)}")
            pair = (img.shape[1], txt.shape[1])
            if dims is not None and pair != dims:
                raise InputError(f"ingest --embeddings: {part.image} / {part.text} have dimensions {pair}, "
                                 f"the first part {dims}")
            dims = pair
            out.append((part, img, txt))
        if dims is not None and not self.config.dry_run:
            self.client.prepare_for_embeddings(*dims)
        return out

    def run(self) -> IngestSummary:
        t_start = time.perf_counter()
        s = self.summary
        with self.times.time("setup"):
            parts = self._check()
        bar = tqdm(total=sum(len(img) for _, img, _ in parts), desc="ingest embeddings", unit="pair",
                   disable=not self.config.progress, dynamic_ncols=True)
        # one bulk load: the anchor index and any refit of the tuned method run once, at the end
        bulk = self.client.bulk_load() if not self.config.dry_run else contextlib.nullcontext()
        try:
            with bulk:
                self._run(parts, bar)
        finally:
            bar.close()
            self.report.close()
        s.skipped, s.notes = dict(self.report.skipped), dict(self.report.notes)
        s.seconds = {k: v for k, v in self.times.seconds.items() if v}
        s.wall_s = time.perf_counter() - t_start
        s.anchors = self.client.count() if not self.config.dry_run else 0
        return s

    def _run(self, parts: list[tuple[Part, np.ndarray, np.ndarray]], bar: Any) -> None:
        taken = 0
        for part, img, txt in parts:
            rows = _rows(part, self.config.encoding)
            for start in range(0, len(img), self.config.batch):
                if self.config.limit is not None and taken >= self.config.limit:
                    return
                n = min(self.config.batch, len(img) - start)
                if self.config.limit is not None:
                    n = min(n, self.config.limit - taken)
                meta = list(islice(rows, n))
                if len(meta) < n:
                    raise InputError(f"ingest --embeddings: {part.metadata} has fewer rows than {part.image} "
                                     f"({start + len(meta)} < {len(img)})")
                self._batch(part, start, np.asarray(img[start:start + n], np.float32),
                            np.asarray(txt[start:start + n], np.float32), meta)
                taken += n
                bar.update(n)
                self.report.flush()

    def _batch(self, part: Part, start: int, img: np.ndarray, txt: np.ndarray, meta: list[dict[str, Any] | str]) -> None:
        s = self.summary
        s.read += len(meta)
        keep, payloads = [], []
        seen: set[str] = set()
        with self.times.time("hash"):
            for j, row in enumerate(meta):
                key = f"{os.path.basename(part.metadata)}/{start + j}"
                reason = _bad(img[j], txt[j], row)
                if reason is not None:
                    self.report.skip(Skipped(key, *reason), "read")
                    continue
                assert isinstance(row, dict)
                s.pairs += 1
                caption = str(row["caption"]).strip()
                digest = pair_hash(hashlib.sha256(img[j].tobytes()).hexdigest(), caption)
                if digest in seen:
                    self.report.skip(Skipped(key, "duplicate", "same embeddings and caption earlier in the batch"), "lookup")
                    continue
                seen.add(digest)
                ref = next((str(row[c]) for c in REFERENCE_COLUMNS if row.get(c)), "")
                extra = {str(k): json_safe(v) for k, v in row.items() if k not in ("caption", *REFERENCE_COLUMNS)}
                extra = {f"meta_{k}" if k in CORE_FIELDS else k: v for k, v in extra.items()}
                keep.append(j)
                payloads.append({**extra, "image": ref, "caption": caption, "source": self.source, "key": key,
                                 "hash": digest})
        if self.config.dry_run:  # checked and counted, nothing looked up or written
            s.ingested += len(keep)
            return
        if not keep:
            return
        with self.times.time("lookup"):
            stored = self.client.stored_pairs([p["hash"] for p in payloads])
        new = [(j, p) for j, p in zip(keep, payloads) if p["hash"] not in stored]
        for _, p in ((j, p) for j, p in zip(keep, payloads) if p["hash"] in stored):
            s.already_stored += 1
            self.report.skip(Skipped(p["key"], "already_stored", f"anchor {stored[p['hash']]}"), "lookup")
        if new:
            rows = [j for j, _ in new]
            with self.times.time("write"):
                self.client.add_anchor_embeddings(img[rows], txt[rows], [p for _, p in new])
            s.ingested += len(new)


def _bad(image: np.ndarray, text: np.ndarray, row: dict[str, Any] | str) -> tuple[str, str] | None:
    """Why a row cannot be a pair (reason, detail), or None."""
    if isinstance(row, str):
        return "bad_row", row
    caption = row.get("caption")
    if not isinstance(caption, str) or not caption.strip():
        return "empty_caption", repr(caption)[:80]
    for what, vec in (("image", image), ("caption", text)):
        if not np.isfinite(vec).all():
            return "bad_embedding", f"{what} vector holds NaN or infinite values"
        if not np.any(vec):
            return "bad_embedding", f"{what} vector is all zeros"
    return None


def run_embeddings(client: Any, config: IngestConfig) -> IngestSummary:
    """Import the pairs of an embeddings folder (see the module docstring) into ``client``'s store."""
    return EmbeddingImport(client, config).run()
