"""Encode stage: batched image forward passes fed by a bounded, in-order decode prefetch, and
caption batches, as jobs of a compute pool (on CPU: run on the pipeline's thread, in order).

Images are keyed by their content digest, so an image with five captions is decoded and encoded
once. Decoding runs at most `window` images ahead of the encoder, which bounds the memory held in
decoded images (about 0.15 MB each at 224x224: uint8 pixels, normalised per batch) while keeping
the forward passes fed.
"""

from __future__ import annotations

import copy
import sys
import threading
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .decode import DecodeFailure, Decoder
from .report import StageTimes

BatchEncode = Callable[[list[Any]], np.ndarray]

#: What `ImageStage.result` holds for an image: its vector, why it failed, or None (dry run: ok).
ImageResult = np.ndarray | DecodeFailure | None


def image_batch_encoder(encoder: Any) -> tuple[Callable[[Any], Any] | None, BatchEncode]:
    """(per-image preprocess, batch encode) for an image encoder: stacked uint8 pixels for encoders
    with `pixel_transform` + `encode_pixels` (timm: normalised per batch in the compute stream),
    stacked tensors for encoders with `transform` + `encode_tensors`, else decoded images
    through `encode`."""
    if getattr(encoder, "pixel_transform", None) is not None and hasattr(encoder, "encode_pixels"):
        import torch

        return encoder.pixel_transform, lambda xs: encoder.encode_pixels(torch.stack(xs))
    if all(hasattr(encoder, a) for a in ("preprocess", "encode_tensors", "transform")):
        import torch

        return encoder.transform, lambda xs: encoder.encode_tensors(torch.stack(xs))
    return None, lambda xs: encoder.encode(xs)


class ComputePool:
    """Model forward passes, image batches and caption batches alike, in submission order: on
    `streams` threads, or (`inline`) each in the thread that first asks for its result.

    On CPU the pipeline runs inline with torch's own threads: its thread, which keeps the decoders
    fed, runs each forward pass when it needs the result, as the encoder alone does. Measured on 2
    shared cores (tf_efficientnet_lite0, batch 4, decoding beside it): the same forward passes
    handed to a separate thread ran at 120-170 img/s against 210-240 inline, and two
    single-threaded streams (`threads=1`, no OpenMP barriers) at about 180. On a GPU one stream
    thread keeps the pipeline reading while the device computes, with torch's threads left alone.
    """

    def __init__(self, streams: int, threads: int | None, *, inline: bool = False) -> None:
        self.streams, self.threads, self.inline = streams, threads, inline
        self._previous = current_torch_threads() if threads is not None else None
        self.pool = None if inline else ThreadPoolExecutor(
            max_workers=streams, thread_name_prefix="ingest-encode", initializer=_thread_setup(threads))

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        if self.pool is None:
            return _Deferred(fn, args)
        return self.pool.submit(fn, *args)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        torch = sys.modules.get("torch")
        if self._previous is not None and torch is not None:
            torch.set_num_threads(self._previous)  # the default for threads started later


