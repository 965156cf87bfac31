"""Reader stage of the ingestion pipeline: every format, its keys, meta, and each bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import image_bytes, make_tar, write

from ingest.readers import (
    FORMATS,
    CocoReader,
    FilesReader,
    FolderReader,
    Reader,
    TableReader,
    WebDatasetReader,
    detect_format,
    expand_braces,
    open_reader,
)
from ingest.sample import Sample, Skipped

JPG, PNG = image_bytes("JPEG"), image_bytes("PNG")


def split(items: list[Sample | Skipped]) -> tuple[dict[str, Sample], dict[str, str]]:
    samples = {s.key: s for s in items if isinstance(s, Sample)}
    skipped = {s.key: s.reason for s in items if isinstance(s, Skipped)}
    assert len(samples) + len(skipped) == len(items), "keys must be unique"
    return samples, skipped


# --------------------------------------------------------------------------- webdataset


@pytest.mark.parametrize(
    "pattern, expected",
    [
        ("s/{00000..00002}.tar", ["s/00000.tar", "s/00001.tar", "s/00002.tar"]),
        ("{8..10}", ["8", "9", "10"]),
        ("{08..10}", ["08", "09", "10"]),
        ("{3..1}", ["3", "2", "1"]),
        ("{a,b}.tar", ["a.tar", "b.tar"]),
        ("{a,b{1..2}}-{x,y}", ["a-x", "a-y", "b1-x", "b1-y", "b2-x", "b2-y"]),
        ("{x}/{1..2}", ["{x}/1", "{x}/2"]),
        ("plain.tar", ["plain.tar"]),
        ("open{1..2", ["open{1..2"]),
    ],
)
def test_expand_braces(pattern: str, expected: list[str]) -> None:
    assert expand_braces(pattern) == expected


def _shard(path: Path, keys: list[str], with_json: bool = True) -> Path:
    members: list[tuple[str, bytes]] = []
    for k in keys:
        members.append((f"{k}.jpg", JPG))
        if with_json:
            members.append((f"{k}.json", json.dumps({"url": f"http://x/{k}", "key": k}).encode()))
        members.append((f"{k}.txt", f"a photo, of {k}".encode()))
    return make_tar(path, members)


@pytest.mark.parametrize("spec", ["{00000..00001}.tar", "*.tar", "{00000,00001}.tar", ""])
def test_webdataset_pairs_keys_meta(tmp_path: Path, spec: str) -> None:
    d = tmp_path / "shards"
    _shard(d / "00000.tar", ["000000000", "000000001"])
    _shard(d / "00001.tar", ["000010000"], with_json=False)
    reader = open_reader(str(d / spec) if spec else str(d))
    assert isinstance(reader, WebDatasetReader) and isinstance(reader, Reader)
    samples, skipped = split(list(reader))
    assert skipped == {}
    assert list(samples) == ["00000.tar/000000000", "00000.tar/000000001", "00001.tar/000010000"]
    s = samples["00000.tar/000000001"]
    assert s.caption == "a photo, of 000000001"
    assert s.image_bytes == JPG and s.image_path is None
    assert s.image_ref == f"{d / '00000.tar'}::000000001.jpg"
    assert s.meta == {"url": "http://x/000000001", "key": "000000001"}
    assert s.source == "shards"
    assert samples["00001.tar/000010000"].meta == {}


@pytest.mark.parametrize(
    "members, links, key, reason",
    [
        ([("/etc/evil.jpg", JPG)], (), "s.tar//etc/evil.jpg", "unsafe_path"),
        ([("../evil.txt", b"x")], (), "s.tar/../evil.txt", "unsafe_path"),
        ([("a/../../evil.jpg", JPG)], (), "s.tar/a/../../evil.jpg", "unsafe_path"),
        ([], ("link.jpg",), "s.tar/link.jpg", "unsafe_path"),
        ([("nocap.jpg", JPG)], (), "s.tar/nocap", "missing_caption"),
        ([("noimg.txt", b"lonely caption")], (), "s.tar/noimg", "missing_image"),
        ([("badmeta.png", PNG), ("badmeta.json", b"{oops"), ("badmeta.txt", b"c")], (),
         "s.tar/badmeta", "bad_meta"),
        ([("badtxt.webp", JPG), ("badtxt.txt", b"\xff\xfe\xfa")], (), "s.tar/badtxt",
         "bad_caption"),
    ],
)
def test_webdataset_bad_members(
    tmp_path: Path, members: list[tuple[str, bytes]], links: tuple[str, ...], key: str,
    reason: str,
) -> None:
    good = [("good.jpg", JPG), ("good.txt", b"a dog")]
    later = [("later.png", PNG), ("later.txt", b"read on after the bad member")]
    tar = make_tar(tmp_path / "s.tar", good + members + later, links)
    samples, skipped = split(list(WebDatasetReader(str(tar))))
    assert list(samples) == ["s.tar/good", "s.tar/later"]
    assert samples["s.tar/good"].caption == "a dog"
    assert skipped == {key: reason}


def test_webdataset_dot_slash_prefix_and_subfolder(tmp_path: Path) -> None:
    tar = make_tar(tmp_path / "s.tar", [("./d/k1.jpeg", JPG), ("./d/k1.txt", b"cap")])
    samples, skipped = split(list(WebDatasetReader(str(tar), source="mine")))
    assert skipped == {} and samples["s.tar/d/k1"].source == "mine"


def test_webdataset_non_consecutive_key(tmp_path: Path) -> None:
    tar = make_tar(tmp_path / "s.tar", [("k.jpg", JPG), ("k.txt", b"k"), ("j.jpg", JPG),
                                        ("j.txt", b"j"), ("k.json", b"{}")])
    items = list(WebDatasetReader(str(tar)))
    assert [(type(i).__name__, i.key) for i in items] == [
        ("Sample", "s.tar/k"), ("Sample", "s.tar/j"), ("Skipped", "s.tar/k")]
    assert items[2].reason == "duplicate_key"


def test_webdataset_missing_and_corrupt_shards(tmp_path: Path) -> None:
    _shard(tmp_path / "00000.tar", ["k"])
    write(tmp_path / "00001.tar", b"this is not a tar archive at all" * 40)
    items = list(WebDatasetReader(str(tmp_path / "{00000..00002}.tar")))
    samples, skipped = split(items)
    assert list(samples) == ["00000.tar/k"]
    assert skipped == {"00001.tar": "bad_shard", "00002.tar": "missing_shard"}


def test_webdataset_no_shard_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no webdataset shard"):
        WebDatasetReader(str(tmp_path / "{00000..00003}.tar"))


# --------------------------------------------------------------------------- files layout


def test_files_layout(tmp_path: Path) -> None:
    root = tmp_path / "out"
    write(root / "00000" / "000000001.jpg", JPG)
    write(root / "00000" / "000000001.txt", "first caption\nsecond line kept")
    write(root / "00000" / "000000001.json", json.dumps({"url": "http://a", "status": "success"}))
    write(root / "00001" / "000010000.png", PNG)
    write(root / "00001" / "000010000.txt", "another")
    write(root / "00001" / "000010001.jpg", JPG)  # no caption
    write(root / "00001" / "000010002.txt", "no image")
    write(root / "00001" / "000010003.jpg", JPG)
    write(root / "00001" / "000010003.txt", "bad meta")
    write(root / "00001" / "000010003.json", "[1, 2]")
    write(root / "00000.parquet", b"PAR1")
    write(root / "00000_stats.json", "{}")
    assert detect_format(str(root)) == "files"
    reader = open_reader(str(root))
    assert isinstance(reader, FilesReader) and reader.estimate() == 4
    samples, skipped = split(list(reader))
    assert list(samples) == ["00000/000000001", "00001/000010000"]
    s = samples["00000/000000001"]
    assert s.caption == "first caption\nsecond line kept"
    assert s.image_path == s.image_ref == str(root / "00000" / "000000001.jpg")
    assert s.image_bytes is None and s.source == "out"
    assert s.meta == {"url": "http://a", "status": "success"}
    assert skipped == {
        "00001/000010001": "missing_caption",
        "00001/000010002": "missing_image",
        "00001/000010003": "bad_meta",
    }


# --------------------------------------------------------------------------- folder


def test_folder_pairs_by_relative_path_and_splits_lines(tmp_path: Path) -> None:
    root = tmp_path / "images"
    write(root / "a" / "dog.jpg", JPG)
    write(root / "a" / "dog.txt", "a dog, running\n\n  \na brown dog\r\n")
    write(root / "b" / "dog.png", PNG)  # must not pair with a/dog.txt
    write(root / "b" / "cat.txt", "caption without image")
    write(root / "c" / "empty.jpg", JPG)
    write(root / "c" / "empty.txt", "\n")
    write(root / ".hidden" / "x.jpg", JPG)
    assert detect_format(str(root)) == "folder"
    reader = open_reader(str(root))
    assert isinstance(reader, FolderReader) and reader.estimate() == 3
    samples, skipped = split(list(reader))
    assert {k: s.caption for k, s in samples.items()} == {
        "a/dog.jpg#0": "a dog, running",
        "a/dog.jpg#1": "a brown dog",
        "c/empty.jpg#0": "\n",  # kept raw: the pipeline rejects empty captions
    }
    assert samples["a/dog.jpg#1"].image_path == str(root / "a" / "dog.jpg")
    assert samples["a/dog.jpg#0"].source == "images"
    assert skipped == {"b/dog.png": "missing_caption", "b/cat.txt": "missing_image"}


@pytest.mark.parametrize(
    "name", ["x.jpg", "x.jpeg", "x.png", "x.webp", "x.bmp", "x.gif", "x.tif", "x.tiff", "x.JPG"]
)
def test_folder_image_extensions(tmp_path: Path, name: str) -> None:
    write(tmp_path / name, b"bytes are not decoded by readers")
    write(tmp_path / "x.txt", "cap")
    write(tmp_path / "notes.md", "ignored")
    samples, skipped = split(list(FolderReader(str(tmp_path))))
    assert list(samples) == [f"{name}#0"] and skipped == {}


# --------------------------------------------------------------------------- tables

ROWS = [
    {"image": "img/a.jpg", "caption": 'a dog, "quoted", on grass', "license": "cc-by", "n": "1"},
    {"image": "img/b.png", "caption": "a cat\twith a tab", "license": "cc0", "n": "2"},
    {"image": "https://example.com/c.jpg", "caption": "remote", "license": "x", "n": "3"},
    {"image": "s3://bucket/d.jpg", "caption": "remote too", "license": "x", "n": "4"},
    {"image": "img/missing.jpg", "caption": "gone", "license": "x", "n": "5"},
    {"image": "", "caption": "no image", "license": "x", "n": "6"},
]


def write_table(path: Path, rows: list[dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = path.suffix
    if ext in (".csv", ".tsv"):
        with open(path, "w", newline="", encoding="utf-8") as f:
            sep = "\t" if ext == ".tsv" else ","
            w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=sep)
            w.writeheader()
            w.writerows(rows)
    elif ext == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("ext", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_table_formats(tmp_path: Path, ext: str) -> None:
    write(tmp_path / "img" / "a.jpg", JPG)
    write(tmp_path / "img" / "b.png", PNG)
    table = write_table(tmp_path / f"pairs{ext}", ROWS)
    assert detect_format(str(table)) == "table"
    reader = open_reader(str(table))
    assert isinstance(reader, TableReader)
    assert reader.estimate() == (len(ROWS) if ext == ".parquet" else None)
    samples, skipped = split(list(reader))
    name = f"pairs{ext}"
    assert list(samples) == [f"{name}/0", f"{name}/1"]
    a = samples[f"{name}/0"]
    assert a.caption == 'a dog, "quoted", on grass'
    assert a.image_path == a.image_ref == str(tmp_path / "img" / "a.jpg")
    assert a.meta == {"license": "cc-by", "n": "1"} and a.source == "pairs"
    assert samples[f"{name}/1"].caption == "a cat\twith a tab"
    assert skipped == {
        f"{name}/2": "remote_url",
        f"{name}/3": "remote_url",
        f"{name}/4": "missing_image",
        f"{name}/5": "missing_image",
    }


def test_table_images_dir_and_custom_columns(tmp_path: Path) -> None:
    write(tmp_path / "pics" / "a.jpg", JPG)
    table = write_table(tmp_path / "meta" / "t.csv", [{"file": "a.jpg", "text": "hello, world"}])
    reader = open_reader(str(table), image_column="file", caption_column="text",
                         images_dir=str(tmp_path / "pics"), source="custom")
    (s,) = list(reader)
    assert isinstance(s, Sample)
    assert s.image_path == str(tmp_path / "pics" / "a.jpg")
    assert (s.caption, s.meta, s.source) == ("hello, world", {}, "custom")


def test_parquet_inline_bytes(tmp_path: Path) -> None:
    path = tmp_path / "inline.parquet"
    pq.write_table(pa.table({
        "image": pa.array([JPG, None], pa.binary()),
        "caption": ["inline jpeg", "no bytes"],
        "other_bytes": pa.array([b"x", b"y"], pa.binary()),
    }), path)
    samples, skipped = split(list(open_reader(str(path))))
    s = samples["inline.parquet/0"]
    assert s.image_bytes == JPG and s.image_path is None and s.meta == {}
    assert s.image_ref == f"{path}::row0"
    assert skipped == {"inline.parquet/1": "missing_image"}


def test_parquet_hf_image_struct(tmp_path: Path) -> None:
    path = tmp_path / "hf.parquet"
    pq.write_table(pa.Table.from_pylist([
        {"image": {"bytes": PNG, "path": "x.png"}, "caption": "hf"}]), path)
    (s,) = list(open_reader(str(path)))
    assert isinstance(s, Sample) and s.image_bytes == PNG


@pytest.mark.parametrize("ext", [".csv", ".tsv", ".jsonl", ".parquet"])
@pytest.mark.parametrize("column", ["image_column", "caption_column"])
def test_table_missing_column(tmp_path: Path, ext: str, column: str) -> None:
    table = write_table(tmp_path / f"t{ext}", [{"image": "a.jpg", "caption": "c"}])
    with pytest.raises(ValueError, match="'no_such_col'"):
        open_reader(str(table), **{column: "no_such_col"})


def test_table_bad_rows(tmp_path: Path) -> None:
    write(tmp_path / "a.jpg", JPG)
    jl = write(tmp_path / "t.jsonl", '{"image": "a.jpg", "caption": "ok"}\n{broken\n[1]\n'
               '{"image": "a.jpg", "caption": 7}\n{"image": "a.jpg"}\n')
    samples, skipped = split(list(open_reader(str(jl))))
    assert list(samples) == ["t.jsonl/0"]
    assert skipped == {"t.jsonl/1": "bad_row", "t.jsonl/2": "bad_row", "t.jsonl/3": "bad_row",
                       "t.jsonl/4": "missing_caption"}
    c = write(tmp_path / "t.csv", 'image,caption\na.jpg,"one, two"\na.jpg,x,extra\na.jpg\n')
    samples, skipped = split(list(open_reader(str(c))))
    assert samples["t.csv/0"].caption == "one, two"
    assert skipped == {"t.csv/1": "bad_row", "t.csv/2": "missing_caption"}


# --------------------------------------------------------------------------- coco


def coco_json(path: Path, **extra: object) -> Path:
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 4},
                   {"id": 2, "file_name": "b.jpg"},
                   {"id": 3, "file_name": "gone.jpg"}],
        "annotations": [{"id": 10, "image_id": 1, "caption": "a red square"},
                        {"id": 11, "image_id": 2, "caption": "another, square"},
                        {"id": 12, "image_id": 1, "caption": "a small red thing"},
                        {"id": 13, "image_id": 99, "caption": "orphan"},
                        {"id": 14, "image_id": 3, "caption": "file missing"},
                        {"id": 15, "image_id": 2}],
        **extra,
    }
    return write(path, json.dumps(data))


@pytest.mark.parametrize("separate_images_dir", [False, True])
def test_coco(tmp_path: Path, separate_images_dir: bool) -> None:
    images = tmp_path / ("val2017" if separate_images_dir else "ann")
    write(images / "a.jpg", JPG)
    write(images / "b.jpg", JPG)
    path = coco_json(tmp_path / "ann" / "captions_val.json")
    assert detect_format(str(path)) == "coco"
    reader = open_reader(str(path), images_dir=str(images) if separate_images_dir else None)
    assert isinstance(reader, CocoReader) and reader.estimate() == 6
    samples, skipped = split(list(reader))
    assert {k: s.caption for k, s in samples.items()} == {
        "a.jpg#0": "a red square", "b.jpg#0": "another, square", "a.jpg#1": "a small red thing"}
    s = samples["a.jpg#1"]
    assert s.image_path == s.image_ref == str(images / "a.jpg")
    assert s.meta == {"image_id": 1, "height": 4, "annotation_id": 12}
    assert s.source == "captions_val"
    assert skipped == {"annotation:13": "unknown_image_id", "gone.jpg#0": "missing_image",
                       "b.jpg#1": "missing_caption"}


@pytest.mark.parametrize(
    "text, message",
    [("{not json", "not valid JSON"), ('{"images": []}', "annotations"), ("[1, 2]", "annotations")],
)
def test_bad_json_inputs(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "x.json", text)
    with pytest.raises(ValueError, match=message):
        open_reader(str(path))
    with pytest.raises(ValueError, match=message):
        CocoReader(str(path))


# --------------------------------------------------------------------------- open_reader


@pytest.mark.parametrize(
    "relpath, expected",
    [("d/{00000..00009}.tar", "webdataset"), ("d/*.tar", "webdataset"), ("x.tar", "webdataset"),
     ("x.csv", "table"), ("x.TSV", "table"), ("x.jsonl", "table"), ("x.parquet", "table")],
)
def test_detect_format(tmp_path: Path, relpath: str, expected: str) -> None:
    if "{" not in relpath and "*" not in relpath:
        write(tmp_path / relpath, "image,caption\n")
    assert detect_format(str(tmp_path / relpath)) == expected


def test_directory_of_shards_is_webdataset(tmp_path: Path) -> None:
    _shard(tmp_path / "wds" / "00000.tar", ["k"])
    write(tmp_path / "wds" / "00000.parquet", b"PAR1")
    assert detect_format(str(tmp_path / "wds")) == "webdataset"


@pytest.mark.parametrize(
    "kwargs, make, message",
    [
        ({}, "x.xml", "known formats: " + ", ".join(FORMATS)),
        ({"format": "hdf5"}, "x.csv", "unknown format 'hdf5'"),
        ({}, None, "not found"),
        ({"format": "table"}, None, "not found"),
        ({"format": "folder"}, None, "not a directory"),
        ({"format": "files"}, None, "not a directory"),
        ({"format": "coco"}, None, "not found"),
    ],
)
def test_open_reader_errors(
    tmp_path: Path, kwargs: dict[str, str], make: str | None, message: str
) -> None:
    path = tmp_path / (make or "absent")
    if make:
        write(path, "image,caption\n")
    with pytest.raises(ValueError, match=message):
        open_reader(str(path), **kwargs)


def test_readers_are_reiterable(tmp_path: Path) -> None:
    write(tmp_path / "a.jpg", JPG)
    write(tmp_path / "a.txt", "cap")
    reader = open_reader(str(tmp_path))
    assert list(reader) == list(reader)
