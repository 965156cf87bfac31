"""A fast first answer: `asif classify one.png` from a fresh process against loading the store's two
encoders alone (also from a fresh process), in the same run, alternating, medians of --rounds; and the
break-even of tracing the image model on CPU (the encoder traces from ``TRACE_AFTER`` images on).

    python benchmarks/cli_startup.py [--rounds 3] [--workdir /tmp/asif-cli-startup]

The store is `asif demo`'s (lite0 + MiniLM, offline). The last line is one JSON object with
``classify_one_s``, ``encoders_load_s`` and ``startup_ratio`` (their ratio), saved as
benchmarks/results/cli_startup.json.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import finish  # noqa: E402

LOAD_ENCODERS = """
import sys
from pathlib import Path
from asif_vdb.encoders.registry import build_encoder
from asif_vdb.schema.store import StoreConfig
config = StoreConfig.model_validate_json((Path(sys.argv[1]) / "asif_config.json").read_text())
build_encoder(config.image_spec)
build_encoder(config.text_spec)
"""


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t


def trace_break_even(images: list[Path], n: int = 32) -> dict[str, float]:
    """Per-image seconds of the image model run eagerly and traced (batches of the encoder's size),
    the one-off cost of tracing (the trace, its freezing and the first runs that optimise it), and
    the number of images from which tracing pays."""
    import asif_vdb.encoders.timm_image as timm_image
    from asif_vdb.encoders.registry import build_encoder, parse_spec

    spec = parse_spec("lite0", modality="image")
    default = timm_image.TRACE_AFTER
    sample = (images * (n // len(images) + 1))[:n]
    timm_image.TRACE_AFTER = 10**9
    eager = build_encoder(spec)
    eager.encode(sample[:4])  # first-call allocations
    t = time.perf_counter()
    eager.encode(sample)
    eager_s = (time.perf_counter() - t) / n
    timm_image.TRACE_AFTER = 0
    traced = build_encoder(spec)
    t = time.perf_counter()
    traced.encode(sample[:8])
    first_s = time.perf_counter() - t
    t = time.perf_counter()
    traced.encode(sample)
    traced_s = (time.perf_counter() - t) / n
    cost = first_s - 8 * traced_s
    timm_image.TRACE_AFTER = default
    return {"eager_ms_per_image": round(1000 * eager_s, 1), "traced_ms_per_image": round(1000 * traced_s, 1),
            "trace_cost_s": round(cost, 2),
            "trace_break_even_images": round(cost / (eager_s - traced_s)) if eager_s > traced_s else None,
            "trace_after": default}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/asif-cli-startup"))
    args = ap.parse_args()
    asif = str(Path(sys.executable).with_name("asif"))
    demo = subprocess.run([asif, "demo", "--workdir", str(args.workdir)], capture_output=True, text=True, check=True)
    store = args.workdir / "store"
    image = Path(demo.stdout.strip().splitlines()[-1].split()[-1])  # "Try: asif classify ... IMAGE"
    classify = [asif, "classify", "--store", str(store), "--labels", "shapes", str(image)]
    load = [sys.executable, "-c", LOAD_ENCODERS, str(store)]
    timed(load)  # page cache: both commands read the same files
    runs: dict[str, list[float]] = {"classify": [], "load": []}
    for _ in range(args.rounds):
        runs["classify"].append(timed(classify))
        runs["load"].append(timed(load))
    classify_s, load_s = statistics.median(runs["classify"]), statistics.median(runs["load"])
    images = sorted(image.parent.glob("*.png"))
    figures = {"classify_one_s": round(classify_s, 2), "encoders_load_s": round(load_s, 2),
               "startup_ratio": round(classify_s / load_s, 2), "rounds": args.rounds,
               "classify_runs_s": [round(x, 2) for x in runs["classify"]],
               "encoders_load_runs_s": [round(x, 2) for x in runs["load"]], **trace_break_even(images)}
    finish("cli_startup", figures)


if __name__ == "__main__":
    main()
