"""A full disk: the embedded store checks the free space before it writes (Qdrant Edge writes through
memory maps and dies with SIGBUS when a write meets a full disk), so a write on a nearly full disk is
refused in one line, the process lives on, and the store is intact once space is freed.

The test mounts a small tmpfs (root only); it skips, saying why, where mounting is not allowed. The
store runs in a child process: were the protection missing, the child, not pytest, would be killed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, add, make_store, run_asif

from asif_vdb import AsifClient, StoreError
from asif_vdb.store.files import MIB, SpaceGuard, free_bytes, write_with_backup

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 GiB tmpfs (it takes memory only for what is written)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small file system needs root and mount(8)")
    mnt = tmp_path / "fs"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1g", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(mnt: Path, leave: int) -> Path:
    """A file that leaves ``leave`` bytes free on ``mnt``."""
    filler = mnt / "filler"
    size = free_bytes(mnt) - leave
    with filler.open("wb") as f:
        block = bytes(MIB)
        for _ in range(size // MIB):
            f.write(block)
        f.write(bytes(size % MIB))
    return filler


CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from asif_vdb import AsifClient, StoreError
    from asif_vdb.store.files import SpaceGuard
    from helpers import add
    client = AsifClient({store!r})
    guard = client.engine.state.backend.space
    with open({filler!r}, "wb") as f:  # the disk fills up while the store is open
        from asif_vdb.store.files import free_bytes
        f.write(bytes(free_bytes(guard.root) - guard.need() + (8 << 20)))
    try:
        add(client, np.random.default_rng(5), 20, source="late")
        print("written")
    except StoreError as e:
        print("error:", e)
    client.close()
""")


def test_a_write_on_a_full_disk_is_refused_in_one_line_and_nothing_is_lost(small_fs) -> None:
    store = small_fs / "s"
    with make_store(store, k=4) as client:
        add(client, np.random.default_rng(0), 30)
    filler = small_fs / "filler"
    run = subprocess.run([sys.executable, "-c", CHILD.format(tests=str(TESTS), store=str(store), filler=str(filler))],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])  # not killed (SIGBUS is -7)
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: not enough free space") and "MiB free" in lines[0]
    # the command line says the same in one line (it cannot even open the store's collections)
    result = run_asif("anchors", "delete", "1", "--store", store)
    assert result.returncode == 2 and result.stderr.count("error:") == 1 and "free space" in result.stderr
    assert "Traceback" not in result.stderr
    filler.unlink()
    with AsifClient(store) as client:  # space freed: nothing was lost, and writes go on
        assert client.count() == 30 and client.engine is not None and client.engine.config.journal == []
        assert all(c.healthy for c in client.doctor())
        add(client, np.random.default_rng(5), 20, source="late")
        assert client.count() == 50


def test_a_config_write_on_a_full_disk_is_one_line(small_fs) -> None:
    target = small_fs / "asif_config.json"
    write_with_backup(target, {"a": 1})
    filler = fill(small_fs, 0)
    with pytest.raises(StoreError, match="no space left on the device"):
        write_with_backup(target, {"a": "x" * 100_000})
    assert target.read_text().strip().startswith("{")  # the previous version is intact
    filler.unlink()


def test_the_space_a_store_needs_is_what_the_guard_asks_for(small_fs) -> None:
    """A store is refused a write when the free space is under the room its files may still take
    (their preallocated holes) plus a margin; with that much free it writes."""
    store = small_fs / "s"
    with make_store(store, k=4) as client:
        add(client, np.random.default_rng(0), 30)
        need = SpaceGuard(store).need()
        filler = fill(small_fs, need + 32 * MIB)
        add(client, np.random.default_rng(1), 5)  # enough room: written
        filler.unlink()
        assert client.count() == 35
    assert 100 * MIB < need < 1000 * MIB  # measured: about 600 MiB of holes for a new store, plus the margin