class _Deferred(Future[Any]):
    """An inline job: it runs in the first thread that asks for its result (never if none does)."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        super().__init__()
        self._job: tuple[Callable[..., Any], tuple[Any, ...]] | None = (fn, args)

    def result(self, timeout: float | None = None) -> Any:
        if self._job is not None:
            fn, args = self._job
            self._job = None
            try:
                self.set_result(fn(*args))
            except BaseException as e:  # re-raised below, in the asking thread
                self.set_exception(e)
        return super().result(timeout)


class ImageStage:
    """Decode in a thread pool, at most `window` images ahead, and encode in batches of `batch`
    on the compute pool, in order. Results are reference-counted per image digest."""

    def __init__(self, build: Callable[[], tuple[Decoder, BatchEncode | None, int]],
                 compute: Callable[[], ComputePool], *, prefetch_batches: int, workers: int,
                 times: StageTimes) -> None:
        """`build()` returns (decoder, batch encode or None for a dry run, batch size); it runs on
        the first image asked for, so a run whose pairs are all stored never loads the model."""
        self._build, self._compute = build, compute
        self.prefetch_batches, self.workers, self.times = prefetch_batches, workers, times
        self.decoder: Decoder | None = None
        self.encode: BatchEncode | None = None
        self.batch, self.window = 16, 16 * prefetch_batches
        self.pool: ThreadPoolExecutor | None = None
        self.waiting: deque[tuple[str, bytes, str]] = deque()  # not yet decoding
        self.decoding: deque[tuple[str, Future[Any]]] = deque()  # decoding, in no batch yet
        self.jobs: deque[tuple[list[str], Future[list[tuple[str, ImageResult]]]]] = deque()
        self.outstanding = 0  # images decoding or in a batch not collected yet
        self.queued: set[str] = set()
        self.results: dict[str, ImageResult] = {}
        self.refs: Counter[str] = Counter()
        self.encoded = 0
        self.closed = False  # no more images will be asked for

    def _start(self) -> ThreadPoolExecutor:
        if self.pool is None:
            with self.times.time("setup"):
                self.decoder, self.encode, self.batch = self._build()
                compute = self._compute()
            self.window = self.batch * max(self.prefetch_batches, compute.streams + 1)
            self.pool = ThreadPoolExecutor(
                max_workers=self.workers, thread_name_prefix="ingest-decode", initializer=_thread_setup(compute.threads))
        return self.pool

    def _decode(self, data: bytes, ref: str) -> Any:
        assert self.decoder is not None
        with self.times.time("decode"):
            return self.decoder(data, ref)

    def _encode_batch(self, items: list[tuple[str, Future[Any]]]) -> list[tuple[str, ImageResult]]:
        """A compute-pool job: wait for the batch's decodes, encode the good ones."""
        with self.times.time("decode_wait"):
            decoded = [(digest, future.result()) for digest, future in items]
        ok = [(d, x) for d, x in decoded if not isinstance(x, DecodeFailure)]
        out: list[tuple[str, ImageResult]] = [(d, x) for d, x in decoded
                                              if isinstance(x, DecodeFailure)]
        if self.encode is None:
            return out + [(d, None) for d, _ in ok]
        if ok:
            with self.times.time("encode_image"):
                vectors = self.encode([x for _, x in ok])
            out += [(d, v) for (d, _), v in zip(ok, vectors, strict=True)]
        return out

    def _dispatch(self, n: int) -> None:
        items = [self.decoding.popleft() for _ in range(min(n, len(self.decoding)))]
        if items:
            job = self._compute().submit(self._encode_batch, items)
            self.jobs.append(([d for d, _ in items], job))

    def _pump(self) -> None:
        while self.waiting and self.outstanding < self.window:
            digest, data, ref = self.waiting.popleft()
            self.decoding.append((digest, self._start().submit(self._decode, data, ref)))
            self.outstanding += 1
        while len(self.decoding) >= self.batch:
            self._dispatch(self.batch)
        if self.closed and not self.waiting and self.decoding:
            self._dispatch(self.batch)  # the last, partial batch: beside the others, not after

    def want(self, digest: str, data: bytes, ref: str) -> None:
        """Ask for an image's vector; decoding starts when the window has room."""
        self.refs[digest] += 1
        if digest in self.results or digest in self.queued:
            return
        self.queued.add(digest)
        self.waiting.append((digest, data, ref))
        self._pump()

    def close_input(self) -> None:
        """No more images will be asked for: the last partial batch can go out."""
        self.closed = True
        if self.pool is not None:
            self._pump()

    def _collect(self) -> None:
        """Results of the oldest batch (waiting for it), then room for more decoding."""
        digests, job = self.jobs.popleft()
        with self.times.time("encode_wait"):
            results = job.result()
        for digest, result in results:
            self.results[digest] = result
            self.queued.discard(digest)
            self.encoded += isinstance(result, np.ndarray)
        self.outstanding -= len(digests)
        self._pump()

    @property
    def starved(self) -> bool:
        """Fewer images queued than the window: ask for more now, or the decoders run dry at the
        end of what is queued (and the compute streams with them)."""
        return len(self.waiting) < self.window

    def ready(self, digests: Iterable[str]) -> bool:
        return all(d in self.results for d in digests)

    def step(self) -> None:
        """One move towards results: collect the oldest batch (waiting for it), else send out a
        partial batch (only when nothing else is in flight), else start decoding."""
        if self.jobs:
            self._collect()
        elif self.decoding:
            self._dispatch(self.batch)
        elif self.waiting:
            self._pump()
        else:
            raise RuntimeError("image stage: nothing asked for is left to wait for")

    def ensure(self, digests: Iterable[str]) -> None:
        """Wait until every digest has a result (they must have been asked for)."""
        for digest in digests:
            while digest not in self.results:
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


