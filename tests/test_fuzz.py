"""Fuzzing (hypothesis) of what users hand the library: the CLI's arguments and input files (table
bytes, tar members, image bytes) and the client's public methods (ids, arrays, payloads, strings).

The property: every outcome is a result, or an ``AsifError`` (the CLI: exit 2 with one ``error:``
line); never another exception, and never a store that ``doctor`` finds broken afterwards. Each test
records how many cases ran (``CASES``; printed with ``-s``). Default: a few dozen cases per test;
``-m slow`` runs ten times as many.
"""

from __future__ import annotations

import io
import json
import string
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import DI, DT, add, error_lines, image_bytes, make_store, put_sets, run_cli
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from asif_vdb import AsifClient, AsifError
from asif_vdb.schema.store import LabelSetInfo

#: Cases run per test (reported at the end of the session with -s).
CASES: dict[str, int] = {}
DEFAULT, SLOW = 40, 400
#: No shrinking: a store's state carries over between cases, so a failure is reported as found.
FAST = settings(max_examples=DEFAULT, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
                report_multiple_bugs=False,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
MANY = settings(FAST, max_examples=SLOW)


def count(name: str) -> None:
    CASES[name] = CASES.get(name, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def report_cases():
    yield
    print("\nfuzz cases run:", ", ".join(f"{k} {v}" for k, v in sorted(CASES.items())))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fuzz") / "s"
    rng = np.random.default_rng(0)
    with make_store(path, k=4) as client:
        add(client, rng, 30)
        put_sets(client, rng, 6, 4)
        assert client.engine is not None
        client.engine.label_sets.store(LabelSetInfo(name="animals", classes=["cat", "dog"], templates=["{}"]),
                                       ["cat", "dog"], rng.standard_normal((2, DT)).astype(np.float32))
    return path


def assert_healthy(path: Path) -> None:
    with AsifClient(path) as client:
        checks = client.doctor()
        assert all(c.healthy for c in checks), [c.line() for c in checks if not c.healthy]


# -- the client's public methods ------------------------------------------------------------------
odd_text = st.text(alphabet=st.characters(codec=None, blacklist_categories=()), max_size=12)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), odd_text,
                    st.binary(max_size=4), st.builds(object))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(odd_text | st.integers(),
                                                                                          inner, max_size=3),
                      max_leaves=6)
payload = st.dictionaries(st.sampled_from(["caption", "ref", "source", "hash", "ok", "x"]) | odd_text, values,
                          max_size=4)
ids = st.one_of(st.lists(st.one_of(st.integers(-5, 60), st.integers(-2**70, 2**70), st.floats(), odd_text,
                                   st.booleans(), st.none()), max_size=5), odd_text, st.integers(), st.none())
arrays = hnp.arrays(dtype=st.sampled_from([np.float32, np.float64, np.int64, np.complex64, np.bool_]),
                    shape=st.one_of(st.sampled_from([(1, DI), (2, DT), (3, DI), (DI,), (2, 2, DT), (0, DI), (1, 7)]),
                                    hnp.array_shapes(max_dims=3, max_side=4)))
names = st.one_of(st.sampled_from(["g", "t", "animals", "anchors", "nope", ""]), odd_text)


def calls() -> st.SearchStrategy[tuple[str, Callable[[AsifClient], Any]]]:
    return st.one_of(
        st.builds(lambda i, t, p: ("add_anchor_embeddings", lambda c: c.add_anchor_embeddings(i, t, p)),
                  arrays, arrays, st.lists(payload, max_size=3)),
        st.builds(lambda x: ("delete_anchors", lambda c: c.delete_anchors(x)), ids),
        st.builds(lambda n, a, m, p: ("index_gallery_embeddings", lambda c: c.index_gallery_embeddings(n, a, m, p)),
                  names, arrays, st.sampled_from(["image", "text", "audio"]), st.none() | st.lists(payload, max_size=3)),
        st.builds(lambda a, m, n, k: ("search_embeddings", lambda c: c.search_embeddings(a, m, n, k)),
                  arrays, st.sampled_from(["image", "text", 3]), names, st.integers(-2, 60)),
        st.builds(lambda a, n, k: ("classify_embeddings", lambda c: c.classify_embeddings(a, n, k)),
                  arrays, names, st.one_of(st.integers(-2, 5), st.floats(), st.none())),
        st.builds(lambda kv: ("anchor_ids_where", lambda c: c.anchor_ids_where(**kv)),
                  st.dictionaries(st.sampled_from(["source", "caption", "ok", "x"]), values, max_size=2)),
        st.builds(lambda n, x: ("delete_from_gallery", lambda c: c.delete_from_gallery(n, x)), names, ids),
        st.builds(lambda x: ("anchors", lambda c: c.anchors(x)), ids),
    )


def client_cases(store: Path, cases: list[tuple[str, Callable[[AsifClient], Any]]]) -> None:
    with AsifClient(store) as client:
        for _name, call in cases:
            count("client")
            try:
                call(client)
            except AsifError:
                pass


@FAST
@given(cases=st.lists(calls(), min_size=1, max_size=4))
def test_client_methods_return_or_raise_asif_errors(store, cases) -> None:
    client_cases(store, cases)


def test_after_the_client_cases_the_store_is_healthy(store) -> None:
    assert_healthy(store)


