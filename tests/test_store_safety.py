"""Nothing a user does can break a store: one regression test per defect found on the first release
(out-of-range ids, a lost anchor collection, a lost config, bad table rows, interrupted label sets,
tracebacks, unchecked embeddings, files checked late). The full-disk case is in test_disk_full.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import DI, DT, REPO, add, assert_fresh, error_lines, image_bytes, make_store, run_cli, unit_rows, write

from asif_vdb import AsifClient, AsifError, InputError, StoreError
from asif_vdb.encoders import registry
from ingest.readers.table import read_rows

TESTS = Path(__file__).resolve().parent


def small_store(path: Path, n: int = 10) -> None:
    with make_store(path, k=4) as client:
        add(client, np.random.default_rng(0), n)


def journal_of(path: Path) -> dict:
    return json.loads((path / "asif_config.json").read_text())


# -- 1: out-of-range ids, and journal entries that cannot be replayed --------------------------------
@pytest.mark.parametrize("ids", [[-1], [2**70], ["abc"], [1.5], [True], "3"])
def test_bad_anchor_ids_are_refused_before_anything_is_journaled(tmp_path, ids) -> None:
    path = tmp_path / "s"
    small_store(path)
    with AsifClient(path) as client:
        with pytest.raises(InputError, match="anchor ids"):
            client.delete_anchors(ids)
        assert client.count() == 10
    assert journal_of(path)["journal"] == []


def test_the_engine_refuses_to_journal_an_id_it_could_not_replay(tmp_path) -> None:
    path = tmp_path / "s"
    small_store(path)
    with AsifClient(path) as client:
        assert client.engine is not None
        with pytest.raises(InputError, match="0 .. 2\\*\\*63-1"):
            client.engine.delete_pairs([2**64])
    assert journal_of(path)["journal"] == []


@pytest.mark.parametrize("entry", [{"op": "delete", "ids": [-1]}, {"op": "delete", "ids": [2**70]},
                                   {"op": "nonsense"}])
def test_a_journal_entry_that_cannot_be_replayed_never_locks_the_store(tmp_path, entry) -> None:
    """As the first release wrote it: the store opens, says so in one line, and doctor drops it."""
    path = tmp_path / "s"
    small_store(path)
    config = journal_of(path)
    config["journal"] = [entry]
    (path / "asif_config.json").write_text(json.dumps(config))
    with AsifClient(path) as client:  # opens
        with pytest.raises(StoreError, match="--drop-journal"):
            client.search_embeddings(unit_rows(np.random.default_rng(1), 1, DT), "text", "anchors")
    result = run_cli("anchors", "list", "--store", path)  # reading the ids needs no query
    assert result.exit_code == 0
    result = run_cli("doctor", "--store", path)
    assert result.exit_code == 1 and "cannot be carried out" in result.stdout and "--drop-journal" in result.stdout, \
        result.output
    result = run_cli("doctor", "--repair", "--store", path)  # without the flag: still reported, not dropped
    assert result.exit_code == 1 and "[PROBLEM] journal" in result.stdout
    result = run_cli("doctor", "--repair", "--drop-journal", "--store", path)
    assert result.exit_code == 0, result.stdout
    assert "[REPAIRED] journal" in result.stdout and result.stdout.strip().endswith("healthy")
    with AsifClient(path) as client:
        assert client.count() == 10 and client.engine is not None and not client.engine.config.blocked
        client.search_embeddings(unit_rows(np.random.default_rng(1), 1, DT), "text", "anchors")


def test_an_entry_that_fails_on_every_open_is_reported_not_raised(tmp_path, monkeypatch) -> None:
    path = tmp_path / "s"
    small_store(path)
    config = journal_of(path)
    config["journal"] = [{"op": "delete", "ids": [3]}]
    (path / "asif_config.json").write_text(json.dumps(config))
    from asif_vdb.engine.anchors import AnchorStore

    def broken(self, ids):
        raise RuntimeError("engine refused")

    monkeypatch.setattr(AnchorStore, "delete", broken)
    with AsifClient(path) as client:
        assert client.last_repair.failed and "engine refused" in client.last_repair.failed[0]
        checks = {c.name: c for c in client.doctor(repair=True)}
        assert not checks["journal"].healthy and "engine refused" in checks["journal"].detail
        checks = {c.name: c for c in client.doctor(repair=True, drop_journal=True)}
        assert checks["journal"].repaired == "dropped"
        assert client.engine is not None and client.engine.config.journal == []


# -- 2: a lost anchor collection is rebuilt, never emptied ------------------------------------------
@pytest.mark.parametrize("lost", ["anchor_text", "anchor_image"])
def test_doctor_rebuilds_a_lost_anchor_collection_from_the_payloads(store_copy, lost) -> None:
    store, queries, _ = store_copy
    images = [q for q, _ in queries]
    with AsifClient(store) as client:
        before = client.class_scores(client.encode_images(images), "shapes")
        n = client.count()
    shutil.rmtree(store / "collections" / lost)
    with AsifClient(store) as client:  # the store opens, but refuses to answer from half its anchors
        with pytest.raises(StoreError, match="damaged"):
            client.classify(images, "shapes")
    result = run_cli("doctor", "--store", store)
    assert result.exit_code == 1 and f"{n} lone half(s)" in result.stdout
    result = run_cli("doctor", "--repair", "--store", store)
    assert result.exit_code == 0, result.stdout
    assert f"rebuilt {n} lone half(s)" in result.stdout
    with AsifClient(store) as client:
        assert client.count() == n
        np.testing.assert_allclose(client.class_scores(client.encode_images(images), "shapes"), before, atol=1e-4)
        # a re-encoded half equals the lost one to the float32 rounding of the encoder's batch
        # arithmetic (about 1e-6), so similarities saved before the loss match it to that
        assert_fresh(client, sims_tol=1e-5)


def test_doctor_refuses_a_mass_deletion_without_force(tmp_path) -> None:
    """Made-up encoders: the captions cannot be encoded again, so the halves cannot be rebuilt."""
    path = tmp_path / "s"
    small_store(path, 12)
    shutil.rmtree(path / "collections" / "anchor_text")
    result = run_cli("doctor", "--repair", "--store", path)
    assert result.exit_code == 1 and "refused without --force" in result.stdout
    with AsifClient(path, for_repair=True) as client:
        assert client.engine is not None
        assert client.engine.state.backend.count("anchor_image") == 12  # nothing deleted
    result = run_cli("doctor", "--repair", "--force", "--store", path)
    assert result.exit_code == 0 and "deleted 12 lone half(s)" in result.stdout


# -- 3: a lost config is restored, never overwritten ------------------------------------------------
@pytest.mark.parametrize("damage", ["remove", "truncate"])
def test_a_store_without_its_config_is_never_overwritten_and_is_restored(tmp_path, damage) -> None:
    path = tmp_path / "s"
    small_store(path)
    with AsifClient(path) as client:
        ids = client.anchor_ids()
    config = path / "asif_config.json"
    assert (path / "asif_config.json.bak").is_file()  # the previous version is kept beside it
    if damage == "remove":
        config.unlink()
    else:
        config.write_text(config.read_text()[:50])
    with pytest.raises(StoreError, match="doctor --repair"):
        AsifClient(path)
    table = write(tmp_path / "t.csv", "image,caption\na.jpg,a red square\n")
    write(tmp_path / "a.jpg", image_bytes())
    result = run_cli("ingest", "--store", path, table)  # what the first release's error advised
    assert result.exit_code == 2 and len(error_lines(result)) == 1 and "doctor --repair" in error_lines(result)[0]
    result = run_cli("doctor", "--store", path)
    assert result.exit_code == 1 and "--repair restores it" in result.stdout
    result = run_cli("doctor", "--repair", "--store", path)
    assert result.exit_code == 0, result.stdout
    with AsifClient(path) as client:
        assert client.anchor_ids() == ids
        assert_fresh(client)


# -- 4: a bad row in a table ------------------------------------------------------------------------
def test_a_non_utf8_row_is_skipped_and_the_rows_after_it_are_read(tmp_path) -> None:
    lines = [b"image,caption\n"] + [f"{i}.jpg,caption {i}\n".encode() for i in range(300)]
    lines[150] = b"149.jpg,caf\xe9 au lait\n"
    table = write(tmp_path / "t.csv", b"".join(lines))
    rows = list(read_rows(str(table)))
    bad = [r for r in rows if isinstance(r[1], str)]
    assert len(rows) == 300 and len(bad) == 1 and "not valid utf-8-sig text" in bad[0][1]
    rows = list(read_rows(str(table), encoding="latin-1"))  # --encoding
    assert all(isinstance(r[1], dict) for r in rows) and rows[149][1]["caption"] == "café au lait"


# -- 6: an interrupted label set leaves the old one, or none ----------------------------------------
CHILD = textwrap.dedent("""
    import os, sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from asif_vdb import AsifClient
    from asif_vdb.schema.store import LabelSetInfo
    from helpers import DT, unit_rows
    client = AsifClient({path!r})
    backend = client.engine.state.backend
    real, calls = backend.upsert, []
    def dying(collection, *args, **kwargs):
        out = real(collection, *args, **kwargs)
        if collection == "candidates":
            os._exit(17)
        return out
    backend.upsert = dying
    info = LabelSetInfo(name="pets", classes=["a", "b", "c"], templates=["{{}}"])
    client.engine.label_sets.store(info, ["a", "b", "c"], unit_rows(np.random.default_rng(5), 3, DT))
    os._exit(0)
