"""``asif eval`` and ``asif gallery`` / ``asif search`` end to end on drawn data and real encoders:
the store path is checked against dense ASIF on the same embeddings."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from asif_vdb import metrics, relative
from asif_vdb.cli import main
from asif_vdb.client import AsifClient
from asif_vdb.demo import COLOURS, SHAPES, draw
from asif_vdb.minimal_ingest import read_pairs

K, P = 40, 4.0
TEMPLATE = "a {} on a background."


def run(*args: str, code: int = 0):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


@pytest.fixture(scope="module")
def setup(demo_data, tmp_path_factory):
    """A store of the 162 drawn demo anchors (k=40, p=4), an ImageFolder of unseen drawings, and a
    small image-caption table with a train/test split."""
    table, _ = demo_data
    root = tmp_path_factory.mktemp("eval")
    store = root / "store"
    run("ingest", "--store", store, "-k", K, "-p", P, table)
    rng = random.Random(42)
    folder = root / "shapes"
    for shape in SHAPES:
        (folder / shape).mkdir(parents=True)
        for i in range(4):
            colour, bg = rng.choice(list(COLOURS)), rng.choice(["white", "grey", "black"])
            draw(colour, shape, bg, rng).save(folder / shape / f"{i}.png")
    pairs = root / "pairs"
    (pairs / "images").mkdir(parents=True)
    rows, splits = [], []
    for i in range(12):
        colour, shape, bg = rng.choice(list(COLOURS)), SHAPES[i % 3], rng.choice(["white", "grey", "black"])
        name = f"p{i}.png"
        draw(colour, shape, bg, rng).save(pairs / "images" / name)
        rows += [(name, f"a {colour} {shape} on a {bg} background"), (name, f"{colour} {shape}")]
        splits.append((name, "test" if i % 2 else "train"))
    for fname, header, data in (("captions.csv", ("image", "caption"), rows), ("splits.csv", ("image", "split"), splits)):
        with (pairs / fname).open("w", newline="") as f:
            csv.writer(f).writerows([header, *data])
    return {"table": table, "store": store, "folder": folder, "pairs": pairs, "root": root}


def dense_anchor_relatives(client: AsifClient, table: Path):
    """Anchor embeddings of the demo table, in anchor-id order (= table order)."""
    pairs = read_pairs(table)
    return client.encode_images([p for p, _ in pairs]), client.encode_texts([c for _, c in pairs])


def test_eval_classify_equals_dense(setup, tmp_path) -> None:
    out = tmp_path / "classify.json"
    text = run("eval", "classify", setup["folder"], "--store", setup["store"], "--templates", TEMPLATE,
               "--out", out).stdout
    report = json.loads(out.read_text())
    assert report["classes"] == sorted(SHAPES) and report["n_images"] == 12
    conf = np.array(report["confusion"])
    assert conf.sum() == 12 and conf.sum(axis=1).tolist() == [4, 4, 4]
    assert report["top1"] == pytest.approx(np.trace(conf) / 12)
    assert report["top5"] == 1.0  # 3 classes
    assert "per-class accuracy" in text and "confusion" in text and f"top-1 {report['top1']:.4f}" in text
    # the same numbers from dense ASIF on the same embeddings
    with AsifClient(setup["store"]) as client:
        img, txt = dense_anchor_relatives(client, setup["table"])
        paths = sorted(setup["folder"].glob("*/*.png"))
        truth = [sorted(SHAPES).index(p.parent.name) for p in paths]
        prompts = client.encode_texts([TEMPLATE.format(c) for c in sorted(SHAPES)])
        s = relative.scores(relative.dense_relative(client.encode_images(paths), img, K, P),
                            relative.dense_relative(prompts, txt, K, P))
        assert report["top1"] == pytest.approx(metrics.topk_accuracy(s, truth, (1,))[1])
        assert client.label_sets() == []  # the evaluation's label set is dropped


def test_eval_classify_class_map_and_errors(setup, tmp_path) -> None:
    cmap = tmp_path / "map.json"
    cmap.write_text(json.dumps({"circle": "round disc"}))
    result = run("eval", "classify", setup["folder"], "--store", setup["store"], "--class-map", cmap, "--json",
                 "--limit-per-class", 2)
    report = json.loads(result.stdout)
    assert report["classes"] == ["round disc", "square", "triangle"] and report["n_images"] == 6
    err = run("eval", "classify", tmp_path / "missing", "--store", setup["store"], code=2)
    assert "not a folder" in err.output
    err = run("eval", "classify", setup["folder"], "--store", setup["store"], "--templates", "nope", code=2)
    assert "templates 'nope'" in err.output


def test_eval_retrieval_equals_dense(setup, tmp_path) -> None:
    pairs = setup["pairs"]
    out = tmp_path / "retrieval.json"
    text = run("eval", "retrieval", pairs / "captions.csv", "--splits", pairs / "splits.csv", "--split", "test",
               "--store", setup["store"], "--out", out).stdout
    report = json.loads(out.read_text())
    assert (report["n_images"], report["n_captions"], report["n_queries"]) == (6, 12, 6)
    assert "text->image: R@1" in text and "image->text: R@1" in text
    with AsifClient(setup["store"]) as client:
        assert client.galleries() == []  # the evaluation's galleries are dropped
        img, txt = dense_anchor_relatives(client, setup["table"])
        rows = list(csv.DictReader((pairs / "captions.csv").open()))
        test = [f"p{i}.png" for i in range(1, 12, 2)]
        caps = [r for r in rows if r["image"] in test]
        g_img = relative.dense_relative(client.encode_images([pairs / "images" / n for n in test]), img, K, P)
        g_txt = relative.dense_relative(client.encode_texts([r["caption"] for r in caps]), txt, K, P)
        owner = [test.index(r["image"]) for r in caps]
        first = [owner.index(i) for i in range(6)]

        def ranked_positive(s):
            return [[j for j in row if s[i, j] > 0] for i, row in enumerate(metrics.ranked(s, 10))]

        t2i = ranked_positive(relative.scores(g_txt[first], g_img))
        i2t = [[owner[j] for j in row] for row in ranked_positive(relative.scores(g_img, g_txt))]
    want_t2i, want_i2t = metrics.recall_at_k(t2i, range(6)), metrics.recall_at_k(i2t, range(6))
    for k in (1, 5, 10):
        assert report[f"t2i_R@{k}"] == pytest.approx(want_t2i[k])
        assert report[f"i2t_R@{k}"] == pytest.approx(want_i2t[k])


def test_eval_sweep_writes_json_and_png_and_matches_store(setup, tmp_path) -> None:
    out = tmp_path / "sweep"
    text = run("eval", "sweep", "--anchor-table", setup["table"], "--dataset", setup["folder"],
               "--templates", TEMPLATE, "--anchors", "20,60,162", "-k", "10,40", "-p", "1,4",
               "--cache-dir", tmp_path / "cache", "--out", out).stdout
    report = json.loads((out / "sweep.json").read_text())
    assert report["anchor_pairs"] == 162 and len(report["results"]) == 12
    assert {(r["anchors"], r["k"], r["p"]) for r in report["results"]} == {
        (c, k, p) for c in (20, 60, 162) for k in (10, 40) for p in (1.0, 4.0)}
    for name in ("accuracy_vs_anchors.png", "accuracy_vs_k.png", "accuracy_vs_p.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size[0] > 300
    assert "wrote" in text
    # all 162 anchors at the store's k and p: the dense sweep equals the store's classification
    classify = json.loads(run("eval", "classify", setup["folder"], "--store", setup["store"], "--templates",
                              TEMPLATE, "--json").stdout)
    full = next(r for r in report["results"] if (r["anchors"], r["k"], r["p"]) == (162, K, P))
    assert full["top1"] == pytest.approx(classify["top1"])
    # a second run reads the embedding cache
    assert len(list((tmp_path / "cache").glob("eval-*.npy"))) == 3
    err = run("eval", "sweep", "--anchor-table", setup["table"], "--dataset", setup["folder"], "--anchors", "500",
              "--cache-dir", tmp_path / "cache", "--out", out, code=2)
    assert "outside 1..162" in err.output


def test_gallery_and_search_cli(setup, tmp_path) -> None:
    store, folder = setup["store"], setup["folder"]
    files = sorted(folder.glob("*/*.png"))
    out = run("gallery", "add", "drawings", *files, "--store", store).stdout
    assert "added 12 image(s)" in out
    texts = tmp_path / "texts.csv"
    texts.write_text("text,tag\na red circle,r\na blue square,b\na green triangle,g\n")
    run("gallery", "add", "notes", "--table", texts, "--store", store)
    listing = run("gallery", "list", "--store", store).stdout
    assert "drawings\timage\t12 items" in listing and "notes\ttext\t3 items" in listing
    query = "a yellow square on a black background"
    lines = run("search", query, "--gallery", "drawings", "--top", 3, "--json", "--store", store).stdout.splitlines()
    hits = [json.loads(line) for line in lines]
    with AsifClient(store) as client:
        want = client.search(query, "drawings", top=3)
        assert [(h["id"], h["ref"]) for h in hits] == [(w.id, w.payload["ref"]) for w in want]
        assert len(hits) == 3 and hits[0]["ref"] in {str(f) for f in files}
        # an image file as the query searches the text gallery; payload columns come back
        img_hits = client.search(str(files[0]), "notes", top=3)
        assert img_hits and img_hits[0].payload["tag"] in {"r", "b", "g"}
    text = run("search", files[0], "--gallery", "notes", "--store", store).stdout
    assert img_hits[0].payload["ref"] in text.splitlines()[0]
    anchors = run("search", query, "--gallery", "anchors", "--top", 2, "--json", "--store", store).stdout
    first = json.loads(anchors.splitlines()[0])
    assert first["caption"].startswith("a ") and first["ref"] == first["image"]
    run("gallery", "delete", "drawings", hits[0]["id"], "--store", store)
    assert "drawings\timage\t11 items" in run("gallery", "list", "--store", store).stdout
    run("gallery", "delete", "drawings", "--all", "--store", store)
    run("gallery", "delete", "notes", "--all", "--store", store)
    err = run("search", query, "--gallery", "drawings", "--store", store, code=2)
    assert "no gallery 'drawings'" in err.output
    run("gallery", "add", "x", "--store", store, code=2)  # nothing to add: usage error


def test_fast_top_k_equals_top_k() -> None:
    from asif_vdb.evaluate import fast_top_k, topk_rows

    rng = np.random.default_rng(0)
    sims = rng.standard_normal((50, 300)).astype(np.float32)
    sims[3, [5, 9, 40]] = 9.0  # ties at the top: lowest index first, as relative.top_k
    for k in (1, 7, 300, 400):
        got, want = fast_top_k(sims, k), relative.top_k(sims, k)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    q, a = rng.standard_normal((30, 8)), rng.standard_normal((40, 8))
    idx, _ = topk_rows(q, a, 5, chunk=7)
    np.testing.assert_array_equal(idx, relative.top_k(q @ a.T, 5)[0])
