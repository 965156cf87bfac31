"""Explanations: shares sum to the score and equal a dense computation; deleted anchors never appear;
the HTML report is valid, self-contained and renders; ``asif explain`` runs end to end."""

from __future__ import annotations

import base64
import io
import json
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from helpers import open_store, run_cli, unit_rows
from PIL import Image

from asif_vdb import AsifClient, AsifParams
from asif_vdb.engine.layout import ANCHORS
from asif_vdb.features.explain import explain_gallery
from asif_vdb.features.galleries import resolve
from asif_vdb.features.report import render_html
from asif_vdb.maths import relative

CLASSES = ["dog", "cat", "car", "tree", "boat"]
TEMPLATES = ["a photo of a {}.", "a drawing of a {}."]
CHROMIUM = Path("/usr/bin/chromium")


def random_anchors(n: int, seed: int = 0, images: list[str] | None = None):
    rng = np.random.default_rng(seed)
    payloads = [{"caption": f"pair {i}", **({"image": images[i]} if images else {})} for i in range(n)]
    return unit_rows(rng, n, 1280), unit_rows(rng, n, 384), payloads


def dense_terms(q_rel, c_rel) -> dict[int, float]:
    prod = q_rel.multiply(c_rel).tocsr()
    return {int(i): float(v) for i, v in zip(prod.indices, prod.data)}


@pytest.mark.parametrize("backend", ["edge", "memory"])
@pytest.mark.parametrize("aggregate", ["max", "mean", "pool"])
def test_shares_sum_to_score_and_equal_dense_asif(backend: str, aggregate: str, tmp_path) -> None:
    k, p = 30, 2.0
    img, txt, payloads = random_anchors(150, seed=1)
    queries = unit_rows(np.random.default_rng(5), 4, 1280)
    with open_store(backend, tmp_path, params=AsifParams(k=k, p=p)) as client:
        client.add_anchor_embeddings(img, txt, payloads)
        info = client.create_label_set("things", CLASSES, TEMPLATES, aggregate=aggregate)
        prompts = [t.format(c) for c in CLASSES for t in TEMPLATES]
        prompt_vecs = client.encode_texts(prompts)
        per_class = 1 if aggregate == "pool" else len(TEMPLATES)
        assert info.n_candidates == len(CLASSES) * per_class
        if aggregate == "pool":  # one prompt per class: the normalised mean of its templates' embeddings
            mean = prompt_vecs.reshape(len(CLASSES), len(TEMPLATES), -1).mean(axis=1)
            prompt_vecs = mean / np.linalg.norm(mean, axis=1, keepdims=True)
        cand = relative.dense_relative(prompt_vecs, txt, k, p)
        for qi, query in enumerate(queries):
            ex = client.explain_embedding(query, "things", top=3, anchors=1000, neighbours=7, threshold=None)
            q_rel = relative.dense_relative(query[None], img, k, p)
            grid = relative.scores(q_rel, cand).reshape(len(CLASSES), per_class)
            pooled = grid.max(axis=1) if aggregate == "max" else grid.mean(axis=1)
            assert [a.label for a in ex.answers] == [CLASSES[i] for i in np.argsort(-pooled, kind="stable")[:3]]
            for answer in ex.answers:
                c = CLASSES.index(answer.label)
                assert answer.score == pytest.approx(pooled[c], abs=1e-5)
                shares = [s.share for s in answer.anchors]
                assert sum(shares) == pytest.approx(answer.score, abs=1e-5)
                assert shares == sorted(shares, reverse=True) and answer.rest == 0.0
                rows = [c * per_class + t for t in range(per_class)]
                if aggregate == "max":
                    rows = [rows[int(np.argmax(grid[c]))]]
                want_texts = [prompts[c * len(TEMPLATES) + t] for t in range(len(TEMPLATES))]
                assert answer.texts == (want_texts if aggregate != "max" else [prompts[rows[0]]])
                want: dict[int, float] = {}
                for r in rows:
                    for aid, term in dense_terms(q_rel, cand[r]).items():
                        want[aid] = want.get(aid, 0.0) + term / len(rows)
                got = {s.anchor_id: s.share for s in answer.anchors}
                assert set(got) == set(want) and answer.shared == len(want)
                for aid, share in got.items():
                    assert share == pytest.approx(want[aid], abs=1e-6)
                for s in answer.anchors:
                    assert s.caption == f"pair {s.anchor_id}"
                    assert s.image_similarity == pytest.approx(float(img[s.anchor_id] @ query), abs=1e-5)
                    text_sim = np.mean([prompt_vecs[r] @ txt[s.anchor_id] for r in rows])
                    assert s.text_similarity == pytest.approx(float(text_sim), abs=1e-5)
                    assert s.fraction == pytest.approx(s.share / answer.score, rel=1e-6)
            sims = img @ query
            nearest = np.argsort(-sims, kind="stable")[:7]
            assert [n.anchor_id for n in ex.neighbours] == nearest.tolist(), qi
            assert [n.similarity for n in ex.neighbours] == pytest.approx(sims[nearest].tolist(), abs=1e-5)


