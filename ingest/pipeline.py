"""The ingestion pipeline: read -> hash -> look up -> decode + preprocess -> encode -> write.

A reader thread reads samples, loads their bytes and hashes each pair (`prepare`), handing batches
over a bounded queue. The calling thread looks each batch up in the store (pairs already stored
are skipped before any decoding, which makes a rerun or a resumed run cheap), asks the image stage
for the images of new pairs (decoded in worker threads, a bounded window ahead) and submits the
batch's captions; image batches and caption batches are jobs of `encode.ComputePool` (on CPU
run by this thread, with torch's threads, while the decoders and the reader work ahead).
Batches are finished in input order: image vectors, caption vectors, one `add_anchor_embeddings`
call. So an interrupted run leaves a prefix of whole batches (plus at most
one batch half-written, which opening the store repairs) and the same command resumes after it.
"""

from __future__ import annotations

import os
import queue
import tarfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from asif_vdb import InputError

from .config import IngestConfig
from .decode import DecodeFailure, Decoder
from .embeddings import run_embeddings
from .encode import ComputePool, ImageStage, TextResult, TextStage, image_batch_encoder
from .prepare import Pair, Preparer
from .readers import Reader, TableReader, WebDatasetReader, detect_format, open_reader
from .report import IngestSummary, SkipReport, StageTimes
from .sample import Sample, Skipped
from .write import write_pairs

#: Pairs in the first batch handed over: the encoders start after a few images are read, not
#: after a whole batch (256 pairs from a shard: about 0.1 s); later batches double up to `batch`.
FIRST_BATCH = 32


@dataclass
class ReadBatch:
    """What the reader thread hands over: prepared pairs and the skips met on the way."""

    pairs: list[Pair] = field(default_factory=list)
    skipped: list[tuple[Skipped, str]] = field(default_factory=list)  # (skip, stage)
    items: int = 0  # reader items consumed (for the progress bar)
    samples: int = 0  # pairs the reader yielded (before the hash stage's checks)


@dataclass
class WorkBatch:
    """New pairs of one read batch, waiting for their image and caption vectors."""

    pairs: list[Pair]
    items: int
    text: Future[TextResult] | None = None

    @property
    def digests(self) -> list[str]:
        return [p.image_digest for p in self.pairs]


