"""`asif anchors`, `asif doctor` and `asif prune` (issue 5), on small stores made by the tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_refresh import DI, DT, add, anchor_ids, assert_fresh, make_store, put_sets, unit

from asif_vdb.cli import main
from asif_vdb.client import AsifClient
from asif_vdb.config import GallerySetInfo, LabelSetInfo
from asif_vdb.index import ANCHORS, CANDIDATES, RELATIVES
from asif_vdb.relative import to_pairs
from asif_vdb.store.base import PointData


def store_with_label_set(path: Path, seed: int = 0, n_classes: int = 6) -> None:
    rng = np.random.default_rng(seed)
    client = make_store(path, k=4)
    add(client, rng, 30, source="a")
    add(client, rng, 10, source="b")
    put_sets(client, rng, n_classes, 4)
    client.index.config.label_sets["t"] = LabelSetInfo(
        name="t", classes=[f"c{i}" for i in range(n_classes)], templates=["{}"], first_id=0)
    client.index.config.galleries["g"] = GallerySetInfo(name="g", modality="image", size=4)
    client.index.save()
    client.close()


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_anchors_delete_by_id_and_by_source_prints_counts(tmp_path) -> None:
    store = tmp_path / "s"
    store_with_label_set(store)
    code, out = cli("anchors", "delete", "--store", str(store), "0", "1", "999")
    assert code == 0, out
    assert "anchors: 40 -> 38 (-2, 1 id(s) not found)" in out
    code, out = cli("anchors", "delete", "--store", str(store), "--where", "source=b", "--dry-run")
    assert "would delete 10" in out
    code, out = cli("anchors", "delete", "--store", str(store), "--where", "source=b")
    assert code == 0 and "anchors: 38 -> 28 (-10" in out
    code, out = cli("anchors", "list", "--store", str(store), "--where", "source=b")
    assert "0 pair(s)" in out
    code, out = cli("anchors", "delete", "--store", str(store))
    assert code == 2 and "IDs or --where" in out
    with AsifClient(store) as client:
        assert_fresh(client)


def test_anchors_add_reads_a_table_and_refreshes(tmp_path, demo_data) -> None:
    """Real images and encoders: a few demo pairs into a store that has a label set."""
    table, _ = demo_data
    store = tmp_path / "s"
    from asif_vdb.config import AsifParams
    from asif_vdb.minimal_ingest import ingest_csv

    with AsifClient(store, params=AsifParams(k=3)) as client:
        ingest_csv(client, table, limit=12)
        client.create_label_set("shapes", ["circle", "square"], ["a {}."])
    code, out = cli("anchors", "add", "--store", str(store), str(table), "--limit", "20", "--source", "more")
    assert code == 0, out
    assert "anchors: 12 -> 20 (+8, 12 duplicate(s) skipped)" in out
    with AsifClient(store) as client:
        assert_fresh(client)
        assert len(client.anchor_ids_where(source="more")) == 8


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
        backend = client.backend
        # a stale relative vector, a lone caption half marked visible, an orphan candidate, a wrong size
        key = backend.retrieve(CANDIDATES, [2])[0].payload["set"]
        backend.upsert(RELATIVES, [PointData(2, {"set": key}, sparse={"rel": (np.array([0, 1]), np.array([0.6, 0.8]))})])
        backend.delete(ANCHORS["image"], [5])
        orphan = unit(rng, 1, DT)
        backend.upsert(CANDIDATES, [PointData(500, {"set": "labels:gone"}, {"text": orphan[0]})])
        backend.upsert(RELATIVES, [PointData(500, {"set": "labels:gone"},
                                             sparse={"rel": to_pairs(client.index.relative(orphan, "text"))[0]})])
        client.index.config.galleries["g"].size = 7
        client.index.save()
    code, out = cli("doctor", "--store", str(store))
    assert code == 1, out
    assert "[PROBLEM] fresh" in out and "stale (largest difference 0.6" in out
    assert "[PROBLEM] anchor pairs" in out and "1 lone half" in out
    assert "[PROBLEM] candidates of unknown sets: labels:gone: 1" in out
    assert "[PROBLEM] gallery g: 4 items stored, the config says 7" in out
    assert "run again with --repair" in out
    code, out = cli("doctor", "--store", str(store), "--repair")
    assert code == 0, out
    # the stale vector is rewritten by the first repair that refreshes the candidates (here the lone
    # half's removal, which finds its saved state no longer matches), or else by the freshness check
    assert "[REPAIRED] fresh" in out or "[ok] fresh" in out
    assert "deleted 1 lone half" in out
    code, out = cli("doctor", "--store", str(store), "--json")
    assert code == 0 and json.loads(out)["healthy"] is True
    with AsifClient(store) as client:
        assert 5 not in anchor_ids(client)
        assert_fresh(client)


def test_doctor_reports_what_recovery_on_open_did(tmp_path) -> None:
    store = tmp_path / "s"
    store_with_label_set(store)
    rng = np.random.default_rng(2)
    with AsifClient(store) as client:  # a crash after both halves were written, before the commit
        entry = {"op": "add", "from": client.index.config.next_anchor_id}
        client.index.config.journal.append(entry)
        client.index.config.next_anchor_id += 2
        client.index.save()
        for m, d in (("text", DT), ("image", DI)):
            client.backend.upsert(ANCHORS[m], [PointData(40 + i, {"caption": f"x{i}", "hash": f"h{i}", "ok": 0},
                                                         {"v": unit(rng, 1, d)[0]}) for i in range(2)])
    code, out = cli("doctor", "--store", str(store))
    assert code == 0, out
    assert "[REPAIRED] recovery on open: an interrupted update was found -> completed 2 pair(s)" in out


def test_prune_keeps_the_most_important_anchors_and_rebuilds_the_label_set(tmp_path) -> None:
    from asif_vdb import prune

    store = tmp_path / "s"
    store_with_label_set(store, n_classes=6)
    rng = np.random.default_rng(3)
    queries, labels = unit(rng, 30, DI), rng.integers(0, 6, 30)
    with AsifClient(store) as client:
        report = prune.prune_store(client, "t", 12, tmp_path / "small", query_vectors=queries, query_labels=labels)
        importance = prune.anchor_importance(client.index, client.label_set("t"), queries, labels)
    assert report["kept"] == 12 and report["anchors_written"] == 12 and report["of"] == 40
    assert 0 <= report["accuracy_pruned"] <= 1 and report["k"] == 1  # a tenth of the kept anchors
    with AsifClient(tmp_path / "small") as small:
        assert small.count() == 12
        kept = sorted(p["pruned_from"] for p in small.anchors(anchor_ids(small)).values())
        assert kept == sorted(np.argsort(-importance, kind="stable")[:12].tolist())
        assert small.label_set("t").classes == [f"c{i}" for i in range(6)]
        assert_fresh(small)
    code, out = cli("prune", "--store", str(store), "--labels", "t", "--keep", "5", "--out", str(tmp_path / "s2"))
    assert code == 0, out
    assert json.loads(out)["kept"] == 5
    code, out = cli("prune", "--store", str(store), "--labels", "t", "--keep", "5", "--out", str(tmp_path / "s2"))
    assert code == 2 and "not empty" in out


@pytest.mark.parametrize("keep", [0, 41])
def test_prune_refuses_impossible_sizes(tmp_path, keep) -> None:
    store = tmp_path / "s"
    store_with_label_set(store)
    code, out = cli("prune", "--store", str(store), "--labels", "t", "--keep", str(keep), "--out", str(tmp_path / "o"))
    assert code == 2 and "--keep must be between 1 and the store's 40 anchors" in out


def test_doctor_reports_and_rebuilds_missing_derived_data(tmp_path) -> None:
    """Saved anchor lists are derived data: without them the next update would search every candidate
    again; doctor says so and --repair rebuilds them (and a missing relative vector)."""
    from asif_vdb import refresh

    store = tmp_path / "s"
    store_with_label_set(store)
    (store / "blobs" / f"{refresh.LISTS_BLOB}.npz").unlink()
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
