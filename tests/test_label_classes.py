"""Label sets as real users have them: class ids apart from display names (ImageNet's two "crane"
classes), articles that agree with the class name, and ``asif labels coverage`` (which classes the
anchors barely cover). Real small data: the demo's drawn shapes with the offline encoders."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import run_cli, write

from asif_vdb import AsifClient, AsifParams, InputError
from asif_vdb.features.templates import article, fill
from asif_vdb.maths.support import prompt_support, spearman


@pytest.mark.parametrize("template,name,want", [
    ("a photo of a {}.", "airplane", "a photo of an airplane."),
    ("a photo of a {}.", "dog", "a photo of a dog."),
    ("an {} in the wild", "cat", "a cat in the wild"),
    ("A {}.", "owl", "An owl."),
    ("itap of a {}.", "unicorn", "itap of a unicorn."),
    ("a {}", "hour glass", "an hour glass"),
    ("a photo of the {}.", "apple", "a photo of the apple."),
    ("a {c} on a table", "egg", "an egg on a table"),
])
def test_templates_fill_articles_that_agree(template, name, want) -> None:
    assert fill(template, name) == want
    assert article("European") == "a" and article("ice cream") == "an"


def test_class_ids_apart_from_names(store_copy) -> None:
    store, queries, _ = store_copy
    with AsifClient(store) as client:
        with pytest.raises(InputError, match="give each class an id"):
            client.create_label_set("dup", ["circle", "circle"])
        classes = {"n1": "circle", "n2": "square", "n3": "circle"}  # two classes share a display name
        info = client.create_label_set("ids", classes, templates=["a {} on a background."])
        assert info.classes == ["circle", "square", "circle"] and info.class_ids == ["n1", "n2", "n3"]
        result = client.classify([q for q, _ in queries[:3]], "ids", top=3)
        for r in result:
            assert sorted(p.id for p in r.predictions) == ["n1", "n2", "n3"]
            assert {p.id: p.label for p in r.predictions} == classes
        plain = client.classify([queries[0][0]], "shapes", top=1)[0].predictions[0]
        assert plain.id == plain.label  # without ids, the name is the id


def test_label_sets_pool_templates_by_the_stores_method(store_copy, tmp_path) -> None:
    store, queries, _ = store_copy
    templates = str(write(tmp_path / "templates.txt", "a {} on a background.\na drawing of a {}.\na {} shape.\n"))
    result = run_cli("labels", "create", "pooled", "--store", str(store), "--classes", "circle,square,triangle",
                     "--templates", templates, "--json")
    assert result.exit_code == 0, result.output
    made = json.loads(result.output)
    assert made["aggregate"] == "pool" and len(made["templates"]) == 3  # the tuned method's default
    result = run_cli("labels", "create", "best", "--store", str(store), "--classes", "circle,square,triangle",
                     "--templates", templates, "--aggregate", "max")
    assert result.exit_code == 0 and "3 classes x 3 templates, max" in result.output, result.output
    with AsifClient(store) as client:
        assert client.label_set("pooled").n_candidates == 3 and client.label_set("best").n_candidates == 9
        ranked = client.classify([queries[0][0]], "pooled", top=3)[0].predictions
        assert [p.label for p in ranked] and ranked[0].score >= ranked[-1].score
        report = client.label_coverage("pooled")
        assert sorted(c.name for c in report.classes) == ["circle", "square", "triangle"]
    with AsifClient(tmp_path / "plain", params=AsifParams(method="plain")) as client:
        assert client.params.aggregate == "max"


def test_class_file_with_ids_through_the_cli(store_copy, tmp_path) -> None:
    store, queries, _ = store_copy
    classes = write(tmp_path / "classes.tsv", "n01\tcircle\nn02\tsquare\nn03\tcircle\n")
    result = run_cli("labels", "create", "ids", "--store", str(store), "--classes-file", str(classes),
                     "--templates", "a {} on a background.", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["ids"] == ["n01", "n02", "n03"]
    result = run_cli("classify", str(queries[0][0]), "--store", str(store), "--labels", "ids", "--json")
    assert result.exit_code == 0, result.output
    assert {p["id"] for p in json.loads(result.output)["predictions"]} <= {"n01", "n02", "n03"}
    bad = write(tmp_path / "bad.tsv", "n01\tcircle\nsquare\n")
    result = run_cli("labels", "create", "bad", "--store", str(store), "--classes-file", str(bad))
    assert result.exit_code == 2 and "line 2 is not ID<TAB>NAME" in result.output + str(result.stderr)


def test_coverage_flags_classes_no_anchor_caption_names(store_copy) -> None:
    store, _, _ = store_copy
    with AsifClient(store) as client:
        client.create_label_set("mixed", ["circle", "square", "saxophone"], templates=["a {} on a background."])
        report = client.label_coverage("mixed", few=2)
    by_name = {r.name: r for r in report.classes}
    assert report.classes[0].name == "saxophone"  # least covered first: no drawn shape is a saxophone
    assert by_name["saxophone"].anchors < min(by_name["circle"].anchors, by_name["square"].anchors)
    assert by_name["circle"].nearest and all("circle" in c for c in by_name["circle"].nearest)
    assert "saxophone" in report.low and not by_name["circle"].low
    assert any("saxophone" in line for line in report.advice)
    result = run_cli("labels", "coverage", "mixed", "--store", str(store), "--few", "2")
    assert result.exit_code == 1 and "LOW saxophone" in result.output  # exit 1: a problem found


def test_prompt_support_and_spearman_against_direct_computation() -> None:
    rng = np.random.default_rng(0)
    sims = rng.normal(0.1, 0.05, (3, 200))
    sims[0, :20] += 0.5  # twenty anchors stand out for prompt 0
    sup = prompt_support(sims, k=30, p=1.0)
    assert len(sup.strong[0]) >= 20 and set(range(20)) <= set(sup.strong[0].tolist())
    top = np.sort(sims[0])[::-1][:30]
    med = np.median(sims[0])
    cut = med + 3 * 1.4826 * np.median(np.abs(sims[0] - med))
    assert sup.weight[0] == pytest.approx(float((top[top >= cut] ** 2).sum() / (top ** 2).sum()))
    assert spearman(np.array([1, 2, 3, 4]), np.array([10, 20, 30, 40])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3, 4]), np.array([4, 3, 2, 1])) == pytest.approx(-1.0)
    assert spearman(np.array([1, 1, 2]), np.array([1, 2, 3])) == pytest.approx(0.866, abs=1e-3)


def test_a_new_store_takes_the_method_from_the_command_line(demo_data, tmp_path) -> None:
    table, _ = demo_data
    for method, expect in (("plain", ("plain", 800, 1.0)), (None, ("tuned", 3200, 1.5))):
        store = tmp_path / f"s-{method}"
        extra = ["--method", method] if method else []
        result = run_cli("anchors", "add", str(table), "--store", str(store), "--limit", "12", *extra)
        assert result.exit_code == 0, result.output
        with AsifClient(store) as client:
            assert (client.params.method, client.params.k, client.params.p) == expect
