"""`asif serve` as a user runs it: it holds the store and names its address in the lock file; other
`asif` commands and RemoteClient on that store go through it; Ctrl-C stops it and frees the store."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import DI, DT, make_store, run_asif, synthetic_labels, unit_rows

from asif_vdb import AsifClient
from asif_vdb.errors import NotFoundError, StoreError
from asif_vdb.remote import RemoteClient
from asif_vdb.store.lock import holder


@pytest.fixture
def store(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    with make_store(tmp_path / "s", k=5) as client:
        client.add_anchor_embeddings(unit_rows(rng, 40, DI), unit_rows(rng, 40, DT),
                                     [{"caption": f"c{i}", "source": "a" if i < 30 else "b"} for i in range(40)])
        synthetic_labels(client, rng, "things", 4)
        client.index_gallery_embeddings("g", unit_rows(rng, 12, DI), "image", [{"n": i} for i in range(12)])
    return tmp_path / "s"


def test_other_commands_and_the_remote_client_go_through_asif_serve(store: Path) -> None:
    queries = unit_rows(np.random.default_rng(5), 3, DI)
    with AsifClient(store) as client:
        want_classes = client.classify_embeddings(queries, "things", 2, threshold=None)
        want_hits = client.search_embeddings(queries, "image", "g", 4)
    proc = subprocess.Popen([sys.executable, "-m", "asif_vdb.cli", "serve", "--store", str(store), "--port", "0"],
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        while "serving" not in line:
            assert line, "asif serve stopped before serving"
            line = proc.stderr.readline()
        address = holder(store).serve
        assert address is not None and address.startswith("http://127.0.0.1:") and f"at {address}:" in line
        assert "warmed up in" in line  # the anchor index was searched before the first request
        with RemoteClient.for_store(store) as remote:
            got = remote.classify_embeddings(queries, "things", 2, threshold=None)
            assert [c.label for c in got] == [c.label for c in want_classes]
            np.testing.assert_allclose([p.score for c in got for p in c.predictions],
                                       [p.score for c in want_classes for p in c.predictions], atol=1e-6)
            assert [[h.id for h in row] for row in remote.search_embeddings(queries, "image", "g", 4)] == \
                [[h.id for h in row] for row in want_hits]
            assert remote.label_sets() == ["things"] and remote.gallery("g").size == 12
            with pytest.raises(NotFoundError):
                remote.label_set("nope")
            assert len(remote.anchor_ids_where(source="b")) == 10
            assert remote.anchors([0])[0]["caption"] == "c0"
            with pytest.raises(StoreError, match="not available through the service"):
                remote.set_transform(image={})
            # another asif command on the store is answered by the serving process
            info = run_asif("info", "--store", str(store))
            assert info.returncode == 0 and json.loads(info.stdout)["anchors"] == 40
            assert f"asking it at {address}" in info.stderr
            deleted = run_asif("anchors", "delete", "--where", "source=b", "--store", str(store), "--json")
            assert deleted.returncode == 0, deleted.stderr
            assert json.loads(deleted.stdout)["anchors_after"] == 30
            assert remote.count() == 30
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0 and "the store is closed" in proc.stderr.read()
    assert holder(store) is None  # stopped: the store is free again
    with AsifClient(store) as client:
        assert client.count() == 30


def test_serve_refuses_a_busy_port_in_one_line(store: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    try:
        done = run_asif("serve", "--store", str(store), "--port", str(port), timeout=120)
    finally:
        sock.close()
    assert done.returncode == 2
    errors = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and str(port) in errors[0]
