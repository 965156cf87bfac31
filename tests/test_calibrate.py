"""Calibration of the "unknown" threshold: the choice on hand-made scores, a brute-force check, the
client-level function with the stored threshold applied by classify, and ``asif calibrate``."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
from helpers import copy_store, open_store, run_cli, unit_rows

from asif_vdb import AsifClient, AsifParams, InputError
from asif_vdb.features.label_sets import scores_and_coverage
from asif_vdb.maths import calibration as cal
from asif_vdb.workflows.demo import SHAPES, draw
from ingest.readers.datasets import labelled_folder

BEST = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
RIGHT = [True, True, False, True, False, False]
# wrong among answered when answering the top 1..6: 0, 0, 1/3, 1/4, 2/5, 1/2


@pytest.mark.parametrize("target,want", [
    ({"max_wrong": 0.0}, 0.75),
    ({"max_wrong": 0.25}, 0.55),
    ({"max_wrong": 0.3}, 0.55),
    ({"max_wrong": 0.34}, 0.55),   # 1/3 at 0.7 also fits, but 0.6 answers more
    ({"max_wrong": 0.4}, 0.45),
    ({"max_wrong": 0.5}, 0.0),     # everything positive may be answered
    ({"target_accuracy": 0.75}, 0.55),
    ({"target_accuracy": 1.0}, 0.75),
    ({"max_unknown": 0.5}, 0.65),
    ({"max_unknown": 0.2}, 0.45),
    ({"max_unknown": 0.0}, 0.0),
])
def test_pick_threshold_on_hand_made_scores(target, want) -> None:
    t = cal.pick_threshold(BEST, RIGHT, **target)
    assert t == pytest.approx(want)


def test_breakdown_matches_the_paper_style_fractions() -> None:
    b = cal.breakdown(BEST, RIGHT, 0.55)
    assert (b.n, b.right, b.unknown, b.wrong) == (6, pytest.approx(3 / 6), pytest.approx(2 / 6), pytest.approx(1 / 6))
    assert b.answered_accuracy == pytest.approx(0.75)
    none = cal.breakdown(BEST, RIGHT, None)
    assert (none.right, none.unknown, none.wrong) == (pytest.approx(0.5), 0.0, pytest.approx(0.5))


def test_zero_scores_are_always_unknown_and_ties_move_together() -> None:
    best = [0.5, 0.5, 0.3, 0.0, -0.1]
    right = [True, False, True, True, True]
    assert cal.breakdown(best, right, None).unknown == pytest.approx(2 / 5)
    # Answering 0.5 answers both tied images (1 wrong of 2); adding 0.3 makes it 1 of 3.
    assert cal.pick_threshold(best, right, max_wrong=0.4) == 0.0
    assert cal.pick_threshold(best, right, max_wrong=0.5) == 0.0
    with pytest.raises(InputError, match="lowest reachable is 0.333"):
        cal.pick_threshold(best, right, max_wrong=0.2)
    with pytest.raises(InputError, match="always unknown"):
        cal.pick_threshold(best, right, max_unknown=0.1)
    with pytest.raises(InputError, match="exactly one target"):
        cal.pick_threshold(best, right, max_wrong=0.1, max_unknown=0.2)
    with pytest.raises(InputError, match="no image has a positive score"):
        cal.pick_threshold([0.0, -1.0], [True, True], max_wrong=0.5)


@pytest.mark.parametrize("seed", range(25))
def test_pick_threshold_is_the_best_feasible_split(seed: int) -> None:
    """Against brute force over every cut: the target holds, and no lower cut holds it."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    best = np.round(rng.uniform(-0.1, 1.0, n), 2)  # rounding makes ties
    right = rng.random(n) < best  # higher scores are more often right, as in practice
    limit = float(rng.choice([0.05, 0.1, 0.2, 0.3]))
    cuts = sorted({float(v) for v in best if v > 0}, reverse=True)
    feasible = []
    for v in cuts:
        ans = best >= v
        if (ans & ~right).sum() / ans.sum() <= limit + 1e-12:
            feasible.append(v)
    if not feasible:
        with pytest.raises(InputError):
            cal.pick_threshold(best, right, max_wrong=limit)
        return
    t = cal.pick_threshold(best, right, max_wrong=limit)
    lowest = min(feasible)
    got = cal.answered(best, t)
    np.testing.assert_array_equal(got, (best >= lowest) & (best > 0))
    b = cal.breakdown(best, right, t)
    assert b.wrong <= limit * (b.right + b.wrong) + 1e-12


