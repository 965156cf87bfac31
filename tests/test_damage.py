"""Damage: each kind of file of an embedded store removed or cut short. Opening the store and
``asif doctor --repair`` must then restore what can be restored (the store answers exactly as before)
or refuse with one line; never report a healthy store that lost something.

The store is the tiny shapes store (real encoders: captions and image files can be encoded again).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import error_lines, run_cli

from asif_vdb import AsifClient


def largest(folder: Path) -> Path:
    return max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def segment_file(store: Path) -> Path:
    """The largest data file of one segment of the caption anchors."""
    return largest(store / "collections" / "anchor_text" / "segments")


DAMAGE: dict[str, Callable[[Path], None]] = {
    "config removed": lambda s: (s / "asif_config.json").unlink(),
    "config cut short": lambda s: truncate(s / "asif_config.json"),
    "config and its previous version removed": lambda s: ((s / "asif_config.json").unlink(),
                                                          (s / "asif_config.json.bak").unlink()),
    "anchor_image removed": lambda s: shutil.rmtree(s / "collections" / "anchor_image"),
    "anchor_text removed": lambda s: shutil.rmtree(s / "collections" / "anchor_text"),
    "candidates removed": lambda s: shutil.rmtree(s / "collections" / "candidates"),
    "relative vectors removed": lambda s: shutil.rmtree(s / "collections" / "candidate_rel"),
    "blobs removed": lambda s: shutil.rmtree(s / "blobs"),
    "blob cut short": lambda s: truncate(largest(s / "blobs")),
    "segment file cut short": lambda s: truncate(segment_file(s)),
    "segment file removed": lambda s: segment_file(s).unlink(),
}


def answers(store: Path, images: list[Path]) -> tuple[int, np.ndarray]:
    with AsifClient(store) as client:
        return client.count(), client.class_scores(client.encode_images(images), "shapes")


#: Covered by default elsewhere too (test_store_safety.py) or a second case of a kind: -m slow.
SLOW = {"anchor_image removed", "blobs removed", "segment file removed"}


@pytest.mark.parametrize("damage", [d if d not in SLOW else pytest.param(d, marks=pytest.mark.slow) for d in DAMAGE])
def test_damage_is_restored_or_refused_in_one_line(store_copy, damage) -> None:
    store, queries, _ = store_copy
    images = [q for q, _ in queries]
    count, scores = answers(store, images)
    DAMAGE[damage](store)
    for command in (["info"], ["doctor"]):
        result = run_cli(*command, "--store", store)  # a traceback fails the test (catch_exceptions=False)
        assert result.exit_code in (0, 1, 2), (command, result.output)
        if result.exit_code == 2:
            assert len(error_lines(result)) == 1, (command, result.output)
    result = run_cli("doctor", "--repair", "--store", store)
    if result.exit_code == 0:  # restored: the store answers as before
        assert result.stdout.strip().endswith("healthy")
        got_count, got_scores = answers(store, images)
        assert got_count == count
        np.testing.assert_allclose(got_scores, scores, atol=1e-4)
    else:  # refused, saying why in one line (or naming the problem that remains)
        assert result.exit_code in (1, 2), result.output
        assert len(error_lines(result)) == 1 if result.exit_code == 2 else "[PROBLEM]" in result.stdout, result.output
        assert damage in ("config and its previous version removed", "segment file cut short",
                          "segment file removed"), result.output  # everything else is restored
