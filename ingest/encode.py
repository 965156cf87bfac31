"""Encode stage: batched image forward passes fed by a bounded, in-order decode prefetch; captions.

Images are keyed by their content digest, so an image with five captions is decoded and encoded
once. Decoding runs at most `window` images ahead of the encoder, which bounds the memory held in
preprocessed tensors (about 0.6 MB each at 224x224) while keeping the forward pass fed.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from .decode import DecodeFailure, Decoder
from .report import StageTimes

BatchEncode = Callable[[list[Any]], np.ndarray]

#: What `ImageStage.result` holds for an image: its vector, why it failed, or None (dry run: ok).
ImageResult = np.ndarray | DecodeFailure | None


def image_batch_encoder(encoder: Any) -> tuple[Callable[[Any], Any] | None, BatchEncode]:
    """(per-image preprocess, batch encode) for an image encoder: stacked tensors for encoders with
    `preprocess` + `encode_tensors` (timm), else decoded images through `encode`."""
    if all(hasattr(encoder, a) for a in ("preprocess", "encode_tensors", "transform")):
        import torch

        return encoder.transform, lambda xs: encoder.encode_tensors(torch.stack(xs))
    return None, lambda xs: encoder.encode(xs)


class ImageStage:
    """Decode in a thread pool, in submission order, at most `window` images ahead; encode in
    batches of `batch` on the calling thread. Results are reference-counted per digest."""

    def __init__(self, build: Callable[[], tuple[Decoder, BatchEncode | None, int]], *,
                 prefetch_batches: int, workers: int, times: StageTimes) -> None:
        """`build()` returns (decoder, batch encode or None for a dry run, batch size); it runs on
        the first image asked for, so a run whose pairs are all stored never loads the model."""
        self._build, self.prefetch_batches, self.workers = build, prefetch_batches, workers
        self.decoder: Decoder | None = None
        self.encode: BatchEncode | None = None
        self.batch, self.window = 16, 16 * prefetch_batches
        self.times = times
        self.pool: ThreadPoolExecutor | None = None
        self.waiting: deque[tuple[str, bytes, str]] = deque()
        self.inflight: deque[tuple[str, Future[Any]]] = deque()
        self.queued: set[str] = set()
        self.results: dict[str, ImageResult] = {}
        self.refs: Counter[str] = Counter()
        self.encoded = 0

    def _start(self) -> ThreadPoolExecutor:
        if self.pool is None:
            with self.times.time("setup"):
                self.decoder, self.encode, self.batch = self._build()
            self.window = self.batch * self.prefetch_batches
            self.pool = ThreadPoolExecutor(max_workers=self.workers,
                                           thread_name_prefix="ingest-decode")
        return self.pool

    def _decode(self, data: bytes, ref: str) -> Any:
        assert self.decoder is not None
        with self.times.time("decode"):
            return self.decoder(data, ref)

    def _pump(self) -> None:
        while self.waiting and len(self.inflight) < self.window:
            digest, data, ref = self.waiting.popleft()
            self.inflight.append((digest, self._start().submit(self._decode, data, ref)))

    def want(self, digest: str, data: bytes, ref: str) -> None:
        """Ask for an image's vector; decoding starts when the window has room."""
        self.refs[digest] += 1
        if digest in self.results or digest in self.queued:
            return
        self.queued.add(digest)
        self.waiting.append((digest, data, ref))
        self._pump()

    @property
    def pending(self) -> int:
        """Images asked for and not encoded yet."""
        return len(self.waiting) + len(self.inflight)

    def step(self) -> None:
        """Encode the next batch at the head of the queue (waiting for its decodes)."""
        self._pump()
        head = [self.inflight.popleft() for _ in range(min(self.batch, len(self.inflight)))]
        with self.times.time("decode_wait"):
            decoded = [(digest, future.result()) for digest, future in head]
        self._pump()  # refill the window before the forward pass occupies this thread
        ok: list[tuple[str, Any]] = []
        for digest, item in decoded:
            self.queued.discard(digest)
            if isinstance(item, DecodeFailure):
                self.results[digest] = item
            else:
                ok.append((digest, item))
        if not ok:
            return
        if self.encode is None:
            for digest, _ in ok:
                self.results[digest] = None
            return
        with self.times.time("encode_image"):
            vectors = self.encode([item for _, item in ok])
        self.encoded += len(ok)
        for (digest, _), vec in zip(ok, vectors, strict=True):
            self.results[digest] = vec

    def ensure(self, digests: Iterable[str]) -> None:
        """Step until every digest has a result (they must have been asked for)."""
        for digest in digests:
            while digest not in self.results:
                if not self.inflight and not self.waiting:
                    raise RuntimeError(f"image {digest[:12]} was never asked for")
                self.step()

    def result(self, digest: str) -> ImageResult:
        return self.results[digest]

    def release(self, digests: Sequence[str]) -> None:
        """Drop one reference per digest; a result nobody waits for is freed."""
        for digest in digests:
            self.refs[digest] -= 1
            if self.refs[digest] <= 0:
                del self.refs[digest]
                self.results.pop(digest, None)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


class TextStage:
    """Caption vectors through the client, and which captions exceed the encoder's window.

    The text encoder is loaded on first use (a run with nothing new never loads it)."""

    def __init__(self, client: Any, times: StageTimes) -> None:
        self.client, self.times = client, times
        self._encoder: Any = None

    def _load(self) -> Any:
        if self._encoder is None:
            with self.times.time("setup"):
                self._encoder = self.client.encoder("text")
        return self._encoder

    @property
    def max_tokens(self) -> int | None:
        return getattr(self._load(), "max_seq_length", None)

    def token_counts(self, captions: list[str]) -> list[int | None]:
        """Tokens per caption where the encoder can tell (special tokens included)."""
        if not captions:
            return []
        count = getattr(self._load(), "count_tokens", None)
        if count is None or self.max_tokens is None:
            return [None] * len(captions)
        quiet = logging.getLogger("transformers.tokenization_utils_base")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # counting long captions is the point: no warning about them
        try:
            with self.times.time("encode_text"):
                return list(count(captions))
        finally:
            quiet.setLevel(level)

    def encode(self, captions: list[str]) -> np.ndarray:
        self._load()
        with self.times.time("encode_text"):
            return self.client.encode_texts(captions)