@pytest.mark.slow
@MANY
@given(cases=st.lists(calls(), min_size=1, max_size=4))
def test_more_client_cases(store, cases) -> None:
    client_cases(store, cases)
    count("client (slow)")


# -- the command line's arguments ----------------------------------------------------------------
COMMANDS = [["anchors", "delete"], ["anchors", "list"], ["info"], ["doctor"], ["labels", "list"],
            ["labels", "delete"], ["gallery", "list"], ["gallery", "delete"], ["index", "show"], ["classify"]]
tokens = st.one_of(st.sampled_from(["--where", "--limit", "--top", "-k", "-p", "--json", "--dry-run", "--all",
                                    "--repair", "--force", "--drop-journal", "--sample", "--labels", "--batch", "--",
                                    "0", "-1", "1", "2.5", "1e400", str(2**70), "nan", "g", "t", "animals", "a=b",
                                    "source=s", "=", "--url", "--store"]),
                   st.text(alphabet=string.printable, max_size=8))


def cli_case(store: Path, command: list[str], args: list[str]) -> None:
    count("cli")
    result = run_cli(*command, *args, "--store", str(store))  # a traceback raises here
    assert result.exit_code in (0, 1, 2), result.output
    if result.exit_code == 2:
        assert len(error_lines(result)) == 1, result.output


@FAST
@given(command=st.sampled_from(COMMANDS), args=st.lists(tokens, max_size=5))
def test_cli_arguments_exit_0_1_or_2_with_one_line(store, command, args) -> None:
    cli_case(store, command, args)


def test_after_the_cli_cases_the_store_is_healthy(store) -> None:
    assert_healthy(store)


@pytest.mark.slow
@MANY
@given(command=st.sampled_from(COMMANDS), args=st.lists(tokens, max_size=6))
def test_more_cli_arguments(store, command, args) -> None:
    cli_case(store, command, args)


# -- input files -------------------------------------------------------------------------------
cells = st.one_of(st.sampled_from(["a.jpg", "b.png", "../a.jpg", "/etc/passwd", "", "a caption", "\"", ",", "\t"]),
                  st.text(max_size=10))
image_data = st.one_of(st.just(image_bytes(size=16)), st.just(image_bytes("PNG", size=16)), st.binary(max_size=64),
                       st.builds(lambda b, n: image_bytes(size=16)[:n] + b, st.binary(max_size=8), st.integers(0, 200)))


def table_bytes(kind: str) -> st.SearchStrategy[bytes]:
    sep = {"csv": ",", "tsv": "\t"}.get(kind, ",")
    rows = st.lists(st.tuples(cells, cells), max_size=5)
    if kind == "jsonl":
        line = st.one_of(st.builds(lambda r: json.dumps({"image": r[0], "caption": r[1]}), st.tuples(cells, cells)),
                         st.text(max_size=20))
        text = st.lists(line, max_size=5).map("\n".join)
    else:
        text = rows.map(lambda rs: "image" + sep + "caption\n" + "".join(a + sep + b + "\n" for a, b in rs))
    return st.one_of(text.map(lambda t: t.encode("utf-8", "surrogateescape")),
                     st.builds(lambda t, b, i: t.encode("utf-8", "surrogatepass")[:i] + b + t.encode("utf-8", "surrogatepass")[i:],
                               text, st.binary(max_size=4), st.integers(0, 40)))


def tar_bytes() -> st.SearchStrategy[bytes]:
    member = st.tuples(st.sampled_from(["0001.jpg", "0001.txt", "0002.png", "0002.txt", "../x.jpg", "/abs.txt",
                                        "0003.json", "dir/0004.jpg", "0004.txt"]), st.one_of(image_data, st.binary(max_size=20)))

    def pack(members: list[tuple[str, bytes]]) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    return st.one_of(st.lists(member, max_size=5).map(pack), st.binary(max_size=300))


def file_case(folder: Path, kind: str, data: bytes, images: list[bytes]) -> None:
    count("files")
    for old in folder.glob("*"):
        old.unlink()
    for name, blob in zip(["a.jpg", "b.png"], images):
        (folder / name).write_bytes(blob)
    source = folder / f"input.{kind}"
    source.write_bytes(data)
    result = run_cli("ingest", str(source), "--dry-run", "--no-progress", "--store", str(folder / "store"))
    assert result.exit_code in (0, 1, 2), result.output
    if result.exit_code == 2:
        assert len(error_lines(result)) == 1, result.output
    assert not (folder / "store").exists()  # a dry run writes no store


@FAST
@given(kind=st.sampled_from(["csv", "tsv", "jsonl"]), data=st.data(), images=st.lists(image_data, min_size=2, max_size=2))
def test_table_and_image_bytes_are_read_or_refused_in_one_line(tmp_path, kind, data, images) -> None:
    file_case(tmp_path, kind, data.draw(table_bytes(kind)), images)


@FAST
@given(data=tar_bytes())
def test_tar_members_are_read_or_refused_in_one_line(tmp_path, data) -> None:
    file_case(tmp_path, "tar", data, [])


@pytest.mark.slow
@MANY
@given(kind=st.sampled_from(["csv", "tsv", "jsonl", "tar"]), data=st.data(),
       images=st.lists(image_data, min_size=2, max_size=2))
def test_more_input_files(tmp_path, kind, data, images) -> None:
    file_case(tmp_path, kind, data.draw(tar_bytes() if kind == "tar" else table_bytes(kind)), images)
