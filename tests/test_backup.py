"""Backups and restores: a backup of a store with label sets, galleries, a fitted transform and a
pending journal entry restores to a store that answers exactly as the original; restores check every
file and never overwrite a store unasked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import error_lines, make_store, run_cli

from asif_vdb import AsifClient
from asif_vdb.errors import InputError, StoreError
from asif_vdb.schema.store import DeleteEntry
from asif_vdb.workflows.backup import MANIFEST


def answers(client: AsifClient, queries: list[Path]) -> dict:
    """Everything the round trip must keep: anchors, classifications and search scores."""
    ids = client.anchor_ids()
    classes = client.classify(queries, "shapes", 3)
    pics = client.search_many(queries, "pics", 5)
    words = client.search_many(["a red circle", "a blue square"], "anchors", 5)
    return {"ids": ids, "payloads": client.anchors(ids), "transforms": client.transforms(),
            "classes": [[(p.label, p.score) for p in c.predictions] for c in classes],
            "unknown": [c.unknown for c in classes],
            "hits": [[(h.id, h.score) for h in row] for row in pics + words]}


def same(a: dict, b: dict) -> None:
    assert a["ids"] == b["ids"] and a["payloads"] == b["payloads"] and a["transforms"] == b["transforms"]
    assert a["unknown"] == b["unknown"]
    for key in ("classes", "hits"):
        assert [[x for x, _ in row] for row in a[key]] == [[x for x, _ in row] for row in b[key]]
        np.testing.assert_allclose([s for row in a[key] for _, s in row], [s for row in b[key] for _, s in row],
                                   atol=1e-6)


def test_a_restored_store_answers_as_the_original(serve_copy, tmp_path: Path) -> None:
    store, queries, _ = serve_copy
    images = [q for q, _ in queries]
    out = tmp_path / "backup"
    with AsifClient(store) as client:
        client.set_transform(image={"power": 0.5}, text={})
        victim = client.anchor_ids()[5]
        client.engine.state.begin(DeleteEntry(ids=[victim]))  # journaled, not carried out: as after a crash
        report = client.backup(out)
    assert report["pending_updates"] == 1 and report["anchors"] == 54
    assert report["size_on_disk_bytes"] < report["bytes"] / 4  # the logs' holes stay holes
    manifest = json.loads((out / MANIFEST).read_text())
    assert "asif_config.json" in manifest["files"] and any("blobs/" in f for f in manifest["files"])
    assert json.loads((out / "store" / "asif_config.json").read_text())["journal"]  # the pending entry is in it
    with AsifClient(store) as original:  # opening carries the entry forward
        assert victim not in original.anchor_ids()
        want = answers(original, images)
    result = run_cli("restore", str(out), "--store", str(tmp_path / "restored"), "--json")
    assert result.exit_code == 0, result.stderr
    with AsifClient(tmp_path / "restored") as restored:
        assert restored.last_repair.deleted == [victim]  # carried forward on the restored copy too
        same(answers(restored, images), want)
        assert {"shapes"} == set(restored.label_sets()) and {"pics", "words"} <= set(restored.galleries())
        assert all(c.healthy for c in restored.doctor())


def test_restore_checks_every_file_and_overwrites_only_when_told(served_shapes, tmp_path: Path) -> None:
    store, _, _ = served_shapes
    out = tmp_path / "b"
    result = run_cli("backup", "--store", str(store), "--out", str(out))
    assert result.exit_code == 0 and "written to" in result.stdout
    again = run_cli("backup", "--store", str(store), "--out", str(out))  # not a new folder
    assert again.exit_code == 2 and len(error_lines(again)) == 1
    target = tmp_path / "s2"
    assert AsifClient.restore(out, target)["files"] > 0
    refused = run_cli("restore", str(out), "--store", str(target))
    assert refused.exit_code == 2 and "--force" in error_lines(refused)[0] and len(error_lines(refused)) == 1
    with AsifClient(target) as client:
        client.delete_anchors(client.anchor_ids()[:10])
    replaced = AsifClient.restore(out, target, force=True)
    assert replaced["replaced"] is True
    with AsifClient(target) as client:
        assert client.count() == 54
    # a damaged file: the restore stops, names it, and leaves the existing store as it was
    victim = sorted((out / "store" / "collections").rglob("*.dat"))[0]
    data = bytearray(victim.read_bytes())
    data[0] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="does not match its checksum"):
        AsifClient.restore(out, target, force=True)
    with AsifClient(target) as client:
        assert client.count() == 54
    assert not list(tmp_path.glob(".s2.*"))  # no half-restored folder left behind
    with pytest.raises(InputError, match="not a backup"):
        AsifClient.restore(tmp_path, tmp_path / "s3")


def test_a_store_without_files_says_it_cannot_be_backed_up(tmp_path: Path) -> None:
    client = make_store(None, k=3)
    with pytest.raises(StoreError, match="cannot take backups"):
        client.backup(tmp_path / "b")
    client.close()