class _End:
    """End of input from the reader thread (with the error that ended it, if any)."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def _reader(path_reader: Reader, config: IngestConfig, out: queue.Queue[Any],
            stop: threading.Event, times: StageTimes) -> None:
    """Reader thread body: never raises; a reader that fails mid-stream ends the input early."""

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    prepare = Preparer()
    batch = ReadBatch()
    samples = 0
    size = min(config.batch, FIRST_BATCH)  # doubles up to config.batch
    try:
        it: Iterator[Sample | Skipped] = iter(path_reader)
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                item = next(it, None)
            except Exception as e:  # a reader bug or an unreadable file mid-stream
                item = Skipped(config.input, "read_error", f"{type(e).__name__}: {e}")
                batch.skipped.append((item, "read"))
                batch.items += 1
                item = None
            times.add("read", time.perf_counter() - t0)
            if item is None:
                break
            if isinstance(item, Sample):
                if config.limit is not None and samples >= config.limit:
                    break
                samples += 1
                batch.samples += 1
                with times.time("hash"):
                    prepared = prepare(item)
                if isinstance(prepared, Pair):
                    batch.pairs.append(prepared)
                else:
                    batch.skipped.append((prepared, "hash"))
            else:
                batch.skipped.append((item, "read"))
            batch.items += 1
            if len(batch.pairs) >= size or len(batch.skipped) >= 4 * config.batch:
                if not put(batch):
                    return
                batch = ReadBatch()
                size = min(2 * size, config.batch)
        if batch.items and not put(batch):
            return
        put(_End())
    except BaseException as e:  # hand anything unexpected to the main thread
        put(_End(e))


def estimate_total(reader: Reader, config: IngestConfig) -> int | None:
    """Items the reader will yield, for the progress bar's ETA; approximate where counting
    exactly would cost a full read (a CSV caption with a newline inside counts twice)."""
    total = reader.estimate()
    if total is None and isinstance(reader, TableReader) and reader.kind != ".parquet":
        with open(reader.path, "rb") as f:
            lines = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
        total = max(lines - (0 if reader.kind == ".jsonl" else 1), 0)
    elif total is None and isinstance(reader, WebDatasetReader):
        total = 0
        for shard in reader.shards:
            try:
                with tarfile.open(shard, "r:") as tar:  # uncompressed: headers only, data skipped
                    total += len({_wds_key(m.name) for m in tar.getmembers() if m.isfile()})
            except (tarfile.TarError, OSError):
                continue
    if total is not None and config.limit is not None:
        total = min(total, config.limit)
    return total


class Pipeline:
    """One run of `config` against `client` (an AsifClient); use `run_ingest`."""

    def __init__(self, client: Any, config: IngestConfig) -> None:
        self.client = client
        self.config = config.check()
        self.times = StageTimes()
        fmt, self.reader = open_input(config)
        self.summary = IngestSummary(input=config.input, format=fmt,
                                     source=getattr(self.reader, "source", config.source or ""),
                                     dry_run=config.dry_run, report=config.report)
        self.report = SkipReport(config.report)
        self.seen: dict[bytes, str] = {}  # pair hash (first 16 bytes) -> first key, this run
        self._creating: tuple[threading.Thread, list[BaseException]] | None = None
        self._compute_pool: ComputePool | None = None
        self._bulk: AbstractContextManager[None] | None = None

    # -- stages on the calling thread ----------------------------------------------------------
    def _admit(self, batch: ReadBatch, stage: ImageStage, store_had_pairs: bool) -> WorkBatch:
        """Report the batch's skips, drop pairs already stored or seen, ask for new images."""
        s = self.summary
        s.read += batch.items
        s.pairs += batch.samples
        for item, where in batch.skipped:
            self.report.skip(item, where)
        existing: dict[str, int] = {}
        if store_had_pairs and batch.pairs:
            with self.times.time("lookup"):
                existing = self.client.stored_pairs([p.hash for p in batch.pairs])
        new: list[Pair] = []
        for p in batch.pairs:
            key = bytes.fromhex(p.hash)[:16]
            if p.hash in existing:
                s.already_stored += 1
                self.report.skip(Skipped(p.sample.key, "already_stored",
                                         f"anchor {existing[p.hash]}"), "lookup")
            elif key in self.seen:
                self.report.skip(Skipped(p.sample.key, "duplicate",
                                         f"same image and caption as {self.seen[key]}"), "lookup")
            else:
                self.seen[key] = p.sample.key
                new.append(p)
                stage.want(p.image_digest, p.image_bytes, p.sample.image_ref)
        return WorkBatch(new, batch.items)

    def _submit_text(self, work: WorkBatch, text: TextStage) -> None:
        if work.pairs:
            work.text = text.submit([p.caption for p in work.pairs])

    def _finish(self, work: WorkBatch, stage: ImageStage, text: TextStage, bar: Any) -> None:
        """Image vectors (waiting for them), caption vectors, then one write."""
        stage.ensure(work.digests)
        captions = TextResult(None, [])
        if work.text is not None:
            with self.times.time("encode_wait"):
                captions = work.text.result()
        good: list[int] = []
        vectors: list[Any] = []
        for row, p in enumerate(work.pairs):
            result = stage.result(p.image_digest)
            if isinstance(result, DecodeFailure):
                self.report.skip(Skipped(p.sample.key, result.reason, result.detail), "decode")
                continue
            good.append(row)
            vectors.append(result)
            n, limit = captions.tokens[row], text.max_tokens
            if n is not None and limit is not None and n > limit:
                self.report.note(p.sample.key, "caption_truncated",
                                 f"{n} tokens; the text encoder reads the first {limit}")
        if good and captions.vectors is not None:
            pairs = [work.pairs[r] for r in good]
            text_vectors = captions.vectors[good]
            with self.times.time("write"):
                self._store_ready()
                if self._bulk is None:  # one bulk load: the index and any refit run once, at the end
                    self._bulk = self.client.bulk_load()
                    self._bulk.__enter__()
                for source, rows in _by_source(pairs).items():
                    write_pairs(self.client, [pairs[i] for i in rows],
                                np.stack([vectors[i] for i in rows]), text_vectors[rows], source)
        self.summary.ingested += len(good)
        stage.release(work.digests)
        self.report.flush()
        bar.update(work.items)
        bar.set_postfix(new=self.summary.ingested, skipped=sum(self.report.skipped.values()),
                        refresh=False)

    def _build_images(self) -> tuple[Decoder, Any, int]:
        cfg = self.config
        if cfg.dry_run:  # decode and check, no model
            return Decoder(None, min_side=cfg.min_side, max_pixels=cfg.max_pixels), None, \
                cfg.image_batch or 16
        encoder = self.client.encoder("image")
        transform, encode = image_batch_encoder(encoder)
        batch = cfg.image_batch or getattr(encoder, "batch_size", None) or 16
        shape = getattr(encoder, "data_config", {}).get("input_size")
        traced = getattr(encoder, "_traced", None) is not None  # TimmImageEncoder's CPU trace
        if transform is not None and shape and not traced:  # trace and optimise the model here,
            from PIL import Image  # once, before the streams share it (the 2nd call runs the
            # optimised plan); a blank image through the decoder's own transform fits either input
            blank = transform(Image.new("RGB", (int(shape[-1]), int(shape[-2]))))
            for _ in range(2):
                encode([blank] * batch)
        return Decoder(transform, min_side=cfg.min_side, max_pixels=cfg.max_pixels), encode, batch

    def _compute(self) -> ComputePool:
        """The pool that runs forward passes, made on first use (the encoders are loaded then)."""
        if self._compute_pool is None:
            streams, threads, inline = 1, None, False
            device = "cpu" if self.config.dry_run else \
                str(getattr(self.client.encoder("image"), "device", "cpu"))
            if device == "cpu" and not self.config.dry_run:
                streams = self.config.streams or 1
                threads = 1 if streams > 1 else None
                inline = streams == 1  # on this thread, with torch's threads (see ComputePool)
            self._compute_pool = ComputePool(streams, threads, inline=inline)
        return self._compute_pool

    def _create_store(self) -> None:
        """A new store's collections take about a second to create (mostly fsync): do it in the
        background while the first images decode and encode; the first write waits for it."""
        self.client.encoder("image")  # loaded here, not raced by the store's own first use
        self.client.encoder("text")
        errors: list[BaseException] = []

        def create() -> None:
            try:
                self.client.create_store()
            except BaseException as e:  # re-raised by the first write
                errors.append(e)

        thread = threading.Thread(target=create, name="ingest-create-store", daemon=True)
        thread.start()
        self._creating = (thread, errors)

    def _store_ready(self) -> None:
        if self._creating is not None:
            thread, errors = self._creating
            thread.join()
            self._creating = None
            if errors:
                raise errors[0]

    def _estimate_total(self, bar: Any) -> None:
        """The progress bar's total, counted beside the run: counting a shard's members costs
        about 0.2 s per 1,000 pairs, which would delay the first image by as much."""
        try:
            total = estimate_total(self.reader, self.config)
        except Exception:  # only the ETA is lost; the reader reports unreadable input itself
            return
        if total is not None:
            bar.total = total
            bar.refresh()

    # -- the run --------------------------------------------------------------------------------
    def run(self) -> IngestSummary:
        cfg, t_start = self.config, time.perf_counter()
        with self.times.time("setup"):
            text = TextStage(self.client, self._compute, self.times, dry_run=cfg.dry_run)
            stage = ImageStage(self._build_images, self._compute,
                               prefetch_batches=cfg.prefetch_batches, workers=cfg.workers,
                               times=self.times)
            store_had_pairs = self.client.count() > 0
            if not cfg.dry_run and self.client.info().get("new"):
                self._create_store()
            repair = self.client.last_repair
            if repair.anything:
                self.report.note(self.client.location, "repaired_at_open", repair.describe())
        handoff: queue.Queue[Any] = queue.Queue(maxsize=4)
        stop = threading.Event()
        thread = threading.Thread(target=_reader, name="ingest-read", daemon=True,
                                  args=(self.reader, cfg, handoff, stop, self.times))
        bar = tqdm(total=None, desc="ingest" + (" (dry run)" if cfg.dry_run else ""),
                   unit="pair", disable=not cfg.progress, dynamic_ncols=True)
        if cfg.progress:
            threading.Thread(target=self._estimate_total, args=(bar,), name="ingest-estimate",
                             daemon=True).start()
        pending: deque[WorkBatch] = deque()
        thread.start()
        try:
            exhausted = False
            while True:
                while pending and stage.ready(pending[0].digests):
                    self._finish(pending.popleft(), stage, text, bar)
                # Read ahead while the image stage has less than a window queued, so that decoding
                # and encoding run on across batch boundaries instead of draining at each one.
                if not exhausted and (not pending or stage.starved):
                    try:  # with batches pending, encode them rather than wait for the reader
                        item = handoff.get(block=not pending)
                    except queue.Empty:
                        stage.step()
                        continue
                    if isinstance(item, _End):
                        exhausted = True
                        stage.close_input()
                        if item.error is not None:
                            raise item.error
                    else:
                        pending.append(self._admit(item, stage, store_had_pairs))
                        self._submit_text(pending[-1], text)
                elif pending:
                    stage.step()
                else:
                    break
        except BaseException as e:  # the bulk load ends without its index build; the error goes on
            if self._bulk is not None:
                self._bulk.__exit__(type(e), e, e.__traceback__)
                self._bulk = None
            raise
        finally:
            stop.set()
            if self._creating is not None:
                self._creating[0].join()
            stage.close()
            if self._compute_pool is not None:
                self._compute_pool.close()
            bar.close()
            self.report.close()
            thread.join(timeout=5)
        s = self.summary
        if self._bulk is not None:
            with self.times.time("index"):
                self._bulk.__exit__(None, None, None)
        s.images_encoded = stage.encoded
        s.skipped = dict(self.report.skipped)
        s.notes = dict(self.report.notes)
        s.seconds = {k: v for k, v in self.times.seconds.items()}
        s.wall_s = time.perf_counter() - t_start
        s.anchors = self.client.count()
        return s