def test_labelled_folder_with_and_without_class_map(tmp_path) -> None:
    """The labelled images ``asif calibrate --data`` reads (ingest.readers.datasets.labelled_folder)."""
    for folder, n in (("cat", 2), ("dog", 3)):
        (tmp_path / "data" / folder).mkdir(parents=True)
        for i in range(n):
            (tmp_path / "data" / folder / f"{i}.jpg").write_bytes(b"x")
        (tmp_path / "data" / folder / "notes.txt").write_text("not an image")
    found = labelled_folder(tmp_path / "data", ["dog", "cat"])
    assert [p.relative_to(tmp_path / "data").as_posix() for p in found.paths] == \
        ["cat/0.jpg", "cat/1.jpg", "dog/0.jpg", "dog/1.jpg", "dog/2.jpg"]
    assert found.labels.tolist() == [1, 1, 0, 0, 0] and found.classes == ["dog", "cat"]
    with pytest.raises(InputError, match="folder\\(s\\) cat, dog match no class"):
        labelled_folder(tmp_path / "data", ["kitten", "puppy"])
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"cat": "kitten", "dog": "puppy"}))
    assert labelled_folder(tmp_path / "data", ["kitten", "puppy"], mapping).labels.tolist() == [0, 0, 1, 1, 1]
    with pytest.raises(InputError, match="not a folder"):
        labelled_folder(tmp_path / "missing", ["cat"])


CLASSES = ["dog", "cat", "car", "tree", "boat"]


def test_client_calibration_is_stored_and_applied(tmp_path) -> None:
    rng = np.random.default_rng(0)
    img, txt = unit_rows(rng, 120, 1280), unit_rows(rng, 120, 384)
    queries = unit_rows(rng, 60, 1280)
    with open_store("edge", tmp_path, params=AsifParams(k=25, p=1.0)) as client:
        client.add_anchor_embeddings(img, txt, [{"caption": f"pair {i}"} for i in range(120)])
        client.create_label_set("things", CLASSES, ["a photo of a {}."])
        scores = client.class_scores(queries, "things")
        # Truth: the predicted class for the 30 highest-scoring queries, another class otherwise.
        pred = scores.argmax(axis=1)
        high = np.argsort(-scores.max(axis=1))[:30]
        truth = (pred + 1) % len(CLASSES)
        truth[high] = pred[high]
        report = client.calibrate("things", embeddings=queries, truth=truth, max_wrong=0.1)
        want = cal.pick_threshold(scores.max(axis=1), pred == truth, max_wrong=0.1)
        assert report.threshold == pytest.approx(want) and report.saved
        assert report.with_threshold.wrong <= 0.1 * (report.with_threshold.right + report.with_threshold.wrong)
        assert report.without.right == pytest.approx(0.5)
        dry = client.calibrate("things", embeddings=queries, truth=truth, max_wrong=0.5, save=False)
        assert not dry.saved and client.label_set("things").threshold == pytest.approx(want)
        with pytest.raises(InputError, match="class indices"):
            client.calibrate("things", embeddings=queries, truth=np.full(60, 7), max_wrong=0.1)
    with AsifClient(tmp_path / "store") as client:  # stored with the data
        assert client.label_set("things").threshold == pytest.approx(want)
        results = client.classify_embeddings(queries, "things", top=1)
        unknown = np.array([r.unknown for r in results])
        np.testing.assert_array_equal(unknown, scores.max(axis=1) < want)
        assert unknown.any() and not unknown.all()
        assert not any(r.unknown for r in client.classify_embeddings(queries, "things", threshold=None))


