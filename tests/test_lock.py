"""One process holds an embedded store: a second gets one line naming the holder's pid, and a lock
left by a killed process is taken over without harm."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import add, error_lines, make_store, run_cli

from asif_vdb import AsifClient
from asif_vdb.errors import StoreBusyError
from asif_vdb.remote import RemoteClient
from asif_vdb.store.lock import LOCK_FILE, holder


def hold(store: Path) -> subprocess.Popen[str]:
    """Another process that opens the store and keeps it open until killed."""
    code = textwrap.dedent(f"""
        import time
        from asif_vdb import AsifClient
        client = AsifClient({str(store)!r})
        print("open", flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "open"
    return proc


@pytest.fixture
def store(tmp_path: Path) -> Path:
    with make_store(tmp_path / "s", k=3) as client:
        add(client, np.random.default_rng(0), 12)
    return tmp_path / "s"


def test_a_second_process_gets_one_line_naming_the_holder(store: Path) -> None:
    proc = hold(store)
    try:
        line = f"store {store} is open in another process (pid {proc.pid})"
        with pytest.raises(StoreBusyError) as err:
            AsifClient(store)
        assert str(err.value) == line
        result = run_cli("info", "--store", str(store))
        assert result.exit_code == 2 and error_lines(result) == [f"error: {line}"]
        assert result.stderr.strip() == f"error: {line}"  # one line, no traceback
        assert holder(store).pid == proc.pid and holder(store).serve is None
        with pytest.raises(StoreBusyError, match="does not share it"):
            RemoteClient.for_store(store)
    finally:
        proc.kill()
        proc.wait()


def test_a_lock_left_by_a_killed_process_is_taken_over(store: Path) -> None:
    proc = hold(store)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    note = json.loads((store / LOCK_FILE).read_text())
    assert note["pid"] == proc.pid  # the note stays; the kernel released the lock itself
    assert holder(store) is None
    with AsifClient(store) as client:
        lock = client.engine.state.backend.lock
        assert lock.stale is not None and lock.stale.pid == proc.pid
        assert json.loads((store / LOCK_FILE).read_text())["pid"] != proc.pid
        assert client.count() == 12
    assert (store / LOCK_FILE).read_text() == ""  # closed: nobody holds it


def test_the_same_store_twice_in_one_process_says_so(store: Path) -> None:
    with AsifClient(store):
        with pytest.raises(StoreBusyError, match=f"store {store} is open in this process$"):
            AsifClient(store)
    with AsifClient(store) as again:  # released on close
        assert again.count() == 12
