"""Fault injection: kill -9 at a random write of every operation that changes a store (adding and
deleting anchors, creating and replacing a label set, adding to a gallery, refitting the transforms),
then reopen, run doctor, and compare exactly with a clean run: the store must be the one before the
operation or the one after it, never anything else.

The point of each kill is drawn from a seed over the operation's own write calls (counted on a clean
run), before or after the call. One seed per operation runs by default; ``-m slow`` runs eight more.
The stores use made-up encoders (declared identities): no model is loaded.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import DI, DT, REPO, add, assert_fresh, copy_store, make_store, put_sets, unit_rows

from asif_vdb import AsifClient, Tuning
from asif_vdb.schema.store import LabelSetInfo

TESTS = Path(__file__).resolve().parent
TUNING = "Tuning(rewrite_batch=4)"  # several batches per operation: more points to kill at

#: Each operation as code run on an open ``client`` (the same text in the clean run and the child).
OPS = {
    "ingest": "add(client, np.random.default_rng(9), 12, source='b')",
    "delete": "client.delete_anchors(client.anchor_ids()[:10])",
    "labels_create": "client.engine.label_sets.store(LabelSetInfo(name='pets', classes=['a', 'b', 'c'], "
                     "templates=['{}', 'x {}']), ['a', 'x a', 'b', 'x b', 'c', 'x c'], "
                     "unit_rows(np.random.default_rng(5), 6, DT))",
    "labels_replace": "client.engine.label_sets.store(LabelSetInfo(name='animals', classes=['p', 'q'], "
                      "templates=['{}']), ['p', 'q'], unit_rows(np.random.default_rng(6), 2, DT))",
    "gallery_add": "client.index_gallery_embeddings('pics', unit_rows(np.random.default_rng(7), 19, DI), 'image')",
    "refit": "client.set_transform(image={'whiten': 1.0}, text={'power': 0.5})",
}
NAMES = {"add": add, "np": np, "LabelSetInfo": LabelSetInfo, "unit_rows": unit_rows, "DI": DI, "DT": DT}

CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from asif_vdb import AsifClient, Tuning
    from asif_vdb.schema.store import LabelSetInfo
    from helpers import DI, DT, add, kill_at_write, unit_rows
    client = AsifClient({path!r}, tuning={tuning})
    calls = kill_at_write(client.engine.state.backend, {nth}, {when!r})
    {op}
    print(len(calls))
    client.close()
""")

SEEDS = [0]
SLOW_SEEDS = list(range(1, 9))


def base_store(path: Path) -> None:
    """30 pairs, a label set, a text and an image gallery."""
    rng = np.random.default_rng(0)
    with make_store(path, k=4) as client:
        add(client, rng, 30, source="a")
        put_sets(client, rng, 8, 5)
        assert client.engine is not None
        client.engine.label_sets.store(LabelSetInfo(name="animals", classes=["cat", "dog"], templates=["{}"],
                                                    threshold=0.2), ["cat", "dog"], unit_rows(rng, 2, DT))


def state(client: AsifClient) -> dict[str, Any]:
    """What queries see, and what the config records."""
    assert client.engine is not None
    rng = np.random.default_rng(42)
    images, texts = unit_rows(rng, 4, DI), unit_rows(rng, 3, DT)
    out: dict[str, Any] = {"anchors": client.anchor_ids(), "transforms": client.transforms(),
                           "label_sets": {n: client.label_set(n).model_dump(exclude={"first_id", "key", "hub_mean",
                                                                                      "hub_std"})
                                          for n in client.label_sets()},
                           "galleries": {n: client.gallery(n).size for n in client.galleries()}}
    for name in client.label_sets():
        out[f"scores {name}"] = client.class_scores(images, name)
    for name in client.galleries():
        queries, modality = (texts, "text") if client.gallery(name).modality == "image" else (images, "image")
        hits = client.search_embeddings(queries, modality, name, top=50)
        out[f"search {name}"] = [sorted((round(h.score, 5), h.payload.get("ref")) for h in row) for row in hits]
    return out


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    for key, value in a.items():
        if key.startswith("scores"):
            if value.shape != b[key].shape or not np.allclose(value, b[key], atol=1e-5):
                return False
        elif key.startswith("search"):
            if [[r for _, r in row] for row in value] != [[r for _, r in row] for row in b[key]] or not all(
                    np.allclose([s for s, _ in x], [s for s, _ in y], atol=1e-4) for x, y in zip(value, b[key])):
                return False
        elif value != b[key]:
            return False
    return True


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The base store, its state, and per operation: the state after a clean run and its write count."""
    root = tmp_path_factory.mktemp("fault")
    base = root / "base"
    base_store(base)
    with AsifClient(base) as client:
        before = state(client)
    out: dict[str, Any] = {"base": base, "before": before}
    for op, code in OPS.items():
        copy = root / op
        copy_store(base, copy)
        count = root / f"{op}-count"
        copy_store(base, count)  # the writes are counted in a process like the one that is killed
        run = subprocess.run([sys.executable, "-c", CHILD.format(tests=str(TESTS), path=str(count), tuning=TUNING,
                                                                 nth=None, when="after", op=code)],
                             cwd=REPO, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        with AsifClient(copy, tuning=Tuning(rewrite_batch=4)) as client:
            exec(code, {**NAMES, "client": client})
        with AsifClient(copy) as client:
            out[op] = (state(client), int(run.stdout.split()[-1]))
    return out


def kill_and_check(references: dict[str, Any], tmp_path: Path, op: str, seed: int) -> None:
    after, writes = references[op]
    rng = np.random.default_rng([seed, list(OPS).index(op)])
    nth, when = int(rng.integers(1, writes + 1)), ("before", "after")[int(rng.integers(2))]
    path = tmp_path / "s"
    copy_store(references["base"], path)
    code = CHILD.format(tests=str(TESTS), path=str(path), tuning=TUNING, nth=nth, when=when, op=OPS[op])
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == -signal.SIGKILL, f"{op} write {nth}/{writes} ({when}): {run.stderr[-2000:]}"
    with AsifClient(path) as client:
        checks = client.doctor()
        assert all(c.healthy for c in checks), [c.line() for c in checks if not c.healthy]
        assert client.engine is not None and client.engine.config.journal == []
        assert_fresh(client)
        got = state(client)
    assert same(got, after) or same(got, references["before"]), f"{op}: killed at write {nth}/{writes} ({when})"


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("op", list(OPS))
def test_a_kill_at_a_random_write_leaves_the_store_before_or_after(references, tmp_path, op, seed) -> None:
    kill_and_check(references, tmp_path, op, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW_SEEDS)
@pytest.mark.parametrize("op", list(OPS))
def test_more_kills_at_random_writes(references, tmp_path, op, seed) -> None:
    kill_and_check(references, tmp_path, op, seed)