@dataclass
class TextResult:
    vectors: np.ndarray | None  # None in a dry run
    tokens: list[int | None]  # tokens per caption, special tokens included (None: unknown)


#: Text encoders whose tokenizer is settled, with a private tokenizer copy for counting.
_SETTLED: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


class TextStage:
    """Caption vectors and token counts, as jobs on the compute pool.

    Captions do not wait for images: a batch's captions are submitted as soon as its new pairs are
    known, and run beside the image batches. The text encoder is loaded on first use (a run with
    nothing new never loads it).
    """

    def __init__(self, client: Any, compute: Callable[[], ComputePool], times: StageTimes, *,
                 dry_run: bool) -> None:
        self.client, self._compute, self.times, self.dry_run = client, compute, times, dry_run
        self._encoder: Any = None
        self._counter: Any = None  # a private tokenizer copy for counting tokens
        self._count_lock = threading.Lock()

    def _load(self) -> Any:
        """Load the encoder and settle its tokenizer before jobs share it across threads: a fast
        tokenizer whose truncation settings change while another thread encodes raises
        "Already borrowed", so the encoder's own tokenizer is only ever used with one setting
        (a warm-up call fixes it) and token counts (no truncation) use a copy."""
        if self._encoder is None:
            with self.times.time("setup"):
                encoder = self.client.encoder("text")
                if encoder not in _SETTLED:  # encoders live as long as the process (get_encoder)
                    encoder.encode(["warm up"])
                    tokenizer = getattr(getattr(encoder, "model", None), "tokenizer", None)
                    _SETTLED[encoder] = copy.deepcopy(tokenizer) if callable(tokenizer) else None
                self._counter = _SETTLED[encoder]
                self._encoder = encoder
        return self._encoder

    @property
    def max_tokens(self) -> int | None:
        return getattr(self._load(), "max_seq_length", None)

    def submit(self, captions: list[str]) -> Future[TextResult]:
        self._load()
        return self._compute().submit(self._run, captions)

    def _run(self, captions: list[str]) -> TextResult:
        with self.times.time("encode_text"):
            tokens = self._token_counts(captions)
            if self.dry_run or not captions:
                return TextResult(None, tokens)
            return TextResult(self.client.encode_texts(captions), tokens)

    def _token_counts(self, captions: list[str]) -> list[int | None]:
        """Tokens per caption, special tokens included (what the encoder's window counts)."""
        if not captions or self.max_tokens is None:
            return [None] * len(captions)
        with self._count_lock:
            if self._counter is not None:
                ids = self._counter(captions, add_special_tokens=True, truncation=False,
                                    verbose=False)["input_ids"]  # verbose: no long-input warning
                return [len(x) for x in ids]
            count = getattr(self._encoder, "count_tokens", None)
            return list(count(captions)) if count is not None else [None] * len(captions)


def current_torch_threads() -> int | None:
    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else None


def set_torch_threads(n: int) -> None:
    """Set the calling thread's torch intra-op threads (OpenMP keeps this per thread; threads
    started later inherit the last value set); nothing when torch is not loaded."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _thread_setup(threads: int | None) -> Callable[[], None] | None:
    """A pool thread's initializer that sets its torch threads (None: leave them as they are)."""
    if threads is None:
        return None
    n = threads
    return lambda: set_torch_threads(n)