# -- the command ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shapes(shapes_store, tmp_path_factory):
    """A copy of the tiny embedded store of drawn shapes (this module's tests write thresholds into
    it) and an ImageFolder of other drawn shapes."""
    folder = tmp_path_factory.mktemp("calibrate")
    store = folder / "store"
    copy_store(shapes_store[0], store)
    rng = random.Random(5)
    data = folder / "labelled"
    for shape in SHAPES:
        (data / shape).mkdir(parents=True)
        for i in range(6):
            colour = rng.choice(["red", "green", "blue", "yellow", "purple", "orange"])
            draw(colour, shape, rng.choice(["white", "grey", "black"]), rng).save(data / shape / f"{i}.png")
    return store, data


def test_cli_calibrate_end_to_end(shapes, tmp_path) -> None:
    store, data = shapes
    dry = run_cli("calibrate", "--store", store, "--labels", "shapes", "--data", data, "--max-unknown", "0.5",
                  "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "no threshold" in dry.stdout and "with threshold" in dry.stdout and "dry run" in dry.stdout
    with AsifClient(store) as client:
        assert client.label_set("shapes").threshold is None
        folder = labelled_folder(data, client.label_set("shapes").classes)
        paths, truth = folder.paths, folder.labels
        scores = client.class_scores(client.encode_images(paths), "shapes")
    best, correct = scores.max(axis=1), scores.argmax(axis=1) == truth
    want = cal.pick_threshold(best, correct, max_unknown=0.5)
    assert want > 0

    result = run_cli("calibrate", "--store", store, "--labels", "shapes", "--data", data, "--max-unknown", "0.5",
                     "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["threshold"] == pytest.approx(want) and report["saved"]
    assert report["with_threshold"]["unknown"] <= 0.5
    parts = report["with_threshold"]
    assert parts["right"] + parts["unknown"] + parts["wrong"] == pytest.approx(1.0)
    for key, b in (("without", cal.breakdown(best, correct, None)), ("with_threshold", cal.breakdown(best, correct, want))):
        assert report[key] == pytest.approx(b.to_dict())  # the breakdowns of these scores

    images = [str(p) for p in paths]
    with_t = run_cli("classify", "--store", store, "--labels", "shapes", "--json", *images)
    without = run_cli("classify", "--store", store, "--labels", "shapes", "--json", "--no-threshold", *images)
    assert with_t.exit_code == 0 and without.exit_code == 0, with_t.output + without.output
    unknown = [json.loads(line)["unknown"] for line in with_t.stdout.strip().splitlines()]
    assert unknown == (scores.max(axis=1) < want).tolist() and any(unknown)
    flags = [json.loads(line)["unknown"] for line in without.stdout.strip().splitlines()]
    assert flags == [False] * len(images)

    default = run_cli("calibrate", "--store", store, "--labels", "shapes", "--data", data, "--criterion", "coverage",
                      "--dry-run")
    assert default.exit_code == 0, default.output
    assert "coverage threshold" in default.stdout and "max_unknown 0.05" in default.stdout
    cov = run_cli("calibrate", "--store", store, "--labels", "shapes", "--data", data, "--criterion", "coverage",
                  "--max-unknown", "0.2")
    assert cov.exit_code == 0, cov.output
    with AsifClient(store) as client:
        info = client.label_set("shapes")
        assert info.threshold == pytest.approx(want) and info.coverage_threshold > 0
        assert client.info()["label_sets"]["shapes"]["coverage_threshold"] == info.coverage_threshold


def test_cli_calibrate_class_map_and_errors(shapes, tmp_path) -> None:
    store, data = shapes
    renamed = tmp_path / "renamed"
    for folder in data.iterdir():
        shutil.copytree(folder, renamed / f"x_{folder.name}")
    bad = run_cli("calibrate", "--store", store, "--labels", "shapes", "--data", renamed, "--dry-run")
    assert bad.exit_code == 2 and "match no class of the label set" in bad.stderr
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({f"x_{f.name}": f.name for f in data.iterdir()}))
    ok = run_cli("calibrate", "--store", store, "--labels", "shapes", "--data", renamed, "--class-map", mapping,
                 "--max-wrong", "1.0", "--dry-run", "--json")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["threshold"] == 0.0
    both = run_cli("calibrate", "--store", store, "--labels", "shapes", "--data", data, "--max-wrong", "0.1",
                   "--max-unknown", "0.1")
    assert both.exit_code == 2 and "give one of --max-wrong, --target-accuracy, --max-unknown" in both.stderr


def test_coverage_is_the_norm_before_normalisation_over_sqrt_k() -> None:
    rng = np.random.default_rng(3)
    queries, anchors = unit_rows(rng, 6, 16), unit_rows(rng, 40, 16)
    for k, p in ((10, 1.0), (40, 2.0), (60, 0.5)):
        sims = queries @ anchors.T
        top = [np.sort(row)[::-1][: min(k, 40)] for row in sims]
        want = [np.linalg.norm(np.maximum(t, 0) ** p) / np.sqrt(k) for t in top]
        np.testing.assert_allclose(cal.coverage(top, k, p), want, rtol=1e-6)
    assert cal.coverage([np.array([-0.3, -0.1])], 2, 1.0)[0] == 0.0
    # Fewer anchors than k count as zeros: the same similarities cover less under a larger k.
    assert cal.coverage([np.array([0.5, 0.5])], 8, 1.0)[0] == pytest.approx(0.25)


def test_coverage_criterion_is_stored_apart_and_applied(tmp_path) -> None:
    rng = np.random.default_rng(1)
    img, txt = unit_rows(rng, 100, 1280), unit_rows(rng, 100, 384)
    # Queries near some anchors (well covered) and random ones (poorly covered).
    near = img[:20] + 0.3 * unit_rows(rng, 20, 1280)
    queries = np.vstack([near / np.linalg.norm(near, axis=1, keepdims=True), unit_rows(rng, 20, 1280)])
    with open_store("memory", tmp_path, params=AsifParams(k=10, p=1.0)) as client:
        client.add_anchor_embeddings(img, txt, [{"caption": f"pair {i}"} for i in range(100)])
        client.create_label_set("things", CLASSES, ["a photo of a {}."])
        scores, cover = scores_and_coverage(client.engine, client.label_set("things"), queries)
        np.testing.assert_allclose(scores, client.class_scores(queries, "things"), atol=1e-6)
        hits = client.engine.anchors.topk(queries, "image")
        np.testing.assert_allclose(cover, cal.coverage([h.scores for h in hits], 10, 1.0), rtol=1e-5)
        assert cover[:20].min() > cover[20:].max()  # anchors cover the near queries better
        truth = scores.argmax(axis=1)
        # a score threshold calibrated before (stored with the label set) stays as it is
        client.engine.config.label_sets["things"].threshold = 1e-9
        client.engine.state.save()
        report = client.calibrate("things", embeddings=queries, truth=truth, criterion="coverage", max_unknown=0.5)
        assert report.criterion == "coverage" and cover[20:].max() < report.threshold < cover[:20].min()
        info = client.label_set("things")
        assert info.coverage_threshold == report.threshold and info.threshold == 1e-9
        results = client.classify_embeddings(queries, "things", top=2)
        assert [r.unknown for r in results] == [False] * 20 + [True] * 20
        assert not any(r.unknown for r in client.classify_embeddings(queries, "things", threshold=None))
        ex = client.explain_embedding(queries[25], "things", top=1)
        assert ex.unknown and ex.coverage == pytest.approx(cover[25], abs=1e-6)
        assert ex.to_dict()["coverage_threshold"] == report.threshold
        assert not client.explain_embedding(queries[5], "things", top=1).unknown
        with pytest.raises(InputError, match="criterion"):
            client.calibrate("things", embeddings=queries, truth=truth, criterion="norm",  # type: ignore[arg-type]
                             max_unknown=0.5)