def test_top_limits_answers_and_anchors_truncate_with_rest(tmp_path) -> None:
    img, txt, payloads = random_anchors(120, seed=2)
    with open_store("memory", tmp_path, params=AsifParams(k=40, p=1.0)) as client:
        client.add_anchor_embeddings(img, txt, payloads)
        client.create_label_set("things", CLASSES, TEMPLATES)
        query = unit_rows(np.random.default_rng(9), 1, 1280)
        ex = client.explain_embedding(query, "things", top=2, anchors=3, threshold=None)
        assert len(ex.answers) == 2
        for a in ex.answers:
            assert len(a.anchors) == min(3, a.shared)
            assert sum(s.share for s in a.anchors) + a.rest == pytest.approx(a.score, abs=1e-5)
        full = client.explain_embedding(query, "things", top=2, anchors=1000, threshold=None)
        assert [s.anchor_id for s in ex.answers[0].anchors] == [s.anchor_id for s in full.answers[0].anchors[:3]]
        # The stored threshold decides "unknown" as classify does.
        best = ex.answers[0].score
        assert client.explain_embedding(query, "things", threshold=best + 1e-3).unknown
        assert not client.explain_embedding(query, "things", threshold=best - 1e-3).unknown
        assert client.explain_embedding(query, "things", threshold=best + 1e-3).label is None


def test_deleted_anchor_never_appears(tmp_path) -> None:
    img, txt, payloads = random_anchors(100, seed=4)
    query = unit_rows(np.random.default_rng(21), 1, 1280)
    with open_store("edge", tmp_path, params=AsifParams(k=20, p=1.0)) as client:
        client.add_anchor_embeddings(img, txt, payloads)
        client.create_label_set("things", CLASSES, TEMPLATES)
        before = client.explain_embedding(query, "things", top=5, anchors=1000, threshold=None)
        gone = {before.answers[0].anchors[0].anchor_id, before.neighbours[0].anchor_id,
                before.answers[1].anchors[0].anchor_id}
        assert client.delete_anchors(sorted(gone)) == len(gone)
        after = client.explain_embedding(query, "things", top=5, anchors=1000, threshold=None)
        shown = {s.anchor_id for a in after.answers for s in a.anchors} | {n.anchor_id for n in after.neighbours}
        assert shown and not (shown & gone)
        for a in after.answers:
            assert sum(s.share for s in a.anchors) == pytest.approx(a.score, abs=1e-5)
            assert [s.caption for s in a.anchors] == [f"pair {s.anchor_id}" for s in a.anchors]  # payloads read


# -- the HTML report --------------------------------------------------------------------------------
class ReportParser(HTMLParser):
    """Collects <img> sources and checks that every non-void tag is closed in order."""

    VOID = {"meta", "img", "br", "link", "input", "hr"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.images: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append((a.get("src", ""), a.get("alt", "")))
        elif tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse_report(page: str) -> ReportParser:
    parser = ReportParser()
    parser.feed(page)
    parser.close()
    assert page.startswith("<!DOCTYPE html>")
    assert not parser.errors and not parser.stack, (parser.errors, parser.stack)
    return parser


def decode_data_uri(src: str) -> Image.Image:
    assert src.startswith("data:image/jpeg;base64,"), src[:40]
    img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))
    img.load()
    return img


