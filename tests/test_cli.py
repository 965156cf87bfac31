"""The asif command end to end: demo, ingest, labels, classify, info, and clear errors."""

from __future__ import annotations

import json

from click.testing import CliRunner

from asif_vdb.cli import main


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_demo_runs_offline_and_classifies(tmp_path) -> None:
    result = run("demo", "--workdir", str(tmp_path / "demo"))
    assert result.exit_code == 0, result.output
    assert "ingested 162 pairs" in result.output
    right, total = result.output.split("accuracy ")[1].split(";")[0].split("/")
    assert int(total) == 9 and int(right) >= 7


def test_ingest_labels_classify_info(demo_data, tmp_path) -> None:
    table, queries = demo_data
    store = str(tmp_path / "store")
    result = run("ingest", "--store", store, str(table), "-k", "20", "--limit", "60", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["ingested"] == 60
    again = run("ingest", "--store", store, str(table), "--limit", "60", "--json")
    assert json.loads(again.stdout.strip().splitlines()[-1])["ingested"] == 0
    assert run("labels", "create", "shapes", "--store", store, "--classes", "circle,square,triangle",
               "--templates", "a {} on a background.").exit_code == 0
    result = run("classify", "--store", store, "--labels", "shapes", "--json", str(queries[0][0]))
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output.strip().splitlines()[-1])
    assert answer["label"] in {"circle", "square", "triangle"} and len(answer["predictions"]) == 3
    info = json.loads(run("info", "--store", store).output)
    assert info["anchors"] == 60 and info["params"]["k"] == 20 and "shapes" in info["label_sets"]


def test_errors_are_one_line_without_traceback(tmp_path) -> None:
    store = str(tmp_path / "store")
    result = CliRunner().invoke(main, ["ingest", "--store", store, str(tmp_path / "nope.csv")])
    assert result.exit_code == 2 and "not found" in result.output and "nope.csv" in result.output
    assert "Traceback" not in result.output
    for command in (["classify", "--labels", "x", str(tmp_path / "a.jpg")], ["info"], ["search", "a dog", "--gallery", "g"],
                    ["labels", "list"], ["doctor"]):  # a path that holds no store: named, and left alone
        result = CliRunner().invoke(main, [*command, "--store", store])
        assert result.exit_code == 2 and f"no store at {store}" in result.output, (command, result.output)
        assert not (tmp_path / "store").exists()