def _wds_key(member: str) -> str:
    """The webdataset sample key of a member: its folder and base name up to the first dot."""
    folder, _, base = member.rpartition("/")
    return f"{folder}/{base.partition('.')[0]}"


def _by_source(pairs: list[Pair]) -> dict[str, list[int]]:
    rows: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        rows.setdefault(p.sample.source, []).append(i)
    return rows


def open_input(config: IngestConfig) -> tuple[str, Reader]:
    """(format, reader) of ``config.input``; InputError naming it when it cannot be read (checked
    before a store is opened, so that a wrong input creates no store)."""
    try:
        fmt = config.format or detect_format(config.input)
        return fmt, open_reader(config.input, format=fmt, image_column=config.image_column,
                                caption_column=config.caption_column, images_dir=config.images_dir,
                                source=config.source, encoding=config.encoding)
    except ValueError as e:
        raise InputError(f"ingest: {e}") from e


def run_ingest(client: Any, config: IngestConfig) -> IngestSummary:
    """Ingest `config.input` into `client`'s store; bad samples are reported, never fatal.

    Raises InputError only for a wrong configuration (unknown format, missing columns, ...)."""
    if config.embeddings:
        return run_embeddings(client, config)
    return Pipeline(client, config).run()


def default_report_path(store: str | os.PathLike[str] | None) -> str:
    """`<store>.ingest-report.jsonl` next to an embedded store, else in the working directory."""
    if store is None:
        return os.path.abspath("asif-ingest-report.jsonl")
    store = os.path.abspath(str(store).rstrip("/\\"))
    return f"{store}.ingest-report.jsonl"
