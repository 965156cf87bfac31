"""Ingestion throughput on Flickr8k: the full pipeline against the image encoder alone.

A subset of Flickr8k (first N images by name, with their captions) is written as webdataset
shards in a temp dir (each pair a sample with its own copy of the JPEG, as img2dataset writes
them) and as a CSV table pointing at ../shared/datasets/flickr8k/images. Measured in one run:

- encoder alone: read + decode + preprocess (threads, bounded prefetch) + batched
  `encode_tensors` over the N distinct images: the best loop for the image side alone;
- naive: one image at a time, preprocess then `encode_tensors` on a batch of one;
- the pipeline (`ingest.pipeline.run_ingest`) into a fresh store, from the shards and from the
  table, with all 5 captions per image and with the first caption only; then a rerun (no-op).

Ratios per run: (1) strict, the image encoder alone's time for the run's images over the run's
wall time (text encoding and writes count as pipeline cost); (2) the run's pairs/s over the image
encoder's images/s (an image with 5 captions is encoded once); (3) both encoders alone (images and
the run's captions, in the pipeline's batches) over the run: the pipeline's own overhead. The
machine is shared: baselines are measured three times, interleaved with the runs, and the best
(fastest) is used, which makes every ratio conservative.

    python -m benchmarks.ingest [--images 1000] [--naive 100]
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import tarfile
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from asif_vdb.client import AsifClient, get_encoder  # noqa: E402
from asif_vdb.config import EncoderSpec  # noqa: E402
from benchmarks.common import finish  # noqa: E402
from benchmarks.datasets import DATASETS, load_flickr8k  # noqa: E402
from ingest.config import IngestConfig  # noqa: E402
from ingest.pipeline import run_ingest  # noqa: E402


def write_webdataset(folder: Path, pairs: list[tuple[Path, str]], per_shard: int = 1000) -> str:
    """Shards `00000.tar`...; returns their brace pattern."""
    folder.mkdir(parents=True, exist_ok=True)
    n_shards = (len(pairs) + per_shard - 1) // per_shard
    for s in range(n_shards):
        with tarfile.open(folder / f"{s:05d}.tar", "w") as tar:
            for i, (path, caption) in enumerate(pairs[s * per_shard:(s + 1) * per_shard]):
                key = f"{s:05d}{i:05d}"
                for ext, data in (("jpg", path.read_bytes()), ("txt", caption.encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return str(folder / f"{{00000..{n_shards - 1:05d}}}.tar")


def write_table(path: Path, pairs: list[tuple[Path, str]]) -> str:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        w.writerows((p.name, c) for p, c in pairs)
    return str(path)


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def encoder_alone(encoder: Any, paths: list[Path], batch: int, workers: int, window: int,
                  streams: int = 1) -> float:
    """Seconds to read, decode and preprocess `paths` (`workers` threads, `window` images ahead)
    and encode them in batches: on this thread with torch's threads (`streams=1`), or on `streams`
    single-threaded threads, batches in flight side by side."""
    import torch

    previous = torch.get_num_threads()

    def load(path: Path) -> Any:
        return encoder.preprocess(path.read_bytes())

    def encode(futures: list[Any]) -> Any:
        return encoder.encode_tensors(torch.stack([f.result() for f in futures]))

    init = _one_thread if streams > 1 else None
    t0 = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=workers, initializer=init) as pool, \
                ThreadPoolExecutor(max_workers=streams, initializer=init) as compute:
            todo, decoding, jobs = iter(paths), deque(), deque()

            def refill() -> None:  # keep `window` images decoding or in a batch
                while len(decoding) + batch * len(jobs) < window:
                    path = next(todo, None)
                    if path is None:
                        return
                    decoding.append(pool.submit(load, path))

            refill()
            while decoding or jobs:
                while decoding and (streams == 1 or len(jobs) <= streams):
                    head = [decoding.popleft() for _ in range(min(batch, len(decoding)))]
                    if streams == 1:
                        refill()  # decoding goes on during the forward pass
                        encode(head)
                    else:
                        jobs.append(compute.submit(encode, head))
                    refill()
                if jobs:
                    jobs.popleft().result()
                    refill()
    finally:
        torch.set_num_threads(previous)
    return time.perf_counter() - t0


def naive(encoder: Any, paths: list[Path]) -> float:
    """Seconds for one image at a time: preprocess, then a forward pass on a batch of one."""
    t0 = time.perf_counter()
    for path in paths:
        encoder.encode_tensors(encoder.preprocess(path.read_bytes())[None])
    return time.perf_counter() - t0


def pipeline_run(store: Path, config: IngestConfig) -> dict[str, Any]:
    with AsifClient(store) as client:
        s = run_ingest(client, config)
    return {"pairs": s.pairs, "ingested": s.ingested, "already_stored": s.already_stored,
            "images_encoded": s.images_encoded, "skipped": s.skipped, "wall_s": round(s.wall_s, 2),
            "pairs_per_s": round(s.pairs_per_s, 1),
            "seconds": {k: round(v, 2) for k, v in s.seconds.items() if v > 0}}


def text_alone(encode_texts: Any, captions: list[str], batch: int, streams: int = 1) -> float:
    """Seconds for the text encoder alone on `captions`, in the pipeline's batches: on this thread
    with torch's threads, or on `streams` single-threaded threads."""
    import torch

    previous = torch.get_num_threads()
    chunks = [captions[start:start + batch] for start in range(0, len(captions), batch)]
    t0 = time.perf_counter()
    try:
        if streams == 1:
            for chunk in chunks:
                encode_texts(chunk)
        else:
            with ThreadPoolExecutor(max_workers=streams, initializer=_one_thread) as compute:
                list(compute.map(encode_texts, chunks))
    finally:
        torch.set_num_threads(previous)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=1000, help="distinct Flickr8k images")
    ap.add_argument("--naive", type=int, default=100, help="images for the one-at-a-time loop")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--prefetch-batches", type=int, default=4)
    ap.add_argument("--batch", type=int, default=256, help="pairs per store write")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved repetitions (best is kept)")
    ap.add_argument("--image-batches", type=int, nargs="+", default=[4, 8, 16, 32],
                    help="image batch sizes to sweep (encoder alone, on up to 320 images)")
    ap.add_argument("--image-batch", type=int, default=None, help="skip the sweep, use this")
    args = ap.parse_args(argv)

    f8k = load_flickr8k()
    names = f8k.images[: args.images]
    paths = [f8k.image_path(n) for n in names]
    pairs5 = [(f8k.image_path(n), c) for n in names for c in f8k.captions[n]]
    pairs1 = [(f8k.image_path(n), f8k.captions[n][0]) for n in names]
    image = get_encoder(EncoderSpec.default_image())
    text = get_encoder(EncoderSpec.default_text())
    threads = __import__("torch").get_num_threads()
    print(f"{len(paths)} images, {len(pairs5)} pairs; {args.workers} decode threads, "
          f"torch threads {threads}", file=sys.stderr)
    # warm-up: traces the image model, runs the text model once
    encoder_alone(image, paths[:32], 16, args.workers, 64)
    naive(image, paths[:2])
    text.encode([c for _, c in pairs5[:64]])
    # The image batch size for both the encoder alone and the pipeline: the fastest of a sweep.
    sweep_paths = paths[: min(len(paths), 320)]
    sweep = {b: len(sweep_paths) / encoder_alone(image, sweep_paths, b, args.workers,
                                                  b * args.prefetch_batches, threads)
             for b in args.image_batches}
    batch = args.image_batch or max(sweep, key=lambda b: sweep[b])
    window = batch * args.prefetch_batches

    figures: dict[str, Any] = {"images": len(paths), "pairs_5_captions": len(pairs5),
                               "image_batch_sweep_images_per_s": {
                                   b: round(v, 1) for b, v in sweep.items()},
                               "image_batch": batch, "decode_workers": args.workers,
                               "torch_threads": threads, "write_batch": args.batch,
                               "rounds": args.rounds, "load_avg_start": os.getloadavg()[0]}
    streams = sorted({1, threads})  # 1 stream of torch's threads, or single-threaded streams
    alone: dict[int, list[float]] = {n: [] for n in streams}
    texts: dict[str, dict[int, list[float]]] = {k: {n: [] for n in streams}
                                                for k in ("5_captions", "1_caption")}
    naive_s: list[float] = []
    runs: dict[str, list[dict[str, Any]]] = {
        "webdataset_5_captions": [], "webdataset_1_caption": [], "csv_5_captions": []}
    with tempfile.TemporaryDirectory(prefix="asif-ingest-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        inputs = {"webdataset_5_captions": write_webdataset(root / "wds5", pairs5),
                  "webdataset_1_caption": write_webdataset(root / "wds1", pairs1),
                  "csv_5_captions": write_table(root / "captions5.csv", pairs5)}
        figures["write_inputs_s"] = round(time.perf_counter() - t0, 2)
        images_dir = str(DATASETS / "flickr8k" / "images")

        def config(name: str) -> IngestConfig:
            return IngestConfig(input=inputs[name], workers=args.workers, batch=args.batch,
                                image_batch=batch,
                                prefetch_batches=args.prefetch_batches,
                                images_dir=images_dir if name.startswith("csv") else None,
                                report=str(root / "report.jsonl"), progress=False)

        # Rounds interleave every measurement, so that load from other processes on the shared
        # machine hits all of them alike; each figure is the best of its rounds.
        for r in range(args.rounds):
            for n in streams:
                alone[n].append(encoder_alone(image, paths, batch, args.workers, window, n))
            for name in runs:
                runs[name].append(pipeline_run(root / f"{name}-{r}", config(name)))
            for n in streams:
                for key, pairs in (("5_captions", pairs5), ("1_caption", pairs1)):
                    texts[key][n].append(text_alone(text.encode, [c for _, c in pairs],
                                                    args.batch, n))
            naive_s.append(naive(image, paths[: args.naive]))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        rerun = pipeline_run(root / "webdataset_5_captions-0", config("webdataset_5_captions"))

    t_img = min(min(v) for v in alone.values())
    t_txt = {k: min(min(v) for v in by_n.values()) for k, by_n in texts.items()}
    t_naive = min(naive_s)
    figures["load_avg_end"] = os.getloadavg()[0]
    figures["image_encoder_alone_s_by_streams"] = {
        n: [round(t, 2) for t in v] for n, v in alone.items()}
    figures["text_encoder_alone_s_by_streams"] = {
        k: {n: [round(t, 2) for t in v] for n, v in by_n.items()} for k, by_n in texts.items()}
    figures["naive_s"] = [round(t, 2) for t in naive_s]
    figures["image_encoder_alone_images_per_s"] = round(len(paths) / t_img, 1)
    figures["text_encoder_alone_captions_per_s"] = round(len(pairs5) / t_txt["5_captions"], 1)
    figures["naive_images_per_s"] = round(args.naive / t_naive, 1)
    figures["batched_vs_naive"] = round((len(paths) / t_img) / (args.naive / t_naive), 2)
    best: dict[str, dict[str, Any]] = {}
    for name, tries in runs.items():
        r = dict(min(tries, key=lambda x: x["wall_s"]))
        r["wall_s_all_rounds"] = [t["wall_s"] for t in tries]
        captions = "1_caption" if name.endswith("1_caption") else "5_captions"
        # Strict: the same images through the image encoder alone, over the whole pipeline.
        r["ratio_vs_image_encoder_alone"] = round(t_img / r["wall_s"], 3)
        # As pairs/s against images/s (pairs sharing an image share its encoding).
        r["pairs_per_s_vs_image_encoder_images_per_s"] = round(
            (r["pairs"] / r["wall_s"]) / (len(paths) / t_img), 3)
        # The pipeline's own overhead: both encoders alone on the same inputs, over the run.
        r["ratio_vs_both_encoders_alone"] = round((t_img + t_txt[captions]) / r["wall_s"], 3)
        best[name] = r
    first = best["webdataset_5_captions"]["wall_s"]
    rerun["speedup_vs_first_run"] = round(first / rerun["wall_s"], 1)
    best["rerun_webdataset_5_captions"] = rerun
    figures["runs"] = best
    main_runs = {k: r for k, r in best.items() if not k.startswith("rerun")}
    figures["targets"] = {
        "batched_ge_2x_naive": figures["batched_vs_naive"] >= 2.0,
        "pipeline_ge_0.85_image_encoder_alone_strict": {
            k: r["ratio_vs_image_encoder_alone"] >= 0.85 for k, r in main_runs.items()},
        "pipeline_pairs_per_s_ge_0.85_image_encoder_images_per_s": {
            k: r["pairs_per_s_vs_image_encoder_images_per_s"] >= 0.85
            for k, r in main_runs.items()},
        "pipeline_ge_0.85_both_encoders_alone": {
            k: r["ratio_vs_both_encoders_alone"] >= 0.85 for k, r in main_runs.items()},
    }
    finish("ingest", figures)


if __name__ == "__main__":
    main()