def draw_anchor_images(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"a{i}.png"
        Image.new("RGB", (48 + i % 5, 40), ((37 * i) % 256, (91 * i) % 256, 200)).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture
def report_case(tmp_path):
    """A store whose anchors point at drawn image files, one of which is then deleted from disk."""
    images = draw_anchor_images(tmp_path / "anchors", 60)
    img, txt, payloads = random_anchors(60, seed=8, images=images)
    query_path = tmp_path / "query.png"
    Image.new("RGB", (64, 64), (255, 0, 0)).save(query_path)
    with open_store("memory", tmp_path, params=AsifParams(k=12, p=1.0)) as client:
        client.add_anchor_embeddings(img, txt, payloads)
        client.create_label_set("things", CLASSES, TEMPLATES)
        ex = client.explain_embedding(unit_rows(np.random.default_rng(3), 1, 1280), "things", top=3, anchors=4,
                                      reference=str(query_path), threshold=None)
    lost = ex.answers[0].anchors[0].image
    Path(lost).unlink()
    return ex, query_path, lost


def test_html_report_is_valid_and_self_contained(report_case) -> None:
    ex, query_path, lost = report_case
    page = render_html(ex, query_path)
    parser = parse_report(page)
    shown = [s.image for a in ex.answers for s in a.anchors] + [n.image for n in ex.neighbours]
    present = [ref for ref in shown if ref != lost]
    assert len(parser.images) == 1 + len(present)  # the query and every anchor image still on disk
    sizes = []
    for src, _ in parser.images:
        thumb = decode_data_uri(src)
        assert max(thumb.size) <= 160
        sizes.append(thumb.size)
    query_thumb = decode_data_uri(parser.images[0][0])
    assert query_thumb.size == (64, 64) and query_thumb.getpixel((32, 32))[0] > 200
    assert [alt for _, alt in parser.images[1:]] == [
        c for a in ex.answers for s, c in ((s, s.caption) for s in a.anchors) if s.image != lost
    ] + [n.caption for n in ex.neighbours if n.image != lost]
    assert ex.missing_images == [lost]
    text = " ".join(parser.text)
    assert "image file not found" in text and lost in text
    assert "src=\"/" not in page and "file:" not in page  # nothing refers outside the file
    for a in ex.answers:
        assert a.label in text and f"share {a.anchors[0].share:.4f}" in text


@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless rendering needs /usr/bin/chromium (not installed)")
def test_report_renders_in_headless_chromium(report_case, tmp_path) -> None:
    ex, query_path, _ = report_case
    page = tmp_path / "report.html"
    page.write_text(render_html(ex, query_path), encoding="utf-8")
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--screenshot={shot}", "--window-size=1000,900", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert shot.exists(), proc.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape[:2] == (900, 1000)
    # The query thumbnail (pure red, 160 px) is drawn: a red block, so data-URI images decoded.
    red = (img[:, :, 0] > 220) & (img[:, :, 1] < 40) & (img[:, :, 2] < 40)
    assert red.sum() > 150 * 150
    # Text and anchor thumbnails are drawn too: plenty of non-white, non-red pixels.
    other = (img.sum(axis=2) < 600) & ~red
    assert other.sum() > 5000


# -- the command ------------------------------------------------------------------------------------
def test_cli_explain_end_to_end(shapes_store, tmp_path) -> None:
    store, queries, pairs = shapes_store
    query, truth = queries[0]
    out = tmp_path / "report" / "explain.html"
    result = run_cli("explain", "--store", store, query, "--labels", "shapes", "--top", "2", "--anchors", "3",
                     "--html", out)
    assert result.exit_code == 0, result.output
    assert "nearest anchors of the query" in result.stdout and f"report written to {out}" in result.stdout
    with AsifClient(store) as client:  # the same explanation through the client
        ex = client.explain(query, "shapes", top=2, anchors=3)
    parser = parse_report(out.read_text(encoding="utf-8"))
    # the query, then every shown anchor of each answer and the 5 nearest anchors (all images on disk)
    assert len(ex.answers) == 2 and len(ex.neighbours) == 5
    assert [alt for _, alt in parser.images] == ["query"] + [s.caption for a in ex.answers for s in a.anchors] \
        + [n.caption for n in ex.neighbours]
    for src, _ in parser.images:
        decode_data_uri(src)
    captions = {c for _, c in pairs}
    assert {alt for _, alt in parser.images[1:]} <= captions

    as_json = run_cli("explain", "--store", store, query, "--labels", "shapes", "--json")
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert len(data["answers"]) == 3 and data["answers"][0]["anchors"][0]["caption"] in captions
    assert [a["label"] for a in data["answers"][:2]] == [a.label for a in ex.answers]
    for a in data["answers"]:
        assert sum(s["share"] for s in a["anchors"]) + a["rest"] == pytest.approx(a["score"], abs=1e-5)


def test_cli_explain_reports_bad_input_in_one_line(shapes_store, tmp_path) -> None:
    store, queries, _ = shapes_store
    missing = run_cli("explain", "--store", store, tmp_path / "nope.png", "--labels", "shapes")
    assert missing.exit_code == 2 and "image file not found" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1 and missing.stderr.startswith("error: ")
    no_set = run_cli("explain", "--store", store, queries[0][0], "--labels", "zzz")
    assert no_set.exit_code == 2 and "no label set 'zzz'" in no_set.stderr
    assert len(no_set.stderr.strip().splitlines()) == 1 and no_set.stderr.startswith("error: ")


def test_report_survives_moved_anchor_images(store_copy, tmp_path) -> None:
    """Anchor files removed after ingestion: the report says so for each one instead of failing."""
    copy, queries, pairs = store_copy
    with AsifClient(copy) as client:
        ex = client.explain(queries[1][0], "shapes", top=1, anchors=3)
        ids = [s.anchor_id for s in ex.answers[0].anchors]
        assert len(ids) == 3
        # the stored image references of these anchors now name a file that is not there
        client.engine.state.backend.set_payload(ANCHORS["text"], ids, {"image": str(tmp_path / "moved.png")})
        ex = client.explain(queries[1][0], "shapes", top=1, anchors=3, neighbours=0)
    page = render_html(ex, queries[1][0])
    parser = parse_report(page)
    assert len(parser.images) == 1 and ex.missing_images == [str(tmp_path / "moved.png")]
    # the three pairs share one image reference: shown once, with the three captions under it
    assert page.count("image file not found") == 1
    for s in ex.answers[0].anchors:
        assert f"#{s.anchor_id}</span>" in page


# -- gallery searches -------------------------------------------------------------------------------
@pytest.mark.parametrize("query_modality", ["image", "text"])
def test_gallery_explanation_equals_dense_asif_and_search(query_modality: str, tmp_path) -> None:
    k, p = 20, 2.0
    img, txt, payloads = random_anchors(90, seed=6)
    rng = np.random.default_rng(12)
    item_modality = "text" if query_modality == "image" else "image"
    dims = {"image": 1280, "text": 384}
    items = unit_rows(rng, 15, dims[item_modality])
    query = unit_rows(rng, 1, dims[query_modality])
    anchors_of = {"image": img, "text": txt}
    with open_store("memory", tmp_path, params=AsifParams(k=k, p=p)) as client:
        client.add_anchor_embeddings(img, txt, payloads)
        ids = client.index_gallery_embeddings("items", items, item_modality,
                                              [{"ref": f"item-{i}"} for i in range(15)])
        info = resolve(client.engine, "items", query_modality)  # no client call explains an embedding search
        ex = explain_gallery(client.engine, query, query_modality, info, top=4, anchors=1000, neighbours=3)
        hits = client.search_embeddings(query, query_modality, "items", top=4)[0]
        assert [a.item_id for a in ex.answers] == [h.id for h in hits]
        assert [a.label for a in ex.answers] == [h.payload["ref"] for h in hits]
        q_rel = relative.dense_relative(query, anchors_of[query_modality], k, p)
        c_rel = relative.dense_relative(items, anchors_of[item_modality], k, p)
        for a in ex.answers:
            row = ids.index(a.item_id)
            assert a.score == pytest.approx(float(relative.scores(q_rel, c_rel[row])[0, 0]), abs=1e-5)
            assert sum(s.share for s in a.anchors) == pytest.approx(a.score, abs=1e-5)
            want = dense_terms(q_rel, c_rel[row])
            assert {s.anchor_id: pytest.approx(s.share, abs=1e-6) for s in a.anchors} == want
            assert (a.image is not None) == (item_modality == "image")
            for s in a.anchors:
                q_sim = float(anchors_of[query_modality][s.anchor_id] @ query[0])
                c_sim = float(anchors_of[item_modality][s.anchor_id] @ items[row])
                image_sim, text_sim = (q_sim, c_sim) if query_modality == "image" else (c_sim, q_sim)
                assert s.image_similarity == pytest.approx(image_sim, abs=1e-5)
                assert s.text_similarity == pytest.approx(text_sim, abs=1e-5)
        nearest = np.argsort(-(anchors_of[query_modality] @ query[0]), kind="stable")[:3]
        assert [n.anchor_id for n in ex.neighbours] == nearest.tolist()


def test_cli_explain_gallery_search_of_the_anchors(shapes_store, tmp_path) -> None:
    store, _, pairs = shapes_store
    out = tmp_path / "search.html"
    text = "a red circle on a white background"
    result = run_cli("explain", "--store", store, text, "--gallery", "anchors", "--top", "2", "--html", out, "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == f"report written to {out}"
    data = json.loads(result.stdout)
    assert data["modality"] == "text" and len(data["answers"]) == 2
    images = {str(p) for p, _ in pairs}
    for a in data["answers"]:
        assert a["image"] in images and a["item_id"] is not None
        assert sum(s["share"] for s in a["anchors"]) + a["rest"] == pytest.approx(a["score"], abs=1e-5)
    with AsifClient(store) as client:  # the same explanation through the client
        ex = client.explain_search(text, "anchors", top=2)
    assert [a.item_id for a in ex.answers] == [a["item_id"] for a in data["answers"]]
    parser = parse_report(out.read_text(encoding="utf-8"))
    # No query thumbnail (a text query); each answer's image, then its anchors' images, then the
    # query's nearest anchors' images are embedded (every file is on disk).
    want = [alt for a in ex.answers for alt in [a.label] + [s.caption for s in a.anchors]]
    assert [alt for _, alt in parser.images] == want + [n.caption for n in ex.neighbours]
    assert parser.images[0][1] == data["answers"][0]["label"]
    for src, _ in parser.images:
        decode_data_uri(src)
    neither = run_cli("explain", "--store", store, "x")
    assert neither.exit_code == 2 and "give --labels or --gallery" in neither.stderr