""")


@pytest.mark.parametrize("existing", [False, True])
def test_an_interrupted_label_set_write_leaves_the_previous_state(tmp_path, existing) -> None:
    from asif_vdb.schema.store import LabelSetInfo

    path = tmp_path / "s"
    small_store(path, 20)
    queries = unit_rows(np.random.default_rng(2), 4, DI)
    with AsifClient(path) as client:
        assert client.engine is not None
        if existing:
            info = LabelSetInfo(name="pets", classes=["x", "y"], templates=["{}"], threshold=0.5)
            client.engine.label_sets.store(info, ["x", "y"], unit_rows(np.random.default_rng(4), 2, DT))
            before = client.class_scores(queries, "pets")
    run = subprocess.run([sys.executable, "-c", CHILD.format(tests=str(TESTS), path=str(path))], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 17, run.stderr
    with AsifClient(path) as client:
        assert client.last_repair.sets_rolled_back == ["label set pets"]
        if existing:
            assert client.label_set("pets").classes == ["x", "y"] and client.label_set("pets").threshold == 0.5
            np.testing.assert_allclose(client.class_scores(queries, "pets"), before, atol=1e-6)
        else:
            assert client.label_sets() == []
        assert all(c.healthy for c in client.doctor())


def test_replacing_a_calibrated_label_set_warns(tmp_path) -> None:
    from asif_vdb.schema.store import LabelSetInfo

    path = tmp_path / "s"
    small_store(path)
    with AsifClient(path) as client:
        assert client.engine is not None
        client.engine.label_sets.store(LabelSetInfo(name="pets", classes=["x"], templates=["{}"], threshold=0.3),
                                       ["x"], unit_rows(np.random.default_rng(4), 1, DT))
    result = run_cli("labels", "create", "pets", "--classes", "a,b", "--store", path)
    assert "calibrated thresholds go" in result.stderr  # then it fails: made-up encoders cannot encode
    assert result.exit_code == 2 and len(error_lines(result)) == 1
    with AsifClient(path) as client:  # the failed replacement left the old set as it was
        assert client.label_set("pets").threshold == 0.3 and client.engine is not None
        assert client.engine.config.journal == []


# -- 7: one line, exit 2, never a traceback -----------------------------------------------------------
@pytest.mark.parametrize("args,match", [
    (["-k", "0"], "-k"), (["-p", "0"], "-p"), (["--batch", "0"], "--batch"),
    (["--image-encoder", "timm:resnet18"], "cannot load the timm encoder"),
    (["--image-encoder", "timm:tf_efficientnet_lite0@{table}"], "cannot load the timm encoder"),
])
def test_ingest_usage_errors_are_one_line(tmp_path, args, match) -> None:
    table = write(tmp_path / "t.csv", "image,caption\na.jpg,a red square\n")
    write(tmp_path / "a.jpg", image_bytes())
    args = [a.format(table=table) for a in args]
    result = run_cli("ingest", "--store", tmp_path / "s", table, *args)
    assert result.exit_code == 2 and len(error_lines(result)) == 1 and match in error_lines(result)[0]
    assert "Traceback" not in result.output


def test_an_undecodable_class_file_is_one_line(tmp_path) -> None:
    path = tmp_path / "s"
    small_store(path)
    classes = write(tmp_path / "classes.txt", b"\xff\xfecat\n")
    result = run_cli("labels", "create", "x", "--store", path, "--classes-file", classes)
    assert result.exit_code == 2 and "--encoding" in error_lines(result)[0]


@pytest.mark.parametrize("call", [
    lambda c, r: c.add_anchor_embeddings(unit_rows(r, 3, DI), unit_rows(r, 2, DT), [{"caption": "a"}] * 3),
    lambda c, r: c.add_anchor_embeddings(np.ones((2, 2, DI)), unit_rows(r, 2, DT), [{"caption": "a"}] * 2),
    lambda c, r: c.add_anchor_embeddings(unit_rows(r, 1, DI), unit_rows(r, 1, DT), [{"caption": "a", "x": object()}]),
    lambda c, r: c.add_anchor_embeddings(unit_rows(r, 1, DI), unit_rows(r, 1, DT), [{"caption": "a", "x": np.nan}]),
    lambda c, r: c.add_anchor_embeddings(unit_rows(r, 1, DI), unit_rows(r, 1, DT), [{"caption": "a\ud800"}]),
    lambda c, r: c.index_gallery_embeddings("g", unit_rows(r, 1, DI), "image", [{"ref": "\udc80"}]),
    lambda c, r: c.search_embeddings(np.ones((1, 1, DT)), "text", "anchors"),
])
def test_engine_errors_from_the_python_api_are_asif_errors(tmp_path, call) -> None:
    path = tmp_path / "s"
    small_store(path)
    with AsifClient(path) as client:
        with pytest.raises(AsifError):
            call(client, np.random.default_rng(1))
        assert client.count() == 10 and client.engine is not None and client.engine.config.journal == []


# -- 8: precomputed embeddings are checked as images and captions are -------------------------------
@pytest.mark.parametrize("image,text,payloads,match", [
    (lambda r: unit_rows(r, 1, DI)[0], lambda r: unit_rows(r, 1, DT)[0], [{"caption": "a"}], "2-D"),
    (lambda r: unit_rows(r, 1, DI).astype(complex), lambda r: unit_rows(r, 1, DT), [{"caption": "a"}], "real"),
    (lambda r: unit_rows(r, 1, DI), lambda r: unit_rows(r, 1, DT), [{}], "caption"),
    (lambda r: unit_rows(r, 1, DI), lambda r: unit_rows(r, 1, DT), [{"caption": " "}], "caption"),
    (lambda r: unit_rows(r, 1, DI), lambda r: unit_rows(r, 1, DT), [{"caption": 3}], "caption"),
    (lambda r: unit_rows(r, 1, DI), lambda r: unit_rows(r, 1, DT), [{"caption": "a", "ok": 1}], "reserved"),
    (lambda r: unit_rows(r, 2, DI), lambda r: unit_rows(r, 2, DT),
     [{"caption": "a", "hash": "h"}, {"caption": "b", "hash": "h"}], "same hash"),
])
def test_add_anchor_embeddings_refuses_what_add_anchors_refuses(tmp_path, image, text, payloads, match) -> None:
    with make_store(tmp_path / "s", k=4) as client:
        rng = np.random.default_rng(0)
        with pytest.raises(InputError, match=match):
            client.add_anchor_embeddings(image(rng), text(rng), payloads)
        assert client.count() == 0


def test_a_string_is_not_a_list_of_classes(tmp_path) -> None:
    with make_store(tmp_path / "s", k=4) as client:
        with pytest.raises(InputError, match="list of names"):
            client.create_label_set("x", "cat")


# -- 9: files are checked before any model loads ----------------------------------------------------
@pytest.mark.parametrize("command", [
    ["anchors", "add", "{missing}.csv"], ["gallery", "add", "g", "--table", "{missing}.csv"],
    ["classify", "--labels", "x", "{missing}.jpg"], ["eval", "classify", "{missing}"],
    ["calibrate", "--labels", "x", "--data", "{missing}"],
])
def test_files_are_checked_before_the_models_load(tmp_path, command) -> None:
    from asif_vdb.schema.store import LabelSetInfo

    path = tmp_path / "s"
    small_store(path)
    with AsifClient(path) as client:
        assert client.engine is not None
        client.engine.label_sets.store(LabelSetInfo(name="x", classes=["a"], templates=["{}"]), ["a"],
                                       unit_rows(np.random.default_rng(4), 1, DT))
    loaded = set(registry._BUILT)
    args = [a.format(missing=tmp_path / "nothing") for a in command]
    result = run_cli(*args, "--store", path)
    assert result.exit_code == 2 and len(error_lines(result)) == 1 and "nothing" in result.stderr, result.output
    assert set(registry._BUILT) == loaded  # no model was loaded for it


def test_image_references_are_absolute_paths(tmp_path, monkeypatch) -> None:
    write(tmp_path / "data" / "a.jpg", image_bytes(color=(200, 10, 10), size=32))
    write(tmp_path / "data" / "b.jpg", image_bytes(color=(10, 200, 10), size=32))
    write(tmp_path / "data" / "t.csv", "image,caption\na.jpg,a red square\nb.jpg,a green square\n")
    monkeypatch.chdir(tmp_path)
    result = run_cli("anchors", "add", "data/t.csv", "--store", "s")
    assert result.exit_code == 0, result.output
    with AsifClient(tmp_path / "s") as client:
        refs = [p["image"] for p in client.anchors(client.anchor_ids()).values()]
    assert sorted(refs) == [str(tmp_path / "data" / "a.jpg"), str(tmp_path / "data" / "b.jpg")]
