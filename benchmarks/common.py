"""Small helpers every benchmark shares: a stage timer and the one-line JSON result."""

from __future__ import annotations

import json
import platform
import time
from contextlib import contextmanager
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


class Stages:
    """Seconds per named stage, in order."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 3)
            print(f"  {name}: {self.seconds[name]:.1f} s", flush=True)


def finish(name: str, figures: dict) -> None:
    """Print the figures as one line of JSON and save them under benchmarks/results/NAME.json."""
    figures = {"benchmark": name, "machine": f"{platform.machine()} x{__import__('os').cpu_count()}", **figures}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures))
