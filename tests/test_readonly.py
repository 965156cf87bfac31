"""A store on a read-only mount: classify, search, info and doctor answer (Qdrant Edge opens every
file read-write, so the store is read through a private copy); any change is refused in one line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from helpers import copy_store, error_lines, run_cli

from asif_vdb import AsifClient


@pytest.fixture
def read_only_store(served_shapes, tmp_path: Path):
    """A copy of the served shapes store behind a read-only bind mount (skipped where mounting is
    not allowed: it needs root or CAP_SYS_ADMIN)."""
    store, queries, _ = served_shapes
    source = copy_store(store, tmp_path / "source")
    mount = tmp_path / "ro"
    mount.mkdir()
    done = subprocess.run(["mount", "-o", "bind,ro", str(source), str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot make a read-only bind mount here: {done.stderr.strip() or done.returncode}")
    try:
        probe = mount / "probe"
        try:
            probe.write_text("x")
            pytest.skip("the bind mount is writable here (the kernel ignored ro)")
        except OSError:
            pass
        yield mount, queries
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_read_only_store_answers_and_refuses_changes_in_one_line(read_only_store) -> None:
    store, queries = read_only_store
    query, shape = queries[0]
    info = run_cli("info", "--store", str(store))
    assert info.exit_code == 0, info.stderr
    data = json.loads(info.stdout)
    assert data["read_only"] is True and data["anchors"] == 54 and data["disk"]["size_on_disk_bytes"] > 0
    classify = run_cli("classify", str(query), "--store", str(store), "--labels", "shapes", "--json", "--no-progress")
    assert classify.exit_code == 0, classify.stderr
    assert json.loads(classify.stdout.splitlines()[0])["label"] == shape
    search = run_cli("search", str(query), "--store", str(store), "--gallery", "pics", "--json")
    assert search.exit_code == 0 and json.loads(search.stdout)[0]["payload"]["ref"] == str(query)
    # the anchors gallery is built on its first search: a write, refused in one line that says so
    anchors = run_cli("search", "a red circle", "--store", str(store), "--gallery", "anchors")
    assert anchors.exit_code == 2 and "anchors gallery" in error_lines(anchors)[0] and len(error_lines(anchors)) == 1
    doctor = run_cli("doctor", "--store", str(store))
    assert doctor.exit_code == 0 and doctor.stdout.strip().endswith("healthy"), doctor.stdout
    for args in (["labels", "delete", "shapes"], ["anchors", "delete", "3"], ["doctor", "--repair"]):
        refused = run_cli(*args, "--store", str(store))
        if args[0] == "doctor" and refused.exit_code == 0:
            continue  # nothing to repair: nothing written
        assert refused.exit_code == 2, (args, refused.stdout, refused.stderr)
        assert len(error_lines(refused)) == 1 and "read-only" in error_lines(refused)[0]
    with AsifClient(store) as client:  # nothing changed, and no file was left in the mount
        assert client.count() == 54 and client.label_sets() == ["shapes"]
    assert not (store / "asif.lock").exists() or (store / "asif.lock").stat().st_size == 0
