"""`asif anchors`, `asif doctor` and `asif prune` (issue 5), on small stores made by the tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import DI, DT, add, assert_fresh, demo_pairs, error_lines, make_store, put_sets, run_cli, unit_rows

from asif_vdb import AsifClient, AsifParams
from asif_vdb.engine.layout import ANCHORS, CANDIDATES, VECTOR
from asif_vdb.engine.list_store import LISTS_BLOB
from asif_vdb.maths.relative import to_pairs
from asif_vdb.schema.store import AddEntry, LabelSetInfo
from asif_vdb.store.base import PointData
from asif_vdb.workflows.prune import anchor_importance
from ingest.config import IngestConfig
from ingest.pipeline import run_ingest


def label_set_of_embeddings(client: AsifClient, rng: np.random.Generator, name: str, n_classes: int) -> None:
    """A label set of random prompt embeddings (one template) through the engine: a synthetic store
    has no text encoder to encode prompts with."""
    assert client.engine is not None
    classes = [f"c{i}" for i in range(n_classes)]
    client.engine.label_sets.store(LabelSetInfo(name=name, classes=classes, templates=["{}"]), classes,
                                   unit_rows(rng, n_classes, DT))


def store_with_label_set(path: Path, seed: int = 0, n_classes: int = 6) -> None:
    """40 pairs (30 of source a, 10 of source b), label set t (n_classes prompts), image gallery g (4)."""
    rng = np.random.default_rng(seed)
    client = make_store(path, k=4)
    add(client, rng, 30, source="a")
    add(client, rng, 10, source="b")
    label_set_of_embeddings(client, rng, "t", n_classes)
    put_sets(client, rng, 0, 4)
    client.close()


def cli(*args: str) -> tuple[int, str]:
    result = run_cli(*args)
    return result.exit_code, result.output


def test_anchors_delete_by_id_and_by_source_prints_counts(tmp_path) -> None:
    store = tmp_path / "s"
    store_with_label_set(store)
    code, out = cli("anchors", "delete", "--store", str(store), "0", "1", "999")
    assert code == 0, out
    assert "anchors: 40 -> 38 (-2, 1 id(s) not found)" in out
    code, out = cli("anchors", "delete", "--store", str(store), "--where", "source=b", "--dry-run")
    assert code == 0 and "would delete 10" in out
    code, out = cli("anchors", "delete", "--store", str(store), "--where", "source=b")
    assert code == 0 and "anchors: 38 -> 28 (-10" in out
    code, out = cli("anchors", "list", "--store", str(store), "--where", "source=b")
    assert code == 0 and "0 pair(s)" in out
    code, out = cli("anchors", "delete", "--store", str(store), "999")  # nothing deleted: exit 1
    assert code == 1 and "anchors: 28 -> 28 (-0, 1 id(s) not found)" in out
    result = run_cli("anchors", "delete", "--store", str(store))
    assert result.exit_code == 2 and "IDs or --where" in result.stderr
    with AsifClient(store) as client:
        assert client.count() == 28
        assert_fresh(client)


def test_anchors_add_runs_the_pipeline_and_refreshes(tmp_path, demo_data) -> None:
    """Real images and encoders: a few demo pairs into a store that has a label set. `anchors add`
    runs the ingest pipeline: pairs already stored are counted, bad rows skipped into the report."""
    table, _ = demo_data
    store = tmp_path / "s"
    with AsifClient(store, params=AsifParams(k=3)) as client:
        run_ingest(client, IngestConfig(input=str(table), limit=12, progress=False, report=None))
        client.create_label_set("shapes", ["circle", "square"], ["a {}."])
    code, out = cli("anchors", "add", "--store", str(store), str(table), "--limit", "20", "--source", "more")
    assert code == 0, out
    report = f"{store}.ingest-report.jsonl"
    assert f"anchors: 12 -> 20 (+8; 12 already stored, 0 skipped: see {report})" in out
    with AsifClient(store) as client:
        assert_fresh(client)
        assert len(client.anchor_ids_where(source="more")) == 8
    # a table with a bad row (a missing image, an empty caption) and one new pair: the bad rows are
    # skipped and reported, the good one added
    pairs = demo_pairs(table)
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("image,caption\n"
                     f"{pairs[30][0]},{pairs[30][1]}\n"
                     f"{tmp_path / 'gone.png'},a missing image\n"
                     f"{pairs[31][0]},\" \"\n", encoding="utf-8")
    result = run_cli("anchors", "add", "--store", store, mixed, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["anchors_before"], summary["anchors_after"], summary["added"], summary["skipped"]) == (20, 21, 1, 2)
    reasons = sorted(json.loads(line)["reason"] for line in Path(summary["report"]).read_text().splitlines())
    assert reasons == ["empty_caption", "missing_image"]
    # nothing new to add: exit 1 ("nothing done"), the counts still printed
    only_bad = tmp_path / "bad.csv"
    only_bad.write_text(f"image,caption\n{tmp_path / 'gone.png'},a missing image\n", encoding="utf-8")
    result = run_cli("anchors", "add", "--store", store, only_bad)
    assert result.exit_code == 1 and "anchors: 21 -> 21 (+0; 0 already stored, 1 skipped" in result.stdout
    # a wrong input is an input error (exit 2, one line), checked before anything is written
    result = run_cli("anchors", "add", "--store", store, tmp_path / "nope.csv")
    assert result.exit_code == 2 and len(error_lines(result)) == 1 and "not found" in error_lines(result)[0]
    with AsifClient(store) as client:
        assert client.count() == 21
        assert_fresh(client)


def test_doctor_reports_a_healthy_store(tmp_path) -> None:
    store = tmp_path / "s"
    store_with_label_set(store)
    code, out = cli("doctor", "--store", str(store))
    assert code == 0, out
    assert out.strip().endswith("healthy")
    assert "[ok] fresh: 10 candidate(s) checked" in out


def test_doctor_finds_and_repairs_broken_invariants(tmp_path) -> None:
    store = tmp_path / "s"
    store_with_label_set(store)
    rng = np.random.default_rng(1)
    with AsifClient(store) as client:
        engine = client.engine
        assert engine is not None
        backend = engine.state.backend  # the test breaks the stored state itself
        # a stale relative vector, a lone caption half marked visible, an orphan candidate, a wrong size
        backend.update_vectors(engine.derived.live,
                               [PointData(2, {}, sparse={"rel": (np.array([0, 1]), np.array([0.6, 0.8]))})])
        backend.delete(ANCHORS["image"], [5])
        orphan = unit_rows(rng, 1, DT)
        backend.upsert(CANDIDATES, [PointData(500, {"set": "labels:gone"}, {"text": orphan[0]})])
        backend.upsert(engine.derived.live, [PointData(500, {"set": "labels:gone"},
                                                       sparse={"rel": to_pairs(engine.anchors.relative(orphan, "text"))[0]})])
        engine.config.galleries["g"].size = 7
        engine.state.save()
    code, out = cli("doctor", "--store", str(store))
    assert code == 1, out
    assert "[PROBLEM] fresh" in out and "stale (largest difference 0.6" in out
    assert "[PROBLEM] anchor pairs" in out and "1 lone half" in out
    assert "[PROBLEM] candidates of unknown sets: labels:gone: 1" in out
    assert "[PROBLEM] gallery g: 4 items stored, the config says 7" in out
    assert "run again with --repair" in out
    code, out = cli("doctor", "--store", str(store), "--repair")
    assert code == 0, out
    # the stale vector is rewritten by the first repair that refreshes the candidates: the lone
    # half's removal, which finds its saved state no longer matches; the freshness check then finds
    # nothing left to repair
    assert "[ok] fresh" in out and "[REPAIRED] fresh" not in out
    assert "deleted 1 lone half" in out
    code, out = cli("doctor", "--store", str(store), "--json")
    assert code == 0 and json.loads(out)["healthy"] is True
    with AsifClient(store) as client:
        assert 5 not in client.anchor_ids()
        assert_fresh(client)


def test_doctor_reports_what_recovery_on_open_did(tmp_path) -> None:
    store = tmp_path / "s"
    store_with_label_set(store)
    rng = np.random.default_rng(2)
    with AsifClient(store) as client:  # a crash after both halves were written, before the commit
        engine = client.engine
        assert engine is not None
        engine.config.journal.append(AddEntry(first=engine.config.next_anchor_id))
        engine.config.next_anchor_id += 2
        engine.state.save()
        for m, d in (("text", DT), ("image", DI)):
            engine.state.backend.upsert(ANCHORS[m], [
                PointData(40 + i, {"caption": f"x{i}", "hash": f"h{i}", "ok": 0}, {VECTOR: unit_rows(rng, 1, d)[0]})
                for i in range(2)])
    code, out = cli("doctor", "--store", str(store))
    assert code == 0, out
    assert "[REPAIRED] recovery on open: an interrupted update was found -> completed 2 pair(s)" in out
    with AsifClient(store) as client:
        assert client.count() == 42


def test_prune_keeps_the_most_important_anchors_and_rebuilds_the_label_set(tmp_path) -> None:
    store = tmp_path / "s"
    store_with_label_set(store, n_classes=6)
    rng = np.random.default_rng(3)
    queries, labels = unit_rows(rng, 30, DI), rng.integers(0, 6, 30)
    with AsifClient(store) as client:
        report = client.prune("t", 12, tmp_path / "small", query_vectors=queries, query_labels=labels)
        assert client.engine is not None
        importance = anchor_importance(client.engine, client.label_set("t"), queries, labels)
        full_accuracy = float((client.class_scores(queries, "t").argmax(axis=1) == labels).mean())
    assert report["kept"] == 12 and report["anchors_written"] == 12 and report["of"] == 40
    assert report["k"] == 1  # a tenth of the kept anchors
    assert report["accuracy_full"] == round(full_accuracy, 4)
    with AsifClient(tmp_path / "small") as small:
        assert small.count() == 12
        kept = sorted(p["pruned_from"] for p in small.anchors(small.anchor_ids()).values())
        assert kept == sorted(np.argsort(-importance, kind="stable")[:12].tolist())
        assert small.label_set("t").classes == [f"c{i}" for i in range(6)]
        assert_fresh(small)
        pruned_accuracy = float((small.class_scores(queries, "t").argmax(axis=1) == labels).mean())
    assert report["accuracy_pruned"] == round(pruned_accuracy, 4)
    code, out = cli("prune", "--store", str(store), "--labels", "t", "--keep", "5", "--new-store", str(tmp_path / "s2"),
                    "--json")
    assert code == 0, out
    assert json.loads(out)["kept"] == 5
    result = run_cli("prune", "--store", store, "--labels", "t", "--keep", "5", "--new-store", tmp_path / "s2")
    assert result.exit_code == 2 and len(error_lines(result)) == 1
    assert "is not an empty folder" in error_lines(result)[0]


@pytest.mark.parametrize("keep, message", [
    (0, "Invalid value for '--keep': 0 is not in the range x>=1"),  # refused by the option itself
    (41, "error: keep must be between 1 and the store's 40 anchors, got 41"),
])
def test_prune_refuses_impossible_sizes(tmp_path, keep, message) -> None:
    store = tmp_path / "s"
    store_with_label_set(store)
    result = run_cli("prune", "--store", store, "--labels", "t", "--keep", keep, "--new-store", tmp_path / "o")
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert not (tmp_path / "o").exists()


def test_doctor_reports_and_rebuilds_missing_derived_data(tmp_path) -> None:
    """Saved anchor lists are derived data: without them the next update would search every candidate
    again; doctor says so and --repair rebuilds them (and a missing relative vector)."""
    store = tmp_path / "s"
    store_with_label_set(store)
    (store / "blobs" / f"{LISTS_BLOB}.npz").unlink()
    code, out = cli("doctor", "--store", str(store))
    assert code == 1, out
    assert "[PROBLEM] derived vectors: 0 candidate(s) without a relative vector, 10 without a saved list" in out
    code, out = cli("doctor", "--store", str(store), "--repair")
    assert code == 0, out
    assert "[REPAIRED] derived vectors" in out
    code, out = cli("doctor", "--store", str(store))
    assert code == 0 and "[ok] derived vectors: 10 candidate(s)" in out, out
    with AsifClient(store) as client:
        assert_fresh(client)
