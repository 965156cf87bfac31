"""``asif eval`` and ``asif gallery`` / ``asif search`` end to end on drawn data and real encoders:
the store path is checked against dense ASIF on the same embeddings."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
from helpers import demo_pairs, error_lines, run_cli
from PIL import Image

from asif_vdb import AsifClient
from asif_vdb.maths import metrics, relative
from asif_vdb.workflows.demo import COLOURS, SHAPES, draw

K, P = 40, 4.0
TEMPLATE = "a {} on a background."


def run(*args: str, code: int = 0):
    """``asif ARGS``, asserting its exit code; an input error (2) prints exactly one ``error:`` line."""
    result = run_cli(*args)
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
    pairs = demo_pairs(table)
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
                 "--limit-per-class", 2, "--labels", "mapped", "--keep-labels")
    report = json.loads(result.stdout)
    assert report["classes"] == ["round disc", "square", "triangle"] and report["n_images"] == 6
    with AsifClient(setup["store"]) as client:  # --keep-labels: the label set it built stays
        assert client.label_sets() == ["mapped"]
        assert client.label_set("mapped").classes == ["round disc", "square", "triangle"]
        client.delete_label_set("mapped")
    err = run("eval", "classify", tmp_path / "missing", "--store", setup["store"], code=2)
    assert len(error_lines(err)) == 1 and "not a folder" in error_lines(err)[0]
    err = run("eval", "classify", setup["folder"], "--store", setup["store"], "--templates", "nope", code=2)
    assert len(error_lines(err)) == 1 and "templates 'nope'" in error_lines(err)[0]


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
    # --gallery names the two galleries, --keep-galleries keeps them
    kept = json.loads(run("eval", "retrieval", pairs / "captions.csv", "--limit", 2, "--gallery", "mine",
                          "--keep-galleries", "--json", "--store", setup["store"]).stdout)
    assert (kept["n_images"], kept["n_captions"]) == (2, 4)
    with AsifClient(setup["store"]) as client:
        assert client.galleries() == ["mine-captions", "mine-images"]
        assert (client.gallery("mine-images").size, client.gallery("mine-captions").size) == (2, 4)
        client.delete_gallery("mine-images")
        client.delete_gallery("mine-captions")


def test_eval_sweep_writes_json_and_png_and_matches_store(setup, tmp_path) -> None:
    out = tmp_path / "sweep"
    text = run("eval", "sweep", "--anchor-table", setup["table"], "--dataset", setup["folder"],
               "--templates", TEMPLATE, "--anchors", "20,60,162", "--k-values", "10,40", "--p-values", "1,4",
               "--cache-dir", tmp_path / "cache", "--out-dir", out).stdout
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
              "--cache-dir", tmp_path / "cache", "--out-dir", out, code=2)
    assert len(error_lines(err)) == 1 and "outside 1..162" in error_lines(err)[0]


def test_gallery_and_search_cli(setup, tmp_path) -> None:
    store, folder = setup["store"], setup["folder"]
    files = sorted(folder.glob("*/*.png"))
    out = run("gallery", "add", "drawings", *files, "--store", store).stdout
    assert "added 12 image(s)" in out
    texts = tmp_path / "texts.csv"
    texts.write_text("text,tag\na red circle,r\na blue square,b\na green triangle,g\n")
    tag_of = {"a red circle": "r", "a blue square": "b", "a green triangle": "g"}
    run("gallery", "add", "notes", "--table", texts, "--store", store)
    listing = run("gallery", "list", "--store", store).stdout
    assert "drawings\timage\t12 items" in listing and "notes\ttext\t3 items" in listing
    query = "a yellow square on a black background"
    # --json: one JSON array of hits {rank, id, score, payload}
    hits = json.loads(run("search", query, "--gallery", "drawings", "--top", 3, "--json", "--store", store).stdout)
    assert [h["rank"] for h in hits] == [1, 2, 3] and all(set(h) == {"rank", "id", "score", "payload"} for h in hits)
    with AsifClient(store) as client:
        want = client.search(query, "drawings", top=3)
        assert [(h["id"], h["payload"]["ref"]) for h in hits] == [(w.id, w.payload["ref"]) for w in want]
        assert [h["score"] for h in hits] == pytest.approx([w.score for w in want])
        assert len(hits) == 3 and hits[0]["payload"]["ref"] in {str(f.resolve()) for f in files}
        # an image file as the query searches the text gallery; payload columns come back
        img_hits = client.search(str(files[0]), "notes", top=3)
        assert img_hits and img_hits[0].payload["tag"] == tag_of[img_hits[0].payload["ref"]]
    text = run("search", files[0], "--gallery", "notes", "--store", store).stdout
    assert img_hits[0].payload["ref"] in text.splitlines()[0]
    anchors = json.loads(run("search", query, "--gallery", "anchors", "--top", 2, "--json", "--store", store).stdout)
    first = anchors[0]["payload"]
    assert len(anchors) == 2 and first["caption"].startswith("a ") and first["ref"] == first["image"]
    run("gallery", "delete", "drawings", hits[0]["id"], "--store", store)
    assert "drawings\timage\t11 items" in run("gallery", "list", "--store", store).stdout
    run("gallery", "delete", "drawings", "--all", "--store", store)
    run("gallery", "delete", "notes", "--all", "--store", store)
    err = run("search", query, "--gallery", "drawings", "--store", store, code=2)
    assert len(error_lines(err)) == 1 and "no gallery 'drawings'" in error_lines(err)[0]
    run("gallery", "add", "x", "--store", store, code=2)  # nothing to add: usage error


def test_top_k_breaks_ties_by_index_and_top_k_rows_equals_it() -> None:
    """The one top-k of the evaluation (the former fast_top_k is relative.top_k now): the same
    answer as a full stable sort, ties at the top lowest index first; top_k_rows in chunks equals it."""
    rng = np.random.default_rng(0)
    sims = rng.standard_normal((50, 300)).astype(np.float32)
    sims[3, [5, 9, 40]] = 9.0  # ties at the top: lowest index first
    sims[7, [1, 3, 5, 7, 9]] = 5.0  # a tie across the k-th place (k=1 and k=3 cut inside it)
    full = np.argsort(-sims, axis=1, kind="stable")
    for k in (1, 3, 7, 300, 400):
        got_idx, got_val = relative.top_k(sims, k)
        want = full[:, : min(k, 300)]
        np.testing.assert_array_equal(got_idx, want)
        np.testing.assert_array_equal(got_val, np.take_along_axis(sims, want, axis=1))
    assert relative.top_k(sims, 3)[0][3].tolist() == [5, 9, 40]
    assert relative.top_k(sims, 3)[0][7].tolist() == [1, 3, 5]
    q, a = rng.standard_normal((30, 8)), rng.standard_normal((40, 8))
    idx, _ = relative.top_k_rows(q, a, 5, chunk=7)
    np.testing.assert_array_equal(idx, relative.top_k(q @ a.T, 5)[0])
