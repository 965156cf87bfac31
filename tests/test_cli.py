"""The asif command end to end: demo, ingest, labels, classify, info, clear errors, exit codes, and
--json on every command that prints results."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import click
from helpers import error_lines, image_bytes, run_cli, write

from asif_vdb import AsifClient
from asif_vdb.cli import COMMANDS, main
from asif_vdb.cli.common import EXIT_CODES

#: Commands that print no result of their own, only a confirmation or a walkthrough: no --json.
NO_JSON = {"demo", "labels delete", "gallery delete", "methods hub", "serve"}  # serve runs until stopped


def test_demo_runs_offline_and_classifies(tmp_path) -> None:
    result = run_cli("demo", "--workdir", tmp_path / "demo")
    assert result.exit_code == 0, result.output
    assert "ingested 162 pairs" in result.stdout
    right, total = result.stdout.split("accuracy ")[1].split(";")[0].split("/")
    assert int(total) == 9 and int(right) >= 7
    # the demo ingests through the pipeline: its report is written next to its data
    assert (tmp_path / "demo" / "ingest-report.jsonl").is_file()


def test_ingest_labels_classify_info(demo_data, tmp_path) -> None:
    table, queries = demo_data
    store = str(tmp_path / "store")
    result = run_cli("ingest", "--store", store, table, "-k", "20", "--limit", "60", "--json", "--no-progress")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ingested"] == 60
    again = run_cli("ingest", "--store", store, table, "--limit", "60", "--json", "--no-progress")
    assert again.exit_code == 0 and json.loads(again.stdout)["ingested"] == 0
    assert run_cli("labels", "create", "shapes", "--store", store, "--classes", "circle,square,triangle",
                   "--templates", "a {} on a background.").exit_code == 0
    image, truth = queries[0]
    result = run_cli("classify", "--store", store, "--labels", "shapes", "--json", image)
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.strip().splitlines()  # one JSON object per image
    answer = json.loads(line)
    with AsifClient(store) as client:
        want = client.classify(image, "shapes", top=5)[0]
    assert answer == {"image": str(image), **json.loads(json.dumps(want.to_dict()))}
    assert answer["label"] == truth and [p["label"] for p in answer["predictions"]] == \
        [p.label for p in want.predictions] and len(answer["predictions"]) == 3
    info = json.loads(run_cli("info", "--store", store).stdout)
    assert info["anchors"] == 60 and info["params"]["k"] == 20 and "shapes" in info["label_sets"]


def test_errors_are_one_line_without_traceback(tmp_path) -> None:
    store = str(tmp_path / "store")
    result = run_cli("ingest", "--store", store, tmp_path / "nope.csv")
    assert result.exit_code == 2 and len(error_lines(result)) == 1
    assert "not found" in error_lines(result)[0] and "nope.csv" in error_lines(result)[0]
    assert "Traceback" not in result.output and result.stdout == ""
    image = write(tmp_path / "a.jpg", image_bytes())
    for command in (["classify", "--labels", "x", str(image)], ["info"], ["search", "a dog", "--gallery", "g"],
                    ["labels", "list"], ["doctor"]):  # a path that holds no store: named, and left alone
        result = run_cli(*command, "--store", store)
        assert result.exit_code == 2 and len(error_lines(result)) == 1, (command, result.output)
        assert f"no store at {store}" in error_lines(result)[0], (command, result.output)
        assert "Traceback" not in result.output
        assert not (tmp_path / "store").exists()


def test_help_documents_the_exit_codes() -> None:
    result = run_cli("--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())  # click wraps the epilog
    assert EXIT_CODES in text
    assert "0 ok" in text and "1 nothing done or a problem found" in text and "2 usage or input error" in text


def leaf_commands(group: click.Group = main, prefix: str = "") -> dict[str, click.Command]:
    """Every runnable command of ``asif`` by its full name ("anchors add")."""
    out: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        full = f"{prefix}{name}"
        if isinstance(command, click.Group):
            out.update(leaf_commands(command, full + " "))
        else:
            out[full] = command
    return out


def test_every_command_that_prints_results_has_json() -> None:
    commands = leaf_commands()
    assert {c.name for c in COMMANDS} == set(main.commands)
    assert NO_JSON <= set(commands)
    missing = [name for name, command in commands.items()
               if name not in NO_JSON and "--json" not in {o for p in command.params for o in getattr(p, "opts", [])}]
    assert missing == []


def test_every_json_command_prints_valid_json(store_copy, tmp_path) -> None:
    """Each command with --json, on a copy of the tiny shapes store: stdout is one JSON document
    (classify: one JSON object per image line)."""
    store, queries, pairs = store_copy
    table = pairs[0][0].parent.parent / "captions.csv"
    folder = tmp_path / "labelled"  # an ImageFolder of the held-out queries
    for path, shape in queries:
        (folder / shape).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / shape / path.name)
    q1, q2 = str(queries[0][0]), str(queries[3][0])
    s = ["--store", str(store)]
    runs: dict[str, list[str]] = {
        "ingest": ["ingest", str(table), *s, "--limit", "3", "--no-progress"],
        "anchors add": ["anchors", "add", str(table), *s, "--limit", "3"],
        "anchors list": ["anchors", "list", *s, "--limit", "2"],
        "anchors delete": ["anchors", "delete", "0", *s, "--dry-run"],
        "labels create": ["labels", "create", "colours", "--classes", "red,blue", "--templates", "a {} shape.", *s],
        "labels list": ["labels", "list", *s],
        "classify": ["classify", q1, q2, "--labels", "shapes", *s],
        "gallery add": ["gallery", "add", "g", q1, q2, *s],
        "gallery list": ["gallery", "list", *s],
        "search": ["search", "a red circle", "--gallery", "g", *s],
        "explain": ["explain", q1, "--labels", "shapes", *s],
        "calibrate": ["calibrate", "--labels", "shapes", "--data", str(folder), "--dry-run", *s],
        "eval classify": ["eval", "classify", str(folder), "--templates", "a {} on a background.", *s],
        "eval retrieval": ["eval", "retrieval", str(table), "--limit", "3", *s],
        "eval sweep": ["eval", "sweep", "--anchor-table", str(table), "--dataset", str(folder), "--templates",
                       "a {} on a background.", "--k-values", "5", "--cache-dir", str(tmp_path / "cache"),
                       "--out-dir", str(tmp_path / "sweep")],
        "doctor": ["doctor", *s],
        "info": ["info", *s],
        "methods show": ["methods", "show", *s],
        "index show": ["index", "show", *s],
        "index set": ["index", "set", "--index", "int8", *s],
        "index optimize": ["index", "optimize", *s],
        "prune": ["prune", "--labels", "shapes", "--keep", "10", "--new-store", str(tmp_path / "pruned"), *s],
        "labels coverage": ["labels", "coverage", "shapes", "--few", "1", *s],
        "tune": ["tune", "--holdout", "10", "--dry-run", *s],
        "backup": ["backup", "--out", str(tmp_path / "backup"), *s],
        "restore": ["restore", str(tmp_path / "backup"), "--store", str(tmp_path / "restored")],
        "methods transform": ["methods", "transform", "--recommended", *s],  # last: it refits the store
    }
    assert set(runs) == set(leaf_commands()) - NO_JSON  # every --json command is run here
    for name, args in runs.items():
        result = run_cli(*args, "--json")
        assert result.exit_code == 0, (name, result.output)
        if name == "classify":
            lines = [json.loads(line) for line in result.stdout.splitlines()]
            assert [d["image"] for d in lines] == [q1, q2], name
        else:
            data = json.loads(result.stdout)  # one document: the whole of stdout
            assert isinstance(data, list if name in ("search", "labels list", "gallery list") else dict), name
            assert data, (name, result.stdout)


def test_search_json_is_one_array_of_hits(store_copy) -> None:
    store, queries, _ = store_copy
    s = ["--store", str(store)]
    assert run_cli("gallery", "add", "q", *[str(q) for q, _ in queries], *s).exit_code == 0
    result = run_cli("search", "a red square on a white background", "--gallery", "q", "--top", "4", "--json", *s)
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert [h["rank"] for h in hits] == [1, 2, 3]  # only 3 drawings share an anchor with the query (k=10)
    assert all(set(h) == {"rank", "id", "score", "payload"} for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    with AsifClient(store) as client:
        want = client.search("a red square on a white background", "q", top=4)
    assert [(h["id"], h["payload"]["ref"]) for h in hits] == [(w.id, w.payload["ref"]) for w in want]
    assert all(Path(h["payload"]["ref"]).is_absolute() for h in hits)


def test_classify_a_folder_and_a_glob_as_csv(store_copy, tmp_path) -> None:
    """Folders are searched recursively and globs expanded; --csv gives one row per readable image
    (path, prediction, --top classes and scores) equal to the client's answer; a corrupt image is
    named on stderr and skipped."""
    store, queries, _ = store_copy
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    for i, (path, _) in enumerate(queries[:4]):
        shutil.copy(path, (folder if i % 2 else folder / "more") / f"q{i}.png")
    write(folder / "broken.png", b"not an image")
    glob_dir = tmp_path / "globbed"
    glob_dir.mkdir()
    for i, (path, _) in enumerate(queries[4:6]):
        shutil.copy(path, glob_dir / f"g{i}.png")
    result = run_cli("classify", "--store", store, "--labels", "shapes", "--csv", "--top", "2", "--no-progress",
                     folder, str(glob_dir / "g*.png"))
    assert result.exit_code == 0, result.output
    header, *rows = list(csv.reader(result.stdout.splitlines()))
    assert header == ["path", "prediction", "class_1", "score_1", "class_2", "score_2"]
    assert sorted(Path(r[0]).name for r in rows) == ["g0.png", "g1.png", "q0.png", "q1.png", "q2.png", "q3.png"]
    (skipped,) = [line for line in result.stderr.splitlines() if line.startswith("skipped:")]
    assert skipped == f"skipped: {folder / 'broken.png'}: not a readable image (corrupt or unknown format)"
    with AsifClient(store) as client:
        want = client.classify([r[0] for r in rows], "shapes", top=2)
    for row, answer in zip(rows, want):
        assert row[1] == (answer.label or "unknown")
        assert row[2::2] == [p.label for p in answer.predictions]
        assert [float(s) for s in row[3::2]] == [round(p.score, 6) for p in answer.predictions]
