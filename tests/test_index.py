"""The anchor index: quantized / HNSW anchor search with exact rescoring, set per store, the same
settings on Qdrant Edge and through qdrant-client (a server's code path, here in local mode)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import FAKE_IMAGE, FAKE_TEXT, run_cli, unit_rows

from asif_vdb import AsifClient, AsifParams, InputError, StoreError
from asif_vdb.engine.layout import ANCHORS, search_mode
from asif_vdb.schema.params import INDEX_PRESETS, IndexSettings, Tuning

DI, DT = 64, 32


def clustered(rng: np.random.Generator, n: int, d: int, centres: int = 40) -> np.ndarray:
    """Unit vectors around a few centres, as embeddings are: neighbours that matter, a tail that does not."""
    c = unit_rows(rng, centres, d)
    x = c[rng.integers(0, centres, n)] + 0.35 * unit_rows(rng, n, d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def store(path, index, n: int = 3000, seed: int = 0, **kwargs) -> tuple[AsifClient, np.random.Generator]:
    rng = np.random.default_rng(seed)
    kw = {"params": AsifParams(k=50, method="plain"), "image_identity": FAKE_IMAGE.model_copy(update={"dim": DI}),
          "text_identity": FAKE_TEXT.model_copy(update={"dim": DT}), "index": index, **kwargs}
    client = AsifClient(path, **kw) if path is not None else AsifClient(location=":memory:", **kw)
    img, txt = clustered(rng, n, DI), clustered(rng, n, DT)
    for s in range(0, n, 2000):
        client.add_anchor_embeddings(img[s:s + 2000], txt[s:s + 2000], [{"caption": f"c{i}"} for i in range(s, min(n, s + 2000))])
    return client, rng


def overlap(a, b) -> float:
    return float(np.mean([len(set(x.ids.tolist()) & set(y.ids.tolist())) / max(len(y.ids), 1) for x, y in zip(a, b)]))


def test_hnsw_with_rescoring_agrees_with_exact_search(tmp_path) -> None:
    settings = INDEX_PRESETS["hnsw"].model_copy(update={"m": 8, "ef_construct": 40, "scan_below_kb": 100})
    client, rng = store(tmp_path / "s", settings.model_copy(update={"exact_below": 10_000}))
    assert client.optimize() == {}  # under exact_below: scanned, nothing to build
    built = client.set_search_index(settings)
    assert set(built) >= {ANCHORS["image"]}  # 3,000 x 64 floats: over the 100 KB scan threshold, indexed
    queries = clustered(rng, 100, DI)
    approx = client.engine.anchors.topk(queries, "image")
    assert client.warm_up() > 0  # searches the index ahead of a first query; answers unchanged
    assert [h.ids.tolist() for h in client.engine.anchors.topk(queries, "image")] == [h.ids.tolist() for h in approx]
    client.close()
    with AsifClient(tmp_path / "s", exact_search=True) as exact_client:
        exact = exact_client.engine.anchors.topk(queries, "image")
    assert overlap(approx, exact) > 0.95
    assert np.mean([a.ids[0] == e.ids[0] for a, e in zip(approx, exact)]) >= 0.99
    for a, e in zip(approx, exact):  # rescored: every score is the exact dot product
        truth = dict(zip(e.ids.tolist(), e.scores.tolist()))
        shared = [i for i in a.ids.tolist() if i in truth]
        np.testing.assert_allclose([dict(zip(a.ids.tolist(), a.scores.tolist()))[i] for i in shared],
                                   [truth[i] for i in shared], atol=1e-6)


def test_exact_below_keeps_a_small_store_exact_and_the_settings_persist(tmp_path) -> None:
    settings = INDEX_PRESETS["int8"].model_copy(update={"exact_below": 10_000})
    client, _ = store(tmp_path / "s", settings, n=2000)
    assert client.engine.anchors.mode(50).exact
    assert client.optimize() == {}  # nothing built below the threshold
    client.close()
    with AsifClient(tmp_path / "s") as reopened:
        assert reopened.search_index() == settings
        assert json.loads((tmp_path / "s" / "collections" / "anchor_image" / "asif_index.json").read_text())[
            "quantization"] == "int8"
    with pytest.raises(StoreError, match="other index settings"):
        AsifClient(tmp_path / "s", index="hnsw")


def test_changing_the_index_of_an_existing_store_rebuilds_it(tmp_path) -> None:
    client, rng = store(tmp_path / "s", "exact")
    queries = clustered(rng, 30, DI)
    before = client.engine.anchors.topk(queries, "image")
    seconds = client.set_search_index(INDEX_PRESETS["int8"].model_copy(update={"scan_below_kb": 100}))
    assert ANCHORS["image"] in seconds and client.search_index().quantization == "int8"
    assert not client.engine.anchors.mode(50).exact
    after = client.engine.anchors.topk(queries, "image")
    assert overlap(after, before) > 0.97  # an int8 scan, rescored with oversampling 2
    client.close()
    result = run_cli("index", "set", "--index", "exact", "--store", tmp_path / "s", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["index"]["quantization"] == "none"
    with AsifClient(tmp_path / "s") as reopened:
        assert reopened.engine.anchors.mode(50).exact
        again = reopened.engine.anchors.topk(queries, "image")
    assert [h.ids.tolist() for h in again] == [h.ids.tolist() for h in before]


def test_a_memory_mapped_index_answers_as_in_ram_and_follows_updates(tmp_path) -> None:
    """Moving an index to disk (vectors, quantized data, graph and payload indexes memory-mapped) keeps
    every answer; reading it ahead reports its bytes; deleted anchors stay out of searches."""
    settings = INDEX_PRESETS["hnsw"].model_copy(update={"m": 8, "ef_construct": 40, "scan_below_kb": 100, "on_disk": False})
    client, rng = store(tmp_path / "s", settings)
    queries = clustered(rng, 40, DI)
    in_ram = client.engine.anchors.topk(queries, "image")
    built = client.set_search_index(settings.model_copy(update={"on_disk": True}))
    assert ANCHORS["image"] in built
    segments = (tmp_path / "s" / "collections" / ANCHORS["image"] / "segments").glob("*/segment.json")
    indexed = [json.loads(f.read_text())["config"]["vector_data"]["v"] for f in segments]
    assert any(v["storage_type"] == "Mmap" and v["quantization_config"]["scalar"]["memory"] == "cold"
               for v in indexed if v["index"]["type"] == "hnsw")
    mapped = client.engine.anchors.topk(queries, "image")
    assert [h.ids.tolist() for h in mapped] == [h.ids.tolist() for h in in_ram]
    gone = [int(h.ids[0]) for h in mapped[:5]]
    client.delete_anchors(gone)
    client.close()
    with AsifClient(tmp_path / "s") as reopened:
        assert reopened.search_index().on_disk
        files = [f for f in (tmp_path / "s" / "collections").glob("anchor_*/**/*") if f.is_file() and "wal" not in f.parts]
        assert reopened.engine.anchors.read_ahead() == sum(f.stat().st_size for f in files)
        assert reopened.warm_up(background=True) == 0.0  # returns at once; the thread only reads files
        after = reopened.engine.anchors.topk(queries, "image")
    assert not set(gone) & {int(i) for h in after for i in h.ids}
    assert overlap(after, in_ram) > 0.95


def test_the_server_code_path_takes_every_setting(tmp_path) -> None:
    """qdrant-client's local mode accepts what a Qdrant server takes (its collections record the
    per-vector ones) and searches exactly whatever is asked."""
    settings = IndexSettings(quantization="int8", hnsw=True, m=12, on_disk=True, shards=2, replication=2)
    client, rng = store(None, settings, n=600)
    backend = client.engine.state.backend
    info = backend.client.get_collection(backend._name(ANCHORS["image"])).config.params.vectors["v"]  # noqa: SLF001
    assert info.on_disk is True and info.hnsw_config.m == 12
    assert info.quantization_config.scalar.type.value == "int8"
    relatives = backend.client.get_collection(backend._name(client.engine.derived.live)).config.params  # noqa: SLF001
    assert relatives.sparse_vectors["rel"].index.full_scan_threshold == Tuning().sparse_full_scan  # index above it
    queries = clustered(rng, 10, DI)
    got = client.engine.anchors.topk(queries, "image")
    want = np.argsort(-(queries @ np.stack([client.engine.anchors.vectors([i], "image")[1][0]
                                            for i in range(600)]).T), axis=1, kind="stable")[:, :50]
    assert overlap(got, [type(got[0])(w, np.zeros(50)) for w in want]) > 0.999
    client.close()


def test_bad_index_settings_are_refused() -> None:
    with pytest.raises(InputError, match="expected one of exact, int8, hnsw"):
        AsifClient(location=":memory:", index="fast")
    with pytest.raises(ValueError, match="oversampling"):
        IndexSettings(oversampling=0.5)


def test_the_graph_walks_for_the_k_that_makes_a_relative_vector() -> None:
    """A candidate's list (k plus its reserve) walks the graph as far as a query's k does, and still
    gets every result it asks for; the best quarter past k of the walk is rescored; an int8 scan has
    no walk."""
    hnsw = INDEX_PRESETS["hnsw"]
    query = search_mode(hnsw, 800, 800)
    listing = search_mode(hnsw, 1008, 800)
    assert query.hnsw_ef == listing.hnsw_ef == int(800 * hnsw.oversampling)
    assert query.oversampling is not None and query.oversampling * 800 == pytest.approx(1000)
    assert listing.oversampling == 1.0  # its reserve is the margin
    deep = search_mode(hnsw, 5000, 800)
    assert deep.hnsw_ef == 5000 and deep.oversampling == 1.0
    wide = search_mode(IndexSettings(quantization="int8", hnsw=True, ef=4000), 808, 800)
    assert wide.hnsw_ef == 4000 and wide.oversampling is not None and wide.oversampling * 808 == pytest.approx(1000)
    narrow = search_mode(IndexSettings(quantization="int8", hnsw=True, oversampling=1.1), 800, 800)
    assert narrow.hnsw_ef == 880 and narrow.oversampling == pytest.approx(1.1)  # never past the walk
    scan = search_mode(INDEX_PRESETS["int8"], 1008, 800)
    assert scan.hnsw_ef is None and scan.oversampling == INDEX_PRESETS["int8"].oversampling
